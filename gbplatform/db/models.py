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
    "Base",
    "Channel",
    "Device",
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
