"""G.711 -> AAC for MPEG-TS (HLS) and MP4: FFmpeg's pcm_alaw/pcm_mulaw decoders and aac encoder."""

from __future__ import annotations

import io
import logging
import math
from array import array

import av
import pytest

from media.aac import parse_adts_header, split_adts
from media.frame import Codec, Frame
from media.transcode import AAC_SAMPLE_RATE, RESYNC_TICKS, G711ToAac
from tests.media_audio import g711_frames

START = 8_589_000_000  # near the 33-bit wrap (8_589_934_592): output PTS must wrap with it
WRAP = 1 << 33


def run(tc: G711ToAac, frames: list[Frame]) -> list[Frame]:
    out = [aac for f in frames for aac in tc.feed(f)]
    return out + tc.flush()


def decode(frames: list[Frame]) -> tuple[int, int, list[float]]:
    """(sample rate, channels, samples) of ADTS frames decoded by FFmpeg's aac decoder."""
    buf = io.BytesIO(b"".join(f.data for f in frames))
    samples: list[float] = []
    with av.open(buf, format="aac") as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            samples.extend(array("f", bytes(frame.planes[0]))[: frame.samples])
        return stream.codec_context.sample_rate, stream.codec_context.channels, samples


@pytest.mark.parametrize("codec", [Codec.G711A, Codec.G711U])
def test_output_is_adts_aac_stamped_on_from_the_input(codec: Codec) -> None:
    source = g711_frames(codec, 2.0, START)  # 50 blocks of 320 bytes, 40 ms each
    tc = G711ToAac(codec)
    out = run(tc, source)
    assert tc.frames_in == 50 and tc.frames_out == len(out) and tc.resyncs == 0
    # 2 s at 16 kHz is 31.25 frames of 1024 samples, plus the encoder's priming frame.
    assert len(out) == 33
    assert {(f.codec, f.keyframe, f.stream_id) for f in out} == {(Codec.AAC, True, 0xC0)}
    step = 1024 * 90_000 // AAC_SAMPLE_RATE  # 5760 ticks per frame
    assert [f.pts for f in out] == [(START + (i - 1) * step) % WRAP for i in range(len(out))]
    assert all(f.dts == f.pts for f in out)
    for f in out:
        (header, raw), = split_adts(f.data)
        assert (header.object_type, header.sample_rate, header.channels) == (2, 16000, 1)
        assert header.frame_length == len(f.data) and len(raw) == len(f.data) - 7


def test_the_tone_survives() -> None:
    rate, channels, samples = decode(run(G711ToAac(Codec.G711A), g711_frames(Codec.G711A, 1.0, 0)))
    assert (rate, channels) == (16000, 1)
    body = samples[2048:14000]
    # 440 Hz at 16 kHz: about 2 * 440 zero crossings per second, and a loud signal.
    crossings = sum(1 for a, b in zip(body, body[1:], strict=False) if (a < 0) != (b < 0))
    seconds = len(body) / rate
    assert abs(crossings / seconds - 880) < 20
    rms = math.sqrt(sum(x * x for x in body) / len(body))
    assert 0.1 < rms < 0.3  # 8000/32768 peak: rms ~0.17


def test_pts_jitter_is_absorbed_and_a_gap_starts_a_new_run(caplog: pytest.LogCaptureFixture) -> None:
    source = g711_frames(Codec.G711A, 1.0, 90_000)
    jittered = [Frame(f.codec, f.data, f.pts + (90 if i % 2 else -90), f.dts, True, 0xC0)
                for i, f in enumerate(source)]
    tc = G711ToAac(Codec.G711A)
    out = run(tc, jittered)
    assert tc.resyncs == 0
    assert [(b.pts - a.pts) % WRAP for a, b in zip(out, out[1:], strict=False)] == [5760] * (len(out) - 1)

    gap = RESYNC_TICKS + 90
    later = [Frame(f.codec, f.data, f.pts + 90_000 + gap, f.dts, True, 0xC0) for f in source]
    tc = G711ToAac(Codec.G711A)
    with caplog.at_level(logging.INFO, logger="media.transcode"):
        out = [a for f in source + later for a in tc.feed(f)] + tc.flush()
    assert tc.resyncs == 1 and "starting a new run" in caplog.text
    second = [f for f in out if f.pts >= later[0].pts - 5760]
    assert second[0].pts == later[0].pts - 5760  # the new run's priming frame, then on from its PTS
    # The first run was drained, not lost: 1 s is 15.6 frames plus priming, each run.
    assert len(out) == 2 * 17


def test_flush_then_feed_starts_again_and_empty_blocks_are_ignored() -> None:
    tc = G711ToAac(Codec.G711U)
    assert tc.flush() == []
    assert tc.feed(Frame(Codec.G711U, b"", 0, 0, True, 0xC0)) == []
    first = run(tc, g711_frames(Codec.G711U, 0.5, 0))
    again = run(tc, g711_frames(Codec.G711U, 0.5, 900_000))
    assert first[0].pts == (-5760) % WRAP and again[0].pts == 900_000 - 5760


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="aac is not G.711"):
        G711ToAac(Codec.AAC)
    with pytest.raises(ValueError, match="bitrate"):
        G711ToAac(Codec.G711A, bitrate=0)
    with pytest.raises(ValueError, match=r"G711ToAac\(g711a\) cannot take g711u"):
        G711ToAac(Codec.G711A).feed(Frame(Codec.G711U, b"\xff", 0, 0, True, 0xC0))


def test_bitrate_is_honoured() -> None:
    def size(bitrate: int) -> int:
        return sum(len(f.data) for f in run(G711ToAac(Codec.G711A, bitrate=bitrate),
                                            g711_frames(Codec.G711A, 2.0, 0)))

    assert size(16000) < size(48000)
    assert parse_adts_header(run(G711ToAac(Codec.G711A), g711_frames(Codec.G711A, 0.2, 0))[0].data).sample_rate == 16000
