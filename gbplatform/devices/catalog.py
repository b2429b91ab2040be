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

Final stores are group-committed (issue 12: a transaction per device was
11 % of the platform while 10,000 devices onboarded): a store goes into
:class:`CatalogStoreBatch`, which writes everything queued in one
transaction when the previous batch has ended, so batches grow with the
load and an idle registry still stores at once. A failed batch is stored
again device by device, each in its own transaction, so a device's catalog
is stored whole or not at all and one bad device loses no other's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, succeed
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
    # Fires when the sync ends, before its store is committed (``done`` fires after): the query
    # is over then, and onboarding gives its slot to the next device (issue 12).
    ended: Deferred[None] = field(default_factory=Deferred)

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


class CatalogStoreBatch:
    """Group commit of ended syncs' stores (``queries.store_catalogs_txn``).

    One batch runs at a time. Stores submitted while it runs wait, and the
    next batch takes them all (up to ``max_stores`` devices or ``max_rows``
    channels), so nothing waits on a timer: an idle registry writes a store at
    once, a busy one writes many per transaction. Before a batch runs, the
    lifecycle writes of its devices are committed (``StateWriter.written``):
    they hold a just-registered device's row and its DeviceInfo name, which
    wins over the catalog's.
    """

    def __init__(self, db: Database, devices: DeviceManager, *, max_stores: int = 500,
                 max_rows: int = 20_000) -> None:
        self.db = db
        self.devices = devices
        self.max_stores = max_stores
        self.max_rows = max_rows
        self._pending: list[tuple[q.CatalogStore, Deferred[q.CatalogStored]]] = []
        self._running = False
        self.stats = {"batches": 0, "stores": 0, "batch_failures": 0}

    @property
    def queued(self) -> int:
        """Stores waiting for a batch (the one running not counted): the registry's backlog."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        return self._running

    def submit(self, store: q.CatalogStore) -> Deferred[q.CatalogStored]:
        """Fires with what was stored once committed; fails (``DeviceNotFound``, the
        transaction's error) when that device's catalog was not stored."""
        d: Deferred[q.CatalogStored] = Deferred()
        self._pending.append((store, d))
        if not self._running:
            self._start()
        return d

    def _take(self) -> list[tuple[q.CatalogStore, Deferred[q.CatalogStored]]]:
        batch: list[tuple[q.CatalogStore, Deferred[q.CatalogStored]]] = []
        seen: set[str] = set()
        rows = 0
        rest: list[tuple[q.CatalogStore, Deferred[q.CatalogStored]]] = []
        for entry in self._pending:
            store = entry[0]
            # A device appears once per batch (CatalogSync chains a device's writes, so this is a guard).
            full = len(batch) >= self.max_stores or (batch and rows + len(store.channels) > self.max_rows)
            if full or store.device_id in seen:
                rest.append(entry)
                continue
            batch.append(entry)
            seen.add(store.device_id)
            rows += len(store.channels)
        self._pending = rest
        return batch

    def _start(self) -> None:
        batch = self._take()
        if not batch:
            return
        self._running = True
        stores = [store for store, _ in batch]
        # written() never fails (the state writer logs its own failures).
        states = gatherResults([self.devices.writer.written(store.device_id) for store in stores])
        states.addCallback(lambda _: self.db.run("store_catalog", q.store_catalogs_txn, stores))
        states.addCallbacks(lambda results: self._stored(batch, results),
                            lambda failure: self._one_by_one(batch, failure))
        states.addErrback(lambda f: log.failure("catalog store batch bookkeeping failed", f))
        states.addBoth(lambda _: self._ended())

    def _stored(self, batch: list[tuple[q.CatalogStore, Deferred[q.CatalogStored]]],
                results: list[q.CatalogStored]) -> None:
        self.stats["batches"] += 1
        self.stats["stores"] += len(batch)
        for (store, d), result in zip(batch, results, strict=True):
            if result.found:
                d.callback(result)
            else:
                d.errback(q.DeviceNotFound(store.device_id))

    def _one_by_one(self, batch: list[tuple[q.CatalogStore, Deferred[q.CatalogStored]]],
                    failure: Failure) -> Deferred[Any]:
        """The batch failed and was rolled back: store each device in its own transaction."""
        self.stats["batch_failures"] += 1
        if len(batch) > 1:
            log.warn("storing a batch of {n} catalogs failed ({err}); storing them one by one",
                     n=len(batch), err=failure.getErrorMessage())
        singles: list[Deferred[Any]] = []
        for store, d in batch:
            if len(batch) == 1:
                d.errback(failure)  # the device's own failure: logged by the caller
                continue
            one = self.db.run("store_catalog", q.store_catalogs_txn, [store])
            one.addCallbacks(lambda results, entry=(store, d): self._stored([entry], results),
                             lambda f, d=d: d.errback(f))
            singles.append(one)
        return gatherResults(singles)

    def _ended(self) -> None:
        self._running = False
        if self._pending:
            self._start()


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
        self.stores = CatalogStoreBatch(db, devices)

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
            session.ended.callback(None)
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
            store = q.CatalogStore(session.device_id, channels, status, session.sum_num or 0, session.received,
                                   utc_datetime(self.clock.time()), own_name, session.error)

            def stored(result: q.CatalogStored) -> None:
                changes.append(CatalogChange(result.added, result.removed))

            # Group-committed with other devices' stores (CatalogStoreBatch), which
            # first waits for the devices' lifecycle writes.
            d = self._write(session.device_id, "store_catalog",
                            lambda: self.stores.submit(store).addCallback(stored))
        else:
            d = self._write_progress(session)
        session.items = {}  # the summary is all that is kept
        self._finished += 1
        self._drop_old_summaries()
        d.addBoth(lambda _: self._synced(session, changes[0] if changes else None))
        d.addBoth(lambda _: session.done.callback(session))
        session.ended.callback(None)  # last: its callbacks may start other syncs

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
        args = (session.device_id, session.status, session.sum_num or 0, session.received, at, session.error)
        return self._write(session.device_id, "catalog_progress",
                           lambda: self.db.run("catalog_progress", q.set_catalog_progress_txn, *args))

    @staticmethod
    def _write_failed(failure: Failure, desc: str, device_id: str) -> None:
        if isinstance(failure.value, q.DeviceNotFound):
            log.info("{desc} of {id} not stored: the device was deleted", desc=desc, id=device_id)
        else:
            log.failure("{desc} of {id} failed", failure, desc=desc, id=device_id)

    def _write(self, device_id: str, desc: str, start: Callable[[], Deferred[Any]]) -> Deferred[None]:
        """Start a registry write (``start()``) once the device's previous catalog write has ended.

        Fires (never fails: failures are logged) when it has ended.
        """
        ended: Deferred[None] = Deferred()
        previous = self._writes.get(device_id)
        self._writes[device_id] = ended

        def run(_: Any) -> None:
            first = succeed(None).addCallback(lambda _: start())
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
