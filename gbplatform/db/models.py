"""The device registry's schema: SQLAlchemy Core ``Table``s on one ``MetaData``.

The schema is only ever changed by an Alembic migration (``migrations/``); the
migration test runs ``alembic check`` so these tables and the migrations cannot
drift apart.  Query code (:mod:`gbplatform.db.queries` and each package's
``queries``/``store``) builds Core statements on these tables and returns its
own frozen dataclasses, never rows of a mapped class.

Why Core tables and not ORM classes with ``Mapped[]`` (a departure from
HOUSE_STYLE "Models use ``Mapped[]``"; issue 12, idle memory below 70 MB):
nothing used the ORM's identity map or unit of work, only its declarations and
``Session``, and importing ``sqlalchemy.orm`` costs 6.1 MiB of the idle
process, mapping the ten classes 0.9 MiB more.  Measured end to end
(``benchmarks/idle_memory.py``, ``docs/performance.md``): 72.5 MiB RSS with the
ORM, 66.8 MiB without.  The typed rows the ORM classes gave are the ``*_txn``
functions' dataclasses; ``tests/unit/test_idle_imports.py`` keeps
``sqlalchemy.orm`` out of the process.

Each table keeps, under the class name its ORM model had (``Device``,
``Channel``, ...), a :class:`Model` whose ``__table__`` is the table, so code
written as ``cast(Table, Device.__table__)`` works unchanged; new code imports
the table (``devices``) and its columns (``devices.c.device_id``).

Column conventions, as the ORM's ``Annotated`` aliases had them: GB ids are
``String(32)`` (GB/T 28181-2016 Appendix D: 20-digit codes, 32 leave room for
the non-strict mode that accepts other ids), short codes ``String(16)``,
digests ``String(128)``, timestamps :class:`UtcDateTime`, free text
``String()`` with no length, floats ``Double()``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    FromClause,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)

__all__ = [
    "NAMING_CONVENTION",
    "Alarm",
    "AlarmSetting",
    "Channel",
    "Device",
    "DeviceSnapshot",
    "DeviceSubscription",
    "Model",
    "Position",
    "RecordPlan",
    "RecordPolicy",
    "RecordSegment",
    "UtcDateTime",
    "alarm_settings",
    "alarms",
    "channels",
    "column",
    "device_snapshots",
    "device_subscriptions",
    "devices",
    "metadata",
    "positions",
    "record_plans",
    "record_policies",
    "record_segments",
    "utcnow",
]

# Stable constraint names make batch migrations on SQLite (which must name
# what it drops) and PostgreSQL produce the same schema.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# String lengths: GB ids (Appendix D), short codes ("UDP", "idle", "2016"), digest HA1 hex.
GB_ID = 32
CODE = 16
DIGEST = 128


def utcnow() -> dt.datetime:
    """Timezone-aware "now" in UTC, for rows written outside an injected clock."""
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A ``DateTime(timezone=True)`` that always round-trips aware UTC values.

    SQLite has no timestamp type and SQLAlchemy's SQLite ``DATETIME`` storage
    silently drops ``tzinfo``; PostgreSQL returns values in the session time
    zone.  Normalising both directions here means the rest of the code only
    ever sees aware UTC datetimes, and naive datetimes (a common bug) are
    refused instead of being stored with an unknown offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: registry timestamps must be timezone-aware")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def column(name: str, *args: Any, **kwargs: Any) -> Column[Any]:
    """A ``Column`` named ``name`` with a plain ``str`` name and key, as the ORM's ``mapped_column`` had them.

    Why: ``Column("device_id", ...)`` makes the name a ``quoted_name`` (a
    ``str`` subclass, never interned), result rows are keyed by it, and
    ``DeviceRecord(**row)`` then matches each keyword argument by equality
    instead of identity: 18 against 8 µs a device row.  Declarative builds a
    column without a name and assigns it; so does this.  The names here are
    lower case and need no quoting.
    """
    col: Column[Any] = Column(*args, **kwargs)
    col.name = col.key = name
    return col


class Model:
    """A table under the class name its ORM model had, for code written as ``Device.__table__``.

    ``__table__`` is typed ``FromClause``, as ``DeclarativeBase`` declared it,
    so the callers' ``cast(Table, Device.__table__)`` stay valid.
    """

    __slots__ = ("__table__",)

    def __init__(self, table: Table) -> None:
        self.__table__: FromClause = table

    def __repr__(self) -> str:
        return f"Model({self.__table__.description!r})"


devices = Table(
    "devices",
    metadata,
    column("device_id", String(GB_ID), primary_key=True),
    column("name", String()),
    column("manufacturer", String()),
    column("model", String()),
    column("firmware", String()),
    # Only digest HA1 values (RFC 7616 §3.4.2, H(user:realm:pass)), never the
    # password, with the realm they were computed for.
    column("password_ha1_md5", String(DIGEST)),
    column("password_ha1_sha256", String(DIGEST)),
    column("ha1_realm", String()),
    column("enabled", Boolean(), nullable=False, default=True, server_default=true()),
    column("pre_added", Boolean(), nullable=False, default=False, server_default=false()),
    column("online", Boolean(), nullable=False, default=False, server_default=false(), index=True),
    # host/port: the packet source the device last used, not its Contact,
    # because replies must follow the NAT mapping (RFC 3581 §4).
    column("transport", String(CODE)),
    column("host", String()),
    column("port", Integer()),
    column("contact", String()),
    column("user_agent", String()),
    column("charset", String(CODE), nullable=False, default="GB2312", server_default="GB2312"),
    column("media_transport", String(CODE), nullable=False, default="UDP", server_default="UDP"),
    column("stream_index", String(GB_ID)),
    # False for firmware whose SDP parser rejects y= (osip2 5.x): the INVITE
    # then leaves it out and the SSRC comes from the answer or the first RTP.
    column("sdp_y_line", Boolean(), nullable=False, default=True, server_default=true()),
    column("register_expires", Integer()),
    column("registered_at", UtcDateTime()),
    column("register_expires_at", UtcDateTime()),
    column("last_keepalive_at", UtcDateTime()),
    column("keepalive_interval", Integer(), nullable=False, default=60, server_default=text("60")),
    column("keepalive_count", Integer(), nullable=False, default=3, server_default=text("3")),
    column("online_at", UtcDateTime()),
    column("offline_at", UtcDateTime()),
    column("catalog_status", String(CODE), nullable=False, default="idle", server_default="idle"),
    column("catalog_total", Integer(), nullable=False, default=0, server_default=text("0")),
    column("catalog_received", Integer(), nullable=False, default=0, server_default=text("0")),
    column("catalog_synced_at", UtcDateTime()),
    # Why the last sync did not end "done" (the device's answer, or what was
    # missing): without it the API could only say "error".
    column("catalog_error", String()),
    # The GB/T 28181 edition of the last authenticated REGISTER (2022 §9.1 X-GB-Ver: "2011", "2016",
    # "2022"), the operator's choice ("auto" follows it), and the device's spelling of the I-frame
    # request (§A.2.3.1.7 IFameCmd; some firmware only knows IFrameCmd). gbplatform.devices.dialect.
    column("gb_version", String(CODE)),
    column("gb_version_setting", String(CODE), nullable=False, default="auto", server_default="auto"),
    column("iframe_element", String(CODE), nullable=False, default="IFameCmd", server_default="IFameCmd"),
    column("channel_count", Integer(), nullable=False, default=0, server_default=text("0")),
    column("created_at", UtcDateTime(), nullable=False, default=utcnow),
    column("updated_at", UtcDateTime(), nullable=False, default=utcnow),
)
"""A GB/T 28181 device (IPC, NVR, lower platform) known to the registrar."""

channels = Table(
    "channels",
    metadata,
    column("id", Integer(), primary_key=True, autoincrement=True),
    column("device_id", String(GB_ID), ForeignKey("devices.device_id", ondelete="CASCADE"), nullable=False),
    column("channel_id", String(GB_ID), nullable=False),
    column("name", String()),
    column("manufacturer", String()),
    column("model", String()),
    column("owner", String()),
    column("civil_code", String()),
    column("block", String()),
    column("address", String()),
    column("parental", Integer()),
    column("parent_id", String()),
    column("business_group_id", String()),
    column("safety_way", String()),
    column("register_way", String()),
    column("cert_num", String()),
    column("certifiable", String()),
    column("err_code", String()),
    column("end_time", String()),
    column("secrecy", String()),
    column("ip_address", String()),
    column("port", Integer()),
    column("status", String()),
    column("longitude", Double()),
    column("latitude", Double()),
    column("ptz_type", Integer()),
    column("extra", JSON()),
    column("kind", String(CODE), nullable=False, default="channel", server_default="channel"),
    column("updated_at", UtcDateTime(), nullable=False, default=utcnow),
    UniqueConstraint("device_id", "channel_id"),
    Index(None, "device_id", "parent_id"),
)
"""One catalog item of a device (GB/T 28181-2016 §A.2.6, Catalog ``Item``).

Every catalog field is nullable because devices omit fields freely; the
``<Info>`` children and any unknown elements are kept in ``extra``.
``kind`` is derived from the id (Appendix D type code) so the tree query
does not have to re-derive it for every node.
"""

# --- subscriptions (issue 11) ---------------------------------------------------

device_subscriptions = Table(
    "device_subscriptions",
    metadata,
    column("device_id", String(GB_ID), ForeignKey("devices.device_id", ondelete="CASCADE"), primary_key=True),
    column("catalog", Boolean()),
    column("alarm", Boolean()),
    column("mobile_position", Boolean()),
    column("ptz_position", Boolean()),
    column("position_interval", Integer()),
    column("updated_at", UtcDateTime(), nullable=False, default=utcnow),
)
"""What the platform subscribes to on one device (GB/T 28181-2016 §9.11, RFC 6665).

Each kind's flag is the device's own choice; ``None`` follows the
``[subscriptions]`` default. ``position_interval`` is the MobilePosition
``Interval`` asked for (``None``: the default). A row only exists for a
device whose settings were changed through the API.
"""

# --- recording (issue 4) --------------------------------------------------------

record_plans = Table(
    "record_plans",
    metadata,
    column("id", Integer(), primary_key=True, autoincrement=True),
    column("name", String(128), nullable=False, unique=True),
    column("schedule", JSON(), nullable=False),
    column("created_at", UtcDateTime(), nullable=False, default=utcnow),
    column("updated_at", UtcDateTime(), nullable=False, default=utcnow),
)
"""A weekly recording schedule several channels can share.

``schedule`` is a list of ``{"weekday": 0-6 (Monday 0), "start": "HH:MM",
"end": "HH:MM"}`` in the platform's ``record.timezone``; ``end`` 24:00 is
the end of the day.
"""

record_policies = Table(
    "record_policies",
    metadata,
    column("channel_id", String(GB_ID), primary_key=True),
    column("mode", String(CODE), nullable=False, default="off", server_default="off"),  # off | continuous | plan
    column("plan_id", Integer(), ForeignKey("record_plans.id", ondelete="RESTRICT"), index=True),
    column("retention_days", Integer()),
    column("updated_at", UtcDateTime(), nullable=False, default=utcnow),
)
"""Whether and when one channel is recorded, and how long its footage is kept.

Keyed by the channel's GB ID alone (the API's ``/channels/{id}``) and not a
foreign key: a catalog sync replaces channel rows, the policy must outlive that.
"""

record_segments = Table(
    "record_segments",
    metadata,
    column("id", Integer(), primary_key=True, autoincrement=True),
    column("channel_id", String(GB_ID), nullable=False),
    column("start_at", UtcDateTime(), nullable=False),
    column("end_at", UtcDateTime()),
    column("size", BigInteger(), nullable=False, default=0, server_default=text("0")),
    column("key", String(255), nullable=False, unique=True),
    column("backend", String(CODE), nullable=False, default="local", server_default="local"),
    column("state", String(CODE), nullable=False, default="open", server_default="open", index=True),
    column("local", Boolean(), nullable=False, default=True, server_default=true()),
    column("has_audio", Boolean(), nullable=False, default=False, server_default=false()),
    column("keyframes", JSON()),
    column("uploaded_at", UtcDateTime()),
    column("created_at", UtcDateTime(), nullable=False, default=utcnow),
    Index(None, "channel_id", "start_at"),
)
"""One recorded MPEG-TS file of a channel.

``key`` is its path under the storage root (and its object key in S3);
``state`` is open (being written), closed, or uploaded (in S3);
``local`` says whether the local copy still exists. ``keyframes`` is the
index ``[[byte offset, pts, epoch seconds], ...]`` of its random access points.
"""

# --- snapshots devices upload (GB/T 28181-2022 SnapShotConfig, migration 0008) ---------

device_snapshots = Table(
    "device_snapshots",
    metadata,
    column("id", Integer(), primary_key=True, autoincrement=True),
    column("device_id", String(GB_ID), nullable=False),
    column("channel_id", String(GB_ID), nullable=False),
    column("session_id", String(64), nullable=False, index=True),
    column("file_id", String(128), nullable=False),
    column("seq", Integer(), nullable=False),
    column("size", BigInteger(), nullable=False),
    column("key", String(255), nullable=False, unique=True),
    column("received_at", UtcDateTime(), nullable=False, index=True),
    column("finished", Boolean(), nullable=False, default=False, server_default=false()),
    Index(None, "channel_id", "received_at"),
)
"""One picture a device uploaded for a snapshot session (GB/T 28181-2022 §9.14).

``key`` is the file's path under <data_dir>/device-snapshots
(``<device>/<channel>/<session>-<seq>.jpg``); ``seq`` the upload's order
in its session (1 = first taken); ``file_id`` the device's
``SnapShotFileID`` when it named the file, else the platform's; ``finished``
is set when the device's UploadSnapShotFinished arrives for the session.
Keyed by the channel's GB ID alone, like ``record_policies``.
"""

# --- alarms and mobile positions (issue 11, migration 0006) ------------------------

alarms = Table(
    "alarms",
    metadata,
    column("id", Integer(), primary_key=True, autoincrement=True),
    column("device_id", String(GB_ID), nullable=False),
    column("channel_id", String(GB_ID), nullable=False),
    column("priority", Integer()),
    column("method", Integer()),
    column("alarm_type", Integer()),
    column("event_type", Integer()),
    column("device_time", UtcDateTime()),
    column("received_at", UtcDateTime(), nullable=False),
    column("longitude", Double()),
    column("latitude", Double()),
    column("description", String()),
    column("source", String(CODE), nullable=False, default="notify", server_default="notify"),  # notify | query
    column("snapshot", String()),
    column("snapshot_error", String()),
    Index(None, "device_id", "received_at"),
    Index(None, "channel_id", "received_at"),
    Index(None, "received_at"),
)
"""One alarm a device reported (GB/T 28181-2016 §9.4, §A.2.5.5) or answered to the Alarm Query.

``device_id`` is the registered device that sent it, ``channel_id`` the
alarm's source (its ``DeviceID``: the device itself or one of its
channels). ``device_time`` is the device's ``AlarmTime`` (its local time,
read in ``record.timezone``), ``received_at`` the platform's clock.
``snapshot`` is the JPEG's path under <data_dir>/alarm-snapshots when one
was taken, ``snapshot_error`` why one that was asked for was not.
"""

positions = Table(
    "positions",
    metadata,
    column("id", Integer(), primary_key=True, autoincrement=True),
    column("device_id", String(GB_ID), nullable=False),
    column("channel_id", String(GB_ID), nullable=False),
    column("time", UtcDateTime(), nullable=False),
    column("received_at", UtcDateTime(), nullable=False),
    column("longitude", Double(), nullable=False),
    column("latitude", Double(), nullable=False),
    column("speed", Double()),
    column("direction", Double()),
    column("altitude", Double()),
    Index(None, "device_id", "channel_id", "time"),
    Index(None, "received_at"),
)
"""One mobile position report (GB/T 28181-2016 §9.10, §A.2.5.6) of a device or one of its channels."""

alarm_settings = Table(
    "alarm_settings",
    metadata,
    column("channel_id", String(GB_ID), primary_key=True),
    column("snapshot", Boolean(), nullable=False),
    column("updated_at", UtcDateTime(), nullable=False, default=utcnow),
)
"""Per-channel alarm handling: take a snapshot on its alarms or not. No row: ``alarms.snapshot``.

Keyed by the channel's GB ID alone, like ``record_policies``: a catalog sync replaces channel rows."""

Device = Model(devices)
Channel = Model(channels)
DeviceSubscription = Model(device_subscriptions)
RecordPlan = Model(record_plans)
RecordPolicy = Model(record_policies)
RecordSegment = Model(record_segments)
DeviceSnapshot = Model(device_snapshots)
Alarm = Model(alarms)
Position = Model(positions)
AlarmSetting = Model(alarm_settings)
