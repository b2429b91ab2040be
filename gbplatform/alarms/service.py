"""``AlarmService``: alarms and mobile positions devices report (GB/T 28181-2016 §9.4, §9.5, §9.10).

Theory of operation
-------------------
The router validates the sender, applies the per-device Notify budget
(``gbplatform.signalling.ratelimit``) and answers the MESSAGE (or a
subscription's NOTIFY) 200 itself; then its ``on_manscdp`` listeners here get
the body:

- **Alarm** (§A.2.5.5): the platform answers with a ``Response`` of CmdType
  Alarm, ``Result`` OK, the alarm's SN and DeviceID (§9.4.2), in a MESSAGE of
  its own. The alarm is stored under the device that sent it (the SIP
  sender), with the body's DeviceID as its source (the device or a channel).
  Once stored it is published on the event bus (``alarm``, with its id). If
  snapshot-on-alarm is on for its channel (``PUT /channels/{id}/alarm-settings``,
  else ``alarms.snapshot``), the platform then takes a snapshot of the
  channel (``gbplatform.outputs.http.channel_snapshot``: the live stream's
  keyframe, the stream started if none runs), writes the JPEG under
  <data_dir>/alarm-snapshots/ off the reactor and records its key on the
  alarm; a failure is logged and recorded on the alarm (``snapshot_error``).
  The alarm was stored first either way.
- **MobilePosition** (§A.2.5.6): checked (a position without a valid
  longitude/latitude is logged and dropped), published (``position``) and
  stored.

Writes are batched (``ReportWriter``, the ``StateWriter`` pattern of
``gbplatform.devices.registrar``): everything that arrives during
``flush_interval`` goes in one transaction, one at a time, so a fleet of
vehicles reporting every second costs a few transactions a second, and the
writes of one device commit in the order they arrived.

The Alarm Query (§A.2.4.5, ``query``) asks a device for its alarm history;
it answers with one or several ``Response`` MESSAGEs (``SumNum``,
``AlarmList``) correlated by SN (§9.5), stored like notified alarms (an
alarm already stored from an earlier query is not stored twice).

Retention: every ``PURGE_INTERVAL`` on the injected clock, alarms older than
``alarms.retention_days`` (with their snapshot files) and positions older
than ``positions.retention_days`` are deleted, in chunks, off the reactor.

Device times (``AlarmTime``, ``Time``) carry no zone (§A.2.1): they are read
in ``record.timezone`` (empty: the host's zone), like the recording plans.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.alarms import store
from gbplatform.api import schemas
from gbplatform.app.context import AppContext
from gbplatform.core.clock import Clock, DelayedCallLike, utc_datetime
from gbplatform.core.errors import DeviceTimeout
from gbplatform.db import queries as q
from gbplatform.db.database import Database
from gbplatform.signalling.router import Correlation
from sip import manscdp
from sip.gbid import gb_id_type, is_loose_id

__all__ = ["MAX_QUERY_ALARMS", "PURGE_INTERVAL", "AlarmService", "AlarmsService", "QueryAnswer", "ReportWriter", "SNAPSHOT_DIR"]

log = Logger()

PURGE_INTERVAL: Final = 3600.0
"""Seconds between retention runs; the first runs a minute after start."""
FIRST_PURGE: Final = 60.0
SNAPSHOT_DIR: Final = "alarm-snapshots"
_MIN_YEAR, _MAX_YEAR = 1970, 2099
MAX_QUERY_ALARMS: Final = 10_000
"""Most alarms one Alarm Query answer is read for: a device's ``SumNum`` (10^9, say) bounds nothing, and
every item is kept in memory, stored and returned; past it the answer is cut (``complete`` false), logged."""

Snapshotter = Callable[[str], Awaitable[bytes]]


def device_time(value: dt.datetime | None, tz: dt.tzinfo) -> dt.datetime | None:
    """A device's §A.2.1 time as aware UTC: naive times are in ``tz``; None when absent or absurd."""
    if value is None or not _MIN_YEAR <= value.year <= _MAX_YEAR:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=tz)
    return aware.astimezone(dt.UTC)


def _coordinate(value: float | None, bound: float) -> float | None:
    return value if value is not None and math.isfinite(value) and -bound <= value <= bound else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _in_range(value: int | None, lo: int, hi: int) -> int | None:
    return value if value is not None and lo <= value <= hi else None


def _source_ok(device_id: str, source: str | None) -> bool:
    """Whether a report's ``DeviceID`` (its source: the device or one of its channels, §A.2.5.5) can be stored
    as it is: an ID of the registry's form and length (``sip.gbid``, 32 characters)."""
    return source is not None and (source == device_id or is_loose_id(source))


@dataclass
class ReportWriter:
    """Batches alarm and position inserts into few transactions, one running at a time (group commit).

    ``add_alarm`` answers a Deferred fired with the alarm's ``store.Stored`` once committed (errback
    when the batch failed, after logging); positions have no answer.
    """

    db: Database
    clock: Clock
    flush_interval: float = 0.2
    max_batch: int = 1000
    _alarms: list[tuple[store.AlarmRow, Deferred[store.Stored]]] = field(default_factory=list)
    _positions: list[store.PositionRow] = field(default_factory=list)
    _timer: DelayedCallLike | None = None
    _running: bool = False
    _waiters: list[Deferred[None]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return len(self._alarms) + len(self._positions)

    def add_alarm(self, row: store.AlarmRow) -> Deferred[store.Stored]:
        d: Deferred[store.Stored] = Deferred()
        self._alarms.append((row, d))
        self._added()
        return d

    def add_position(self, row: store.PositionRow) -> None:
        self._positions.append(row)
        self._added()

    def _added(self) -> None:
        if self.pending >= self.max_batch:
            self._kick()
        elif self._timer is None:
            self._timer = self.clock.call_later(self.flush_interval, self._kick)

    def _kick(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._running and self.pending:
            self._start()

    def flush(self) -> Deferred[None]:
        """Fires once everything added so far is written (or failed, logged)."""
        d: Deferred[None] = Deferred()
        if not self._running and not self.pending:
            d.callback(None)
            return d
        self._waiters.append(d)
        self._kick()
        return d

    def _start(self) -> None:
        alarms, self._alarms = self._alarms, []
        positions, self._positions = self._positions, []
        waiters, self._waiters = self._waiters, []
        self._running = True
        d = self.db.run("alarm_reports", store.write_reports_txn, [a[0] for a in alarms], positions)

        def written(stored: list[store.Stored]) -> None:
            for (_, waiter), result in zip(alarms, stored, strict=True):
                waiter.callback(result)

        def failed(f: Failure) -> None:
            log.failure("storing {a} alarm(s) and {p} position(s) failed", f, a=len(alarms), p=len(positions))
            for _, waiter in alarms:
                waiter.errback(f)

        d.addCallbacks(written, failed)
        d.addBoth(lambda _: self._finished(waiters))

    def _finished(self, waiters: list[Deferred[None]]) -> None:
        self._running = False
        for waiter in waiters:
            waiter.callback(None)
        if self.pending and not self._running and (self._waiters or self.pending >= self.max_batch):
            self._start()
        elif self.pending and self._timer is None and not self._running:
            self._timer = self.clock.call_later(self.flush_interval, self._kick)


@dataclass(frozen=True)
class QueryAnswer:
    """A device's answer to the Alarm Query: its ``Result``, ``SumNum``, whether every item came, the
    alarms stored from it."""

    device_id: str
    result: str | None
    sum_num: int
    complete: bool
    alarms: list[store.AlarmRecord]


class AlarmService:
    """Receives, answers, stores, publishes and snapshots alarms; stores positions; asks the Alarm Query."""

    def __init__(self, platform: AppContext, *, snapshotter: Snapshotter | None = None) -> None:
        self.platform = platform
        self.db = platform.db
        self.clock = platform.clock
        self.router = platform.router
        self.config = platform.config
        timezone = platform.config.record.timezone
        self.tz: dt.tzinfo = zoneinfo.ZoneInfo(timezone) if timezone else (
            dt.datetime.now().astimezone().tzinfo or dt.UTC)
        self.writer = ReportWriter(platform.db, platform.clock)
        self.snapshot_dir = Path(platform.config.storage.data_dir) / SNAPSHOT_DIR
        self.snapshotter: Snapshotter = snapshotter or self._live_snapshot
        # Blocking file work (JPEG writes, deletes); tests set a synchronous runner.
        self.run_blocking: Callable[..., Deferred[Any]] | None = None
        self.stats = {"alarms": 0, "positions": 0, "dropped": 0, "snapshots": 0, "snapshot_failures": 0}
        self._purge_timer: DelayedCallLike | None = None
        self._purging = False
        self.router.on_manscdp("Notify", "Alarm", self.on_alarm)
        self.router.on_manscdp("Notify", "MobilePosition", self.on_position)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Arm the retention timer (the first run a minute from now)."""
        self._arm(FIRST_PURGE)

    def stop(self) -> Deferred[None]:
        if self._purge_timer is not None and self._purge_timer.active():
            self._purge_timer.cancel()
        self._purge_timer = None
        return self.writer.flush()

    def _arm(self, delay: float) -> None:
        self._purge_timer = self.clock.call_later(delay, self._purge_due)

    def _purge_due(self) -> None:
        self._purge_timer = None
        d = ensureDeferred(self.purge())
        d.addErrback(lambda f: log.failure("alarm/position retention run failed", f))
        d.addBoth(lambda _: self._arm(PURGE_INTERVAL) if self._purge_timer is None else None)

    def blocking(self) -> Callable[..., Deferred[Any]]:
        """Where blocking file work runs: ``run_blocking`` if set (tests), else the snapshot pool."""
        if self.run_blocking is not None:
            return self.run_blocking
        workers = self.platform.workers
        return workers.runner("snapshot") if workers is not None else deferToThread

    # -- alarms ----------------------------------------------------------------
    def on_alarm(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """Notify Alarm (§9.4): answer it (§9.4.2), store it, publish it, snapshot it."""
        if not isinstance(msg, manscdp.AlarmNotify):
            return
        self._acknowledge(device_id, msg)
        at = utc_datetime(self.clock.time())
        source = self._source(device_id, msg.device_id, "alarm")
        priority = _in_range(msg.alarm_priority, 1, 4)
        method = _in_range(msg.alarm_method, 1, 7)
        if priority != msg.alarm_priority or method != msg.alarm_method:
            log.info("alarm from {device}: priority {p!r} / method {m!r} out of range (§A.2.5.5), stored as "
                     "unknown", device=device_id, p=msg.alarm_priority, m=msg.alarm_method)
        row = store.AlarmRow(
            device_id=device_id, channel_id=source, priority=priority, method=method,
            alarm_type=msg.alarm_type, event_type=msg.event_type, device_time=device_time(msg.alarm_time, self.tz),
            received_at=at, longitude=_coordinate(msg.longitude, 180), latitude=_coordinate(msg.latitude, 90),
            description=(msg.alarm_description or None) and msg.alarm_description[:1024],
        )
        self.stats["alarms"] += 1
        d = self.writer.add_alarm(row)
        d.addCallback(lambda stored: self._stored(row, stored))
        d.addErrback(lambda f: log.info("alarm from {device} not stored: {e}", device=device_id,
                                        e=f.getErrorMessage()))

    def _source(self, device_id: str, source: str | None, what: str) -> str:
        """The report's source to store: its ``DeviceID``, or the sender when that is no ID the registry can
        hold (too long, ``/`` or spaces in it): one such value would fail the whole write batch, every other
        device's reports with it (PostgreSQL: value too long), so the report is kept under its sender."""
        if _source_ok(device_id, source):
            assert source is not None
            return source
        self.platform.devices.log_refusal(
            f"{what} source {device_id}", "{what} from {device}: DeviceID {source!r} is no device or channel ID; "
            "stored under the sender", what=what, device=device_id, source=(source or "")[:40])
        return device_id

    def _acknowledge(self, device_id: str, msg: manscdp.AlarmNotify) -> None:
        body = manscdp.encode_alarm_ack(msg.sn, msg.device_id, charset=self.platform.devices.charset_of(device_id))
        d = ensureDeferred(self.router.send_manscdp(device_id, body))
        d.addErrback(lambda f: log.info("alarm Response to {device} (SN {sn}) failed: {e}", device=device_id,
                                        sn=msg.sn, e=f.getErrorMessage()))

    def _stored(self, row: store.AlarmRow, stored: store.Stored) -> None:
        snapshot = self.config.alarms.snapshot if stored.snapshot is None else stored.snapshot
        self.platform.bus.publish("alarm", **alarm_event(row, stored.id, snapshot_pending=snapshot))
        if snapshot:
            d = ensureDeferred(self._snapshot(stored.id, row))
            d.addErrback(lambda f: log.failure("snapshot of alarm {id} failed", f, id=stored.id))

    async def _live_snapshot(self, channel_id: str) -> bytes:
        from gbplatform.outputs.http import (
            channel_snapshot,  # the API's module: imported when first used
        )

        return await channel_snapshot(self.platform, channel_id, self.blocking())

    async def _snapshot(self, alarm_id: int, row: store.AlarmRow) -> None:
        """Snapshot the alarm's channel and keep the JPEG with the alarm; a failure is recorded on it."""
        key: str | None = None
        error: str | None = None
        try:
            jpeg = await self.snapshotter(await self._picture_channel(row))
            key = f"{row.received_at:%Y-%m-%d}/{alarm_id}.jpg"
            await self.blocking()(_write_file, self.snapshot_dir / key, jpeg)
        except Exception as e:  # noqa: BLE001 - any failure (offline, no keyframe, disk) is the alarm's note
            key, error = None, (getattr(e, "message", None) or str(e) or type(e).__name__)[:500]
            self.stats["snapshot_failures"] += 1
            log.warn("alarm {id}: no snapshot of channel {channel}: {error}", id=alarm_id, channel=row.channel_id,
                     error=error)
        else:
            self.stats["snapshots"] += 1
        await self.db.run("alarm_snapshot", store.set_alarm_snapshot_txn, alarm_id, key, error)
        self.platform.bus.publish("snapshot", device_id=row.device_id, channel_id=row.channel_id,
                                  state="failed" if key is None else "taken", alarm_id=alarm_id,
                                  url=None if key is None else snapshot_url(alarm_id), error=error)

    async def _picture_channel(self, row: store.AlarmRow) -> str:
        """The channel to picture: the alarm's source, or for an alarm of the device as a whole (an IPC
        reporting under its own ID) the device's first camera channel."""
        if row.channel_id != row.device_id:
            return row.channel_id
        page = await self.db.run("list_channels", q.list_channels_txn, row.device_id, limit=50)
        channels = [c.channel_id for c in page.items if c.kind == "channel"]
        # Annex D type codes 131 (camera) and 132 (IP camera) first: an alarm input (134) has no picture.
        cameras = [c for c in channels if gb_id_type(c) in (131, 132)] + channels
        return cameras[0] if cameras else row.channel_id

    def snapshot_path(self, key: str) -> Path:
        """The file of a stored snapshot key (never outside the snapshot directory)."""
        path = (self.snapshot_dir / key).resolve()
        if not path.is_relative_to(self.snapshot_dir.resolve()):
            raise ValueError(f"snapshot key {key!r} leaves {self.snapshot_dir}")
        return path

    # -- positions -------------------------------------------------------------
    def on_position(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """Notify MobilePosition (§9.10, §A.2.5.6): publish and store; a position without valid
        coordinates is logged (throttled) and dropped."""
        if not isinstance(msg, manscdp.MobilePositionNotify):
            return
        lon, lat = _coordinate(msg.longitude, 180), _coordinate(msg.latitude, 90)
        if lon is None or lat is None:
            self.stats["dropped"] += 1
            self.platform.devices.log_refusal(
                f"position {device_id}", "MobilePosition from {device} dropped: no valid Longitude/Latitude "
                "({lon!r}, {lat!r})", device=device_id, lon=msg.longitude, lat=msg.latitude)
            return
        at = utc_datetime(self.clock.time())
        row = store.PositionRow(
            device_id=device_id, channel_id=self._source(device_id, msg.device_id, "MobilePosition"), time=device_time(msg.time, self.tz) or at,
            received_at=at, longitude=lon, latitude=lat, speed=_finite(msg.speed), direction=_finite(msg.direction),
            altitude=_finite(msg.altitude),
        )
        self.stats["positions"] += 1
        self.writer.add_position(row)
        self.platform.bus.publish("position", **position_event(row))

    # -- the Alarm Query (§A.2.4.5) --------------------------------------------------
    async def query(self, device_id: str, *, start_priority: int | None = None, end_priority: int | None = None,
                    method: str | None = None, alarm_type: str | None = None, start: dt.datetime | None = None,
                    end: dt.datetime | None = None, timeout: float | None = None) -> QueryAnswer:
        """Ask the (registered) device for its alarms; collect its answer's ``AlarmList`` over one or more
        MESSAGEs (``SumNum``) until every item came or ``sip.query_timeout``; store them. ``DeviceTimeout``
        when no answer came at all."""
        wait = self.config.sip.query_timeout if timeout is None else timeout
        sn = self.router.next_sn()
        items: list[manscdp.AlarmItem] = []
        first: list[manscdp.AlarmQueryResponse] = []
        done: Deferred[bool] = Deferred()

        def answered(msg: manscdp.ManscdpMessage) -> None:
            if not isinstance(msg, manscdp.AlarmQueryResponse) or done.called:
                return
            if not first:
                first.append(msg)
            room = MAX_QUERY_ALARMS - len(items)
            items.extend(msg.alarms[:room])
            if len(msg.alarms) > room:
                log.info("Alarm Query answer of {device}: SumNum {sum}, only the first {max} alarms are kept",
                         device=device_id, sum=msg.sum_num, max=MAX_QUERY_ALARMS)
                finish(False)
            elif len(items) >= msg.sum_num:
                finish(True)

        def finish(complete: bool) -> None:
            correlation.close()
            if timer.active():
                timer.cancel()
            if not done.called:
                done.callback(complete)

        correlation: Correlation = self.router.expect(device_id, "Alarm", sn, answered)
        timer = self.clock.call_later(wait, lambda: finish(False))
        charset = self.platform.devices.charset_of(device_id)
        local = [None if t is None else t.astimezone(self.tz).replace(tzinfo=None) for t in (start, end)]
        body = manscdp.encode_alarm_query(sn, device_id, start_priority=start_priority, end_priority=end_priority,
                                          method=method, alarm_type=alarm_type, start=local[0], end=local[1],
                                          charset=charset)
        try:
            await self.router.send_manscdp(device_id, body)
        except Exception:
            finish(False)
            raise
        complete = await done
        if not first:
            raise DeviceTimeout(f"device {device_id} did not answer the Alarm Query in {wait:g} s")
        at = utc_datetime(self.clock.time())
        rows = [store.AlarmRow(
            device_id=device_id, channel_id=self._source(device_id, item.device_id or device_id, "alarm"),
            priority=_in_range(item.alarm_priority, 1, 4), method=_in_range(item.alarm_method, 1, 7),
            alarm_type=item.alarm_type, event_type=item.event_type,
            device_time=device_time(item.alarm_time, self.tz), received_at=at,
            longitude=_coordinate(item.longitude, 180), latitude=_coordinate(item.latitude, 90),
            description=(item.alarm_description or None) and item.alarm_description[:1024], source="query",
        ) for item in items]
        stored = await self.db.run("alarm_query_store", store.write_reports_txn, rows, [])
        records = []
        seen: set[int] = set()
        for row, one in zip(rows, stored, strict=True):
            if one.new:
                self.platform.bus.publish("alarm", **alarm_event(row, one.id, snapshot_pending=False))
            if one.id in seen:
                continue  # the same alarm sent twice in one answer (a page repeated): listed once
            seen.add(one.id)
            record = await self.db.run("get_alarm", store.get_alarm_txn, one.id)
            if record is not None:
                records.append(record)
        return QueryAnswer(device_id=device_id, result=first[0].result, sum_num=first[0].sum_num,
                           complete=complete, alarms=records)

    # -- retention ---------------------------------------------------------------
    async def purge(self) -> tuple[int, int]:
        """Delete alarms (and their snapshots) and positions past their retention; how many of each."""
        if self._purging:
            return 0, 0
        self._purging = True
        try:
            now = self.clock.time()
            alarms_gone = positions_gone = 0
            days = self.config.alarms.retention_days
            if days:
                alarms_gone = await self.delete_alarms_before(utc_datetime(now - days * 86400.0))
            days = self.config.positions.retention_days
            if days:
                before = utc_datetime(now - days * 86400.0)
                while True:
                    n = await self.db.run("purge_positions", store.purge_positions_txn, before)
                    positions_gone += n
                    if n < store.PURGE_CHUNK * 10:
                        break
            if alarms_gone or positions_gone:
                log.info("retention: {a} alarm(s) and {p} position(s) deleted", a=alarms_gone, p=positions_gone)
            return alarms_gone, positions_gone
        finally:
            self._purging = False

    async def delete_alarms_before(self, before: dt.datetime) -> int:
        """Delete the alarms received before ``before`` and their snapshot files; how many."""
        total = 0
        while True:
            n, keys = await self.db.run("delete_alarms", store.delete_alarms_before_txn, before)
            total += n
            if keys:
                await self.blocking()(_remove_files, [self.snapshot_path(k) for k in keys])
            if n < store.PURGE_CHUNK:
                return total


def snapshot_url(alarm_id: int) -> str:
    return f"/api/v1/alarms/{alarm_id}/snapshot.jpg"


def _iso(value: dt.datetime | None) -> str | None:
    return schemas.iso(value)  # as the API writes times


def alarm_event(row: store.AlarmRow, alarm_id: int, *, snapshot_pending: bool) -> dict[str, Any]:
    """The ``alarm`` event's data: the stored alarm's fields and id (the API's ``Alarm`` keys)."""
    return {"device_id": row.device_id, "channel_id": row.channel_id, "id": alarm_id, "priority": row.priority,
            "method": row.method, "type": row.alarm_type, "event_type": row.event_type,
            "time": _iso(row.device_time), "received_at": _iso(row.received_at), "longitude": row.longitude,
            "latitude": row.latitude, "description": row.description, "source": row.source,
            "snapshot_pending": snapshot_pending}


def position_event(row: store.PositionRow) -> dict[str, Any]:
    """The ``position`` event's data (the API's ``Position`` keys)."""
    return {"device_id": row.device_id, "channel_id": row.channel_id, "time": _iso(row.time),
            "received_at": _iso(row.received_at), "longitude": row.longitude, "latitude": row.latitude,
            "speed": row.speed, "direction": row.direction, "altitude": row.altitude}


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # deleted by hand: what retention wanted anyway
        except OSError as e:
            log.warn("could not delete alarm snapshot {path}: {error}", path=str(path), error=e)


class AlarmsService(Service):
    """Starts the retention timer with the platform and writes out pending reports on stop."""

    name = "alarms"

    def __init__(self, alarms: AlarmService) -> None:
        self.alarms = alarms

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]
        self.alarms.start()

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]
        return self.alarms.stop()
