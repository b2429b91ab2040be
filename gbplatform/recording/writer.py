"""The recording write pipeline: reactor-side sinks, a bounded queue, one writer thread per disk.

Theory of operation
-------------------
``RecorderSink`` is a ``FrameSink`` on a live stream's dispatcher (so the
stream counts it as a viewer and keeps playing). On the reactor thread it
does one thing per frame: append ``(channel, frame, wall time)`` to its
disk's ``ByteQueue``, which is bounded in bytes. When the queue is full the
frame is dropped, counted, and so is everything of that channel up to the
next video keyframe (a file with a hole in a GOP would not decode); the
reactor never waits for a disk (ARCHITECTURE "Nothing blocks the reactor").

``DiskWriter`` owns the queue and one thread (plain ``threading``, not the
reactor's pool, which a hung NAS would exhaust). The thread takes items in
order and hands them to the channel's ``ChannelRecorder``, which cuts
segments at the first video keyframe past ``segment_seconds``, muxes them to
MPEG-TS (``media.tsrecord``) and writes them unbuffered, so a process crash
loses at most the muxer's small buffer. What happens (segment opened,
closed, failed) goes back through ``report``, which in the platform is
``reactor.callFromThread``; the registry is updated from there.

Audio: a channel's first segment waits up to ``AUDIO_PROBE`` seconds of
video for an audio frame, so that a stream with audio starts its recording
with an audio track (MPEG-TS streams are fixed once the header is written).
Audio that appears later joins at the next segment. G.711 is converted to
AAC here, in the writer thread (``media.transcode.G711ToAac``).

Dating a segment: a frame's wall time is when it reached the reactor, when
it was captured plus the network's delay, except for the GOP cache that a
recording joining a stream is handed first (all of it at once, its keyframe
up to a GOP old by then). So a segment's ``start`` is the
earliest ``wall - (dts - first dts)`` over its video frames, the time its
first frame would have arrived had every frame come as early as the
earliest: a replayed keyframe is dated by the live frames that follow it,
and a late frame never moves the start. The index holds what the file holds
(issue 8, item 20). A segment also never starts before the previous one of
its channel ends (``_OVERLAP_LIMIT``), so consecutive intervals do not
overlap by the few milliseconds of jitter between two estimates.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from media.aac import AdtsError
from media.frame import Codec, Frame
from media.logthrottle import LogThrottle
from media.nal import sps_info
from media.pipeline import AudioTrack, audio_track
from media.tsindex import TsIndexer
from media.tsrecord import MuxError, TsRecordMuxer

log = Logger()

__all__ = [
    "ByteQueue",
    "ChannelRecorder",
    "DiskWriter",
    "RecorderSink",
    "SegmentClosed",
    "SegmentOpened",
    "WriteFailed",
    "segment_key",
]

CLOCK_RATE = 90_000
AUDIO_PROBE = 1.0  # seconds of video the first segment waits for audio
RETRY_AFTER = 5.0  # seconds before a channel whose file failed opens a new one
JUMP = 10 * CLOCK_RATE  # a DTS jump this large (or backwards) starts a new segment
LOG_EVERY = 10.0  # rate limit for repeated warnings, seconds
# A new segment is moved to start where the previous one ended when it would
# overlap it by less than this; more is a wall clock stepped back, left alone.
_OVERLAP_LIMIT = JUMP / CLOCK_RATE


@dataclass(frozen=True)
class SegmentOpened:
    channel_id: str
    key: str  # path under the storage root, '/'-separated
    start: float  # epoch seconds of the first frame


@dataclass(frozen=True)
class SegmentClosed:
    channel_id: str
    key: str
    start: float
    end: float
    size: int
    index: list[tuple[int, int, float]]  # (byte offset, pts, epoch seconds) per keyframe
    frames: int
    has_audio: bool
    error: str | None = None  # set when the segment ended because writing failed


@dataclass(frozen=True)
class WriteFailed:
    channel_id: str
    key: str | None
    error: str


Event = SegmentOpened | SegmentClosed | WriteFailed


def segment_key(channel_id: str, start: float) -> str:
    """``<channel>/<YYYY-MM-DD>/<channel>-<YYYYmmddTHHMMSS.mmm>Z.ts`` (UTC)."""
    t = dt.datetime.fromtimestamp(start, dt.UTC)
    return f"{channel_id}/{t:%Y-%m-%d}/{channel_id}-{t:%Y%m%dT%H%M%S}.{t.microsecond // 1000:03d}Z.ts"


class ByteQueue:
    """A FIFO bounded by the sum of its items' sizes; ``put`` never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._items: deque[tuple[Any, int]] = deque()
        self._cond = threading.Condition(threading.Lock())

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any, size: int, *, force: bool = False) -> bool:
        """Append unless that would pass the limit (``force``: control messages always fit)."""
        with self._cond:
            if not force and self._items and self.bytes + size > self.limit:
                return False
            self._items.append((item, size))
            self.bytes += size
            self._cond.notify()
        return True

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item, waiting up to ``timeout`` (None: forever); None if none came."""
        with self._cond:
            while not self._items:
                if not self._cond.wait(timeout):
                    return None
            item, size = self._items.popleft()
            self.bytes -= size
            return item

    def get_nowait(self) -> Any:
        with self._cond:
            if not self._items:
                return None
            item, size = self._items.popleft()
            self.bytes -= size
            return item


class _Throttle:
    """At most one log line per key every ``every`` seconds: a
    :class:`~media.logthrottle.LogThrottle` behind a lock, because the reactor
    (dropped frames) and the writer thread (write failures) share it."""

    def __init__(self, now: Callable[[], float], every: float = LOG_EVERY) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._throttle = LogThrottle(every)

    def ready(self, key: str) -> bool:
        with self._lock:
            return self._throttle.hit(key, self._now()) > 0


_CLOSE = "close"
_SHUTDOWN = "shutdown"


class RecorderSink:
    """The reactor side of recording one channel (see the module docstring)."""

    # Not a viewer for the GOP cache (media/pipeline.py FrameSink): a stream only
    # recorded keeps its latest keyframe, not a GOP nobody will join from.
    watches = False

    def __init__(self, channel_id: str, writer: DiskWriter, wall: Callable[[], float]) -> None:
        self.channel_id = channel_id
        self.writer = writer
        self._wall = wall
        self.dropping = False
        self.dropped = 0

    def input_frame(self, frame: Frame) -> None:
        if self.dropping and not (frame.keyframe and frame.codec.is_video):
            self.dropped += 1
            self.writer.dropped_frames += 1
            return
        if self.writer.queue.put((self.channel_id, frame, self._wall()), len(frame.data)):
            self.dropping = False
            return
        self.dropped += 1
        self.writer.dropped_frames += 1
        if not self.dropping:
            self.dropping = True
            self.writer.note_drop(self.channel_id)

    def close(self) -> None:
        """End the channel's open segment (queued behind its frames)."""
        self.writer.queue.put((_CLOSE, self.channel_id), 0, force=True)


@dataclass
class _Open:
    key: str
    file: Any
    muxer: TsRecordMuxer
    start: float  # epoch seconds of the first frame, estimated (see the module docstring)
    first_dts: int
    last_dts: int
    step: int = 3600  # last video frame interval, 90 kHz


@dataclass
class ChannelRecorder:
    """Segments of one channel, on the writer thread."""

    channel_id: str
    root: Path
    segment_seconds: float
    report: Callable[[Event], None]
    monotonic: Callable[[], float]
    throttle: _Throttle
    audio: AudioTrack | None = None
    audio_probed: bool = False
    current: _Open | None = None
    probe: list[tuple[Frame, float]] = field(default_factory=list)
    retry_at: float = 0.0
    transcoder: Any = None
    transcoder_codec: Codec | None = None
    written: int = 0  # bytes, over the channel's lifetime
    last_end: float | None = None  # end of the channel's previous segment, epoch seconds

    def frame(self, frame: Frame, wall: float) -> None:
        if frame.codec in (Codec.G711A, Codec.G711U):
            for aac in self._transcode(frame):
                self.frame(aac, wall)
            return
        if frame.codec is Codec.AAC and self.audio is None:
            try:
                self.audio = audio_track(frame)
            except AdtsError as e:
                if self.throttle.ready(f"adts:{self.channel_id}"):
                    log.info("channel {id}: AAC frame without a usable ADTS header: {e}", id=self.channel_id,
                             e=str(e))
        if self.probe:
            self._probe_more(frame, wall)
            return
        if frame.codec.is_video and frame.keyframe and self._should_cut(frame):
            self.close()
            if self.monotonic() < self.retry_at:
                return
            if self.audio is None and not self.audio_probed:
                self.probe = [(frame, wall)]
                return
            self._open(frame, wall)
        if self.current is not None:
            self._write(frame, wall)

    def _should_cut(self, frame: Frame) -> bool:
        cur = self.current
        if cur is None:
            return True
        if frame.codec is not cur.muxer.video_codec or (self.audio is not None and not cur.muxer.has_audio):
            return True
        delta = frame.dts - cur.first_dts
        return delta >= self.segment_seconds * CLOCK_RATE or frame.dts <= cur.last_dts or frame.dts - cur.last_dts > JUMP

    def _probe_more(self, frame: Frame, wall: float) -> None:
        self.probe.append((frame, wall))
        first = self.probe[0][0]
        if self.audio is None and not (frame.codec.is_video and frame.dts - first.dts >= AUDIO_PROBE * CLOCK_RATE):
            return
        frames, self.probe = self.probe, []
        self.audio_probed = True
        self._open_with(frames)

    def _transcode(self, frame: Frame) -> list[Frame]:
        if self.transcoder is None or self.transcoder_codec is not frame.codec:
            try:
                from media.transcode import G711ToAac
            except ImportError:
                if self.throttle.ready(f"g711:{self.channel_id}"):
                    log.warn("channel {id}: G.711 audio not recorded (no media.transcode)", id=self.channel_id)
                return []
            self.transcoder = G711ToAac(frame.codec)
            self.transcoder_codec = frame.codec
        try:
            out: list[Frame] = self.transcoder.feed(frame)
        except Exception as e:  # noqa: BLE001 - a bad audio block must not stop the video
            if self.throttle.ready(f"g711:{self.channel_id}"):
                log.warn("channel {id}: G.711 to AAC failed: {e}", id=self.channel_id, e=e)
            return []
        return out

    def _open_with(self, frames: list[tuple[Frame, float]]) -> None:
        """Open a segment on the probed ``frames`` (the first a video keyframe) and write them."""
        first = frames[0][0]
        self._open(first, min(_start_estimate(first, f, w) for f, w in frames if f.codec.is_video))
        for f, w in frames:
            if self.current is None:
                break
            self._write(f, w)

    def _after_last(self, start: float) -> float:
        """``start``, moved to the end of the previous segment if it would overlap it slightly."""
        if self.last_end is not None and 0 < self.last_end - start < _OVERLAP_LIMIT:
            return self.last_end
        return start

    def _open(self, frame: Frame, wall: float) -> None:
        wall = self._after_last(wall)
        key = segment_key(self.channel_id, wall)
        path = self.root / key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            n = 1
            while True:
                try:
                    # Unbuffered: every muxer flush is one write(2), in the page
                    # cache (and so safe from a process crash) at once.
                    f = open(path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
                    break
                except FileExistsError:
                    n += 1
                    key = key[: -len(".ts")].split("~")[0] + f"~{n}.ts"
                    path = self.root / key
            info = sps_info(frame.codec, frame.data)
            width, height = (info.width, info.height) if info is not None else (0, 0)
            try:
                muxer = TsRecordMuxer(f.write, video=frame.codec, width=width, height=height, audio=self.audio)
            except MuxError:
                f.close()
                raise
        except (OSError, MuxError) as e:
            self._failed(key, f"cannot start segment {key}: {e}")
            return
        self.current = _Open(key=key, file=f, muxer=muxer, start=wall, first_dts=frame.dts, last_dts=frame.dts - 1)
        self.report(SegmentOpened(self.channel_id, key, wall))

    def _write(self, frame: Frame, wall: float) -> None:
        cur = self.current
        assert cur is not None
        if frame.codec.is_video and frame.dts >= cur.first_dts:
            cur.start = min(cur.start, self._after_last(wall - (frame.dts - cur.first_dts) / CLOCK_RATE))
        try:
            before = cur.muxer.size
            if cur.muxer.write(frame) and frame.codec.is_video:
                if frame.dts > cur.last_dts and cur.last_dts >= cur.first_dts:
                    cur.step = frame.dts - cur.last_dts
                cur.last_dts = frame.dts
            self.written += cur.muxer.size - before
        except (OSError, MuxError) as e:
            self.close(error=f"writing {cur.key} failed: {e}")

    def close(self, error: str | None = None) -> None:
        """Finish the open segment (if any) and report it."""
        if self.probe:
            frames, self.probe = self.probe, []
            self.audio_probed = True
            self._open_with(frames)
        cur, self.current = self.current, None
        if cur is None:
            return
        try:
            cur.muxer.close()
        except (OSError, MuxError) as e:
            error = error or f"closing {cur.key} failed: {e}"
        try:
            cur.file.flush()
            os.fsync(cur.file.fileno())
        except OSError as e:
            error = error or f"syncing {cur.key} failed: {e}"
        finally:
            try:
                cur.file.close()
            except OSError as e:
                error = error or f"closing {cur.key} failed: {e}"
        indexer = cur.muxer.indexer
        closed = _closed_event(self.channel_id, cur.key, cur.start, indexer, cur.muxer.size, cur.step,
                               cur.muxer.frames, cur.muxer.has_audio, error)
        self.last_end = closed.end
        self.report(closed)
        if error is not None:
            self._failed(cur.key, error)

    def _failed(self, key: str | None, error: str) -> None:
        self.retry_at = self.monotonic() + RETRY_AFTER
        if self.throttle.ready(f"fail:{self.channel_id}"):
            log.error("recording {id}: {error}; retrying in {s:g} s", id=self.channel_id, error=error, s=RETRY_AFTER)
        self.report(WriteFailed(self.channel_id, key, error))


def _start_estimate(first: Frame, frame: Frame, wall: float) -> float:
    """When ``first`` would have arrived, judged by ``frame`` arriving at ``wall``."""
    return wall - (frame.dts - first.dts) / CLOCK_RATE if frame.dts >= first.dts else wall


def _closed_event(channel_id: str, key: str, start: float, indexer: TsIndexer, size: int, step: int,
                  frames: int, has_audio: bool, error: str | None) -> SegmentClosed:
    first = indexer.first_pts
    index = [(e.offset, e.pts, start + ((e.pts - first) % (1 << 33)) / CLOCK_RATE if first is not None else start)
             for e in indexer.entries]
    end = start + (indexer.duration_ticks() + step) / CLOCK_RATE if first is not None else start
    return SegmentClosed(channel_id, key, start, end, size, index, frames, has_audio, error)


class DiskWriter:
    """One storage root's queue and writer thread (see the module docstring)."""

    def __init__(self, root: Path, *, name: str = "local", segment_seconds: float = 60.0,
                 queue_bytes: int = 64 * 1024 * 1024, report: Callable[[Event], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.name = name
        self.segment_seconds = segment_seconds
        self.queue = ByteQueue(queue_bytes)
        self.report = report
        self.monotonic = monotonic
        self.dropped_frames = 0
        self.written_bytes = 0
        self.errors = 0
        self.last_progress = monotonic()
        self.channels: dict[str, ChannelRecorder] = {}
        self._throttle = _Throttle(monotonic)
        self._thread: threading.Thread | None = None

    # -- reactor side ----------------------------------------------------------
    def sink(self, channel_id: str, wall: Callable[[], float]) -> RecorderSink:
        return RecorderSink(channel_id, self, wall)

    def note_drop(self, channel_id: str) -> None:
        if self._throttle.ready(f"drop:{channel_id}"):
            log.warn("recording {id}: the {disk} write queue is full ({n} bytes); dropping frames up to the "
                     "next keyframe ({total} dropped so far)", id=channel_id, disk=self.name,
                     n=self.queue.bytes, total=self.dropped_frames)

    def stalled(self, timeout: float) -> bool:
        """True when frames are waiting and the thread has made no progress for ``timeout`` s."""
        return len(self.queue) > 0 and self.monotonic() - self.last_progress > timeout

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=f"gbplatform-record-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Close every segment and end the thread (blocks: call it off the reactor)."""
        self.queue.put((_SHUTDOWN,), 0, force=True)
        if self._thread is None:
            self.run_pending()
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- writer thread -----------------------------------------------------------
    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if not self._handle(item):
                return

    def run_pending(self) -> int:
        """Process what is queued on the calling thread (tests, and ``stop`` without a thread)."""
        n = 0
        while True:
            item = self.queue.get_nowait()
            if item is None:
                return n
            n += 1
            if not self._handle(item):
                return n

    def _handle(self, item: tuple[Any, ...]) -> bool:
        try:
            if item[0] == _SHUTDOWN:
                for channel in list(self.channels.values()):
                    channel.close()
                self.channels.clear()
                return False
            if item[0] == _CLOSE:
                closing = self.channels.pop(item[1], None)
                if closing is not None:
                    closing.close()
                return True
            channel_id, frame, wall = item
            rec = self.channels.get(channel_id)
            if rec is None:
                rec = self.channels[channel_id] = ChannelRecorder(
                    channel_id, self.root, self.segment_seconds, self._report, self.monotonic, self._throttle)
            before = rec.written
            rec.frame(frame, wall)
            self.written_bytes += rec.written - before
            return True
        except Exception:  # noqa: BLE001 - the writer thread must survive one bad item
            log.failure("recording writer {name}: an item failed", name=self.name)
            return True
        finally:
            self.last_progress = self.monotonic()

    def _report(self, event: Event) -> None:
        if isinstance(event, WriteFailed):
            self.errors += 1
        try:
            self.report(event)
        except Exception:  # noqa: BLE001 - reporting must not kill the writer thread
            log.failure("recording writer {name}: reporting {event} failed", name=self.name, event=event)
