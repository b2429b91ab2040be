"""Catalog sync: one Catalog query, many answering MESSAGEs (GB/T 28181-2016 §9.5.2, §A.2.6.4).

A device answers a Catalog query with ``SumNum`` items in total, spread over
as many MESSAGEs as it likes (NVRs send 1–20 items each). Parts are
aggregated per device by SN; an item repeated across parts is counted once
(by its DeviceID). The sync ends:

- ``done``: as many distinct items as SumNum arrived; the device's channel
  list is replaced (channels it no longer reports are removed);
- ``partial``: parts stopped coming (``idle_timeout`` after the last part) or
  the whole ``timeout`` ran out with some items: what arrived is kept, nothing
  is deleted (WVP issues #853/#858: NVRs that send 10 of 140 channels);
- ``timeout``: no part at all arrived in time;
- ``error``: the query could not be sent.

``error`` says why a sync did not end ``done`` (the device's answer to the
MESSAGE, or what was missing when it stopped waiting). The registry keeps it
as ``catalog_error`` with the status, so the API can say why after the
in-memory summary is gone (a restart, or an evicted summary).

Progress (status, SumNum, received) is visible through the API while it runs.
A finished sync keeps only its summary, not its items, and only for the last
``MAX_FINISHED`` devices (older ones are read from the registry); deleting a
device drops it. An NVR lists itself in its own catalog: that item's name
fills the device's name if DeviceInfo gave none.

Registry writes of one device's sync (progress, then the final store) run
one after the other: on a pool of several threads they could otherwise
commit out of order and leave "running" after "done".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.core.clock import Clock, utc_datetime
from gbplatform.core.errors import DomainError
from gbplatform.db import queries as q
from gbplatform.db.database import Database
from gbplatform.devices.registrar import DeviceManager
from gbplatform.signalling.router import Correlation, SipRouter
from sip import manscdp
from sip.channel_fields import STORED_FIELDS, parse_value

log = Logger()

MAX_ITEMS = 20_000
MAX_FINISHED = 20_000  # finished syncs whose summary (with its error) is kept in memory


@dataclass
class CatalogSession:
    device_id: str
    sn: int
    started: float
    status: str = "running"
    sum_num: int | None = None
    items: dict[str, manscdp.CatalogItem] = field(default_factory=dict)
    parts: int = 0
    duplicates: int = 0
    received: int = 0
    finished: float | None = None
    error: str | None = None
    idle_timer: Any = None
    total_timer: Any = None
    answers: Correlation | None = None  # routes this sync's Response parts (its SN) here
    done: Deferred[CatalogSession] = field(default_factory=Deferred)

    def progress(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "sn": self.sn,
            "total": self.sum_num,
            "received": self.received,
            "parts": self.parts,
            "duplicates": self.duplicates,
            "started_at": self.started,
            "finished_at": self.finished,
            "error": self.error,
        }


def to_channel(item: manscdp.CatalogItem) -> q.ChannelData:
    """Map a catalog item onto the registry's channel record, field by field
    as ``sip.channel_fields`` declares them (numbers parsed, garbled ones dropped)."""
    values: dict[str, Any] = {}
    for row in STORED_FIELDS:
        text = item.info.get(row.tag) if row.in_info else getattr(item, row.attr)
        values[str(row.name)] = parse_value(row, text)
    extra: dict[str, Any] = {}
    if item.info:
        extra["info"] = dict(item.info)
    if item.extra:
        extra.update(item.extra)
    values["channel_id"] = values["channel_id"] or ""
    return q.ChannelData(**values, extra=extra or None)


@dataclass(frozen=True)
class CatalogChange:
    """What a stored sync changed in the registry: channel IDs added and removed (sorted)."""

    added: list[str]
    removed: list[str]


def store_catalog_txn(
    s: Any, device_id: str, channels: list[q.ChannelData], status: str, total: int, received: int,
    at: dt.datetime, own_name: str | None = None, error: str | None = None,
) -> CatalogChange:
    """Channels and sync status in one transaction, so readers never see one without the other.

    ``own_name``: the name of the item carrying the device's own ID; like a
    DeviceInfo name, it only fills an empty name. Returns the channels added
    and removed (for the ``channel`` event).
    """
    table = q.channels
    before = set(s.scalars(select(table.c.channel_id).where(table.c.device_id == device_id)).all())
    q.replace_channels_txn(s, device_id, channels, complete=status == "done")
    q.set_catalog_progress_txn(s, device_id, status, total, received, at, error)
    if own_name:
        q.store_device_info_txn(s, device_id, name=own_name, at=at)
    after = {c.channel_id for c in channels}
    # A partial sync deletes nothing (module docstring), so it removes nothing.
    return CatalogChange(sorted(after - before), sorted(before - after) if status == "done" else [])


class CatalogSync:
    def __init__(
        self, *, router: SipRouter, devices: DeviceManager, db: Database, clock: Clock, timeout: float = 30.0,
        idle_timeout: float = 5.0,
    ) -> None:
        self.router = router
        self.devices = devices
        self.db = db
        self.clock = clock
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        # Running syncs, and the summaries (no items) of the last MAX_FINISHED
        # finished ones, oldest first.
        self.sessions: dict[str, CatalogSession] = {}
        self._finished = 0
        # The last registry write of each device's sync: the next one waits for it.
        self._writes: dict[str, Deferred[None]] = {}
        # Told (session, change) when a sync ended; change is None when nothing was stored: the event bus.
        self.on_synced: list[Callable[[CatalogSession, CatalogChange | None], None]] = []

    def progress(self, device_id: str) -> dict[str, Any] | None:
        session = self.sessions.get(device_id)
        return session.progress() if session is not None else None

    def forget(self, device_id: str) -> None:
        """The device was deleted: end its sync without storing anything, drop its summary."""
        session = self.sessions.pop(device_id, None)
        if session is None:
            return
        if session.status == "running":
            self._stop_timers(session)
            session.status, session.error = "error", "device deleted"
            session.finished = self.clock.time()
            session.items = {}
            session.done.callback(session)
        else:
            self._finished -= 1

    def start(self, device_id: str) -> CatalogSession:
        """Start a sync, or return the one already running for the device."""
        current = self.sessions.get(device_id)
        if current is not None and current.status == "running":
            return current
        session = CatalogSession(device_id, self.router.next_sn(), self.clock.time())
        if self.sessions.pop(device_id, None) is not None:
            self._finished -= 1  # its summary gives way to the new sync
        self.sessions[device_id] = session
        session.answers = self.router.expect(device_id, "Catalog", session.sn,
                                          lambda msg: self.on_part(device_id, msg))
        session.total_timer = self.clock.call_later(self.timeout, self._timed_out, session, False)
        # Progress lives in memory while the sync runs (the API reads it there);
        # the registry gets it every few parts and at the end.
        d = ensureDeferred(self._send(session))
        d.addErrback(lambda f: self._send_failed(session, f))
        return session

    async def _send(self, session: CatalogSession) -> None:
        await self.router.send_query(session.device_id, "Catalog", session.sn)

    def _send_failed(self, session: CatalogSession, failure: Any) -> None:
        if session.status != "running":
            return
        err = failure.value
        session.error = err.message if isinstance(err, DomainError) else str(err)
        if not isinstance(err, DomainError):
            log.failure("catalog query to {id} failed", failure, id=session.device_id)
        self._finish(session, "error")

    def on_part(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """A Catalog Response MESSAGE with the running sync's SN arrived (the router correlates by SN).

        Parts of a stale query, answered late, have another SN and never get
        here: they would mix lists.
        """
        session = self.sessions.get(device_id)
        if session is None or session.status != "running" or msg.sn != session.sn:
            return
        if not isinstance(msg, manscdp.CatalogResponse):
            return
        session.parts += 1
        session.sum_num = msg.sum_num if session.sum_num is None else max(session.sum_num, msg.sum_num)
        for item in msg.items:
            if not item.device_id:
                continue
            if item.device_id in session.items:
                session.duplicates += 1
            elif len(session.items) >= MAX_ITEMS:
                log.warn("catalog of {id} exceeds {n} items; rest ignored", id=device_id, n=MAX_ITEMS)
                break
            session.items[item.device_id] = item
        session.received = len(session.items)
        if len(session.items) >= session.sum_num:
            self._finish(session, "done")
            return
        if session.idle_timer is not None and session.idle_timer.active():
            session.idle_timer.cancel()
        session.idle_timer = self.clock.call_later(self.idle_timeout, self._timed_out, session, True)
        if session.parts % 10 == 1:
            self._write_progress(session)

    def _timed_out(self, session: CatalogSession, idle: bool) -> None:
        if session.status != "running":
            return
        if not session.items:
            session.error = f"no Catalog answer in {self.timeout:g} s"
        elif idle:
            session.error = (f"{session.received} of {session.sum_num} items: no part for "
                             f"{self.idle_timeout:g} s after the last one")
        else:
            session.error = f"{session.received} of {session.sum_num} items in {self.timeout:g} s"
        self._finish(session, "partial" if session.items else "timeout")

    @staticmethod
    def _stop_timers(session: CatalogSession) -> None:
        if session.answers is not None:
            session.answers.close()
            session.answers = None
        for timer in (session.idle_timer, session.total_timer):
            if timer is not None and timer.active():
                timer.cancel()
        session.idle_timer = session.total_timer = None

    def _finish(self, session: CatalogSession, status: str) -> None:
        session.status = status
        session.finished = self.clock.time()
        self._stop_timers(session)
        log.info(
            "catalog of {id}: {status}, {got}/{total} items in {parts} part(s)",
            id=session.device_id, status=status, got=len(session.items), total=session.sum_num,
            parts=session.parts,
        )
        d: Deferred[None]
        changes: list[CatalogChange] = []
        if status in ("done", "partial"):
            channels = []
            own_name = None
            for item in session.items.values():
                if item.device_id == session.device_id and item.name and item.name.strip():
                    own_name = item.name.strip()
                try:
                    channels.append(to_channel(item))
                except ValueError as e:
                    # A DeviceID the registry cannot hold (e.g. over 32 characters):
                    # drop that item, or the whole sync would never be stored.
                    log.info("catalog of {id}: item dropped: {err}", id=session.device_id, err=str(e))
            at = utc_datetime(self.clock.time())

            def store(s: Any, *args: Any) -> None:
                # On the database thread; read on the reactor once the write has ended.
                changes.append(store_catalog_txn(s, *args))

            # The lifecycle batch first: it holds the device's row if it has just
            # registered, and a DeviceInfo name, which wins over the catalog's.
            d = self._write(session.device_id, "store_catalog", store, session.device_id, channels,
                            status, session.sum_num or 0, session.received, at, own_name,
                            session.error, after_state=True)
        else:
            d = self._write_progress(session)
        session.items = {}  # the summary is all that is kept
        self._finished += 1
        self._drop_old_summaries()
        d.addBoth(lambda _: self._synced(session, changes[0] if changes else None))
        d.addBoth(lambda _: session.done.callback(session))

    def _synced(self, session: CatalogSession, change: CatalogChange | None) -> None:
        for observer in tuple(self.on_synced):
            try:
                observer(session, change)
            except Exception:  # noqa: BLE001 - an observer's bug must not stop the sync; logged
                log.failure("catalog observer {observer!r} failed for {id}", observer=observer,
                            id=session.device_id)

    def _drop_old_summaries(self) -> None:
        while self._finished > MAX_FINISHED:
            # Oldest first; only running syncs (a few hundred at most) are skipped.
            oldest = next((i for i, s in self.sessions.items() if s.status != "running"), None)
            if oldest is None:  # the count drifted (sessions cleared from outside)
                self._finished = 0
                return
            del self.sessions[oldest]
            self._finished -= 1

    def _write_progress(self, session: CatalogSession) -> Deferred[None]:
        at = utc_datetime(self.clock.time())
        return self._write(session.device_id, "catalog_progress", q.set_catalog_progress_txn, session.device_id,
                           session.status, session.sum_num or 0, session.received, at, session.error)

    @staticmethod
    def _write_failed(failure: Failure, desc: str, device_id: str) -> None:
        if isinstance(failure.value, q.DeviceNotFound):
            log.info("{desc} of {id} not stored: the device was deleted", desc=desc, id=device_id)
        else:
            log.failure("{desc} of {id} failed", failure, desc=desc, id=device_id)

    def _write(self, device_id: str, desc: str, fn: Any, *args: Any, after_state: bool = False) -> Deferred[None]:
        """Run a registry write once the device's previous catalog write has ended.

        Fires (never fails: failures are logged) when it has ended.
        """
        ended: Deferred[None] = Deferred()
        previous = self._writes.get(device_id)
        self._writes[device_id] = ended

        def run(_: Any) -> None:
            first = self.devices.writer.written(device_id) if after_state else succeed(None)
            first.addCallback(lambda _: self.db.run(desc, fn, *args))
            first.addErrback(self._write_failed, desc, device_id)
            first.addBoth(lambda _: finished())

        def finished() -> None:
            if self._writes.get(device_id) is ended:
                del self._writes[device_id]
            ended.callback(None)

        if previous is None:
            run(None)
        else:
            previous.addCallback(run)
        return ended
