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

Progress (status, SumNum, received) is visible through the API while it runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from gbplatform.clock import Clock
from gbplatform.db import queries as q
from gbplatform.db.database import Database
from gbplatform.errors import DomainError
from sip import manscdp

log = Logger()

MAX_ITEMS = 20_000


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
    finished: float | None = None
    error: str | None = None
    idle_timer: Any = None
    total_timer: Any = None
    done: Deferred[CatalogSession] = field(default_factory=Deferred)

    def progress(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "sn": self.sn,
            "total": self.sum_num,
            "received": len(self.items),
            "parts": self.parts,
            "duplicates": self.duplicates,
            "started_at": self.started,
            "finished_at": self.finished,
            "error": self.error,
        }


def to_channel(item: manscdp.CatalogItem) -> q.ChannelData:
    """Map a catalog item onto the registry's channel record."""

    def num(value: str | None, kind: type) -> Any:
        if value is None or not value.strip():
            return None
        try:
            return kind(value.strip())
        except ValueError:
            return None

    extra: dict[str, Any] = {}
    if item.info:
        extra["info"] = dict(item.info)
    if item.extra:
        extra.update(item.extra)
    ptz = num(item.info.get("PTZType"), int) if item.info else None
    return q.ChannelData(
        channel_id=item.device_id or "",
        name=item.name,
        manufacturer=item.manufacturer,
        model=item.model,
        owner=item.owner,
        civil_code=item.civil_code,
        block=item.block,
        address=item.address,
        parental=num(item.parental, int),
        parent_id=item.parent_id,
        business_group_id=item.business_group_id,
        safety_way=item.safety_way,
        register_way=item.register_way,
        cert_num=item.cert_num,
        certifiable=item.certifiable,
        err_code=item.err_code,
        end_time=item.end_time,
        secrecy=item.secrecy,
        ip_address=item.ip_address,
        port=num(item.port, int),
        status=item.status,
        longitude=num(item.longitude, float),
        latitude=num(item.latitude, float),
        ptz_type=ptz,
        extra=extra or None,
    )


def store_catalog_txn(
    s: Any, device_id: str, channels: list[q.ChannelData], status: str, total: int, received: int,
    at: dt.datetime,
) -> None:
    """Channels and sync status in one transaction, so readers never see one without the other."""
    q.replace_channels_txn(s, device_id, channels, complete=status == "done")
    q.set_catalog_progress_txn(s, device_id, status, total, received, at)


class CatalogSync:
    def __init__(
        self, *, app: Any, db: Database, clock: Clock, timeout: float = 30.0, idle_timeout: float = 5.0
    ) -> None:
        self.app = app
        self.db = db
        self.clock = clock
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.sessions: dict[str, CatalogSession] = {}
        app.on_response("Catalog", self.on_part)

    def progress(self, device_id: str) -> dict[str, Any] | None:
        session = self.sessions.get(device_id)
        return session.progress() if session is not None else None

    def start(self, device_id: str) -> CatalogSession:
        """Start a sync, or return the one already running for the device."""
        current = self.sessions.get(device_id)
        if current is not None and current.status == "running":
            return current
        session = CatalogSession(device_id, self.app.next_sn(), self.clock.time())
        self.sessions[device_id] = session
        session.total_timer = self.clock.call_later(self.timeout, self._timed_out, session)
        # Progress lives in memory while the sync runs (the API reads it there);
        # the registry gets it every few parts and at the end.
        d = ensureDeferred(self._send(session))
        d.addErrback(lambda f: self._send_failed(session, f))
        return session

    async def _send(self, session: CatalogSession) -> None:
        charset = self.app.devices.charset_of(session.device_id)
        body = manscdp.encode_query("Catalog", session.sn, session.device_id, charset=charset)
        await self.app.send_manscdp(session.device_id, body)

    def _send_failed(self, session: CatalogSession, failure: Any) -> None:
        if session.status != "running":
            return
        err = failure.value
        session.error = err.message if isinstance(err, DomainError) else str(err)
        if not isinstance(err, DomainError):
            log.failure("catalog query to {id} failed", failure, id=session.device_id)
        self._finish(session, "error")

    def on_part(self, device_id: str, msg: manscdp.ManscdpMessage) -> bool:
        """A Catalog Response MESSAGE arrived; always consumed."""
        session = self.sessions.get(device_id)
        if session is None or session.status != "running":
            log.info("catalog part from {id} without a running sync (SN {sn}) ignored", id=device_id, sn=msg.sn)
            return True
        if msg.sn != session.sn:
            # Some devices answer a stale query late; its parts would mix lists.
            log.info("catalog part from {id} with SN {sn}, expected {want}: ignored", id=device_id,
                     sn=msg.sn, want=session.sn)
            return True
        if not isinstance(msg, manscdp.CatalogResponse):
            return True
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
        if len(session.items) >= session.sum_num:
            self._finish(session, "done")
            return True
        if session.idle_timer is not None and session.idle_timer.active():
            session.idle_timer.cancel()
        session.idle_timer = self.clock.call_later(self.idle_timeout, self._timed_out, session)
        if session.parts % 10 == 1:
            self._write_progress(session)
        return True

    def _timed_out(self, session: CatalogSession) -> None:
        if session.status == "running":
            self._finish(session, "partial" if session.items else "timeout")

    def _finish(self, session: CatalogSession, status: str) -> None:
        session.status = status
        session.finished = self.clock.time()
        for timer in (session.idle_timer, session.total_timer):
            if timer is not None and timer.active():
                timer.cancel()
        log.info(
            "catalog of {id}: {status}, {got}/{total} items in {parts} part(s)",
            id=session.device_id, status=status, got=len(session.items), total=session.sum_num,
            parts=session.parts,
        )
        d: Deferred[Any]
        if status in ("done", "partial"):
            channels = []
            for item in session.items.values():
                try:
                    channels.append(to_channel(item))
                except ValueError as e:
                    # A DeviceID the registry cannot hold (e.g. over 32 characters):
                    # drop that item, or the whole sync would never be stored.
                    log.info("catalog of {id}: item dropped: {err}", id=session.device_id, err=str(e))
            at = dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)
            d = self.db.run("store_catalog", store_catalog_txn, session.device_id, channels, status,
                            session.sum_num or 0, len(session.items), at)
        else:
            d = self._write_progress(session)
        d.addErrback(lambda f: log.failure("storing the catalog of {id} failed", f, id=session.device_id))
        d.addBoth(lambda _: session.done.callback(session))

    def _write_progress(self, session: CatalogSession) -> Deferred[Any]:
        at = dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)
        d = self.db.run("catalog_progress", q.set_catalog_progress_txn, session.device_id, session.status,
                        session.sum_num or 0, len(session.items), at)
        d.addErrback(lambda f: log.failure("catalog progress of {id} not stored", f, id=session.device_id))
        return d
