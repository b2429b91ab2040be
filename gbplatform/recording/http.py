"""The recording API (``RecordingRoutes``, mounted into ``gbplatform.api.app``) and its helpers.

Routes: record plans and per-channel policies, the recordings timeline,
storage state, downloads, and playback of what was recorded: VOD HLS
(``/vod/<channel>/index.m3u8`` and its segments, with byte ranges) and an
MP4 download (``/vod/<channel>.mp4``). Media routes take the token as
``?token=`` too (RFC 6750 §2.3), the API token or a VOD playback token.

Helpers: byte ranges and a paced download producer.

``byte_range`` reads a single ``Range: bytes=`` header (RFC 9110 §14.1.2);
HLS players fetch ``EXT-X-BYTERANGE`` parts with exactly that. Several
ranges in one header are answered with the first one only (a client must
accept a 206 with the range it got, RFC 9110 §15.3.7).

``Spool`` carries an MP4 download from the remux thread to the client. The
thread writes the MP4 into an unlinked temporary file as fast as it muxes
and returns its thread to the pool; the reactor side is the
``IPushProducer`` registered on the request, which reads the file a chunk
at a time and writes it to the transport while the transport has not
paused it (a slow client pauses it when the transport's buffer fills).
So a slow client costs spool bytes on disk, not a thread, and no more than
one chunk of memory (issue 8, item 23). The spool is bounded too: past
``limit`` bytes not yet sent, the thread waits for the client after all,
so one endless download cannot fill the disk. A client that goes away
cancels the spool, which ends the remux at its next write. The file is
closed by whichever side finishes last, so the thread never writes to a
descriptor the reactor closed (and the kernel may have handed out again).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated, set_header
from gbplatform.auth.play_tokens import VOD
from gbplatform.core.errors import DomainError
from gbplatform.core.errors import NotFound as Missing
from gbplatform.db import queries as q
from gbplatform.recording import queries as rq
from gbplatform.recording import shapes as record_shapes
from gbplatform.recording.playback import (
    Cancelled,
    Range,
    gop_ranges,
    interval_urls,
    remux_mp4,
    rtsp_vod_base,
    vod_playlist,
)
from media.hls import HLS_TYPE, TS_TYPE

if TYPE_CHECKING:
    from gbplatform.recording.manager import RecordingManager

__all__ = ["MP4_TYPE", "SPOOL_BYTES", "RangeNotSatisfiable", "RecordingOff", "RecordingRoutes", "Spool",
           "byte_range"]

log = Logger()

MP4_TYPE = b"video/mp4"
SPOOL_BYTES = 1 << 30  # a download's bytes muxed ahead of its client, at most (on disk)
CHUNK = 64 * 1024  # bytes read from the spool per transport write
_RANGE = re.compile(rb"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*(?:,.*)?", re.DOTALL)


class RecordingOff(DomainError):
    """The platform runs without a recording manager (API: 503)."""

    status = 503
    code = "recording_unavailable"


class RangeNotSatisfiable(DomainError):
    status = 416
    code = "range_not_satisfiable"


def byte_range(header: bytes | None, size: int) -> tuple[int, int]:
    """``(first, last)`` byte positions, inclusive, for a ``Range`` header over ``size`` bytes."""
    if size <= 0:
        raise RangeNotSatisfiable("the segment is empty")
    if not header:
        return 0, size - 1
    m = _RANGE.fullmatch(header)
    if m is None:
        return 0, size - 1  # RFC 9110 §14.2: an unparseable Range is ignored
    first_s, last_s = m.group(1), m.group(2)
    if not first_s:
        if not last_s:
            return 0, size - 1
        n = int(last_s)  # a suffix: the last n bytes
        return max(0, size - n), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(f"bytes {first}-{last_s.decode() or ''} outside a {size}-byte segment")
    return first, last


@implementer(IPushProducer)
class Spool:
    """See the module docstring. ``write`` runs on the remux thread, the rest on the reactor."""

    def __init__(self, consumer: Any, call_from_thread: Callable[..., object], *,
                 directory: str | None = None, limit: int = SPOOL_BYTES, chunk: int = CHUNK) -> None:
        self._consumer = consumer  # an IConsumer: the download's request
        self._call = call_from_thread
        self.limit = limit
        self.chunk = chunk
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by _release()
        self._fd = self._file.fileno()
        self._cond = threading.Condition(threading.Lock())
        self.written = 0  # bytes the thread put in the spool
        self.sent = 0  # bytes handed to the consumer
        self.paused = False
        self.cancelled = False
        self._ended = False  # the thread writes no more
        self._wake_pending = False
        self._users = 2  # the thread and the reactor; the last to let go closes the file
        self._closed = False  # the reactor let go
        self._done = False  # everything sent, or cancelled
        self._waiters: list[Deferred[None]] = []
        self.full = threading.Event()  # set while the thread waits for the client (tests, state)

    # -- remux thread ---------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Append ``data``; waits only while ``limit`` bytes are unsent. Raises ``Cancelled``."""
        with self._cond:
            while not self.cancelled and self.written - self.sent >= self.limit:
                self.full.set()
                self._cond.wait()
            self.full.clear()
            if self.cancelled:
                raise Cancelled("the client went away")
            at = self.written
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, at)
            at += n
            view = view[n:]
        with self._cond:
            self.written = at
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._call(self._pump)

    def end(self) -> None:
        """The thread is done writing (after success or failure): call it last, from the thread."""
        with self._cond:
            self._ended = True
        self._call(self._pump)
        self._release()

    # -- reactor ---------------------------------------------------------------------
    def drained(self) -> Deferred[None]:
        """Fires once every written byte went to the consumer (after ``end``), or on cancel."""
        d: Deferred[None] = Deferred()
        if self._done:
            d.callback(None)
            return d
        self._waiters.append(d)
        self._pump()
        return d

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.cancel()

    def cancel(self) -> None:
        """The client is gone: the thread stops at its next write; nothing more is sent."""
        with self._cond:
            if self.cancelled:
                return
            self.cancelled = True
            self._cond.notify_all()
        self._finish()

    def close(self) -> None:
        """The reactor is done with the spool (the response ended): cancel, let go of the file."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self._release()

    def _pump(self) -> None:
        with self._cond:
            self._wake_pending = False
        while not self.paused and not self.cancelled:
            with self._cond:
                available, ended = self.written - self.sent, self._ended
            if available <= 0:
                if ended:
                    self._finish()
                return
            data = os.pread(self._fd, min(available, self.chunk), self.sent)
            if not data:  # cannot happen with a regular file; do not spin if it does
                raise OSError(f"download spool: no bytes at {self.sent} of {self.written}")
            with self._cond:
                self.sent += len(data)
                self._cond.notify_all()
            self._consumer.write(data)  # may pause us at once: the loop checks

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _release(self) -> None:
        with self._cond:
            self._users -= 1
            last = self._users == 0
        if last:
            self._file.close()


class RecordingRoutes(Routes):
    """``/api/v1/record/...``, ``/api/v1/channels/<id>/record(ings)``, ``/api/v1/storage`` and ``/vod/...``."""

    app = Klein()

    def _recording(self) -> RecordingManager:
        rec = self.platform.recording
        if rec is None:
            raise RecordingOff("this platform does not record")
        return rec

    @app.route("/api/v1/record/plans", methods=["GET"])
    @authenticated
    async def list_record_plans(self, request: Request) -> bytes:
        items = await self.platform.db.run("list_plans", rq.list_plans_txn)
        return self._json(request, record_shapes.RecordPlanList(items=[schemas.plan_json(p) for p in items]))

    @app.route("/api/v1/record/plans", methods=["POST"])
    @authenticated
    async def create_record_plan(self, request: Request) -> bytes:
        body = schemas.parse_plan(self._body(request), partial=False)
        assert body.name is not None and body.schedule is not None
        plan = await self.platform.db.run("create_plan", rq.create_plan_txn, body.name, body.schedule, at=self._at())
        set_header(request, b"Location", f"/api/v1/record/plans/{plan.id}".encode())
        self._record_changed()
        return self._json(request, schemas.plan_json(plan), 201)

    @app.route("/api/v1/record/plans/<int:plan_id>", methods=["GET"])
    @authenticated
    async def get_record_plan(self, request: Request, plan_id: int) -> bytes:
        plan_id = schemas.path_id("plan_id", plan_id)
        plan = await self.platform.db.run("get_plan", rq.get_plan_txn, plan_id)
        return self._json(request, schemas.plan_json(plan))

    @app.route("/api/v1/record/plans/<int:plan_id>", methods=["PUT"])
    @authenticated
    async def update_record_plan(self, request: Request, plan_id: int) -> bytes:
        plan_id = schemas.path_id("plan_id", plan_id)
        body = schemas.parse_plan(self._body(request), partial=True)
        plan = await self.platform.db.run("update_plan", rq.update_plan_txn, plan_id, name=body.name,
                                          schedule=body.schedule, at=self._at())
        self._record_changed()
        return self._json(request, schemas.plan_json(plan))

    @app.route("/api/v1/record/plans/<int:plan_id>", methods=["DELETE"])
    @authenticated
    async def delete_record_plan(self, request: Request, plan_id: int) -> bytes:
        plan_id = schemas.path_id("plan_id", plan_id)
        await self.platform.db.run("delete_plan", rq.delete_plan_txn, plan_id)
        request.setResponseCode(204)
        return b""

    def _record_changed(self) -> None:
        rec = self.platform.recording
        if rec is not None:
            rec.poke()

    def _channel_status(self, channel_id: str) -> record_shapes.RecordingStatus | None:
        rec = self.platform.recording
        return rec.channel_status(channel_id) if rec is not None else None

    @app.route("/api/v1/channels/<channel_id>/record", methods=["GET"])
    @authenticated
    async def get_record_policy(self, request: Request, channel_id: str) -> bytes:
        policy = await self.platform.db.run("get_policy", rq.get_policy_txn, channel_id)
        return self._json(request, schemas.policy_json(policy, self._channel_status(channel_id)))

    @app.route("/api/v1/channels/<channel_id>/record", methods=["PUT"])
    @authenticated
    async def put_record_policy(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_policy(self._body(request))
        channel = await self.platform.db.run("get_channel", q.get_channel_txn, channel_id)
        if channel is None and body.mode != "off":
            raise Missing(f"channel {channel_id} not found")
        policy = await self.platform.db.run("put_policy", rq.put_policy_txn, channel_id, mode=body.mode,
                                            plan_id=body.plan_id, retention_days=body.retention_days, at=self._at())
        log.info("channel {id}: recording policy {mode}", id=channel_id, mode=body.mode)
        self._record_changed()
        return self._json(request, schemas.policy_json(policy, self._channel_status(channel_id)))

    @app.route("/api/v1/channels/<channel_id>/recordings", methods=["GET"])
    @authenticated
    async def channel_recordings(self, request: Request, channel_id: str) -> bytes:
        day = schemas.parse_day(request.args)
        result = await self._recording().timeline(channel_id, day)

        rtsp_base = rtsp_vod_base(request.getHeader(b"host"), self.platform.config.media.rtsp_port)

        token = self.platform.play_tokens.issue(VOD, channel_id)

        def urls(a: float, b: float) -> record_shapes.RecordUrls:
            return interval_urls(channel_id, a, b, rtsp_base, token)

        return self._json(request, schemas.timeline_json(channel_id, day, result, urls))

    @app.route("/api/v1/storage", methods=["GET"])
    @authenticated
    async def storage_state(self, request: Request) -> bytes:
        return self._json(request, self._recording().state())

    @app.route("/api/v1/record/downloads", methods=["GET"])
    @authenticated
    async def list_downloads(self, request: Request) -> bytes:
        jobs = sorted(self._recording().downloads.values(), key=lambda j: j.id)
        return self._json(request, record_shapes.DownloadList(items=[schemas.download_json(j) for j in jobs]))

    async def _vod_ranges(self, request: Request, channel_id: str) -> tuple[float, float, list[Range]]:
        rec = self._recording()
        start, end = schemas.parse_time_range(request.args)
        segs = await self.platform.db.run("segments_between", rq.segments_between_txn, channel_id, start, end)
        ranges = gop_ranges(segs, start, end)
        if not ranges:
            raise Missing(f"channel {channel_id} has no recording between {schemas.iso_epoch(start)} and "
                          f"{schemas.iso_epoch(end)}")
        del rec
        return start, end, ranges

    @app.route("/vod/<channel_id>/index.m3u8", methods=["GET"])
    async def vod_hls(self, request: Request, channel_id: str) -> bytes:
        token = request.args.get(b"token", [None])[0]
        self.authorize(request, query_token=True, media=(VOD, channel_id))
        _, _, ranges = await self._vod_ranges(request, channel_id)
        suffix = "" if token is None else "?token=" + urllib.parse.quote(token.decode("utf-8", "replace"), safe="")
        playlist = vod_playlist(ranges, lambda seg: f"seg/{seg.id}.ts{suffix}")
        request.setResponseCode(200)
        set_header(request, b"Content-Type", HLS_TYPE)
        set_header(request, b"Cache-Control", b"no-store")
        return playlist.encode("ascii")

    @app.route("/vod/<channel_id>/seg/<int:segment_id>.ts", methods=["GET"])
    async def vod_segment(self, request: Request, channel_id: str, segment_id: int) -> bytes:
        self.authorize(request, query_token=True, media=(VOD, channel_id))
        rec = self._recording()
        segment_id = schemas.path_id("segment_id", segment_id)
        seg = await self.platform.db.run("get_segment", rq.get_segment_txn, segment_id)
        if seg is None or seg.channel_id != channel_id or seg.state == "open":
            raise Missing(f"channel {channel_id} has no recorded segment {segment_id}")
        first, last = byte_range(request.getHeader(b"range"), seg.size)
        data: bytes = await self._blocking("vod")(rec.read, seg, first, last - first + 1)
        if (first, last) != (0, seg.size - 1):
            request.setResponseCode(206)
            set_header(request, b"Content-Range", f"bytes {first}-{first + len(data) - 1}/{seg.size}".encode())
        else:
            request.setResponseCode(200)
        set_header(request, b"Accept-Ranges", b"bytes")
        set_header(request, b"Content-Type", TS_TYPE)
        return data

    @app.route("/vod/<channel_id>.mp4", methods=["GET"])
    async def vod_mp4(self, request: Request, channel_id: str) -> bytes:
        self.authorize(request, query_token=True, media=(VOD, channel_id))
        rec = self._recording()
        start, end, ranges = await self._vod_ranges(request, channel_id)
        total = sum(r.duration for r in ranges)
        # The remux writes to a spool file at disk speed and gives its thread
        # back; the client reads the spool at its own pace (issue 8, item 23).
        try:
            spool = Spool(request, rec.call_from_thread)
        except OSError as e:
            log.error("download of {ch}: no spool file: {e}", ch=channel_id, e=e)
            raise RecordingOff(f"no room to build the download: {e}") from e
        job = rec.new_download(channel_id, start, end, total)
        request.setResponseCode(200)
        set_header(request, b"Content-Type", MP4_TYPE)
        set_header(request, b"Content-Disposition",
                    f'attachment; filename="{channel_id}-{int(ranges[0].start)}.mp4"'.encode())
        set_header(request, b"X-Download-Id", str(job.id).encode())
        set_header(request, b"X-Content-Duration", f"{total:.3f}".encode())
        request.write(b"")  # type: ignore[no-untyped-call]
        request.registerProducer(spool, True)  # type: ignore[no-untyped-call]
        gone = request.notifyFinish()
        gone.addErrback(lambda _: spool.cancel())
        workers = self.platform.workers
        forget = workers.on_stop(spool.cancel) if workers is not None else None

        def produce() -> None:  # on a remux thread
            try:
                remux_mp4(ranges, rec.read, spool.write, job.progress)
            finally:
                spool.end()

        try:
            await self._blocking("remux")(produce)
            await spool.drained()
            if spool.cancelled:
                raise Cancelled("the client went away")
            job.progress.state = "done"
        except (Cancelled, CancelledError):
            job.progress.state = "cancelled"
            log.info("download {id} of {ch}: the client went away", id=job.id, ch=channel_id)
        except Exception as e:  # noqa: BLE001 - headers are sent: log, record, end the response
            job.progress.state, job.progress.error = "failed", str(e)
            log.failure("download {id} of {ch} failed", id=job.id, ch=channel_id)
        finally:
            job.finished = self.platform.clock.time()
            if forget is not None:
                forget()
            request.unregisterProducer()  # type: ignore[no-untyped-call]
            spool.close()
        return b""
