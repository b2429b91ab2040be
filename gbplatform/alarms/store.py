"""Alarm and position queries: ``*_txn(session, ...)`` functions for ``Database.run``.

The rules of ``gbplatform.db.queries`` hold: a session first, no Twisted,
frozen dataclasses out, safe to run twice (``Database.run`` retries once).
Reports arrive in batches (``ReportWriter`` in ``service``): one transaction
writes every alarm and position that came in during a flush interval.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import RowMapping

from gbplatform.db.database import Session
from gbplatform.db.models import Alarm, AlarmSetting, Position

__all__ = [
    "AlarmFilter",
    "AlarmRecord",
    "AlarmRow",
    "PositionRecord",
    "PositionRow",
    "Stored",
    "delete_alarms_before_txn",
    "get_alarm_setting_txn",
    "get_alarm_txn",
    "latest_positions_txn",
    "list_alarms_txn",
    "purge_positions_txn",
    "set_alarm_setting_txn",
    "set_alarm_snapshot_txn",
    "track_txn",
    "write_reports_txn",
]

alarms = cast(Table, Alarm.__table__)
positions = cast(Table, Position.__table__)
settings = cast(Table, AlarmSetting.__table__)

PURGE_CHUNK: Final = 1000
"""Rows one purge transaction deletes: a year of alarms must not hold one huge transaction."""


@dataclass(frozen=True, slots=True)
class AlarmRow:
    """An alarm to store (``device_id`` the sender, ``channel_id`` the source)."""

    device_id: str
    channel_id: str
    priority: int | None
    method: int | None
    alarm_type: int | None
    event_type: int | None
    device_time: dt.datetime | None
    received_at: dt.datetime
    longitude: float | None
    latitude: float | None
    description: str | None
    source: str = "notify"


@dataclass(frozen=True, slots=True)
class AlarmRecord:
    id: int
    device_id: str
    channel_id: str
    priority: int | None
    method: int | None
    alarm_type: int | None
    event_type: int | None
    device_time: dt.datetime | None
    received_at: dt.datetime
    longitude: float | None
    latitude: float | None
    description: str | None
    source: str
    snapshot: str | None
    snapshot_error: str | None


@dataclass(frozen=True, slots=True)
class PositionRow:
    device_id: str
    channel_id: str
    time: dt.datetime
    received_at: dt.datetime
    longitude: float
    latitude: float
    speed: float | None
    direction: float | None
    altitude: float | None


@dataclass(frozen=True, slots=True)
class PositionRecord(PositionRow):
    id: int


@dataclass(frozen=True, slots=True)
class Stored:
    """What storing one alarm gave: its id, and its channel's snapshot setting (None: no setting)."""

    id: int
    snapshot: bool | None
    new: bool = True


@dataclass(frozen=True)
class AlarmFilter:
    device_id: str | None = None
    channel_id: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    priority: int | None = None
    method: int | None = None
    alarm_type: int | None = None


def _alarm(row: RowMapping) -> AlarmRecord:
    return AlarmRecord(**{k: row[k] for k in AlarmRecord.__slots__})


def _position(row: RowMapping) -> PositionRecord:
    return PositionRecord(**{k: row[k] for k in PositionRecord.__slots__ + PositionRow.__slots__})


def _existing_query_alarm(s: Session, row: AlarmRow) -> int | None:
    """The id of an alarm from an earlier Alarm Query with the same source, time, method and type: asking
    the device twice must not store its history twice."""
    if row.device_time is None:
        return None
    found = s.execute(select(alarms.c.id).where(
        alarms.c.channel_id == row.channel_id, alarms.c.device_id == row.device_id,
        alarms.c.device_time == row.device_time, alarms.c.method.is_(None) if row.method is None
        else alarms.c.method == row.method,
        alarms.c.alarm_type.is_(None) if row.alarm_type is None else alarms.c.alarm_type == row.alarm_type,
    ).limit(1)).scalar()
    return None if found is None else int(found)


def write_reports_txn(s: Session, alarm_rows: Sequence[AlarmRow], position_rows: Sequence[PositionRow]) -> list[Stored]:
    """Insert a batch of alarms (each gets its id back) and positions (one ``executemany``); per alarm,
    its id and the snapshot setting of its channel. Alarms from an Alarm Query already stored are not
    inserted again (``new`` False)."""
    out: list[Stored] = []
    if alarm_rows:
        channel_ids = sorted({r.channel_id for r in alarm_rows})
        chosen = {row[0]: row[1] for row in s.execute(select(settings.c.channel_id, settings.c.snapshot)
                                                     .where(settings.c.channel_id.in_(channel_ids)))}
        for row in alarm_rows:
            existing = _existing_query_alarm(s, row) if row.source == "query" else None
            if existing is not None:
                out.append(Stored(existing, chosen.get(row.channel_id), new=False))
                continue
            new_id = s.execute(insert(alarms).values(**asdict(row)).returning(alarms.c.id)).scalar_one()
            out.append(Stored(int(new_id), chosen.get(row.channel_id)))
    if position_rows:
        s.execute(insert(positions), [asdict(r) for r in position_rows])
    return out


def get_alarm_txn(s: Session, alarm_id: int) -> AlarmRecord | None:
    row = s.execute(select(alarms).where(alarms.c.id == alarm_id)).mappings().first()
    return None if row is None else _alarm(row)


def list_alarms_txn(s: Session, where: AlarmFilter, *, limit: int, offset: int = 0,
                    before_id: int | None = None) -> tuple[list[AlarmRecord], int]:
    """Alarms matching ``where``, newest (highest id: last received) first, and how many match.

    ``before_id`` is the cursor: only alarms older than that one (stable while new alarms arrive,
    where an offset would shift)."""
    conds: list[Any] = []
    if where.device_id is not None:
        conds.append(alarms.c.device_id == where.device_id)
    if where.channel_id is not None:
        conds.append(alarms.c.channel_id == where.channel_id)
    if where.start is not None:
        conds.append(alarms.c.received_at >= where.start)
    if where.end is not None:
        conds.append(alarms.c.received_at < where.end)
    if where.priority is not None:
        conds.append(alarms.c.priority == where.priority)
    if where.method is not None:
        conds.append(alarms.c.method == where.method)
    if where.alarm_type is not None:
        conds.append(alarms.c.alarm_type == where.alarm_type)
    total = int(s.execute(select(func.count()).select_from(alarms).where(*conds)).scalar_one())
    if before_id is not None:
        conds.append(alarms.c.id < before_id)
    rows = s.execute(select(alarms).where(*conds).order_by(alarms.c.id.desc()).offset(offset).limit(limit))
    return [_alarm(r) for r in rows.mappings()], total


def set_alarm_snapshot_txn(s: Session, alarm_id: int, snapshot: str | None, error: str | None) -> bool:
    """Record the alarm's snapshot (its key) or why there is none; False when the alarm is gone."""
    result = s.execute(update(alarms).where(alarms.c.id == alarm_id)
                       .values(snapshot=snapshot, snapshot_error=error))
    return bool(getattr(result, "rowcount", 0))


def delete_alarms_before_txn(s: Session, before: dt.datetime, *, limit: int = PURGE_CHUNK) -> tuple[int, list[str]]:
    """Delete up to ``limit`` alarms received before ``before``, oldest first; how many, and the
    snapshot keys the caller must delete."""
    rows = s.execute(select(alarms.c.id, alarms.c.snapshot).where(alarms.c.received_at < before)
                     .order_by(alarms.c.id).limit(limit)).all()
    if not rows:
        return 0, []
    ids = [r[0] for r in rows]
    s.execute(delete(alarms).where(alarms.c.id.in_(ids)))
    return len(ids), [r[1] for r in rows if r[1]]


def purge_positions_txn(s: Session, before: dt.datetime, *, limit: int = PURGE_CHUNK * 10) -> int:
    """Delete up to ``limit`` positions received before ``before``; how many."""
    ids = s.execute(select(positions.c.id).where(positions.c.received_at < before)
                    .order_by(positions.c.id).limit(limit)).scalars().all()
    if ids:
        s.execute(delete(positions).where(positions.c.id.in_(ids)))
    return len(ids)


def latest_positions_txn(s: Session, device_id: str) -> list[PositionRecord]:
    """The latest position of each of the device's sources (itself, its channels), by channel."""
    latest = (select(positions.c.channel_id, func.max(positions.c.time).label("time"))
              .where(positions.c.device_id == device_id).group_by(positions.c.channel_id).subquery())
    rows = s.execute(select(positions).join(latest, (positions.c.channel_id == latest.c.channel_id)
                                            & (positions.c.time == latest.c.time))
                     .where(positions.c.device_id == device_id)
                     .order_by(positions.c.channel_id, positions.c.id.desc())).mappings().all()
    seen: dict[str, PositionRecord] = {}
    for row in rows:  # two reports with the same time: the last received
        seen.setdefault(row["channel_id"], _position(row))
    return list(seen.values())


def track_txn(s: Session, device_id: str, start: dt.datetime, end: dt.datetime, *, channel_id: str | None = None,
              limit: int) -> tuple[list[PositionRecord], int]:
    """Positions of ``device_id`` (one source with ``channel_id``) in [start, end), by source then time, at
    most ``limit`` per source: a longer track is thinned to every n-th point, its last point kept. Also
    the number of points there were."""
    conds = [positions.c.device_id == device_id, positions.c.time >= start, positions.c.time < end]
    if channel_id is not None:
        conds.append(positions.c.channel_id == channel_id)
    counts = {row[0]: int(row[1]) for row in s.execute(select(positions.c.channel_id, func.count()).where(*conds)
                                                       .group_by(positions.c.channel_id))}
    out: list[PositionRecord] = []
    for channel, count in sorted(counts.items()):
        step = max(1, -(-int(count) // limit))  # ceil
        numbered = select(positions, func.row_number().over(order_by=(positions.c.time, positions.c.id))
                          .label("n")).where(*conds, positions.c.channel_id == channel).subquery()
        keep = ((numbered.c.n - 1) % step == 0) | (numbered.c.n == count)
        rows = list(s.execute(select(numbered).where(keep).order_by(numbered.c.n)).mappings().all())
        if len(rows) > limit:  # the last point came on top of the sampled ones
            rows = rows[:limit - 1] + rows[-1:]
        out.extend(_position(r) for r in rows)
    return out, int(sum(counts.values()))


def get_alarm_setting_txn(s: Session, channel_id: str) -> bool | None:
    return s.execute(select(settings.c.snapshot).where(settings.c.channel_id == channel_id)).scalar()


def set_alarm_setting_txn(s: Session, channel_id: str, snapshot: bool | None, at: dt.datetime) -> None:
    """Set the channel's snapshot-on-alarm, or with None forget it (the global default applies)."""
    s.execute(delete(settings).where(settings.c.channel_id == channel_id))
    if snapshot is not None:
        s.execute(insert(settings).values(channel_id=channel_id, snapshot=snapshot, updated_at=at))
