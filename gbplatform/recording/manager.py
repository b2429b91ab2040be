"""The recording manager: which channels record, keeping them pulled, the index, retention.

Theory of operation
-------------------
Every ``record.check_interval`` seconds (injected clock) the manager reads
the active policies (``continuous``, or ``plan`` with its weekly schedule
evaluated in ``record.timezone``) and brings the set of recorded channels in
line: a channel that should record and does not gets its live stream
(``LiveStreams.play``: the INVITE of GB/T 28181-2016 §9.2) with a
``RecorderSink`` attached, which counts as a viewer, so the idle teardown
never stops it; a channel that should no longer record has its sink detached
and its open segment closed.

A recorded stream that ends (device BYE, no RTP, device gone offline) is
re-INVITEd with exponential backoff up to ``record.retry_max``, and only
while its device is registered: an offline device is retried at the first
check after it comes back.

The writer thread reports segments opened and closed through
``call_from_thread``; the registry rows are written from there (on the
database pool). Closed segments go to the S3 uploader when that backend is
configured. Retention runs every ``record.retention_interval``: by age
(global and per channel), by quota (oldest first across all channels, as an
NVR loops), and by free disk space; file deletion runs in a thread.

Blocking work runs on the platform's pools (``gbplatform.core.workers``): file
deletion and disk usage on ``retention``, recovery scans and the bucket
check on ``storage``, so neither waits behind downloads or snapshots.
Shutdown's joins (writer, uploader) use ``run_in_thread``.

On start, before any recording, crash recovery reconciles the index with the
files (``gbplatform.recording.recovery``). On stop, sinks are detached and
the writer closes every open segment; stop waits for that and for the last
registry writes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.logger import Logger

from gbplatform.app.config import RecordConfig
from gbplatform.core.clock import Clock, DelayedCallLike
from gbplatform.core.errors import DomainError
from gbplatform.db.database import Database
from gbplatform.recording import queries as rq
from gbplatform.recording.playback import Progress, TimelineCache, timeline
from gbplatform.recording.recovery import parse_key, repair
from gbplatform.recording.schedule import covers
from gbplatform.recording.shapes import (
    RecordingStatus,
    Recovery,
    Retention,
    StorageBackend,
    StorageState,
)
from gbplatform.recording.storage import LocalStorage, S3Storage, Uploader
from gbplatform.recording.writer import (
    DiskWriter,
    Event,
    RecorderSink,
    SegmentClosed,
    SegmentOpened,
    WriteFailed,
)

if TYPE_CHECKING:
    from gbplatform.core.workers import Workers
    from gbplatform.devices.registrar import DeviceManager
    from gbplatform.sessions.live import LiveStream, LiveStreams

log = Logger()

__all__ = ["RecordingManager"]


class RecordingUnavailable(DomainError):
    status = 503
    code = "recording_unavailable"


@dataclass
class Recorded:
    """One channel the manager keeps recording."""

    channel_id: str
    device_id: str | None
    sink: RecorderSink
    stream: LiveStream | None = None
    starting: bool = False
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None
    open_key: str | None = None
    open_from: float | None = None
    on_closed: Callable[[LiveStream], None] | None = None


@dataclass
class DownloadJob:
    id: int
    channel_id: str
    start: float
    end: float
    progress: Progress
    created: float
    finished: float | None = None


@dataclass
class _Stats:
    segments_closed: int = 0
    write_errors: int = 0
    deleted_segments: int = 0
    deleted_bytes: int = 0
    recovered: int = 0
    adopted: int = 0
    unindexed: list[str] = field(default_factory=list)


class RecordingManager:
    """Recording for the whole platform (see the module docstring)."""

    def __init__(self, config: RecordConfig, *, data_dir: Path, db: Database, clock: Clock,
                 live: LiveStreams | None, devices: DeviceManager, call_from_thread: Callable[..., Any], run_in_thread: Callable[..., Deferred[Any]],
                 s3: S3Storage | None = None, monotonic: Callable[[], float] = time.monotonic,
                 workers: Workers | None = None) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.live = live
        self.devices = devices
        self.call_from_thread = call_from_thread
        self.run_in_thread = run_in_thread
        self.workers = workers  # None: everything on run_in_thread
        root = Path(config.directory) if config.directory else data_dir / "recordings"
        self.storage = LocalStorage(root, timeout=config.nas_timeout, monotonic=monotonic)
        self.backend = config.backend
        self.s3 = s3
        self.writer = DiskWriter(root, name="local", segment_seconds=config.segment_seconds,
                                 queue_bytes=config.queue_bytes, report=self._from_writer, monotonic=monotonic)
        self.uploader: Uploader | None = None
        if s3 is not None:
            self.uploader = Uploader(self.storage, s3, done=self._upload_done_thread)
        self.tz: dt.tzinfo | None = zoneinfo.ZoneInfo(config.timezone) if config.timezone else None
        self.channels: dict[str, Recorded] = {}
        self.cache = TimelineCache()
        self.downloads: dict[int, DownloadJob] = {}
        self._download_ids = itertools.count(1)
        self.stats = _Stats()
        self.running = False
        self.ready = False
        self._timers: dict[str, DelayedCallLike] = {}
        self._pending: set[Deferred[Any]] = set()
        self._usage: dict[str, dict[str, int]] = {}
        # Told every writer event (segment opened/closed, write failed) on the reactor thread: the event bus.
        self.observers: list[Callable[[Event], None]] = []

    def _pool(self, kind: str) -> Callable[..., Deferred[Any]]:
        return self.workers.runner(kind) if self.workers is not None else self.run_in_thread

    # -- life cycle -----------------------------------------------------------------
    async def start(self) -> None:
        self.running = True
        self.writer.start()
        if self.uploader is not None:
            assert self.s3 is not None
            try:
                await self._pool("storage")(self.s3.ensure_bucket)
            except Exception as e:  # noqa: BLE001 - a missing bucket must not stop the platform
                log.error("S3 bucket {bucket} unusable: {e}", bucket=self.s3.bucket, e=e)
            self.uploader.start()
        try:
            await self.recover()
        except Exception:  # noqa: BLE001 - recording still starts; what failed is logged
            log.failure("recording recovery failed")
        self.ready = True
        if not self.running:
            return
        self._schedule("check", 0.0, self._check)
        self._schedule("retention", min(5.0, self.config.retention_interval), self._retention)

    async def stop(self) -> None:
        self.running = False
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for cid in list(self.channels):
            self._stop_channel(cid, "platform stopping")
        ok = await self.run_in_thread(self.writer.stop, 15.0)
        if not ok:
            log.error("recording writer did not finish within 15 s (hung disk?); open segments are "
                      "repaired at the next start")
        if self._pending:
            await DeferredList(list(self._pending), consumeErrors=True)
        if self.uploader is not None:
            await self.run_in_thread(self.uploader.stop, 5.0)

    def _schedule(self, name: str, delay: float, fn: Callable[[], Any]) -> None:
        def fire() -> None:
            self._timers.pop(name, None)
            d = ensureDeferred(fn())
            d.addErrback(lambda f: log.failure("recording {name} run failed", f, name=name))
            d.addBoth(lambda _: self._schedule(name, self._interval(name), fn) if self.running else None)

        self._timers[name] = self.clock.call_later(delay, fire)

    def poke(self) -> None:
        """Re-evaluate the policies now (a policy or plan changed through the API)."""
        if not self.running or not self.ready:
            return
        timer = self._timers.pop("check", None)
        if timer is not None and timer.active():
            timer.cancel()
            self._schedule("check", 0.0, self._check)
        elif timer is not None:
            self._timers["check"] = timer  # running now; it re-arms itself

    def _interval(self, name: str) -> float:
        return self.config.check_interval if name == "check" else self.config.retention_interval

    def _track(self, d: Deferred[Any], what: str) -> Deferred[Any]:
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure("recording: {what} failed", f, what=what))
        return d

    # -- recovery ----------------------------------------------------------------------
    async def recover(self) -> None:
        open_rows = await self.db.run("open_segments", rq.open_segments_txn)
        for seg in open_rows:
            fixed = await self._pool("storage")(repair, self.storage, seg.key, seg.start)
            if fixed is None:
                await self.db.run("delete_segment", rq.delete_segment_by_key_txn, seg.key)
                log.warn("recovery: segment {key} was open and its file is gone; row removed", key=seg.key)
                continue
            await self.db.run("close_segment", rq.close_segment_txn, seg.channel_id, seg.key, start=seg.start,
                              end=fixed.end, size=fixed.size, keyframes=fixed.keyframes, has_audio=seg.has_audio,
                              backend=seg.backend)
            self.stats.recovered += 1
            self.cache.invalidate(seg.channel_id)
            log.info("recovery: segment {key} was open at a crash: cut {cut} torn bytes, {n} keyframes, "
                     "{s:.1f} s, closed", key=seg.key, cut=fixed.truncated, n=len(fixed.keyframes),
                     s=fixed.end - fixed.start)
        files = await self._pool("storage")(self.storage.files)
        known = await self.db.run("known_keys", rq.known_keys_txn)
        for key in files:
            if key in known:
                continue
            parsed = parse_key(key)
            if parsed is None:
                self.stats.unindexed.append(key)
                log.warn("recovery: {key} is not a recording this platform names; left alone, not indexed", key=key)
                continue
            channel_id, start = parsed
            fixed = await self._pool("storage")(repair, self.storage, key, start)
            if fixed is None or not fixed.keyframes:
                self.stats.unindexed.append(key)
                log.warn("recovery: {key} holds no keyframe; left alone, not indexed", key=key)
                continue
            await self.db.run("adopt_segment", rq.adopt_segment_txn, channel_id, key, start=start, end=fixed.end,
                              size=fixed.size, keyframes=fixed.keyframes, backend=self.backend)
            self.stats.adopted += 1
            self.cache.invalidate(channel_id)
            log.info("recovery: adopted {key} ({s:.1f} s) into the index", key=key, s=fixed.end - fixed.start)
        if self.uploader is not None:
            for seg in await self.db.run("pending_uploads", rq.pending_uploads_txn):
                self.uploader.submit(seg.id, seg.key)

    # -- policies ---------------------------------------------------------------------------
    def wanted(self, policy: rq.ActivePolicy, wall: float) -> bool:
        if policy.mode == "continuous":
            return True
        if policy.mode == "plan" and policy.schedule is not None:
            return covers(policy.schedule, dt.datetime.fromtimestamp(wall, self.tz))
        return False

    async def _check(self) -> None:
        policies = await self.db.run("active_policies", rq.active_policies_txn)
        self.apply(policies)
        self.storage.check_health()

    def apply(self, policies: list[rq.ActivePolicy]) -> None:
        """Start what should record, stop what should not (reactor thread)."""
        wall = self.clock.time()
        desired = {p.channel_id: p for p in policies if self.wanted(p, wall)}
        for cid in list(self.channels):
            if cid not in desired:
                self._stop_channel(cid, "policy")
        for cid, policy in desired.items():
            rec = self.channels.get(cid)
            if rec is None:
                rec = self.channels[cid] = Recorded(cid, policy.device_id, self.writer.sink(cid, self.clock.time))
                log.info("recording {id}: started by its {mode} policy", id=cid, mode=policy.mode)
            rec.device_id = policy.device_id
            self._ensure(rec)

    def _ensure(self, rec: Recorded) -> None:
        if rec.starting or (rec.stream is not None and rec.stream.state in ("inviting", "playing")):
            return
        if self.live is None:
            rec.error = "this platform has no media receiver"
            return
        if rec.device_id is None:
            rec.error = "the channel is in no device's catalog"
            return
        if self.devices.address_of(rec.device_id) is None:
            rec.error = "device offline; recording resumes when it registers"
            rec.retry_at = 0.0  # back online: INVITE at once
            return
        if self.clock.seconds() < rec.retry_at:
            return
        rec.starting = True
        d = ensureDeferred(self.live.play(rec.device_id, rec.channel_id))
        d.addCallbacks(lambda stream: self._playing(rec, stream), lambda f: self._play_failed(rec, f.value))

    def _playing(self, rec: Recorded, stream: LiveStream) -> None:
        assert self.live is not None  # it played the stream
        rec.starting = False
        if self.channels.get(rec.channel_id) is not rec:
            return  # stopped while the INVITE was in flight; the stream idles out alone
        rec.stream = stream
        rec.failures = 0
        rec.error = None

        def closed(s: LiveStream) -> None:
            if rec.stream is not s:
                return
            rec.stream = None
            rec.sink.close()  # end the segment: the next stream's timestamps start afresh
            rec.failures += 1
            rec.retry_at = self.clock.seconds() + self._backoff(rec.failures)
            why = getattr(s, "error", None) or "closed"
            rec.error = f"stream ended ({s.state}: {why}); re-INVITE in {self._backoff(rec.failures):g} s"
            log.warn("recording {id}: {error}", id=rec.channel_id, error=rec.error)

        rec.on_closed = closed
        stream.on_closed.append(closed)
        self.live.attach(stream, rec.sink)
        log.info("recording {id}: stream attached", id=rec.channel_id)

    def _play_failed(self, rec: Recorded, error: BaseException) -> None:
        rec.starting = False
        rec.failures += 1
        delay = self._backoff(rec.failures)
        rec.retry_at = self.clock.seconds() + delay
        message = error.message if isinstance(error, DomainError) else str(error)
        rec.error = f"{message}; retry in {delay:g} s"
        log.warn("recording {id}: cannot start the stream: {error}", id=rec.channel_id, error=rec.error)

    def _backoff(self, failures: int) -> float:
        return float(min(self.config.retry_max, 2 ** min(failures, 16)))

    def _stop_channel(self, channel_id: str, why: str) -> None:
        rec = self.channels.pop(channel_id, None)
        if rec is None:
            return
        stream = rec.stream
        rec.stream = None
        if stream is not None:
            if rec.on_closed is not None and rec.on_closed in stream.on_closed:
                stream.on_closed.remove(rec.on_closed)
            if self.live is not None:
                self.live.detach(stream, rec.sink)
        rec.sink.close()
        log.info("recording {id}: stopped ({why})", id=channel_id, why=why)

    # -- writer events (reactor thread) ------------------------------------------------
    def _from_writer(self, event: Event) -> None:
        self.call_from_thread(self.on_event, event)

    def on_event(self, event: Event) -> None:
        rec = self.channels.get(event.channel_id)
        if isinstance(event, SegmentOpened):
            if rec is not None:
                rec.open_key, rec.open_from = event.key, event.start
            self._track(self.db.run("open_segment", rq.open_segment_txn, event.channel_id, event.key, event.start,
                                    self.backend), f"indexing {event.key}")
        elif isinstance(event, SegmentClosed):
            if rec is not None and rec.open_key == event.key:
                rec.open_key, rec.open_from = None, None
            self.stats.segments_closed += 1
            d = self.db.run("close_segment", rq.close_segment_txn, event.channel_id, event.key, start=event.start,
                            end=event.end, size=event.size, keyframes=event.index, has_audio=event.has_audio,
                            backend=self.backend)
            d.addCallback(lambda seg_id: self._closed(event, seg_id))
            self._track(d, f"closing {event.key}")
        elif isinstance(event, WriteFailed):
            self.stats.write_errors += 1
            if rec is not None:
                rec.error = event.error
        for observer in tuple(self.observers):
            try:
                observer(event)
            except Exception:  # noqa: BLE001 - an observer's bug must not stop the index; logged
                log.failure("recording observer {observer!r} failed on {event}", observer=observer, event=event)

    def _closed(self, event: SegmentClosed, seg_id: int) -> None:
        self.cache.invalidate(event.channel_id)
        if self.uploader is not None:
            self.uploader.submit(seg_id, event.key)

    def _upload_done_thread(self, segment_id: int, error: str | None) -> None:
        self.call_from_thread(self._upload_done, segment_id, error)

    def _upload_done(self, segment_id: int, error: str | None) -> None:
        if error is not None:
            return  # left "closed": the next retention run submits it again
        keep = self.config.keep_local_hours > 0
        self._track(self.db.run("mark_uploaded", rq.mark_uploaded_txn, segment_id, at=self.clock.time(),
                                keep_local=keep), f"marking segment {segment_id} uploaded")
        if not keep:
            d = self.db.run("get_segment", rq.get_segment_txn, segment_id)
            d.addCallback(lambda seg: self._pool("retention")(self.storage.delete, seg.key) if seg is not None
                          else None)
            self._track(d, f"removing the local copy of segment {segment_id}")

    # -- retention -------------------------------------------------------------------------
    async def _retention(self) -> None:
        if not self.storage.healthy:
            # A hung mount would take the thread that deletes with it: wait for the probe to pass.
            log.warn("retention skipped: storage unhealthy ({error})", error=self.storage.health_error)
            return
        await self.retention()

    async def retention(self) -> int:
        """One retention pass: age, quota, free space, expired local copies. Returns segments deleted."""
        cfg = self.config
        now = self.clock.time()
        deleted = 0
        overrides = await self.db.run("retention_overrides", rq.retention_overrides_txn)
        expired = await self.db.run("expired_segments", rq.expired_segments_txn, now, cfg.retention_days, overrides)
        deleted += await self._delete(expired, "older than the retention")
        if cfg.quota_bytes:
            total = sum(u["bytes"] for u in (await self.db.run("usage", rq.usage_txn)).values())
            while total > cfg.quota_bytes:
                oldest = await self.db.run("oldest_segments", rq.oldest_segments_txn, 50)
                if not oldest:
                    break
                batch = []
                for seg in oldest:
                    if total <= cfg.quota_bytes:
                        break
                    batch.append(seg)
                    total -= seg.size
                deleted += await self._delete(batch, f"over the quota of {cfg.quota_bytes} bytes")
        if cfg.min_free_bytes:
            disk = await self._pool("retention")(self.storage.disk)
            need = cfg.min_free_bytes - disk.free
            while need > 0:
                oldest = [s for s in await self.db.run("oldest_segments", rq.oldest_segments_txn, 50) if s.local]
                if not oldest:
                    log.warn("recording: free space {free} below record.min_free_bytes and no recording left "
                             "to delete", free=disk.free)
                    break
                batch = []
                for seg in oldest:
                    if need <= 0:
                        break
                    batch.append(seg)
                    need -= seg.size
                deleted += await self._delete(batch, "disk free space below record.min_free_bytes")
        if self.uploader is not None:
            if cfg.keep_local_hours > 0:
                old = await self.db.run("expired_local_copies", rq.expired_local_copies_txn,
                                        now - cfg.keep_local_hours * 3600)
                if old:
                    def drop_local() -> None:
                        for seg in old:
                            self.storage.delete(seg.key)

                    await self._pool("retention")(drop_local)
                    await self.db.run("mark_local_removed", rq.mark_local_removed_txn, [s.id for s in old])
            for seg in await self.db.run("pending_uploads", rq.pending_uploads_txn):
                self.uploader.submit(seg.id, seg.key)
        self._usage = await self.db.run("usage", rq.usage_txn)
        return deleted

    async def _delete(self, segs: list[rq.SegmentRecord], why: str) -> int:
        if not segs:
            return 0

        def remove() -> None:
            for seg in segs:
                self.storage.delete(seg.key)
                if seg.state == "uploaded" and self.s3 is not None:
                    self.s3.delete(seg.key)

        await self._pool("retention")(remove)
        await self.db.run("delete_segments", rq.delete_segments_txn, [s.id for s in segs])
        for seg in segs:
            self.cache.invalidate(seg.channel_id)
        size = sum(s.size for s in segs)
        self.stats.deleted_segments += len(segs)
        self.stats.deleted_bytes += size
        log.info("retention: deleted {n} segment(s), {size} bytes, oldest {key} ({why})", n=len(segs), size=size,
                 key=segs[0].key, why=why)
        return len(segs)

    # -- queries for the API ---------------------------------------------------------------
    def day_bounds(self, day: dt.date) -> tuple[float, float]:
        tz = self.tz or dt.datetime.now().astimezone().tzinfo
        start = dt.datetime.combine(day, dt.time(), tz)
        return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()

    async def timeline(self, channel_id: str, day: dt.date) -> dict[str, Any]:
        key = (channel_id, day.isoformat())
        rec = self.channels.get(channel_id)
        cached = self.cache.get(key) if rec is None or rec.open_from is None else None
        start, end = self.day_bounds(day)
        if cached is None:
            segs = await self.db.run("segments_between", rq.segments_between_txn, channel_id, start, end)
            cached = (segs, timeline(segs, start, end))
            self.cache.put(key, cached)
        segs, result = cached
        if rec is not None and rec.open_from is not None:
            result = timeline(segs, start, end, rec.open_from, self.clock.time())
        return {"start": start, "end": end, "segments": segs, **result}

    def read(self, seg: rq.SegmentRecord, offset: int, length: int | None) -> bytes:
        """Bytes of a segment, from the local copy or the bucket (blocking: in a thread)."""
        if seg.local and self.storage.exists(seg.key):
            return self.storage.read(seg.key, offset, length)
        if seg.state == "uploaded" and self.s3 is not None:
            return self.s3.read(seg.key, offset, length)
        raise FileNotFoundError(f"segment {seg.key} has no readable copy")

    def new_download(self, channel_id: str, start: float, end: float, total: float) -> DownloadJob:
        job = DownloadJob(next(self._download_ids), channel_id, start, end, Progress(total), self.clock.time())
        self.downloads[job.id] = job
        # Keep the last 50 finished jobs for the progress resource.
        finished = sorted((j for j in self.downloads.values() if j.finished is not None), key=lambda j: j.id)
        for old in finished[:-50]:
            del self.downloads[old.id]
        return job

    def state(self) -> StorageState:
        """Storage state for the API (reactor thread; no blocking call)."""
        w = self.writer
        storage = self.storage
        local_usage = self._usage.get("local", {})
        stalled = w.stalled(self.config.nas_timeout)
        backends = [StorageBackend(
            name="local",
            path=str(storage.root),
            healthy=storage.healthy and not stalled,
            error=storage.health_error or ("writer stalled (hung disk?)" if stalled else None),
            used_bytes=local_usage.get("local_bytes", 0) + self._usage.get("s3", {}).get("local_bytes", 0),
            segments=local_usage.get("segments", 0),
            free_bytes=storage.last_disk.free if storage.last_disk is not None else None,
            total_bytes=storage.last_disk.total if storage.last_disk is not None else None,
            queue_bytes=w.queue.bytes,
            queue_frames=len(w.queue),
            queue_limit=w.queue.limit,
            dropped_frames=w.dropped_frames,
            written_bytes=w.written_bytes,
            write_errors=w.errors,
        )]
        if self.s3 is not None and self.uploader is not None:
            s3_usage = self._usage.get("s3", {})
            backends.append(StorageBackend(
                name="s3",
                bucket=self.s3.bucket,
                healthy=self.uploader.failures == 0 or self.uploader.backlog == 0,
                used_bytes=s3_usage.get("bytes", 0),
                segments=s3_usage.get("segments", 0),
                upload_backlog=self.uploader.backlog,
                uploaded=self.uploader.uploaded,
                uploaded_bytes=self.uploader.uploaded_bytes,
                upload_failures=self.uploader.failures,
            ))
        s = self.stats
        return StorageState(
            ready=self.ready,  # crash recovery done, policies applied from now on
            backend=self.backend,  # type: ignore[arg-type]
            segment_seconds=self.config.segment_seconds,
            backends=backends,
            channels=[self.channel_state(r) for r in sorted(self.channels.values(), key=lambda r: r.channel_id)],
            retention=Retention(days=self.config.retention_days, quota_bytes=self.config.quota_bytes,
                                min_free_bytes=self.config.min_free_bytes, deleted_segments=s.deleted_segments,
                                deleted_bytes=s.deleted_bytes),
            recovery=Recovery(repaired=s.recovered, adopted=s.adopted, unindexed=list(s.unindexed)),
        )

    def channel_status(self, channel_id: str) -> RecordingStatus | None:
        """The channel's live recording state while it is recorded."""
        r = self.channels.get(channel_id)
        return self.channel_state(r) if r is not None else None

    @staticmethod
    def channel_state(r: Recorded) -> RecordingStatus:
        return RecordingStatus(channel_id=r.channel_id, device_id=r.device_id,
                               recording=r.stream is not None and r.stream.state == "playing",
                               segment=r.open_key, dropped_frames=r.sink.dropped, error=r.error)
