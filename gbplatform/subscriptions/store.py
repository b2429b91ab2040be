"""Registry transactions of the subscriptions: per-device settings and catalog NOTIFY events.

Settings live in ``device_subscriptions`` (migration 0007), one row per device
whose settings were set through the API; a NULL kind follows the
``[subscriptions]`` default. Catalog events (GB/T 28181-2016 §A.2.5.4) change
one channel row at a time, with the same upsert the Catalog sync uses
(``queries.replace_channels_txn`` with ``complete=False``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, cast

from sqlalchemy import Table, delete, func, select, update

from gbplatform.db import queries as q
from gbplatform.db.database import Session
from gbplatform.db.models import DeviceSubscription

__all__ = [
    "KIND_COLUMNS",
    "SubscriptionSettings",
    "all_settings_txn",
    "delete_channel_txn",
    "get_settings_txn",
    "put_settings_txn",
    "set_channel_status_txn",
    "upsert_channel_txn",
]

settings_table: Final = cast(Table, DeviceSubscription.__table__)

KIND_COLUMNS: Final = ("catalog", "alarm", "mobile_position", "ptz_position")


@dataclass(frozen=True)
class SubscriptionSettings:
    """A device's own choices; ``None`` everywhere (no row) means the defaults."""

    catalog: bool | None = None
    alarm: bool | None = None
    mobile_position: bool | None = None
    ptz_position: bool | None = None
    position_interval: int | None = None

    def wanted(self, kind: str) -> bool | None:
        value = getattr(self, kind)
        return value if isinstance(value, bool) else None


def get_settings_txn(s: Session, device_id: str) -> SubscriptionSettings:
    row = s.execute(select(settings_table).where(settings_table.c.device_id == device_id)).mappings().first()
    if row is None:
        return SubscriptionSettings()
    return SubscriptionSettings(**{k: row[k] for k in (*KIND_COLUMNS, "position_interval")})


def all_settings_txn(s: Session) -> dict[str, SubscriptionSettings]:
    """Every device's own settings (only devices set through the API have a row): read once at the first
    registration, so a registration storm costs no read per device."""
    rows = s.execute(select(settings_table)).mappings().all()
    return {row["device_id"]: SubscriptionSettings(**{k: row[k] for k in (*KIND_COLUMNS, "position_interval")})
            for row in rows}


def put_settings_txn(s: Session, device_id: str, changes: dict[str, Any], at: dt.datetime) -> SubscriptionSettings:
    """Store ``changes`` (kind -> bool | None, ``position_interval`` -> int | None) over the current row.

    Raises ``DeviceNotFound`` for an unknown device.
    """
    if s.scalar(select(q.devices.c.device_id).where(q.devices.c.device_id == device_id)) is None:
        raise q.DeviceNotFound(device_id)
    current = get_settings_txn(s, device_id)
    values = {k: getattr(current, k) for k in (*KIND_COLUMNS, "position_interval")}
    values.update(changes)
    exists = s.scalar(select(settings_table.c.device_id).where(settings_table.c.device_id == device_id))
    if exists is None:
        s.execute(settings_table.insert().values(device_id=device_id, updated_at=at, **values))
    else:
        s.execute(update(settings_table).where(settings_table.c.device_id == device_id)
                  .values(updated_at=at, **values))
    return SubscriptionSettings(**values)


def set_channel_status_txn(s: Session, device_id: str, channel_id: str, status: str, at: dt.datetime) -> bool:
    """Set one channel's ``status`` (ON/OFF); False when the device has no such channel."""
    result = s.execute(update(q.channels).where(q.channels.c.device_id == device_id,
                                                q.channels.c.channel_id == channel_id)
                       .values(status=status, updated_at=at))
    return bool(getattr(result, "rowcount", 0))


def upsert_channel_txn(s: Session, device_id: str, channel: q.ChannelData, at: dt.datetime) -> int:
    """Add or update one channel (catalog ADD/UPDATE); returns the device's channel count."""
    return q.replace_channels_txn(s, device_id, [channel], complete=False, at=at)


def delete_channel_txn(s: Session, device_id: str, channel_id: str, at: dt.datetime) -> bool:
    """Delete one channel (catalog DEL) and recount the device's channels; False when it had none such."""
    result = s.execute(delete(q.channels).where(q.channels.c.device_id == device_id,
                                                q.channels.c.channel_id == channel_id))
    gone = bool(getattr(result, "rowcount", 0))
    if gone:
        count = s.scalar(select(func.count()).select_from(q.channels)
                         .where(q.channels.c.device_id == device_id)) or 0
        s.execute(update(q.devices).where(q.devices.c.device_id == device_id)
                  .values(channel_count=count, updated_at=at))
    return gone
