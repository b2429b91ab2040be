"""Recorded ranges for the RTSP server: ``rtsp://host/vod/<channel>?start=&end=`` (``media.rtsp_vod``).

Theory of operation
-------------------
``RecordingVodSource.open`` finds the segments overlapping the range and
cuts them into GOPs with ``gop_ranges`` (the keyframe index: each GOP is a
byte range of a TS file that decodes on its own). The GOPs are laid end to
end on the npt axis (RFC 2326 §3.6): npt 0 is the keyframe at or before
``start``, and missing footage between segments is skipped, so seeking
moves over footage only. Each GOP is read with ``manager.read`` (the local
copy, or ranged GETs from S3) and demuxed with PyAV, stream copy, in a
worker thread (``run_in_thread``), never on the reactor; frames are
stamped in npt ticks: the GOP's npt plus the PTS/DTS distance from its
keyframe (33-bit wrap-safe, ISO/IEC 13818-1 §2.4.3.7).

The tracks come from the first GOP: the video codec and its keyframe (the
SDP's parameter sets, RFC 6184 §8.1 / RFC 7798 §7.1) and AAC audio if that
GOP has any (the recorder writes G.711 as AAC).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gbplatform.recording import queries as rq
from gbplatform.recording.playback import CLOCK_RATE, Range, gop_ranges
from media.frame import Codec, Frame
from media.nal import parameter_sets
from media.pipeline import AudioTrack, audio_track
from media.rtsp import RtspError

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext

log = Logger()

__all__ = ["RecordedRange", "RecordingVodSource", "demux_gop"]

_WRAP = 1 << 33
_CODECS = {"h264": Codec.H264, "hevc": Codec.H265, "aac": Codec.AAC}
_ANNEX_B = (b"\x00\x00\x01", b"\x00\x00\x00\x01")


def _delta(ts: int, origin: int) -> int:
    d = (ts - origin) % _WRAP
    return d - _WRAP if d > _WRAP // 2 else d


def demux_gop(data: bytes, gop_npt: float, first_pts: int) -> list[Frame]:
    """A GOP's TS bytes as frames in decoding order, stamped in npt ticks (blocking: in a thread)."""
    import av  # lazily, as in playback.remux_mp4: PyAV costs RSS

    base = round(gop_npt * CLOCK_RATE)
    frames: list[Frame] = []
    with av.open(io.BytesIO(data), "r", format="mpegts") as container:
        for packet in container.demux():
            codec = _CODECS.get(packet.stream.codec_context.name)
            if codec is None or packet.size == 0 or packet.dts is None:
                continue
            scale = packet.time_base * CLOCK_RATE
            dts = round(packet.dts * scale)
            pts = round(packet.pts * scale) if packet.pts is not None else dts
            payload = bytes(packet)
            if codec.is_video and packet.is_keyframe and not parameter_sets(codec, payload)["sps"]:
                extradata = packet.stream.codec_context.extradata or b""
                if extradata.startswith(_ANNEX_B):
                    payload = extradata + payload  # parameter sets out of band: put them in band
            frames.append(Frame(codec, payload, base + _delta(pts, first_pts), base + _delta(dts, first_pts),
                                codec.is_video and bool(packet.is_keyframe), 0xE0 if codec.is_video else 0xC0))
    return frames


@dataclass
class RecordedRange:
    """``media.rtsp_vod.VodMedia`` over a channel's segments."""

    channel_id: str
    ranges: list[Range]
    gops: list[float]
    duration: float
    read: Callable[[rq.SegmentRecord, int, int], bytes]
    run_in_thread: Callable[..., Deferred[Any]]
    video: Frame = field(init=False)
    audio: AudioTrack | None = None
    _cached: tuple[int, list[Frame]] | None = None

    def _load_blocking(self, index: int) -> list[Frame]:
        r = self.ranges[index]
        return demux_gop(self.read(r.segment, r.offset, r.length), self.gops[index], r.first_pts)

    async def load(self, index: int) -> list[Frame]:
        if self._cached is not None and self._cached[0] == index:
            frames = self._cached[1]
            self._cached = None  # the first GOP is read once for the SDP and once to play
            return frames
        frames_read: list[Frame] = await self.run_in_thread(self._load_blocking, index)
        return frames_read


def npt_starts(ranges: Sequence[Range]) -> tuple[list[float], float]:
    """Each GOP's npt start, end to end (gaps skipped), and the total duration."""
    starts: list[float] = []
    at = 0.0
    for r in ranges:
        starts.append(at)
        at += r.duration
    return starts, at


class RecordingVodSource:
    """``media.rtsp_server.VodSource`` over the platform's recordings."""

    def __init__(self, platform: AppContext, run_in_thread: Callable[..., Deferred[Any]]) -> None:
        self.platform = platform
        self.run_in_thread = run_in_thread

    async def open(self, channel_id: str, start: float, end: float) -> RecordedRange:
        manager = self.platform.recording
        if manager is None:
            raise RtspError(503, "recording is off on this platform")
        segs = await self.platform.db.run("segments_between", rq.segments_between_txn, channel_id, start, end)
        ranges = [r for r in gop_ranges(segs, start, end, min_part=0.0) if r.length > 0]
        if not ranges:
            raise RtspError(404, f"channel {channel_id} has no recording between {start:.3f} and {end:.3f}")
        gops, duration = npt_starts(ranges)
        media = RecordedRange(channel_id, ranges, gops, duration, manager.read, self.run_in_thread)
        try:
            first = await self.run_in_thread(media._load_blocking, 0)
        except Exception as e:  # noqa: BLE001 - a missing file, S3 or PyAV error: the client gets 503
            log.warn("RTSP VOD {ch}: reading the first GOP failed: {e}", ch=channel_id, e=str(e))
            raise RtspError(503, f"the recording of {channel_id} cannot be read") from None
        keyframe = next((f for f in first if f.codec.is_video and f.keyframe), None)
        if keyframe is None:
            raise RtspError(503, f"the recording of {channel_id} does not start with a video keyframe")
        media.video = keyframe
        for frame in first:
            if frame.codec is Codec.AAC:
                try:
                    media.audio = audio_track(frame)
                except ValueError as e:
                    log.warn("RTSP VOD {ch}: unusable AAC header, no audio: {e}", ch=channel_id, e=str(e))
                break
        media._cached = (0, first)
        log.info("RTSP VOD {ch}: {n} GOPs, {d:.1f} s from {start:.3f}", ch=channel_id, n=len(ranges), d=duration,
                 start=ranges[0].start)
        return media
