"""Registry queries for recording: plans, policies, segments (``*_txn(session, ...)``).

Same rules as :mod:`gbplatform.db.queries`: plain functions run by
``Database.run`` on the database thread pool, Core statements on the model
tables, dataclasses out (never ORM rows), safe to run twice. Segment times
leave as epoch seconds (floats): every caller does arithmetic on them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import sqlalchemy as sa
from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError

from gbplatform.core.clock import utc_datetime
from gbplatform.core.errors import DomainError
from gbplatform.db.database import Session
from gbplatform.db.models import Channel, RecordPlan, RecordPolicy, RecordSegment

plans: Final = cast(Table, RecordPlan.__table__)
policies: Final = cast(Table, RecordPolicy.__table__)
segments: Final = cast(Table, RecordSegment.__table__)
channels: Final = cast(Table, Channel.__table__)

MODES = ("off", "continuous", "plan")


class PlanNotFound(DomainError):
    status = 404
    code = "not_found"


class PlanExists(DomainError):
    status = 409
    code = "plan_exists"


class PlanInUse(DomainError):
    status = 409
    code = "plan_in_use"


def _epoch(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


@dataclass(frozen=True)
class PlanRecord:
    id: int
    name: str
    schedule: list[dict[str, Any]]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class PolicyRecord:
    channel_id: str
    mode: str
    plan_id: int | None
    retention_days: int | None
    updated_at: dt.datetime | None


@dataclass(frozen=True)
class ActivePolicy:
    """A channel to record (mode not off), with what the manager needs to start it."""

    channel_id: str
    device_id: str | None  # None: the channel is in no device's catalog (yet)
    mode: str
    schedule: list[dict[str, Any]] | None


@dataclass(frozen=True)
class SegmentRecord:
    id: int
    channel_id: str
    start: float
    end: float | None
    size: int
    key: str
    backend: str
    state: str
    local: bool
    has_audio: bool
    keyframes: list[list[float]]
    uploaded_at: float | None


def _plan(row: Any) -> PlanRecord:
    return PlanRecord(row.id, row.name, list(row.schedule or []), row.created_at, row.updated_at)


def _segment(row: Any) -> SegmentRecord:
    return SegmentRecord(
        id=row.id, channel_id=row.channel_id, start=row.start_at.timestamp(), end=_epoch(row.end_at),
        size=int(row.size), key=row.key, backend=row.backend, state=row.state, local=bool(row.local),
        has_audio=bool(row.has_audio), keyframes=list(row.keyframes or []), uploaded_at=_epoch(row.uploaded_at),
    )


# --- plans ----------------------------------------------------------------------


def list_plans_txn(session: Session) -> list[PlanRecord]:
    return [_plan(r) for r in session.execute(sa.select(plans).order_by(plans.c.id))]


def get_plan_txn(session: Session, plan_id: int) -> PlanRecord:
    row = session.execute(sa.select(plans).where(plans.c.id == plan_id)).first()
    if row is None:
        raise PlanNotFound(f"recording plan {plan_id} not found")
    return _plan(row)


def create_plan_txn(session: Session, name: str, schedule: list[dict[str, Any]], *, at: dt.datetime) -> PlanRecord:
    if session.execute(sa.select(plans.c.id).where(plans.c.name == name)).first() is not None:
        raise PlanExists(f"a recording plan named {name!r} exists")
    try:
        with session.begin_nested():
            new_id = session.execute(
                plans.insert().values(name=name, schedule=schedule, created_at=at, updated_at=at)
                .returning(plans.c.id)
            ).scalar_one()
    except IntegrityError:
        raise PlanExists(f"a recording plan named {name!r} exists") from None
    return get_plan_txn(session, int(new_id))


def update_plan_txn(session: Session, plan_id: int, *, name: str | None, schedule: list[dict[str, Any]] | None,
                    at: dt.datetime) -> PlanRecord:
    get_plan_txn(session, plan_id)
    values: dict[str, Any] = {"updated_at": at}
    if name is not None:
        clash = session.execute(sa.select(plans.c.id).where(plans.c.name == name, plans.c.id != plan_id)).first()
        if clash is not None:
            raise PlanExists(f"a recording plan named {name!r} exists")
        values["name"] = name
    if schedule is not None:
        values["schedule"] = schedule
    session.execute(plans.update().where(plans.c.id == plan_id).values(**values))
    return get_plan_txn(session, plan_id)


def delete_plan_txn(session: Session, plan_id: int) -> None:
    get_plan_txn(session, plan_id)
    users = session.execute(
        sa.select(policies.c.channel_id).where(policies.c.plan_id == plan_id).limit(5)
    ).scalars().all()
    if users:
        raise PlanInUse(f"recording plan {plan_id} is used by channel(s) {', '.join(users)}")
    session.execute(plans.delete().where(plans.c.id == plan_id))


# --- policies ---------------------------------------------------------------------


def get_policy_txn(session: Session, channel_id: str) -> PolicyRecord:
    """The channel's policy; a channel without a row is not recorded (mode off)."""
    row = session.execute(sa.select(policies).where(policies.c.channel_id == channel_id)).first()
    if row is None:
        return PolicyRecord(channel_id, "off", None, None, None)
    return PolicyRecord(row.channel_id, row.mode, row.plan_id, row.retention_days, row.updated_at)


def put_policy_txn(session: Session, channel_id: str, *, mode: str, plan_id: int | None,
                   retention_days: int | None, at: dt.datetime) -> PolicyRecord:
    if plan_id is not None:
        get_plan_txn(session, plan_id)
    values = {"mode": mode, "plan_id": plan_id, "retention_days": retention_days, "updated_at": at}
    updated = session.execute(policies.update().where(policies.c.channel_id == channel_id).values(**values))
    if getattr(updated, "rowcount", 0) == 0:
        session.execute(policies.insert().values(channel_id=channel_id, **values))
    return get_policy_txn(session, channel_id)


def active_policies_txn(session: Session) -> list[ActivePolicy]:
    rows = session.execute(
        sa.select(policies.c.channel_id, policies.c.mode, plans.c.schedule)
        .select_from(policies.outerjoin(plans, plans.c.id == policies.c.plan_id))
        .where(policies.c.mode != "off")
        .order_by(policies.c.channel_id)
    ).all()
    if not rows:
        return []
    owners: dict[str, str] = {}
    ids = [r.channel_id for r in rows]
    for chunk in range(0, len(ids), 500):
        for channel_id, device_id in session.execute(
            sa.select(channels.c.channel_id, channels.c.device_id).where(channels.c.channel_id.in_(ids[chunk:chunk + 500]))
        ):
            owners.setdefault(channel_id, device_id)
    return [ActivePolicy(r.channel_id, owners.get(r.channel_id), r.mode,
                         list(r.schedule) if r.schedule is not None else None) for r in rows]


def retention_overrides_txn(session: Session) -> dict[str, int]:
    rows = session.execute(
        sa.select(policies.c.channel_id, policies.c.retention_days).where(policies.c.retention_days.is_not(None))
    )
    return {r.channel_id: int(r.retention_days) for r in rows}


# --- segments -------------------------------------------------------------------


def open_segment_txn(session: Session, channel_id: str, key: str, start: float, backend: str) -> int:
    existing = session.execute(sa.select(segments.c.id).where(segments.c.key == key)).scalar()
    if existing is not None:
        return int(existing)
    now = dt.datetime.now(dt.UTC)
    new_id = session.execute(segments.insert().values(
        channel_id=channel_id, key=key, start_at=utc_datetime(start), backend=backend, state="open", local=True,
        size=0, created_at=now,
    ).returning(segments.c.id)).scalar_one()
    return int(new_id)


def close_segment_txn(session: Session, channel_id: str, key: str, *, start: float, end: float, size: int,
                      keyframes: Sequence[Sequence[float]], has_audio: bool, backend: str) -> int:
    """Mark a segment closed (inserting it if its 'opened' row never made it).

    ``start`` replaces the one given at opening: the writer dates the first
    frame better once it has seen the frames after it (a replayed GOP cache).
    """
    seg_id = open_segment_txn(session, channel_id, key, start, backend)
    session.execute(segments.update().where(segments.c.id == seg_id).values(
        start_at=utc_datetime(start), end_at=utc_datetime(max(end, start)), size=size, keyframes=[list(k) for k in keyframes], has_audio=has_audio,
        state="closed",
    ))
    return seg_id


def delete_segment_by_key_txn(session: Session, key: str) -> None:
    session.execute(segments.delete().where(segments.c.key == key))


def open_segments_txn(session: Session) -> list[SegmentRecord]:
    rows = session.execute(sa.select(segments).where(segments.c.state == "open").order_by(segments.c.id))
    return [_segment(r) for r in rows]


def get_segment_txn(session: Session, segment_id: int) -> SegmentRecord | None:
    row = session.execute(sa.select(segments).where(segments.c.id == segment_id)).first()
    return _segment(row) if row is not None else None


def segments_between_txn(session: Session, channel_id: str, start: float, end: float) -> list[SegmentRecord]:
    """Finished segments of ``channel_id`` overlapping ``[start, end)``, oldest first."""
    rows = session.execute(
        sa.select(segments)
        .where(segments.c.channel_id == channel_id, segments.c.state != "open",
               segments.c.start_at < utc_datetime(end), segments.c.end_at > utc_datetime(start))
        .order_by(segments.c.start_at, segments.c.id)
    )
    return [_segment(r) for r in rows]


def known_keys_txn(session: Session) -> set[str]:
    return set(session.execute(sa.select(segments.c.key)).scalars())


def adopt_segment_txn(session: Session, channel_id: str, key: str, *, start: float, end: float, size: int,
                      keyframes: Sequence[Sequence[float]], backend: str) -> int:
    return close_segment_txn(session, channel_id, key, start=start, end=end, size=size, keyframes=keyframes,
                             has_audio=False, backend=backend)


def oldest_segments_txn(session: Session, limit: int = 100) -> list[SegmentRecord]:
    rows = session.execute(
        sa.select(segments).where(segments.c.state != "open").order_by(segments.c.start_at, segments.c.id).limit(limit)
    )
    return [_segment(r) for r in rows]


def expired_segments_txn(session: Session, now: float, default_days: int, overrides: dict[str, int],
                         limit: int = 1000) -> list[SegmentRecord]:
    """Finished segments older than their channel's retention (0 days: kept forever)."""
    candidates: list[SegmentRecord] = []
    horizon_days = [d for d in [default_days, *overrides.values()] if d > 0]
    if not horizon_days:
        return []
    # The shortest retention bounds the candidates; the per-channel rule picks among them.
    earliest = now - min(horizon_days) * 86400
    rows = session.execute(
        sa.select(segments).where(segments.c.state != "open", segments.c.end_at < utc_datetime(earliest))
        .order_by(segments.c.start_at).limit(limit)
    )
    for row in rows:
        seg = _segment(row)
        days = overrides.get(seg.channel_id, default_days)
        if days > 0 and seg.end is not None and seg.end < now - days * 86400:
            candidates.append(seg)
    return candidates


def delete_segments_txn(session: Session, ids: Iterable[int]) -> int:
    ids = list(ids)
    if not ids:
        return 0
    return int(getattr(session.execute(segments.delete().where(segments.c.id.in_(ids))), "rowcount", 0) or 0)


def usage_txn(session: Session) -> dict[str, dict[str, int]]:
    """Per backend: segments, bytes, and bytes still on the local disk."""
    out: dict[str, dict[str, int]] = {}
    for backend, count, size, local in session.execute(
        sa.select(segments.c.backend, sa.func.count(), sa.func.coalesce(sa.func.sum(segments.c.size), 0),
                  sa.func.coalesce(sa.func.sum(sa.case((segments.c.local.is_(True), segments.c.size), else_=0)), 0))
        .group_by(segments.c.backend)
    ):
        out[backend] = {"segments": int(count), "bytes": int(size), "local_bytes": int(local)}
    return out


def total_local_bytes_txn(session: Session) -> int:
    value = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(segments.c.size), 0)).where(segments.c.local.is_(True))
    ).scalar()
    return int(value or 0)


def pending_uploads_txn(session: Session, limit: int = 100) -> list[SegmentRecord]:
    rows = session.execute(
        sa.select(segments).where(segments.c.backend == "s3", segments.c.state == "closed")
        .order_by(segments.c.start_at).limit(limit)
    )
    return [_segment(r) for r in rows]


def mark_uploaded_txn(session: Session, segment_id: int, *, at: float, keep_local: bool) -> None:
    session.execute(segments.update().where(segments.c.id == segment_id).values(
        state="uploaded", uploaded_at=utc_datetime(at), local=keep_local))


def expired_local_copies_txn(session: Session, before: float, limit: int = 500) -> list[SegmentRecord]:
    rows = session.execute(
        sa.select(segments).where(segments.c.state == "uploaded", segments.c.local.is_(True),
                                  segments.c.uploaded_at < utc_datetime(before)).limit(limit)
    )
    return [_segment(r) for r in rows]


def mark_local_removed_txn(session: Session, ids: Iterable[int]) -> None:
    ids = list(ids)
    if ids:
        session.execute(segments.update().where(segments.c.id.in_(ids)).values(local=False))
