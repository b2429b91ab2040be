"""``DeviceSnapshots``: pictures a GB/T 28181-2022 device takes and uploads itself (§9.14).

Theory of operation
-------------------
``request(channel, count, interval)`` opens a *session*: a random session ID
and, kept with it, a random upload token (``secrets``, 192 bits). It sends
the channel's owner a DeviceConfig whose ``SnapShotConfig`` (``sip.manscdp.snapshot``)
carries ``SnapNum``, ``Interval``, ``SessionID`` and the ``UploadURL``
``<api base>/api/v1/snapshot-uploads/<session>?token=<token>`` (the base is
``http.advertised_url``, else built from the media address and ``http.port``:
the device has no API token, the URL is its credential). A 2016 device is
refused first (422, ``ControlService.require_2022``); an unknown channel is
404, an offline device 409, no answer 504, an answer other than OK 502.

The device uploads each JPEG to the URL (``accept``: POST or PUT, a raw body
or multipart/form-data). An upload is refused, with a throttled log line,
when the session is unknown (404), the token wrong (403), the session
expired (410) or already has its ``SnapNum`` pictures (409), the body is no
JPEG (415: it must start with SOI ``FFD8`` and end with EOI ``FFD9``, ITU-T
T.81 §B.1.1.3) or is larger than ``snapshot.max_bytes`` (413). A picture is
written to ``<data_dir>/device-snapshots/<device>/<channel>/<session>-<seq>.jpg``
on a worker pool, never on the reactor, then recorded in ``device_snapshots``.

The device's ``UploadSnapShotFinished`` Notify (§A.2.5) marks the session
finished, names the pictures uploaded without a name after its
``SnapShotFileID`` list, and is answered with a ``Response`` ``Result`` OK
(ERROR for a session it does not own or that is unknown). A session not
finished ``snapshot.upload_timeout`` seconds after its last picture was due
expires: later uploads get 410, and its state stays visible
(``GET /api/v1/snapshot-sessions/{id}``). Every step is published on the
event bus as a ``snapshot`` event (``state`` waiting, uploaded, finished, expired).

Sessions live in memory (the last ``MAX_SESSIONS``; the oldest ended ones
are forgotten first); after a restart a session is known from its stored
pictures. Pictures older than ``snapshot.retention_days`` are purged every
``snapshot.purge_interval`` seconds, files first, on the ``retention`` pool.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.core.clock import DelayedCallLike, utc_datetime
from gbplatform.core.errors import Conflict, DeviceRejected, DomainError, NotFound
from gbplatform.snapshots import store
from sip import manscdp

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext

__all__ = ["JPEG_EOI", "JPEG_SOI", "MAX_SESSIONS", "BadUpload", "DeviceSnapshots", "DeviceSnapshotsService", "NotJpeg", "PictureTooLarge",
           "SessionExpired", "SessionFull", "UploadSession", "WrongUploadToken", "check_jpeg"]

log = Logger()

MAX_SESSIONS: Final = 1000
JPEG_SOI: Final = b"\xff\xd8"  # ITU-T T.81 Table B.1: start of image
JPEG_EOI: Final = b"\xff\xd9"  # end of image
_PURGE_BATCH: Final = 500
_FILE_ID: Final = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class WrongUploadToken(DomainError):
    status = 403
    code = "invalid_token"


class SessionExpired(DomainError):
    status = 410
    code = "session_expired"


class SessionFull(DomainError):
    status = 409
    code = "session_full"


class PictureTooLarge(DomainError):
    status = 413
    code = "too_large"


class NotJpeg(DomainError):
    status = 415
    code = "not_jpeg"


class BadUpload(DomainError):
    status = 400
    code = "bad_upload"


class SnapshotStorageFailed(DomainError):
    status = 507
    code = "storage_failed"


def check_jpeg(data: bytes) -> None:
    """Refuse anything but one JPEG: SOI first, EOI last (ITU-T T.81 §B.1.1.3); trailing CR/LF/NUL
    padding some firmware adds after EOI is tolerated."""
    if len(data) < 4 or not data.startswith(JPEG_SOI + b"\xff"):
        raise NotJpeg("the upload is not a JPEG (it does not start with FFD8)")
    if not data.rstrip(b"\r\n\x00").endswith(JPEG_EOI):
        raise NotJpeg("the JPEG is truncated (it does not end with FFD9)")


@dataclass
class UploadSession:
    """One SnapShotConfig's batch: what was asked and what came back."""

    session_id: str
    token: str
    device_id: str
    channel_id: str
    count: int
    interval: int
    created_at: float  # wall clock, epoch seconds
    expires_at: float
    received: int = 0
    pending: int = 0  # uploads accepted and still being written
    seqs: int = 0  # uploads accepted so far: the next one's ``seq`` (a failed write's number is not reused)
    file_ids: tuple[str, ...] = ()
    finished_at: float | None = None
    expired: bool = False
    timer: DelayedCallLike | None = field(default=None, repr=False)

    @property
    def state(self) -> str:
        if self.finished_at is not None:
            return "finished"
        if self.expired:
            return "expired"
        return "uploading" if self.received else "waiting"

    @property
    def ended(self) -> bool:
        return self.finished_at is not None or self.expired

    def generated_prefix(self) -> str:
        return f"{self.session_id}-"


class DeviceSnapshots:
    """Snapshot sessions, uploads, the UploadSnapShotFinished listener and the retention purge."""

    def __init__(self, context: AppContext) -> None:
        self.ctx = context
        self.config = context.config.snapshot
        self.clock = context.clock
        self.root = Path(context.config.storage.data_dir) / "device-snapshots"
        self.sessions: dict[str, UploadSession] = {}
        # Blocking work where the platform has no worker pools (unit tests set a synchronous one).
        self.run_in_thread: Callable[..., Deferred[Any]] = deferToThread
        self._purge_timer: DelayedCallLike | None = None
        self._purging = False  # between start() and stop(): a purge that ends after stop() arms no next one
        context.router.on_manscdp("Notify", "UploadSnapShotFinished", self.on_finished)

    # -- blocking work ---------------------------------------------------------
    def _run(self, kind: str, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        workers = self.ctx.workers
        return workers.run(kind, fn, *args) if workers is not None else self.run_in_thread(fn, *args)

    # -- sessions ----------------------------------------------------------------
    def upload_url(self, session: UploadSession) -> str:
        return (f"{self.ctx.config.api_base_url}/api/v1/snapshot-uploads/{session.session_id}"
                f"?token={session.token}")

    def _add(self, session: UploadSession) -> None:
        if len(self.sessions) >= MAX_SESSIONS:
            for sid in [s.session_id for s in self.sessions.values() if s.ended]:
                del self.sessions[sid]
                if len(self.sessions) < MAX_SESSIONS:
                    break
        if len(self.sessions) >= MAX_SESSIONS:
            raise Conflict(f"{MAX_SESSIONS} snapshot sessions are in progress; try again when one ends")
        self.sessions[session.session_id] = session

    def _drop(self, session: UploadSession) -> None:
        if self.sessions.get(session.session_id) is session:
            del self.sessions[session.session_id]
        if session.timer is not None and session.timer.active():
            session.timer.cancel()

    async def request(self, channel_id: str, count: int, interval: int) -> UploadSession:
        """Send SnapShotConfig (GB/T 28181-2022 §A.2.3.2) for ``channel_id``; the session once the
        device answered OK."""
        control = self.ctx.control
        device_id = await control.owner(channel_id)
        control.require_2022(device_id, "SnapShotConfig")
        now = self.clock.time()
        session = UploadSession(
            session_id=secrets.token_hex(16), token=secrets.token_urlsafe(24), device_id=device_id,
            channel_id=channel_id, count=count, interval=interval, created_at=now,
            # The last picture is due (count - 1) * interval after the first.
            expires_at=now + (count - 1) * interval + self.config.upload_timeout,
        )
        self._add(session)  # before sending: a fast device may upload before it answers
        config = manscdp.SnapShotConfig(snap_num=count, interval=interval, upload_url=self.upload_url(session),
                                        session_id=session.session_id)

        def body(sn: int, charset: str) -> bytes:
            return manscdp.encode_device_config(sn, channel_id, charset=charset, snap_shot_config=config)

        sent = False
        try:
            answer = await self.ctx.router.ask(device_id, "DeviceConfig", body)
            if not isinstance(answer, manscdp.Response):
                raise DeviceRejected(f"device {device_id} sent an unexpected DeviceConfig answer")
            if (answer.result or "").upper() != "OK":
                raise DeviceRejected(f"device {device_id} answered {answer.result} to SnapShotConfig for "
                                     f"{channel_id}")
            sent = True
        finally:
            if not sent:  # the error itself goes to the caller
                self._drop(session)
        session.timer = self.clock.call_later(max(0.0, session.expires_at - self.clock.time()), self._expire,
                                              session.session_id)
        log.info("channel {channel_id}: snapshot session {session} asks {count} pictures {interval} s apart",
                 channel_id=channel_id, session=session.session_id, count=count, interval=interval)
        self._publish(session, "waiting")
        return session

    def _expire(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is None or session.ended:
            return
        session.timer = None
        session.expired = True
        log.info("channel {channel_id}: snapshot session {session} expired with {received} of {count} pictures "
                 "and no UploadSnapShotFinished", channel_id=session.channel_id, session=session_id,
                 received=session.received, count=session.count)
        self._publish(session, "expired")

    def _publish(self, session: UploadSession, state: str, **data: Any) -> None:
        self.ctx.bus.publish("snapshot", device_id=session.device_id, channel_id=session.channel_id,
                             session_id=session.session_id, state=state, count=session.count,
                             received=session.received, **data)

    # -- uploads -------------------------------------------------------------------
    def refuse(self, error: DomainError, session_id: str, peer: str) -> DomainError:
        self.ctx.devices.log_refusal(f"snapshot upload {error.code}",
                                     "snapshot upload from {peer} to session {session} refused: {reason}",
                                     peer=peer, session=session_id[:64], reason=error.message)
        return error

    def check_upload(self, session_id: str, token: str | None, peer: str) -> UploadSession:
        """The session an upload may go to, before its body is looked at (404, 403, 410, 409)."""
        session = self.sessions.get(session_id)
        if session is None:
            raise self.refuse(NotFound(f"no snapshot session {session_id[:64]}"), session_id, peer)
        # compare_digest: how much of a guessed token is right does not show in the timing.
        if not token or not hmac.compare_digest(token.encode("utf-8", "replace"), session.token.encode()):
            raise self.refuse(WrongUploadToken("the upload token is not valid for this session"), session_id, peer)
        if session.expired:
            raise self.refuse(SessionExpired(f"snapshot session {session_id} expired"), session_id, peer)
        if session.received + session.pending >= session.count:
            raise self.refuse(SessionFull(f"snapshot session {session_id} already has its {session.count} "
                                           "pictures"), session_id, peer)
        return session

    async def accept(self, session_id: str, token: str | None, data: bytes, *, file_id: str | None,
                     peer: str) -> store.SnapshotRow:
        """Store one uploaded picture of the session (see the module docstring for the refusals)."""
        session = self.check_upload(session_id, token, peer)
        if len(data) > self.config.max_bytes:
            raise self.refuse(PictureTooLarge(f"the picture is {len(data)} bytes; at most "
                                               f"{self.config.max_bytes} (snapshot.max_bytes)"), session_id, peer)
        try:
            check_jpeg(data)
        except NotJpeg as e:
            raise self.refuse(e, session_id, peer) from None
        session.pending += 1
        session.seqs += 1
        seq = session.seqs
        name = file_id if file_id is not None and _FILE_ID.fullmatch(file_id) else f"{session_id}-{seq}"
        key = f"{session.device_id}/{session.channel_id}/{session_id}-{seq:02d}.jpg"
        try:
            try:
                await self._run("storage", store.write_file, self.root, key, data)
            except OSError as e:
                log.error("snapshot session {session}: writing {key} failed: {error}", session=session_id, key=key,
                          error=e)
                raise SnapshotStorageFailed(f"the picture could not be stored ({e.strerror or e})") from e
            row: store.SnapshotRow = await self.ctx.db.run(
                "insert_device_snapshot", store.insert_snapshot_txn, device_id=session.device_id,
                channel_id=session.channel_id, session_id=session_id, file_id=name, seq=seq, size=len(data),
                key=key, received_at=utc_datetime(self.clock.time()), finished=session.finished_at is not None)
        finally:
            session.pending -= 1
        session.received += 1
        log.info("channel {channel_id}: snapshot {seq}/{count} of session {session} stored ({size} bytes)",
                 channel_id=session.channel_id, seq=seq, count=session.count, session=session_id, size=len(data))
        self._publish(session, "uploaded", snapshot_id=row.id, seq=seq, file_id=row.file_id, size=row.size)
        return row

    # -- UploadSnapShotFinished -------------------------------------------------------
    def on_finished(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """UploadSnapShotFinished (GB/T 28181-2022 §A.2.5): the router answered 200; here the session
        ends and the device gets its ``Response``."""
        if not isinstance(msg, manscdp.UploadSnapShotFinished):
            return
        session_id = (msg.session_id or "").strip()
        session = self.sessions.get(session_id)
        if session is None:
            d = ensureDeferred(self._finish_unknown(device_id, msg, session_id))
            d.addErrback(self._failed, "finishing unknown snapshot session", session_id)
            return
        if session.device_id != device_id:
            log.warn("{device_id} sent UploadSnapShotFinished for snapshot session {session} of {owner}: ignored",
                     device_id=device_id, session=session_id, owner=session.device_id)
            self._answer(device_id, msg, "ERROR")
            return
        if session.finished_at is None:
            session.finished_at = self.clock.time()
            session.file_ids = msg.file_ids
            if session.timer is not None and session.timer.active():
                session.timer.cancel()
            session.timer = None
            session.expired = False  # a late notification still says what the device took
            log.info("channel {channel_id}: snapshot session {session} finished: {received} of {count} pictures "
                     "stored, the device lists {listed}", channel_id=session.channel_id, session=session_id,
                     received=session.received, count=session.count, listed=len(msg.file_ids))
            marked = self.ctx.db.run("finish_device_snapshots", store.finish_session_txn, session_id,
                                     msg.file_ids, session.generated_prefix())
            marked.addErrback(self._failed, "marking snapshot session finished", session_id)
            self._publish(session, "finished", file_ids=list(msg.file_ids))
        self._answer(device_id, msg, "OK")

    async def _finish_unknown(self, device_id: str, msg: manscdp.UploadSnapShotFinished, session_id: str) -> None:
        """A session this process did not open (a restart in between): its stored pictures, if any."""
        rows = await self.ctx.db.run("device_snapshot_session", store.session_rows_txn, session_id) \
            if session_id else []
        if rows and all(r.device_id == device_id for r in rows):
            await self.ctx.db.run("finish_device_snapshots", store.finish_session_txn, session_id, msg.file_ids,
                                  f"{session_id}-")
            log.info("{device_id}: UploadSnapShotFinished for snapshot session {session} of an earlier run: "
                     "{n} pictures marked finished", device_id=device_id, session=session_id, n=len(rows))
            self._answer(device_id, msg, "OK")
            return
        self.ctx.devices.log_refusal("snapshot finished unknown",
                                     "{device_id}: UploadSnapShotFinished for unknown snapshot session {session}",
                                     device_id=device_id, session=session_id[:64])
        self._answer(device_id, msg, "ERROR")

    def _answer(self, device_id: str, msg: manscdp.ManscdpMessage, result: str) -> None:
        body = manscdp.encode_snapshot_finished_response(msg.sn, msg.device_id, result=result,
                                                         charset=self.ctx.devices.charset_of(device_id))
        d = ensureDeferred(self.ctx.router.send_manscdp(device_id, body))
        d.addErrback(self._failed, "answering UploadSnapShotFinished", device_id)

    @staticmethod
    def _failed(failure: Failure, what: str, subject: str) -> None:
        log.warn("{what} ({subject}) failed: {error}", what=what, subject=subject, error=failure.getErrorMessage())

    # -- reading -----------------------------------------------------------------------
    async def session_rows(self, session_id: str) -> list[store.SnapshotRow]:
        rows: list[store.SnapshotRow] = await self.ctx.db.run("device_snapshot_session", store.session_rows_txn,
                                                              session_id)
        return rows

    async def picture(self, snapshot_id: int) -> tuple[store.SnapshotRow, bytes]:
        row = await self.ctx.db.run("get_device_snapshot", store.get_snapshot_txn, snapshot_id)
        if row is None:
            raise NotFound(f"no device snapshot {snapshot_id}")
        data = await self._run("storage", store.read_file, self.root, row.key)
        if data is None:
            log.warn("device snapshot {id}: its file {key} is gone", id=snapshot_id, key=row.key)
            raise NotFound(f"device snapshot {snapshot_id}: its file is gone")
        return row, data

    # -- retention -------------------------------------------------------------------------
    def start(self) -> None:
        """Purge on the clock every ``snapshot.purge_interval`` seconds (first run one interval from now)."""
        self._purging = True
        self._schedule()

    def stop(self) -> None:
        self._purging = False
        if self._purge_timer is not None and self._purge_timer.active():
            self._purge_timer.cancel()
        self._purge_timer = None
        for session in self.sessions.values():
            if session.timer is not None and session.timer.active():
                session.timer.cancel()

    def _schedule(self) -> None:
        if not self._purging:
            return
        self._purge_timer = self.clock.call_later(self.config.purge_interval, self._purge_tick)

    def _purge_tick(self) -> None:
        d = ensureDeferred(self.purge())
        d.addErrback(self._failed, "purging device snapshots", f"{self.config.retention_days} days")
        d.addBoth(lambda _: self._schedule())

    async def purge(self) -> int:
        """Delete pictures older than ``snapshot.retention_days`` (0 keeps them): files, then rows."""
        days = self.config.retention_days
        if days <= 0:
            return 0
        cutoff = self.clock.time() - days * 86400
        for sid in [s.session_id for s in self.sessions.values() if s.ended and s.created_at < cutoff]:
            del self.sessions[sid]
        before = utc_datetime(cutoff)
        total = 0
        while True:
            batch: list[tuple[int, str]] = await self.ctx.db.run("old_device_snapshots", store.old_snapshots_txn,
                                                                 before, _PURGE_BATCH)
            if not batch:
                break
            await self._run("retention", store.delete_files, self.root, [key for _, key in batch])
            await self.ctx.db.run("delete_device_snapshots", store.delete_rows_txn, [i for i, _ in batch])
            total += len(batch)
            if len(batch) < _PURGE_BATCH:
                break
        if total:
            log.info("{n} device snapshots older than {days} days purged", n=total, days=days)
        return total


class DeviceSnapshotsService(Service):
    """Runs the retention purge with the platform; stopping it cancels the purge and the sessions' timers."""

    name = "device-snapshots"

    def __init__(self, snapshots: DeviceSnapshots | None) -> None:
        if snapshots is None:
            raise ValueError("the platform has no DeviceSnapshots")
        self.snapshots = snapshots

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]
        self.snapshots.start()

    def stopService(self) -> None:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]
        self.snapshots.stop()
