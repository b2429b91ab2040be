"""Frame fan-out: a stream's frames go to every sink (RTSP, FLV, HLS, recorder, snapshot).

Every stage after the demuxer is a ``FrameSink``. ``FrameDispatcher`` holds a
stream's sinks and a ``GopCache``: the frames since the last video keyframe,
so that a viewer joining mid-stream gets a decodable picture at once instead
of waiting up to a GOP (GB28181 cameras use 2–4 s GOPs). The cache is bounded
in frames and bytes; past either bound it stops caching until the next
keyframe rather than holding a runaway GOP. It is the largest per-stream
cost of the platform (a GOP: about 1 MiB at 4 Mbit/s and 2 s), so it can be
turned off (``max_bytes=0``, ``media.gop_cache_bytes``): a late joiner then
starts at the next keyframe, as every output (FLV, RTSP, HLS, recording)
drops what comes before one. Whatever the cache, ``StreamTracks`` keeps the
latest keyframe (``FrameDispatcher.keyframe``): the outputs' parameter sets
and the snapshot come from it.

The cache holds the frames themselves: each frame's bytes are assembled once
by the demuxer and referenced by the cache, the track and the sinks alike;
FLV, RTSP and HLS package them per viewer as they send. A stream nobody
watches (the recorder does not count: it never joins again) for
``idle_after`` seconds (``media.gop_cache_idle``) keeps only its
latest keyframe, the one ``StreamTracks`` holds anyway, so an unwatched stream
costs no GOP. A viewer joining such a stream gets that keyframe at once (its
first picture, as with a full cache) and then the live frames from the next
keyframe on: the frames in between are dropped for it, since they refer to
pictures it never got (ITU-T H.264 §8.2.4, H.265 §8.3.2). The picture stays
still until then, up to one GOP (2–4 s for GB28181 cameras), where a full
cache would have shown that time as motion. The cache fills again from that
keyframe while the stream is watched.

A sink that raises is removed and the error logged: one broken viewer must not
stop the stream for the others (ZLMediaKit's MediaSource does the same).

``StreamTracks`` is what the outputs announce before the first media byte
(RTSP's SDP, the FLV header's audio flag, HLS's PMT): the video codec with
its latest keyframe (whose in-band parameter sets describe it) and the audio
codec with its rate, channels and, for AAC, the AudioSpecificConfig read off
the ADTS header. It learns them from the frames: the audio track is known
once an audio frame arrives, and the set is ``ready`` once a video keyframe
is there and either audio has been seen or ``probe_ticks`` of video (0.5 s)
passed without any. Cameras interleave audio every 20-64 ms, so a stream
with audio shows it long before then; a late joiner finds the tracks ready.
The dispatcher updates them before fanning a frame out, at the cost of an
identity check or two per frame.

``TimestampRepair`` keeps the stream's 90 kHz timeline continuous for the
outputs: a source whose PTS jumps (a camera's encoder restarting, an NVR
clip or a simulator looping back to PTS 0) would otherwise send RTP
timestamps, FLV times and HLS segment spans backwards, which players treat
as the end of the stream or wait on for ever. A jump is a DTS step of more
than ``max_backward`` back or ``max_forward`` ahead of the previous frame of
the same kind (video, audio) on the 33-bit clock (so the PES wrap is no
jump); from then on every frame is shifted by one offset that puts the
jumping frame one usual step after its predecessor. ZLMediaKit's ``Stamp``
does the same per track. A frame is only rebuilt (no payload copy) while
the offset is not zero.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from media.aac import AdtsError, parse_adts_header
from media.frame import Codec, Frame
from media.nal import parameter_sets

log = logging.getLogger(__name__)

__all__ = [
    "GOP_CACHE_BYTES",
    "AudioTrack",
    "FrameDispatcher",
    "FrameSink",
    "GopCache",
    "StreamStats",
    "StreamTracks",
    "TimestampRepair",
    "VideoTrack",
    "audio_track",
]

G711_RATE = 8000  # ITU-T G.711; GB/T 28181-2016 §6.1.2 (mono)
PROBE_TICKS = 45_000  # 0.5 s of 90 kHz video without audio: video-only
PROBE_FRAMES = 50  # ... or this many video frames, should the DTS not advance
_VIDEO = frozenset({Codec.H264, Codec.H265})
_PTS_MASK = (1 << 33) - 1  # ISO/IEC 13818-1 §2.4.3.7: 33-bit timestamps
_PTS_HALF = 1 << 32


class FrameSink(Protocol):
    """Anything that consumes frames.

    A sink class may set ``watches = False`` (the recorder): it then does not
    count as a viewer for the GOP cache of an unwatched stream
    (``FrameDispatcher.idle_after``), as it never joins again.
    """

    def input_frame(self, frame: Frame) -> None: ...


GOP_CACHE_BYTES = 16 * 1024 * 1024


@dataclass
class GopCache:
    """The frames since the last video keyframe, bounded; ``max_bytes=0`` turns it off.

    ``complete`` is False while ``frames`` is the keyframe alone with its
    followers left out (``keyframe_only``): a sink replayed such a cache must
    skip video up to the next keyframe.
    """

    max_frames: int = 600
    max_bytes: int = GOP_CACHE_BYTES
    frames: list[Frame] = field(default_factory=list)
    size: int = 0
    overflowed: int = 0  # GOPs that outgrew the bounds
    complete: bool = True
    keyframe_only: bool = False  # the stream is unwatched: keep the keyframe, not its GOP
    # Bytes every cache of the process let go when its stream went unwatched:
    # the platform hands freed heap back to the kernel after a while of it
    # (gbplatform/app/memory.py), which the allocator does not do by itself.
    released: ClassVar[int] = 0

    def __post_init__(self) -> None:
        if self.max_frames < 1 or self.max_bytes < 0:
            raise ValueError(f"GopCache bounds must be max_frames >= 1, max_bytes >= 0, "
                             f"not {self.max_frames}, {self.max_bytes}")

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def add(self, frame: Frame) -> None:
        if not self.max_bytes:
            return
        if frame.codec.is_video and frame.keyframe:
            self.frames = [frame]
            self.size = len(frame.data)
            self.complete = True
            return
        if not self.frames or not self.complete:
            return  # nothing decodable to join yet, or the keyframe alone is kept
        if self.keyframe_only:
            self.complete = False
            return
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

    def keep_keyframe_only(self, on: bool) -> None:
        """Hold the latest keyframe alone (``on``), or the whole GOP again from the next keyframe.

        Turning it on drops the frames after the keyframe at once; turning
        it off leaves the cache incomplete until the next keyframe starts a
        full GOP.
        """
        self.keyframe_only = on
        if on and len(self.frames) > 1:
            self.frames = self.frames[:1]
            kept = len(self.frames[0].data)
            GopCache.released += self.size - kept
            self.size = kept
            self.complete = False


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """The video codec and the latest keyframe, whose parameter sets describe it."""

    codec: Codec
    keyframe: Frame

    def parameter_sets(self) -> dict[str, list[bytes]]:
        """The keyframe's in-band VPS/SPS/PPS (parsed on demand, not per frame)."""
        return parameter_sets(self.codec, self.keyframe.data)


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """The audio codec, its clock and channels; ``config`` is AAC's AudioSpecificConfig.

    ISO/IEC 14496-3 §1.6.2.1 for ``config``; G.711 is 8 kHz mono (RFC 3551 §4.5.14).
    """

    codec: Codec
    sample_rate: int
    channels: int
    config: bytes = b""


def audio_track(frame: Frame) -> AudioTrack | None:
    """The track an audio frame belongs to; raises ``AdtsError`` for AAC that is not ADTS."""
    if frame.codec is Codec.AAC:
        header = parse_adts_header(frame.data)
        return AudioTrack(Codec.AAC, header.sample_rate, header.channels, header.config())
    if frame.codec in (Codec.G711A, Codec.G711U):
        return AudioTrack(frame.codec, G711_RATE, 1)
    return None


class StreamTracks:
    """A stream's video and audio tracks, learnt from its frames (see the module docstring)."""

    def __init__(self, *, probe_ticks: int = PROBE_TICKS, probe_frames: int = PROBE_FRAMES) -> None:
        self.video: VideoTrack | None = None
        self.audio: AudioTrack | None = None
        self.ready = False
        self.probe_ticks = probe_ticks
        self.probe_frames = probe_frames
        self._audio_codec: Codec | None = None
        self._probe_start: int | None = None  # DTS of the first keyframe
        self._probed = 0
        self.bad_audio = 0  # AAC frames without a usable ADTS header

    def add(self, frame: Frame) -> None:
        codec = frame.codec
        if codec in _VIDEO:
            if frame.keyframe:
                self.video = VideoTrack(codec, frame)
                if self._probe_start is None:
                    self._probe_start = frame.dts
            if not self.ready and self._probe_start is not None:
                self._probed += 1
                span = (frame.dts - self._probe_start) & _PTS_MASK
                if span > _PTS_MASK // 2:
                    span = 0  # DTS went backwards: no evidence of time passing
                if self.audio is not None or span >= self.probe_ticks or self._probed >= self.probe_frames:
                    self.ready = True
        elif codec is not self._audio_codec:
            try:
                track = audio_track(frame)
            except AdtsError as e:
                self.bad_audio += 1
                if self.bad_audio == 1 or self.bad_audio % 1000 == 0:
                    log.warning("AAC frame without a usable ADTS header (%d so far): %s", self.bad_audio, e)
                return
            if track is not None:
                self.audio, self._audio_codec = track, codec
                self.ready = self._probe_start is not None


class TimestampRepair:
    """Shifts frames' PTS/DTS so the stream's timeline has no jumps (see the module docstring)."""

    def __init__(self, *, max_backward: int = 90_000, max_forward: int = 10 * 90_000) -> None:
        self.max_backward = max_backward
        self.max_forward = max_forward
        self.offset = 0
        self.jumps = 0
        self._last_video: int | None = None  # shifted DTS of the previous frame of each kind
        self._last_audio: int | None = None
        self._step_video = 3600  # the usual DTS step: 25 fps, 40 ms G.711 blocks
        self._step_audio = 3600

    def repair(self, frame: Frame) -> Frame:
        video = frame.codec in _VIDEO
        dts = (frame.dts + self.offset) & _PTS_MASK
        last = self._last_video if video else self._last_audio
        if last is not None:
            delta = ((dts - last + _PTS_HALF) & _PTS_MASK) - _PTS_HALF
            if delta < -self.max_backward or delta > self.max_forward:
                step = self._step_video if video else self._step_audio
                shifted = (last + step) & _PTS_MASK
                self.offset = (self.offset + shifted - dts) & _PTS_MASK
                self.jumps += 1
                log.info("%s DTS jumped by %.3f s; shifting the stream's timestamps to keep them continuous",
                         frame.codec.value, delta / 90_000)
                dts = shifted
            elif 0 < delta <= 90_000:  # a frame interval, not a gap in the source
                if video:
                    self._step_video = delta
                else:
                    self._step_audio = delta
        if video:
            self._last_video = dts
        else:
            self._last_audio = dts
        if not self.offset:
            return frame
        return Frame(frame.codec, frame.data, (frame.pts + self.offset) & _PTS_MASK, dts,
                     frame.keyframe, frame.stream_id)


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
    """Fans one stream's frames out to its sinks, with a GOP cache for late joiners.

    ``idle_after``: seconds (of the ``now`` the frames come with) without a
    watching sink before the cache keeps only the latest keyframe; ``None`` never.
    """

    def __init__(self, cache: GopCache | None = None, *, repair: bool = True,
                 idle_after: float | None = None) -> None:
        if idle_after is not None and not idle_after >= 0:
            raise ValueError(f"idle_after must be >= 0 seconds or None, not {idle_after}")
        self.cache = cache if cache is not None else GopCache()
        self.stats = StreamStats()
        self.tracks = StreamTracks()
        self.timestamps: TimestampRepair | None = TimestampRepair() if repair else None
        self.idle_after = idle_after
        self._sinks: list[FrameSink] = []
        # Sinks replayed a lone keyframe: they get no video until the next one.
        self._waiting: list[FrameSink] = []
        self._unwatched_since: float | None = None  # the first frame's now with no viewer
        self._viewers = 0  # sinks that watch (see FrameSink)

    @property
    def sinks(self) -> tuple[FrameSink, ...]:
        return tuple(self._sinks)

    @property
    def keyframe(self) -> Frame | None:
        """The latest video keyframe, kept whether or not the GOP cache is on (snapshots, stream info)."""
        video = self.tracks.video
        return video.keyframe if video is not None else None

    def add_sink(self, sink: FrameSink, *, replay: bool = True) -> None:
        """Attach ``sink``; it first gets the cached GOP (if any), so it starts on a keyframe.

        With the cache off or empty the sink gets the live frames only and
        must itself wait for a keyframe, as every output here does.
        """
        if sink in self._sinks:
            return
        cache = self.cache
        if replay:
            if not self._deliver(sink, cache.frames):
                return
            if cache.frames and not cache.complete:
                self._waiting.append(sink)
        self._sinks.append(sink)
        if getattr(sink, "watches", True):
            self._viewers += 1
            self._unwatched_since = None
            if cache.keyframe_only:
                cache.keep_keyframe_only(False)

    def remove_sink(self, sink: FrameSink) -> bool:
        try:
            self._sinks.remove(sink)
        except ValueError:
            return False
        if sink in self._waiting:
            self._waiting.remove(sink)
        if getattr(sink, "watches", True):
            self._viewers -= 1
        return True

    def input_frame(self, frame: Frame, now: float = 0.0) -> None:
        if self.timestamps is not None:
            frame = self.timestamps.repair(frame)
        self.tracks.add(frame)
        sinks = self._sinks
        if not self._viewers and self.idle_after is not None:
            self._note_unwatched(now)
        self.cache.add(frame)
        self.stats.add(frame, now)
        waiting = self._waiting
        for sink in tuple(sinks):
            if waiting and sink in waiting:
                if frame.codec not in _VIDEO:
                    pass  # audio plays on under the still keyframe
                elif frame.keyframe:
                    waiting.remove(sink)
                else:
                    continue  # refers to pictures this sink never got
            if not self._deliver(sink, (frame,)):
                self.remove_sink(sink)

    def _note_unwatched(self, now: float) -> None:
        since = self._unwatched_since
        if since is None:
            self._unwatched_since = now
        elif not self.cache.keyframe_only and now - since >= (self.idle_after or 0.0):
            self.cache.keep_keyframe_only(True)

    def _deliver(self, sink: FrameSink, frames: Iterable[Frame]) -> bool:
        try:
            for frame in frames:
                sink.input_frame(frame)
        except Exception:
            log.exception("frame sink %r failed; removed from the stream", sink)
            return False
        return True
