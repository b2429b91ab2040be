"""Synthetic audio for the media tests (test helper, not product code).

G.711 blocks are a 440 Hz tone encoded by FFmpeg's pcm_alaw/pcm_mulaw, cut
into 320-byte blocks (40 ms at 8 kHz) as GB28181 cameras send them; AAC
frames come from FFmpeg's aac encoder wrapped in ADTS headers, two frames
per PES payload as some cameras pack them. Timestamps are 90 kHz, on the
video's clock, so ``merge_by_dts`` can merge them with captured video.
"""

from __future__ import annotations

import fractions
import heapq
import math
import struct

import av

from media.aac import AOT_AAC_LC, adts_header, sample_rate_index
from media.frame import Codec, Frame

__all__ = ["aac_frames", "g711_frames", "merge_by_dts", "tone_pcm"]

_ENCODERS = {Codec.G711A: "pcm_alaw", Codec.G711U: "pcm_mulaw"}


def tone_pcm(seconds: float, rate: int = 8000, channels: int = 1, hz: float = 440.0) -> bytes:
    """Signed 16-bit little-endian interleaved samples of a sine tone."""
    n = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate))) * channels for i in range(n)
    )


def _frame(pcm: bytes, rate: int, channels: int) -> av.AudioFrame:
    layout = "mono" if channels == 1 else "stereo"
    frame = av.AudioFrame(format="s16", layout=layout, samples=len(pcm) // (2 * channels))
    frame.sample_rate = rate
    frame.planes[0].update(pcm)
    return frame


def g711_frames(codec: Codec, seconds: float, start_pts: int, block: int = 320) -> list[Frame]:
    """``seconds`` of tone as G.711 blocks of ``block`` bytes from ``start_pts``."""
    enc = av.CodecContext.create(_ENCODERS[codec], "w")
    assert isinstance(enc, av.AudioCodecContext)
    enc.sample_rate, enc.layout, enc.format = 8000, "mono", "s16"
    enc.open()
    coded = b"".join(bytes(p) for p in enc.encode(_frame(tone_pcm(seconds), 8000, 1)))
    coded += b"".join(bytes(p) for p in enc.encode(None))
    return [
        Frame(codec, coded[i : i + block], start_pts + i * 90_000 // 8000, start_pts + i * 90_000 // 8000, True, 0xC0)
        for i in range(0, len(coded), block)
    ]


def aac_frames(seconds: float, start_pts: int, rate: int = 44100, channels: int = 2, per_pes: int = 2) -> list[Frame]:
    """``seconds`` of tone as ADTS AAC LC, ``per_pes`` ADTS frames per Frame."""
    enc = av.CodecContext.create("aac", "w")
    assert isinstance(enc, av.AudioCodecContext)
    enc.sample_rate, enc.layout, enc.format = rate, "mono" if channels == 1 else "stereo", "fltp"
    enc.bit_rate = 64000
    enc.time_base = fractions.Fraction(1, rate)
    enc.open()
    src = _frame(tone_pcm(seconds, rate, channels), rate, channels)
    src.pts = 0
    src.time_base = fractions.Fraction(1, rate)
    packets = [(p.pts, bytes(p)) for p in enc.encode(src)] + [(p.pts, bytes(p)) for p in enc.encode(None)]
    index = sample_rate_index(rate)
    adts = [(pts, adts_header(AOT_AAC_LC, index, channels, len(raw)) + raw) for pts, raw in packets if pts >= 0]
    out = []
    for i in range(0, len(adts), per_pes):
        group = adts[i : i + per_pes]
        pts = start_pts + group[0][0] * 90_000 // rate
        out.append(Frame(Codec.AAC, b"".join(d for _, d in group), pts, pts, True, 0xC0))
    return out


def merge_by_dts(video: list[Frame], audio: list[Frame]) -> list[Frame]:
    """Both lists merged by DTS, as a camera's program stream interleaves them."""
    return list(heapq.merge(video, audio, key=lambda f: f.dts))
