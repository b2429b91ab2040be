"""Frame fan-out: a stream's frames go to every sink (RTSP, FLV, HLS, recorder, snapshot).

Every stage after the demuxer is a ``FrameSink``. ``FrameDispatcher`` holds a
stream's sinks and a ``GopCache``: the frames since the last video keyframe,
so that a viewer joining mid-stream gets a decodable picture at once instead
of waiting up to a GOP (GB28181 cameras use 2–4 s GOPs). The cache is bounded
in frames and bytes; past either bound it stops caching until the next
keyframe rather than holding a runaway GOP.

A sink that raises is removed and the error logged: one broken viewer must not
stop the stream for the others (ZLMediaKit's MediaSource does the same).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from media.frame import Frame

log = logging.getLogger(__name__)

__all__ = ["FrameDispatcher", "FrameSink", "GopCache", "StreamStats"]


class FrameSink(Protocol):
    """Anything that consumes frames."""

    def input_frame(self, frame: Frame) -> None: ...


@dataclass
class GopCache:
    """The frames since the last video keyframe, bounded."""

    max_frames: int = 600
    max_bytes: int = 16 * 1024 * 1024
    frames: list[Frame] = field(default_factory=list)
    size: int = 0
    overflowed: int = 0  # GOPs that outgrew the bounds

    def add(self, frame: Frame) -> None:
        if frame.codec.is_video and frame.keyframe:
            self.frames = [frame]
            self.size = len(frame.data)
            return
        if not self.frames:
            return  # nothing decodable to join yet
        if len(self.frames) >= self.max_frames or self.size + len(frame.data) > self.max_bytes:
            self.frames = []
            self.size = 0
            self.overflowed += 1
            return
        self.frames.append(frame)
        self.size += len(frame.data)

    def clear(self) -> None:
        self.frames = []
        self.size = 0


@dataclass
class StreamStats:
    """Per-stream figures for the API: fps, bitrate, GOP length, over a sliding window."""

    window: float = 5.0
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    last_gop: int | None = None
    _since_key: int = 0
    _recent: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, frame: Frame, now: float) -> None:
        self.frames += 1
        self.bytes += len(frame.data)
        if frame.codec.is_video:
            if frame.keyframe:
                if self.keyframes:
                    self.last_gop = self._since_key
                self.keyframes += 1
                self._since_key = 0
            self._since_key += 1
            self._recent.append((now, len(frame.data)))
        while self._recent and self._recent[0][0] < now - self.window:
            self._recent.popleft()

    def fps(self, now: float) -> float:
        span = self._span(now)
        return len(self._recent) / span if span else 0.0

    def bitrate(self, now: float) -> float:
        """Video bits per second over the window."""
        span = self._span(now)
        return 8 * sum(size for _, size in self._recent) / span if span else 0.0

    def _span(self, now: float) -> float:
        if len(self._recent) < 2:
            return 0.0
        return max(now - self._recent[0][0], 1e-6)


class FrameDispatcher:
    """Fans one stream's frames out to its sinks, with a GOP cache for late joiners."""

    def __init__(self, cache: GopCache | None = None) -> None:
        self.cache = cache if cache is not None else GopCache()
        self.stats = StreamStats()
        self._sinks: list[FrameSink] = []

    @property
    def sinks(self) -> tuple[FrameSink, ...]:
        return tuple(self._sinks)

    def add_sink(self, sink: FrameSink, *, replay: bool = True) -> None:
        """Attach ``sink``; it first gets the cached GOP, so it starts on a keyframe."""
        if sink in self._sinks:
            return
        if replay and not self._deliver(sink, self.cache.frames):
            return
        self._sinks.append(sink)

    def remove_sink(self, sink: FrameSink) -> bool:
        try:
            self._sinks.remove(sink)
        except ValueError:
            return False
        return True

    def input_frame(self, frame: Frame, now: float = 0.0) -> None:
        self.cache.add(frame)
        self.stats.add(frame, now)
        for sink in tuple(self._sinks):
            if not self._deliver(sink, (frame,)):
                self.remove_sink(sink)

    def _deliver(self, sink: FrameSink, frames: Iterable[Frame]) -> bool:
        try:
            for frame in frames:
                sink.input_frame(frame)
        except Exception:
            log.exception("frame sink %r failed; removed from the stream", sink)
            return False
        return True
