"""SQLAlchemy models for the device registry.

The schema is only ever changed by an Alembic migration (``migrations/``); the
migration test runs ``alembic check`` so these models and the migrations cannot
drift apart.  Query code lives in :mod:`gbplatform.db.queries` and works on the
Core tables (``Device.__table__``) for speed; the ORM classes exist to declare
the schema with typed ``Mapped[]`` attributes.

Identifier lengths follow GB/T 28181-2016 Appendix D (20-digit codes); 32
characters leave room for the non-strict mode that accepts other ids.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "Alarm",
    "AlarmSetting",
    "Base",
    "Channel",
    "Device",
    "DeviceSubscription",
    "DeviceSnapshot",
    "Position",
    "RecordPlan",
    "RecordPolicy",
    "RecordSegment",
    "UtcDateTime",
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


# Column aliases: the Python type says what the column holds, the mapped_column
# inside says how it is stored.
GbId = Annotated[str, mapped_column(String(32))]
Code = Annotated[str, mapped_column(String(16))]
Digest = Annotated[str, mapped_column(String(128))]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UtcDateTime(),
        str: String(),
        dict[str, Any]: JSON(),
        float: Double(),
    }


class Device(Base):
    """A GB/T 28181 device (IPC, NVR, lower platform) known to the registrar.

    Only digest HA1 values are stored (RFC 7616 §3.4.2, ``H(user:realm:pass)``),
    never the password, together with the realm they were computed for.
    ``host``/``port`` are the packet source the device last used, not its
    Contact, because replies must follow the NAT mapping (RFC 3581 §4).
    """

    __tablename__ = "devices"

    device_id: Mapped[GbId] = mapped_column(primary_key=True)
    name: Mapped[str | None]
    manufacturer: Mapped[str | None]
    model: Mapped[str | None]
    firmware: Mapped[str | None]
    password_ha1_md5: Mapped[Digest | None]
    password_ha1_sha256: Mapped[Digest | None]
    ha1_realm: Mapped[str | None]
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    pre_added: Mapped[bool] = mapped_column(default=False, server_default=false())
    online: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    transport: Mapped[Code | None]
    host: Mapped[str | None]
    port: Mapped[int | None]
    contact: Mapped[str | None]
    user_agent: Mapped[str | None]
    charset: Mapped[Code] = mapped_column(default="GB2312", server_default="GB2312")
    media_transport: Mapped[Code] = mapped_column(default="UDP", server_default="UDP")
    stream_index: Mapped[GbId | None]
    # False for firmware whose SDP parser rejects y= (osip2 5.x): the INVITE
    # then leaves it out and the SSRC comes from the answer or the first RTP.
    sdp_y_line: Mapped[bool] = mapped_column(default=True, server_default=true())
    register_expires: Mapped[int | None]
    registered_at: Mapped[dt.datetime | None]
    register_expires_at: Mapped[dt.datetime | None]
    last_keepalive_at: Mapped[dt.datetime | None]
    keepalive_interval: Mapped[int] = mapped_column(default=60, server_default=text("60"))
    keepalive_count: Mapped[int] = mapped_column(default=3, server_default=text("3"))
    online_at: Mapped[dt.datetime | None]
    offline_at: Mapped[dt.datetime | None]
    catalog_status: Mapped[Code] = mapped_column(default="idle", server_default="idle")
    catalog_total: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    catalog_received: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    catalog_synced_at: Mapped[dt.datetime | None]
    # Why the last sync did not end "done" (the device's answer, or what was
    # missing): without it the API could only say "error".
    catalog_error: Mapped[str | None]
    # The GB/T 28181 edition of the last authenticated REGISTER (2022 §9.1 X-GB-Ver: "2011", "2016",
    # "2022"), the operator's choice ("auto" follows it), and the device's spelling of the I-frame
    # request (§A.2.3.1.7 IFameCmd; some firmware only knows IFrameCmd). gbplatform.devices.dialect.
    gb_version: Mapped[Code | None]
    gb_version_setting: Mapped[Code] = mapped_column(default="auto", server_default="auto")
    iframe_element: Mapped[Code] = mapped_column(default="IFameCmd", server_default="IFameCmd")
    channel_count: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Channel(Base):
    """One catalog item of a device (GB/T 28181-2016 §A.2.6, Catalog ``Item``).

    Every catalog field is nullable because devices omit fields freely; the
    ``<Info>`` children and any unknown elements are kept in ``extra``.
    ``kind`` is derived from the id (Appendix D type code) so the tree query
    does not have to re-derive it for every node.
    """

    __tablename__ = "channels"
    __table_args__ = (
        UniqueConstraint("device_id", "channel_id"),
        Index(None, "device_id", "parent_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    device_id: Mapped[GbId] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"))
    channel_id: Mapped[GbId]
    name: Mapped[str | None]
    manufacturer: Mapped[str | None]
    model: Mapped[str | None]
    owner: Mapped[str | None]
    civil_code: Mapped[str | None]
    block: Mapped[str | None]
    address: Mapped[str | None]
    parental: Mapped[int | None]
    parent_id: Mapped[str | None]
    business_group_id: Mapped[str | None]
    safety_way: Mapped[str | None]
    register_way: Mapped[str | None]
    cert_num: Mapped[str | None]
    certifiable: Mapped[str | None]
    err_code: Mapped[str | None]
    end_time: Mapped[str | None]
    secrecy: Mapped[str | None]
    ip_address: Mapped[str | None]
    port: Mapped[int | None]
    status: Mapped[str | None]
    longitude: Mapped[float | None]
    latitude: Mapped[float | None]
    ptz_type: Mapped[int | None]
    extra: Mapped[dict[str, Any] | None]
    kind: Mapped[Code] = mapped_column(default="channel", server_default="channel")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- subscriptions (issue 11) ---------------------------------------------------


class DeviceSubscription(Base):
    """What the platform subscribes to on one device (GB/T 28181-2016 §9.11, RFC 6665).

    Each kind's flag is the device's own choice; ``None`` follows the
    ``[subscriptions]`` default. ``position_interval`` is the MobilePosition
    ``Interval`` asked for (``None``: the default). A row only exists for a
    device whose settings were changed through the API.
    """

    __tablename__ = "device_subscriptions"

    device_id: Mapped[GbId] = mapped_column(ForeignKey("devices.device_id", ondelete="CASCADE"), primary_key=True)
    catalog: Mapped[bool | None]
    alarm: Mapped[bool | None]
    mobile_position: Mapped[bool | None]
    ptz_position: Mapped[bool | None]
    position_interval: Mapped[int | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- recording (issue 4) --------------------------------------------------------


class RecordPlan(Base):
    """A weekly recording schedule several channels can share.

    ``schedule`` is a list of ``{"weekday": 0-6 (Monday 0), "start": "HH:MM",
    "end": "HH:MM"}`` in the platform's ``record.timezone``; ``end`` 24:00 is
    the end of the day.
    """

    __tablename__ = "record_plans"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    schedule: Mapped[list[Any]] = mapped_column(JSON())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RecordPolicy(Base):
    """Whether and when one channel is recorded, and how long its footage is kept.

    Keyed by the channel's GB ID alone (the API's ``/channels/{id}``) and not a
    foreign key: a catalog sync replaces channel rows, the policy must outlive that.
    """

    __tablename__ = "record_policies"

    channel_id: Mapped[GbId] = mapped_column(primary_key=True)
    mode: Mapped[Code] = mapped_column(default="off", server_default="off")  # off | continuous | plan
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("record_plans.id", ondelete="RESTRICT"), index=True)
    retention_days: Mapped[int | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RecordSegment(Base):
    """One recorded MPEG-TS file of a channel.

    ``key`` is its path under the storage root (and its object key in S3);
    ``state`` is open (being written), closed, or uploaded (in S3);
    ``local`` says whether the local copy still exists. ``keyframes`` is the
    index ``[[byte offset, pts, epoch seconds], ...]`` of its random access points.
    """

    __tablename__ = "record_segments"
    __table_args__ = (Index(None, "channel_id", "start_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    channel_id: Mapped[GbId]
    start_at: Mapped[dt.datetime]
    end_at: Mapped[dt.datetime | None]
    size: Mapped[int] = mapped_column(BigInteger(), default=0, server_default=text("0"))
    key: Mapped[str] = mapped_column(String(255), unique=True)
    backend: Mapped[Code] = mapped_column(default="local", server_default="local")
    state: Mapped[Code] = mapped_column(default="open", server_default="open", index=True)
    local: Mapped[bool] = mapped_column(default=True, server_default=true())
    has_audio: Mapped[bool] = mapped_column(default=False, server_default=false())
    keyframes: Mapped[list[Any] | None] = mapped_column(JSON())
    uploaded_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# --- snapshots devices upload (GB/T 28181-2022 SnapShotConfig, migration 0008) ---------


class DeviceSnapshot(Base):
    """One picture a device uploaded for a snapshot session (GB/T 28181-2022 §9.14).

    ``key`` is the file's path under <data_dir>/device-snapshots
    (``<device>/<channel>/<session>-<seq>.jpg``); ``seq`` the upload's order
    in its session (1 = first taken); ``file_id`` the device's
    ``SnapShotFileID`` when it named the file, else the platform's; ``finished``
    is set when the device's UploadSnapShotFinished arrives for the session.
    Keyed by the channel's GB ID alone, like ``RecordPolicy``.
    """

    __tablename__ = "device_snapshots"
    __table_args__ = (Index(None, "channel_id", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    device_id: Mapped[GbId]
    channel_id: Mapped[GbId]
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    file_id: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int]
    size: Mapped[int] = mapped_column(BigInteger())
    key: Mapped[str] = mapped_column(String(255), unique=True)
    received_at: Mapped[dt.datetime] = mapped_column(index=True)
    finished: Mapped[bool] = mapped_column(default=False, server_default=false())


# --- alarms and mobile positions (issue 11, migration 0006) ------------------------


class Alarm(Base):
    """One alarm a device reported (GB/T 28181-2016 §9.4, §A.2.5.5) or answered to the Alarm Query.

    ``device_id`` is the registered device that sent it, ``channel_id`` the
    alarm's source (its ``DeviceID``: the device itself or one of its
    channels). ``device_time`` is the device's ``AlarmTime`` (its local time,
    read in ``record.timezone``), ``received_at`` the platform's clock.
    ``snapshot`` is the JPEG's path under <data_dir>/alarm-snapshots when one
    was taken, ``snapshot_error`` why one that was asked for was not.
    """

    __tablename__ = "alarms"
    __table_args__ = (
        Index(None, "device_id", "received_at"),
        Index(None, "channel_id", "received_at"),
        Index(None, "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    device_id: Mapped[GbId]
    channel_id: Mapped[GbId]
    priority: Mapped[int | None]
    method: Mapped[int | None]
    alarm_type: Mapped[int | None]
    event_type: Mapped[int | None]
    device_time: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime]
    longitude: Mapped[float | None]
    latitude: Mapped[float | None]
    description: Mapped[str | None]
    source: Mapped[Code] = mapped_column(default="notify", server_default="notify")  # notify | query
    snapshot: Mapped[str | None]
    snapshot_error: Mapped[str | None]


class Position(Base):
    """One mobile position report (GB/T 28181-2016 §9.10, §A.2.5.6) of a device or one of its channels."""

    __tablename__ = "positions"
    __table_args__ = (
        Index(None, "device_id", "channel_id", "time"),
        Index(None, "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    device_id: Mapped[GbId]
    channel_id: Mapped[GbId]
    time: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime]
    longitude: Mapped[float]
    latitude: Mapped[float]
    speed: Mapped[float | None]
    direction: Mapped[float | None]
    altitude: Mapped[float | None]


class AlarmSetting(Base):
    """Per-channel alarm handling: take a snapshot on its alarms or not. No row: ``alarms.snapshot``.

    Keyed by the channel's GB ID alone, like ``RecordPolicy``: a catalog sync replaces channel rows."""

    __tablename__ = "alarm_settings"

    channel_id: Mapped[GbId] = mapped_column(primary_key=True)
    snapshot: Mapped[bool]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
