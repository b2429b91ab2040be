"""HTTP Live Streaming output: a sliding window of MPEG-TS segments.

Theory of operation: ``HlsSegmenter`` is a ``FrameSink``. Video access units
(Annex B, 90 kHz PTS/DTS) collect into a pending segment; a segment is cut
on a video keyframe once at least ``target_duration`` seconds of video have
accumulated (RFC 8216 §3: each segment after the first should start with an
IDR so a client can join at any segment). Each finished segment is muxed to
an MPEG-TS byte string (ISO/IEC 13818-1; RFC 8216 §3.2) and kept in memory;
only the last ``window`` segments are kept, and the media sequence number
(RFC 8216 §4.3.3.2) counts the ones dropped from the front.

Muxing uses PyAV's ``add_mux_stream``: a stream with codec parameters but no
codec context, so no encoder (libx264) is ever opened; the access units are
muxed as raw packets with their own timestamps. Timestamps are kept as the
device sent them so they run on across segments (RFC 8216 §3: a client
relies on continuous timestamps between segments of one rendition).

Memory is bounded: ``window`` segments plus one pending segment, which is
dropped (and the segmenter waits for the next keyframe) if it outgrows
``max_segment_bytes`` or ``max_segment_frames``.
"""

from __future__ import annotations

import fractions
import io
import logging
import math
from collections import deque
from dataclasses import dataclass

import av
import av.error

from media.frame import Codec, Frame
from media.nal import sps_info

log = logging.getLogger(__name__)

__all__ = ["HlsError", "HlsSegment", "HlsSegmenter", "mux_ts"]

CLOCK_RATE = 90_000  # PES timestamps, ISO/IEC 13818-1 §2.4.3.7
_TIME_BASE = fractions.Fraction(1, CLOCK_RATE)
_MUXER_CODECS = {Codec.H264: "h264", Codec.H265: "hevc"}


class HlsError(ValueError):
    """A segment could not be muxed to MPEG-TS."""


@dataclass(frozen=True, slots=True)
class HlsSegment:
    """One media segment (RFC 8216 §3): ``sequence`` is its media sequence number."""

    sequence: int
    duration: float
    data: bytes


def mux_ts(frames: list[Frame], *, width: int = 0, height: int = 0) -> bytes:
    """The MPEG-TS (ISO/IEC 13818-1 §2.4) of video access units, muxed without an encoder.

    All frames must share one video codec; the first should be a keyframe
    carrying its parameter sets in-band (RFC 8216 §3.2: a TS segment must be
    decodable on its own given its parameter sets).
    """
    if not frames:
        raise HlsError("a segment needs at least one frame")
    codec = frames[0].codec
    name = _MUXER_CODECS.get(codec)
    if name is None:
        raise HlsError(f"cannot mux {codec.value} into an HLS video segment")
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format="mpegts") as container:
            stream = container.add_mux_stream(name, width=width, height=height)
            stream.time_base = _TIME_BASE
            for frame in frames:
                if frame.codec is not codec:
                    raise HlsError(f"one segment mixes {codec.value} and {frame.codec.value}")
                packet = av.Packet(frame.data)
                packet.stream = stream
                packet.time_base = _TIME_BASE
                packet.pts = frame.pts
                packet.dts = frame.dts
                packet.is_keyframe = frame.keyframe
                container.mux(packet)
    except av.error.FFmpegError as e:
        log.warning("hls: the mpegts muxer refused a %s segment of %d frames: %s", codec.value, len(frames), e)
        raise HlsError(f"MPEG-TS muxing failed: {e}") from e
    return buf.getvalue()


class HlsSegmenter:
    """A live HLS rendition of one stream's video: playlist and segments (RFC 8216)."""

    def __init__(self, *, target_duration: float = 2.0, window: int = 6,
                 max_segment_bytes: int = 32 * 1024 * 1024, max_segment_frames: int = 1500) -> None:
        if target_duration <= 0:
            raise ValueError(f"target_duration must be positive, not {target_duration}")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.target_duration = target_duration
        self.window = window
        self.max_segment_bytes = max_segment_bytes
        self.max_segment_frames = max_segment_frames
        self.segments: deque[HlsSegment] = deque(maxlen=window)
        self.next_sequence = 0
        self.dropped_frames = 0  # frames lost to overflow, codec change or mux errors
        self._pending: list[Frame] = []
        self._pending_bytes = 0
        self._size = (0, 0)

    @property
    def media_sequence(self) -> int:
        """EXT-X-MEDIA-SEQUENCE: the number of the oldest segment in the window (RFC 8216 §4.3.3.2)."""
        return self.segments[0].sequence if self.segments else self.next_sequence

    def input_frame(self, frame: Frame) -> None:
        if not frame.codec.is_video:
            return  # video-only rendition
        if frame.keyframe:
            if self._pending and (frame.codec is not self._pending[0].codec or self._pending_span(frame)):
                self._cut(frame)
            if not self._pending:
                info = sps_info(frame.codec, frame.data)
                if info is not None:
                    self._size = (info.width, info.height)
        elif not self._pending:
            self.dropped_frames += 1
            return  # a segment must start on a keyframe (RFC 8216 §3)
        if len(self._pending) >= self.max_segment_frames or self._pending_bytes + len(frame.data) > self.max_segment_bytes:
            log.warning("hls: a segment outgrew %d frames / %d bytes without a keyframe; dropping it",
                        self.max_segment_frames, self.max_segment_bytes)
            self.dropped_frames += len(self._pending) + 1
            self._reset()
            return
        self._pending.append(frame)
        self._pending_bytes += len(frame.data)

    def _pending_span(self, frame: Frame) -> bool:
        return frame.dts - self._pending[0].dts >= self.target_duration * CLOCK_RATE

    def _cut(self, next_key: Frame) -> None:
        frames = self._pending
        duration = (next_key.dts - frames[0].dts) / CLOCK_RATE
        if next_key.codec is not frames[0].codec or duration <= 0:
            # No next timestamp to measure by: take the frame spacing instead.
            step = (frames[-1].dts - frames[0].dts) / max(len(frames) - 1, 1)
            duration = (frames[-1].dts - frames[0].dts + step) / CLOCK_RATE
        self._reset()
        try:
            data = mux_ts(frames, width=self._size[0], height=self._size[1])
        except HlsError:
            self.dropped_frames += len(frames)
            return  # mux_ts logged why
        self.segments.append(HlsSegment(self.next_sequence, max(duration, 0.001), data))
        self.next_sequence += 1

    def _reset(self) -> None:
        self._pending = []
        self._pending_bytes = 0

    def segment(self, n: int) -> bytes | None:
        """The bytes of segment ``n`` while it is in the window."""
        for seg in self.segments:
            if seg.sequence == n:
                return seg.data
        return None

    def playlist(self, uri_suffix: str = "") -> str:
        """The live media playlist (RFC 8216 §4.3): no EXT-X-ENDLIST while live (§4.3.3.4).

        ``uri_suffix`` is appended to every segment URI (e.g. ``?token=...``).
        """
        longest = max((s.duration for s in self.segments), default=self.target_duration)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            # §4.3.3.1: the EXTINF durations, rounded to the nearest integer, must
            # not exceed it; the ceiling is always safe.
            f"#EXT-X-TARGETDURATION:{math.ceil(longest)}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
        ]
        for seg in self.segments:
            lines.append(f"#EXTINF:{seg.duration:.3f},")
            lines.append(f"seg{seg.sequence}.ts{uri_suffix}")
        return "\n".join(lines) + "\n"
