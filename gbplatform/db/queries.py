"""Registry queries: ``*_txn(session, ...)`` functions for :meth:`Database.run`.

Rules for everything in this module:

- A ``*_txn`` function takes the platform's :class:`~gbplatform.db.database.Session`
  (one Core connection in one transaction) first, never touches Twisted, and
  returns frozen dataclasses (never result rows), so results can cross back to
  the reactor thread safely.
- It must be safe to run twice: ``Database.run`` retries once after a
  serialization failure or a lost connection.
- Times are passed in (``at``) from the injected clock; the ``at=None`` default
  of the API-facing functions falls back to the wall clock.
- Hot paths (keepalive batches, catalog replacement) use Core statements with
  ``executemany`` instead of loading ORM objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Table,
    bindparam,
    case,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from gbplatform.db.database import Session, read_only
from gbplatform.db.models import Channel, Device, utcnow
from sip.auth import ha1
from sip.channel_fields import STORED_FIELDS
from sip.gbid import CATALOG_KINDS, catalog_kind, civil_code_ancestors
from sip.gbid import MAX_ID_LENGTH as GB_MAX_ID_LENGTH
from sip.manscdp.dialects import DIALECTS, IFRAME_ELEMENTS

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql, sqlite

__all__ = [
    "CATALOG_STATUSES",
    "CHANNEL_KINDS",
    "MEDIA_TRANSPORTS",
    "SIP_TRANSPORTS",
    "CatalogStore",
    "CatalogStored",
    "ChannelData",
    "ChannelRecord",
    "DeviceExists",
    "DeviceNotFound",
    "DeviceRecord",
    "KeepaliveResult",
    "Page",
    "TreeNode",
    "channel_tree_txn",
    "create_device_txn",
    "delete_device_txn",
    "device_offline_txn",
    "device_registered_txn",
    "device_unregistered_txn",
    "digest_ha1",
    "get_channel_txn",
    "get_device_txn",
    "keepalives_txn",
    "list_channels_txn",
    "list_devices_txn",
    "mark_all_offline_txn",
    "replace_channels_txn",
    "set_basic_param_txn",
    "set_catalog_progress_txn",
    "set_dialect_txn",
    "set_device_info_txn",
    "store_catalogs_txn",
    "store_device_info_txn",
    "update_device_txn",
    "upsert_device_txn",
]

T = TypeVar("T")

devices: Final = cast(Table, Device.__table__)
channels: Final = cast(Table, Channel.__table__)

SIP_TRANSPORTS: Final = frozenset({"UDP", "TCP", "TLS"})
#: How a device sends RTP (GB/T 28181-2016 §9.2: UDP, or TCP with the device active or passive).
MEDIA_TRANSPORTS: Final = ("UDP", "TCP-PASSIVE", "TCP-ACTIVE")
CATALOG_STATUSES: Final = frozenset({"idle", "running", "done", "partial", "timeout", "error"})
CHANNEL_KINDS: Final = CATALOG_KINDS
MAX_CATALOG_ERROR: Final = 500  # characters of a stored catalog sync reason

MAX_ID_LENGTH: Final = GB_MAX_ID_LENGTH
MAX_PAGE_LIMIT: Final = 1000
# Well under SQLite's host-parameter limit and PostgreSQL's 65535.
_CHUNK: Final = 500


# --- errors -----------------------------------------------------------------


class DeviceExists(Exception):
    """The API tried to create a device id that is already registered."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id} already exists")
        self.device_id = device_id


class DeviceNotFound(Exception):
    """The device id is not in the registry."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id} not found")
        self.device_id = device_id


# --- records ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    password_ha1_md5: str | None = field(repr=False)
    password_ha1_sha256: str | None = field(repr=False)
    ha1_realm: str | None
    enabled: bool
    pre_added: bool
    online: bool
    transport: str | None
    host: str | None
    port: int | None
    contact: str | None
    user_agent: str | None
    charset: str
    media_transport: str
    stream_index: str | None
    sdp_y_line: bool
    register_expires: int | None
    registered_at: dt.datetime | None
    register_expires_at: dt.datetime | None
    last_keepalive_at: dt.datetime | None
    keepalive_interval: int
    keepalive_count: int
    online_at: dt.datetime | None
    offline_at: dt.datetime | None
    catalog_status: str
    catalog_total: int
    catalog_received: int
    catalog_synced_at: dt.datetime | None
    catalog_error: str | None
    gb_version: str | None
    gb_version_setting: str
    iframe_element: str
    channel_count: int
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def has_password(self) -> bool:
        return self.password_ha1_md5 is not None or self.password_ha1_sha256 is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelFields:
    """The stored fields of a catalog ``Item`` (GB/T 28181-2016 §A.2.6.4).

    Declared here for the type checker; ``sip.channel_fields.STORED_FIELDS``
    is the table they come from, and a unit test keeps the two (and the
    ``Channel`` model) in step.  ``extra`` holds the ``<Info>`` children and
    unknown elements.
    """

    channel_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    block: str | None = None
    address: str | None = None
    parental: int | None = None
    parent_id: str | None = None
    business_group_id: str | None = None
    safety_way: str | None = None
    register_way: str | None = None
    cert_num: str | None = None
    certifiable: str | None = None
    err_code: str | None = None
    end_time: str | None = None
    secrecy: str | None = None
    ip_address: str | None = None
    port: int | None = None
    status: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    ptz_type: int | None = None
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelData(ChannelFields):
    """One catalog ``Item`` as parsed from a device, to be stored.

    ``kind`` is derived from ``channel_id`` when not given.
    """

    kind: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.channel_id, "channel_id")
        if self.kind is not None and self.kind not in CHANNEL_KINDS:
            raise ValueError(f"unknown channel kind {self.kind!r}")


_CHANNEL_FIELDS: Final = (*(f.name for f in STORED_FIELDS if f.name is not None), "extra")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelRecord(ChannelFields):
    """A stored channel: its fields plus the registry's bookkeeping."""

    id: int
    device_id: str
    kind: str
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True, slots=True)
class TreeNode:
    id: str
    name: str | None
    kind: str
    status: str | None
    children: list[TreeNode] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class KeepaliveResult:
    """Outcome of one keepalive batch: ``updated`` rows, ids that were offline
    and are now online, and ids not in the registry (nothing was written)."""

    updated: int
    came_online: tuple[str, ...]
    unknown: tuple[str, ...]


# --- helpers ----------------------------------------------------------------

Ha1Fn = Callable[[str, str, str], tuple[str, str]]

_DEVICE_WRITABLE: Final = frozenset(c.name for c in devices.c) - {"device_id", "created_at"}


def digest_ha1(username: str, realm: str, password: str) -> tuple[str, str]:
    """Return the (MD5, SHA-256) digest HA1 for ``username:realm:password``,
    the two forms a device password is stored in (RFC 7616 §3.4.2; GB/T
    28181-2016 §9.1.2.1 uses the device id as the username)."""
    return ha1(username, realm, password, "MD5"), ha1(username, realm, password, "SHA-256")


def _check_id(value: str, what: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH or value != value.strip():
        raise ValueError(f"bad {what} {value!r}: 1-{MAX_ID_LENGTH} characters, no spaces")


def _check_page(offset: int, limit: int) -> None:
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ValueError(f"limit must be in 1..{MAX_PAGE_LIMIT}, got {limit}")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _checked_device_values(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = values.keys() - _DEVICE_WRITABLE
    if unknown:
        raise ValueError(f"unknown or read-only device fields: {sorted(unknown)}")
    checks: list[tuple[str, frozenset[str]]] = [
        ("transport", SIP_TRANSPORTS),
        ("media_transport", frozenset(MEDIA_TRANSPORTS)),
        ("catalog_status", CATALOG_STATUSES),
    ]
    for name, allowed in checks:
        value = values.get(name)
        if value is not None and value not in allowed:
            raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    for name in ("keepalive_interval", "keepalive_count"):
        if name in values and not (isinstance(values[name], int) and values[name] > 0):
            raise ValueError(f"{name} must be a positive integer, got {values[name]!r}")
    return dict(values)


def _ha1_values(
    device_id: str,
    password: str | None,
    realm: str | None,
    ha1_fn: Ha1Fn,
    ha1_md5: str | None,
    ha1_sha256: str | None,
) -> dict[str, Any]:
    if password is None and ha1_md5 is None and ha1_sha256 is None:
        return {}
    if not realm:
        raise ValueError("a realm is needed with a password or HA1 values")
    if password is not None:
        if ha1_md5 is not None or ha1_sha256 is not None:
            raise ValueError("give either a password or precomputed HA1 values, not both")
        ha1_md5, ha1_sha256 = ha1_fn(device_id, realm, password)
    return {"password_ha1_md5": ha1_md5, "password_ha1_sha256": ha1_sha256, "ha1_realm": realm}


def _upsert(s: Session, table: Table) -> postgresql.Insert | sqlite.Insert:
    # Both dialects spell INSERT ... ON CONFLICT the same way, which makes the
    # create-or-update paths race-free without a SELECT first. The dialect's
    # module is imported here, not at the top: the engine has loaded its own
    # already, and the other one (PostgreSQL's: 2 MiB) need never load.
    name = s.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}")


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _device(row: RowMapping) -> DeviceRecord:
    return DeviceRecord(**row)


def _channel(row: RowMapping) -> ChannelRecord:
    return ChannelRecord(**row)


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _cached_statement(s: Session, name: str, build: Callable[[Session], Any]) -> Any:
    """Build an upsert once per dialect: constructing ``excluded`` and the
    column proxies costs more than executing it (measured: 18 % of the
    database thread during a catalog storm)."""
    key = (s.get_bind().dialect.name, name)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build(s)
    return stmt


def _channel_upsert(s: Session) -> Any:
    stmt = _upsert(s, channels)
    return stmt.on_conflict_do_update(
        index_elements=[channels.c.device_id, channels.c.channel_id],
        set_={
            name: stmt.excluded[name]
            for name in (*_CHANNEL_FIELDS, "kind", "updated_at")
            if name != "channel_id"
        },
    )


def _registration_upsert(s: Session) -> Any:
    stmt = _upsert(s, devices)
    ex = stmt.excluded
    updates: dict[str, Any] = {
        name: getattr(ex, name)
        for name in ("online", "host", "port", "transport", "contact", "user_agent", "register_expires",
                     "registered_at", "register_expires_at", "updated_at")
    }
    updates["online_at"] = case((devices.c.online == false(), ex.online_at), else_=devices.c.online_at)
    # A registration without a detected edition (an older caller) keeps the stored one.
    updates["gb_version"] = func.coalesce(ex.gb_version, devices.c.gb_version)
    return stmt.on_conflict_do_update(index_elements=[devices.c.device_id], set_=updates)


def _require_exists(s: Session, device_id: str) -> None:
    if s.scalar(select(devices.c.device_id).where(devices.c.device_id == device_id)) is None:
        raise DeviceNotFound(device_id)


def _require_device(s: Session, device_id: str) -> DeviceRecord:
    record = get_device_txn(s, device_id)
    if record is None:
        raise DeviceNotFound(device_id)
    return record


def _update_device(s: Session, device_id: str, values: Mapping[str, Any]) -> None:
    result = s.execute(update(devices).where(devices.c.device_id == device_id).values(**values))
    if _rowcount(result) == 0:
        raise DeviceNotFound(device_id)


# --- devices ----------------------------------------------------------------


@read_only
def get_device_txn(s: Session, device_id: str) -> DeviceRecord | None:
    row = s.execute(select(devices).where(devices.c.device_id == device_id)).mappings().first()
    return None if row is None else _device(row)


@read_only
def list_devices_txn(
    s: Session,
    *,
    online: bool | None = None,
    q: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> Page[DeviceRecord]:
    """Devices ordered by id; ``q`` is a case-insensitive substring of id, name or host."""
    _check_page(offset, limit)
    where: list[ColumnElement[bool]] = []
    if online is not None:
        where.append(devices.c.online == online)
    if q:
        where.append(
            or_(
                devices.c.device_id.icontains(q, autoescape=True),
                devices.c.name.icontains(q, autoescape=True),
                devices.c.host.icontains(q, autoescape=True),
            )
        )
    total = s.scalar(select(func.count()).select_from(devices).where(*where)) or 0
    rows = s.execute(
        select(devices).where(*where).order_by(devices.c.device_id).offset(offset).limit(limit)
    ).mappings()
    return Page([_device(r) for r in rows], total, offset, limit)


def upsert_device_txn(
    s: Session, device_id: str, *, at: dt.datetime | None = None, **fields: Any
) -> DeviceRecord:
    """Create ``device_id`` if missing, then set exactly the given ``fields``."""
    _check_id(device_id, "device_id")
    now = at or utcnow()
    values = _checked_device_values(fields)
    values.setdefault("updated_at", now)
    stmt = _upsert(s, devices).values(device_id=device_id, created_at=now, **values)
    s.execute(stmt.on_conflict_do_update(index_elements=[devices.c.device_id], set_=values))
    return _require_device(s, device_id)


def create_device_txn(
    s: Session,
    device_id: str,
    *,
    password: str | None = None,
    realm: str | None = None,
    ha1_fn: Ha1Fn = digest_ha1,
    password_ha1_md5: str | None = None,
    password_ha1_sha256: str | None = None,
    at: dt.datetime | None = None,
    **fields: Any,
) -> DeviceRecord:
    """Pre-add a device through the API, before it ever registers.

    Only the digest HA1 of ``password`` is stored (RFC 7616 §3.4.2); pass
    either the password and realm, or precomputed HA1 values and their realm.
    """
    _check_id(device_id, "device_id")
    now = at or utcnow()
    values = _checked_device_values(fields)
    values.update(
        _ha1_values(device_id, password, realm, ha1_fn, password_ha1_md5, password_ha1_sha256)
    )
    if get_device_txn(s, device_id) is not None:
        raise DeviceExists(device_id)
    values.setdefault("pre_added", True)
    try:
        s.execute(
            insert(devices).values(device_id=device_id, created_at=now, updated_at=now, **values)
        )
    except IntegrityError as e:
        # Lost a race with a concurrent REGISTER or create for the same id.
        raise DeviceExists(device_id) from e
    return _require_device(s, device_id)


def update_device_txn(
    s: Session,
    device_id: str,
    *,
    password: str | None = None,
    realm: str | None = None,
    ha1_fn: Ha1Fn = digest_ha1,
    password_ha1_md5: str | None = None,
    password_ha1_sha256: str | None = None,
    clear_password: bool = False,
    at: dt.datetime | None = None,
    **fields: Any,
) -> DeviceRecord:
    """Change a device from the API.  A new password without ``realm`` reuses
    the realm of the stored HA1; ``clear_password`` removes the credentials
    (the device then authenticates with the platform-wide password, if any)."""
    current = _require_device(s, device_id)
    values = _checked_device_values(fields)
    if clear_password:
        if password is not None or password_ha1_md5 is not None or password_ha1_sha256 is not None:
            raise ValueError("clear_password cannot be combined with new credentials")
        values.update(password_ha1_md5=None, password_ha1_sha256=None, ha1_realm=None)
    else:
        values.update(
            _ha1_values(
                device_id,
                password,
                realm or current.ha1_realm,
                ha1_fn,
                password_ha1_md5,
                password_ha1_sha256,
            )
        )
    values["updated_at"] = at or utcnow()
    _update_device(s, device_id, values)
    return _require_device(s, device_id)


def delete_device_txn(s: Session, device_id: str) -> None:
    """Delete a device and its channels."""
    # Explicit, so the channels go even on a SQLite connection opened without
    # PRAGMA foreign_keys (the FK also cascades).
    s.execute(delete(channels).where(channels.c.device_id == device_id))
    result = s.execute(delete(devices).where(devices.c.device_id == device_id))
    if _rowcount(result) == 0:
        raise DeviceNotFound(device_id)


def device_registered_txn(
    s: Session,
    device_id: str,
    *,
    host: str,
    port: int,
    transport: str,
    contact: str | None,
    user_agent: str | None,
    expires: int,
    at: dt.datetime,
) -> DeviceRecord:
    """Record a successful REGISTER and mark the device online.

    An unknown device is created: the caller has already decided it may
    register (GB/T 28181-2016 §9.1.2).  ``online_at`` only moves when the
    device was offline, so a refresh does not reset its uptime.
    """
    _check_id(device_id, "device_id")
    if expires <= 0:
        raise ValueError(f"expires must be positive for a registration, got {expires}")
    values: dict[str, Any] = _checked_device_values(
        {
            "online": True,
            "host": host,
            "port": port,
            "transport": transport,
            "contact": contact,
            "user_agent": user_agent,
            "register_expires": expires,
            "registered_at": at,
            "register_expires_at": at + dt.timedelta(seconds=expires),
            "updated_at": at,
        }
    )
    stmt = _upsert(s, devices).values(device_id=device_id, created_at=at, online_at=at, **values)
    online_at = case((devices.c.online == false(), at), else_=devices.c.online_at)
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=[devices.c.device_id], set_={**values, "online_at": online_at}
        )
    )
    return _require_device(s, device_id)


def device_unregistered_txn(s: Session, device_id: str, *, at: dt.datetime) -> DeviceRecord | None:
    """Record a REGISTER with ``Expires: 0`` (RFC 3261 §10.2.2): offline now."""
    s.execute(
        update(devices)
        .where(devices.c.device_id == device_id)
        .values(
            online=False,
            offline_at=case((devices.c.online, at), else_=devices.c.offline_at),
            register_expires=0,
            register_expires_at=at,
            updated_at=at,
        )
    )
    return get_device_txn(s, device_id)


def device_offline_txn(s: Session, device_id: str, at: dt.datetime) -> bool:
    """Mark a device offline (registration expired or keepalives missed,
    GB/T 28181-2016 §9.6.1).  Returns whether it was online."""
    result = s.execute(
        update(devices)
        .where(devices.c.device_id == device_id, devices.c.online)
        .values(online=False, offline_at=at, updated_at=at)
    )
    return _rowcount(result) > 0


def devices_offline_txn(s: Session, batch: Sequence[tuple[str, dt.datetime]]) -> None:
    """``device_offline_txn`` for a run of ``(device_id, at)``, as one executemany (issue 12).

    A site's uplink going down takes thousands of devices offline in one
    expiry sweep (GB/T 28181-2016 §9.6.1): one statement, prepared once, not
    one per device. Rows apply in order; a device not online is left alone.
    """
    if batch:
        stmt = _cached_statement(s, _driver_key(s, "offline"), _offline_update)
        stmt.executemany(s, [{"b_id": device_id, "b_at": at} for device_id, at in batch])


def devices_unregistered_txn(s: Session, batch: Sequence[tuple[str, dt.datetime]]) -> None:
    """``device_unregistered_txn`` for a run of ``(device_id, at)`` (RFC 3261 §10.2.2), as one executemany."""
    if batch:
        stmt = _cached_statement(s, _driver_key(s, "unregistered"), _unregistered_update)
        stmt.executemany(s, [{"b_id": device_id, "b_at": at} for device_id, at in batch])


def _driver_key(s: Session, name: str) -> str:
    dialect = s.get_bind().dialect  # a driver statement's SQL text depends on the driver's parameter style
    return f"{name} {dialect.driver} {dialect.paramstyle}"


def _offline_update(s: Session) -> Any:
    from sqlalchemy import true  # here: the module's import list is shared with other changes

    at = bindparam("b_at", type_=devices.c.offline_at.type)
    return _driver_statement(s, (
        update(devices)
        .where(devices.c.device_id == bindparam("b_id"), devices.c.online == true())
        .values(online=false(), offline_at=at, updated_at=at)
    ))


def _unregistered_update(s: Session) -> Any:
    at = bindparam("b_at", type_=devices.c.offline_at.type)
    return _driver_statement(s, (
        update(devices)
        .where(devices.c.device_id == bindparam("b_id"))
        .values(
            online=false(),
            offline_at=case((devices.c.online, at), else_=devices.c.offline_at),
            register_expires=0,
            register_expires_at=at,
            updated_at=at,
        )
    ))


@dataclass(frozen=True)
class Registration:
    """One successful REGISTER, as batched by the device manager."""

    device_id: str
    host: str
    port: int
    transport: str
    contact: str | None
    user_agent: str | None
    expires: int
    at: dt.datetime
    gb_version: str | None = None  # the edition its X-GB-Ver announced (GB/T 28181-2022 §9.1)


def registrations_txn(s: Session, batch: Sequence[Registration]) -> int:
    """Apply a batch of successful REGISTERs as one executemany upsert.

    The same as ``device_registered_txn`` for each, without reading rows
    back: a storm of 10,000 registrations costs a few statements, not
    20,000. The newest registration of a device in the batch wins.
    """
    latest: dict[str, Registration] = {}
    for reg in batch:
        _check_id(reg.device_id, "device_id")
        if reg.expires <= 0:
            raise ValueError(f"expires must be positive for a registration, got {reg.expires}")
        if reg.transport not in SIP_TRANSPORTS:
            raise ValueError(f"transport must be one of {sorted(SIP_TRANSPORTS)}, got {reg.transport!r}")
        latest[reg.device_id] = reg
    if not latest:
        return 0
    rows = [
        {
            "device_id": r.device_id, "online": True, "host": r.host, "port": r.port,
            "transport": r.transport, "contact": r.contact, "user_agent": r.user_agent,
            "register_expires": r.expires, "registered_at": r.at,
            "register_expires_at": r.at + dt.timedelta(seconds=r.expires), "updated_at": r.at,
            "created_at": r.at, "online_at": r.at, "gb_version": r.gb_version,
        }
        for r in latest.values()
    ]
    stmt = _cached_statement(s, "registration_upsert", _registration_upsert)
    for chunk in _chunks(rows):
        s.execute(stmt, list(chunk))
    return len(rows)


@dataclass(frozen=True)
class AuthRecord:
    """What the registrar needs of a device to admit it (GB/T 28181-2016 §9.1.2)."""

    device_id: str
    enabled: bool
    pre_added: bool
    ha1_md5: str | None
    ha1_sha256: str | None
    ha1_realm: str | None
    charset: str
    keepalive_interval: int
    keepalive_count: int
    gb_version_setting: str = "auto"
    iframe_element: str = "IFameCmd"


def auth_records_txn(s: Session, device_id: str | None = None) -> list[AuthRecord]:
    """Admission data of one device, or of all (loaded once at start)."""
    c = devices.c
    query = select(c.device_id, c.enabled, c.pre_added, c.password_ha1_md5, c.password_ha1_sha256,
                   c.ha1_realm, c.charset, c.keepalive_interval, c.keepalive_count, c.gb_version_setting,
                   c.iframe_element)
    if device_id is not None:
        query = query.where(c.device_id == device_id)
    return [AuthRecord(*row) for row in s.execute(query)]


def keepalives_txn(
    s: Session, batch: Sequence[tuple[str, dt.datetime, str, int, str]], *, report: bool = True
) -> KeepaliveResult:
    """Apply a batch of keepalives ``(device_id, at, host, port, transport)``.

    GB/T 28181-2016 §9.6: every device sends a Keepalive MESSAGE each
    ``keepalive_interval`` seconds, so 10,000 devices mean ~170 writes a
    second.  The platform batches them and this applies a batch as one
    executemany UPDATE.  A keepalive proves the device is online (after a
    restart ``mark_all_offline_txn`` relies on that); a device offline when
    the row is updated gets ``online_at`` too.  ``updated_at`` is left
    alone: it tracks changes to the record, not liveness.

    ``report=False`` (the state writer, which needs no result) skips reading
    the rows first: ``updated`` is then the number of devices in the batch and
    ``came_online``/``unknown`` are empty, unknown IDs still change nothing.
    """
    latest: dict[str, tuple[dt.datetime, str, int, str]] = {}
    for device_id, at, host, port, transport in batch:
        if transport not in SIP_TRANSPORTS:
            raise ValueError(f"transport must be one of {sorted(SIP_TRANSPORTS)}, got {transport!r}")
        previous = latest.get(device_id)
        if previous is None or at >= previous[0]:
            latest[device_id] = (at, host, port, transport)
    if not latest:
        return KeepaliveResult(0, (), ())

    ids = sorted(latest)
    state: dict[str, bool] = {}
    if report:
        for chunk in _chunks(ids):
            rows = s.execute(
                select(devices.c.device_id, devices.c.online).where(devices.c.device_id.in_(chunk))
            )
            state.update((device_id, online) for device_id, online in rows)
    known = [i for i in ids if i in state] if report else ids
    if known:
        # One executemany of one statement prepared once per dialect (issue 12: the statement was
        # built, compiled and its rows' parameters processed by SQLAlchemy for every batch).
        stmt = _cached_statement(s, _driver_key(s, "keepalive_update"), _keepalive_update)
        stmt.executemany(s, [{"b_id": i, "b_at": latest[i][0], "b_host": latest[i][1], "b_port": latest[i][2],
                               "b_transport": latest[i][3]} for i in known])
    return KeepaliveResult(
        updated=len(known),
        came_online=tuple(i for i in ids if state.get(i) is False),
        unknown=tuple(i for i in ids if i not in state) if report else (),
    )


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled once for a dialect, run with ``executemany`` on the driver.

    SQLAlchemy's own executemany builds and type-processes a parameter dict
    per row (``construct_params``): 70 % of a keepalive batch's CPU on SQLite
    (issue 12). Here each value goes through its column type's bind processor
    (the same conversion, e.g. ``UtcDateTime``) and straight to the driver.
    """

    sql: str
    names: tuple[str, ...]  # bind names in the order the driver takes them (positional styles)
    positional: bool
    processors: Mapping[str, Callable[[Any], Any]]
    fixed: Mapping[str, Any]  # the statement's own values (``register_expires=0``), processed already

    def executemany(self, s: Session, rows: Sequence[Mapping[str, Any]]) -> None:
        procs, fixed = self.processors, self.fixed
        converted = [{**fixed, **{k: procs[k](v) if k in procs else v for k, v in row.items()}} for row in rows]
        params: list[Any] = (
            [tuple(row[n] for n in self.names) for row in converted] if self.positional else converted
        )
        s.connection().exec_driver_sql(self.sql, params)


def _driver_statement(s: Session, stmt: Any) -> _DriverStatement:
    dialect = s.get_bind().dialect
    compiled = stmt.compile(dialect=dialect)
    processors: dict[str, Callable[[Any], Any]] = {}
    fixed: dict[str, Any] = {}
    for bind, name in compiled.bind_names.items():  # the names as rendered in the SQL
        proc = bind.type.bind_processor(dialect)
        if not bind.required:  # a value written in the statement, the same for every row
            fixed[name] = proc(bind.value) if proc is not None else bind.value
        elif proc is not None:
            processors[name] = proc
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.bind_names.values())
    return _DriverStatement(compiled.string, names, bool(compiled.positional), processors, fixed)


def _keepalive_update(s: Session) -> _DriverStatement:
    from sqlalchemy import true  # here: the module's import list is shared with other changes

    return _driver_statement(s, (
        update(devices)
        .where(devices.c.device_id == bindparam("b_id"))
        .values(
            online=true(),
            last_keepalive_at=bindparam("b_at", type_=devices.c.last_keepalive_at.type),
            host=bindparam("b_host", type_=devices.c.host.type),
            port=bindparam("b_port", type_=devices.c.port.type),
            transport=bindparam("b_transport", type_=devices.c.transport.type),
            # Read as the row is updated: a device offline until this keepalive came online now.
            online_at=case((devices.c.online, devices.c.online_at),
                           else_=bindparam("b_at", type_=devices.c.online_at.type)),
        )
    ))


def mark_all_offline_txn(s: Session, at: dt.datetime) -> int:
    """Mark every device offline; used at startup, since the online state is
    re-learnt from the next keepalive or REGISTER.  Returns how many changed."""
    result = s.execute(
        update(devices).where(devices.c.online).values(online=False, offline_at=at, updated_at=at)
    )
    return _rowcount(result)


def _device_info_update(s: Session) -> Any:
    # Every field a bound parameter, so one statement serves every DeviceInfo: a
    # field the device left out (NULL) keeps its value, and the name only fills
    # an empty one, as in _device_info_values. Building the UPDATE with its CASE
    # per device cost about as much as executing it (issue 12: 50,000 onboarded).
    def keep(column: Any, key: str) -> Any:
        return func.coalesce(bindparam(key, type_=column.type), column)

    return (
        update(devices)
        .where(devices.c.device_id == bindparam("b_device_id"))
        .values(
            manufacturer=keep(devices.c.manufacturer, "b_manufacturer"),
            model=keep(devices.c.model, "b_model"),
            firmware=keep(devices.c.firmware, "b_firmware"),
            name=case((or_(devices.c.name.is_(None), devices.c.name == ""), keep(devices.c.name, "b_name")),
                      else_=devices.c.name),
            updated_at=bindparam("b_at"),
        )
    )


def store_device_info_txn(
    s: Session,
    device_id: str,
    *,
    name: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    at: dt.datetime | None = None,
) -> None:
    """``set_device_info_txn`` without reading the record back (batched writes)."""
    stmt = _cached_statement(s, "device_info_update", _device_info_update)
    result = s.connection().execute(stmt, {
        "b_device_id": device_id, "b_manufacturer": manufacturer, "b_model": model, "b_firmware": firmware,
        "b_name": name or None, "b_at": at or utcnow(),
    })
    if _rowcount(result) == 0:
        raise DeviceNotFound(device_id)


def _device_info_values(
    *,
    name: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        k: v
        for k, v in {"manufacturer": manufacturer, "model": model, "firmware": firmware}.items()
        if v is not None
    }
    if name:
        # One statement, no read first: only an empty name is filled, so an
        # operator's name set through the API stays.
        values["name"] = case(
            (or_(devices.c.name.is_(None), devices.c.name == ""), name), else_=devices.c.name
        )
    values["updated_at"] = at or utcnow()
    return values


def set_device_info_txn(
    s: Session,
    device_id: str,
    *,
    name: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
    firmware: str | None = None,
    at: dt.datetime | None = None,
) -> DeviceRecord:
    """Store a DeviceInfo response (GB/T 28181-2016 §A.2.6.4).

    Fields the device left out keep their value.  The device's own name only
    fills an empty name, so an operator's name set through the API stays.
    """
    _update_device(
        s, device_id,
        _device_info_values(name=name, manufacturer=manufacturer, model=model, firmware=firmware, at=at),
    )
    return _require_device(s, device_id)


def set_basic_param_txn(
    s: Session, device_id: str, interval: int, count: int, *, at: dt.datetime | None = None
) -> None:
    """Store the keepalive interval and timeout count (GB/T 28181-2016
    §A.2.6.7 BasicParam: HeartBeatInterval, HeartBeatCount)."""
    _checked_device_values({"keepalive_interval": interval, "keepalive_count": count})
    # One cached statement for every device (issue 12), as store_device_info_txn.
    stmt = _cached_statement(s, "basic_param_update", lambda _: (
        update(devices)
        .where(devices.c.device_id == bindparam("b_device_id"))
        .values(keepalive_interval=bindparam("b_interval"), keepalive_count=bindparam("b_count"),
                updated_at=bindparam("b_at"))
    ))
    result = s.connection().execute(stmt, {"b_device_id": device_id, "b_interval": interval, "b_count": count,
                                           "b_at": at or utcnow()})
    if _rowcount(result) == 0:
        raise DeviceNotFound(device_id)


#: What an operator may set a device's dialect to: "auto" follows its X-GB-Ver (GB/T 28181-2022 §9.1).
GB_VERSION_SETTINGS: Final = ("auto", *DIALECTS)


def set_dialect_txn(
    s: Session, device_id: str, *, version: str | None = None, iframe_element: str | None = None,
    at: dt.datetime | None = None,
) -> DeviceRecord:
    """Set the dialect the platform speaks to a device (``auto`` follows GB/T 28181-2022 §9.1
    ``X-GB-Ver``) and its I-frame element's spelling (§A.2.3.1.7); None leaves a value as it is."""
    values: dict[str, Any] = {}
    if version is not None:
        if version not in GB_VERSION_SETTINGS:
            raise ValueError(f"version must be one of {', '.join(GB_VERSION_SETTINGS)}, got {version!r}")
        values["gb_version_setting"] = version
    if iframe_element is not None:
        if iframe_element not in IFRAME_ELEMENTS:
            raise ValueError(f"iframe_element must be one of {', '.join(IFRAME_ELEMENTS)}, got {iframe_element!r}")
        values["iframe_element"] = iframe_element
    _update_device(s, device_id, {**values, "updated_at": at or utcnow()})
    return _require_device(s, device_id)


def set_catalog_progress_txn(
    s: Session, device_id: str, status: str, total: int, received: int, at: dt.datetime,
    error: str | None = None,
) -> None:
    """Record catalog sync progress (GB/T 28181-2016 §A.2.6.6: SumNum vs items
    received).  ``done`` and ``partial`` stamp ``catalog_synced_at``.

    ``error`` (why a sync ended ``error``, ``timeout`` or ``partial``) is
    stored as ``catalog_error``; ``running`` and ``done`` clear it, so a
    reason never outlives the sync it belongs to.
    """
    if status in ("running", "done"):
        error = None
    elif error is not None:
        # The reason can quote a device's SIP reason phrase: keep the row small.
        error = error[:MAX_CATALOG_ERROR]
    values = _checked_device_values(
        {"catalog_status": status, "catalog_total": total, "catalog_received": received,
         "catalog_error": error}
    )
    if status in ("done", "partial"):
        values["catalog_synced_at"] = at
    _update_device(s, device_id, {**values, "updated_at": at})


# --- channels ---------------------------------------------------------------


def replace_channels_txn(
    s: Session,
    device_id: str,
    items: Sequence[ChannelData],
    *,
    complete: bool,
    at: dt.datetime | None = None,
) -> int:
    """Upsert catalog ``items``; when ``complete``, delete the device's other
    channels.  Returns the device's new ``channel_count``.

    A Catalog response arrives in many MESSAGEs (GB/T 28181-2016 §A.2.6.6,
    SumNum); the catalog service calls this with ``complete=True`` only
    when all SumNum items arrived, so a partial sync never deletes channels.
    A later duplicate of an id in ``items`` wins.
    """
    _require_exists(s, device_id)
    now = at or utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for item in items:
        row = {name: getattr(item, name) for name in _CHANNEL_FIELDS}
        row.update(
            device_id=device_id, kind=item.kind or catalog_kind(item.channel_id), updated_at=now
        )
        rows[item.channel_id] = row

    if rows:
        stmt = _cached_statement(s, "channel_upsert", _channel_upsert)
        connection = s.connection()
        values = list(rows.values())
        for chunk in _chunks(values, 1000):
            connection.execute(stmt, list(chunk))

    if complete:
        existing = s.scalars(
            select(channels.c.channel_id).where(channels.c.device_id == device_id)
        ).all()
        stale = sorted(set(existing) - rows.keys())
        for chunk in _chunks(stale):
            s.execute(
                delete(channels).where(
                    channels.c.device_id == device_id, channels.c.channel_id.in_(chunk)
                )
            )

    count = s.scalar(
        select(func.count()).select_from(channels).where(channels.c.device_id == device_id)
    ) or 0
    _update_device(s, device_id, {"channel_count": count, "updated_at": now})
    return count


@dataclass(frozen=True, slots=True)
class CatalogStore:
    """One device's ended catalog sync (``done`` or ``partial``), for :func:`store_catalogs_txn`.

    ``own_name``: the name of the item carrying the device's own ID; like a
    DeviceInfo name it only fills an empty name. ``error``: why a ``partial``
    sync stopped (``done`` clears it).
    """

    device_id: str
    channels: Sequence[ChannelData]
    status: str
    total: int
    received: int
    at: dt.datetime
    own_name: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogStored:
    """What storing one sync changed: channel IDs added and removed (sorted).

    ``found`` is False when the device no longer exists (deleted through the
    API while its catalog was arriving): nothing was stored for it.
    """

    added: list[str]
    removed: list[str]
    found: bool = True


def _catalog_update(s: Session) -> Any:
    # One UPDATE per device, executed as one executemany for the batch. The
    # catalog's own name only fills an empty name (as DeviceInfo's does), so
    # an operator's or DeviceInfo's name stays.
    own_name = bindparam("b_own_name", type_=devices.c.name.type)
    return (
        update(devices)
        .where(devices.c.device_id == bindparam("b_device_id"))
        .values(
            channel_count=bindparam("b_count"),
            catalog_status=bindparam("b_status"),
            catalog_total=bindparam("b_total"),
            catalog_received=bindparam("b_received"),
            catalog_error=bindparam("b_error"),
            catalog_synced_at=bindparam("b_at"),
            updated_at=bindparam("b_at"),
            name=case(
                (or_(devices.c.name.is_(None), devices.c.name == ""), func.coalesce(own_name, devices.c.name)),
                else_=devices.c.name,
            ),
        )
    )


def _channel_delete(s: Session) -> Any:
    return delete(channels).where(
        channels.c.device_id == bindparam("b_device_id"), channels.c.channel_id == bindparam("b_channel_id")
    )


def store_catalogs_txn(s: Session, stores: Sequence[CatalogStore]) -> list[CatalogStored]:
    """Store many devices' ended catalog syncs in one transaction (issue 12).

    Per device it does what ``replace_channels_txn`` followed by
    ``set_catalog_progress_txn`` does (GB/T 28181-2016 §A.2.6.4: the SumNum
    items replace the device's channel list when the sync is ``done``; a
    ``partial`` one deletes nothing), but as a handful of statements for the
    whole batch: one read of the devices and their channels, one executemany
    each for the channel upserts, the stale deletes and the device rows, one
    grouped count. A transaction per device was 11 % of the platform's
    samples while 10,000 devices onboarded.

    All or nothing for the batch: the caller stores the devices one by one
    (a batch of one each) when a batch fails, so one device's bad data never
    loses the others' catalogs. Returns one :class:`CatalogStored` per store,
    in order. A device must appear at most once.
    """
    ids = [st.device_id for st in stores]
    if len(set(ids)) != len(ids):
        raise ValueError("a device's catalog appears twice in one batch")
    for st in stores:
        if st.status not in ("done", "partial"):
            raise ValueError(f"only a done or partial sync stores channels, got {st.status!r}")
    found: set[str] = set()
    before: dict[str, set[str]] = {device_id: set() for device_id in ids}
    for chunk in _chunks(ids):
        found.update(s.scalars(select(devices.c.device_id).where(devices.c.device_id.in_(chunk))).all())
        rows = s.execute(
            select(channels.c.device_id, channels.c.channel_id).where(channels.c.device_id.in_(chunk))
        )
        for device_id, channel_id in rows:
            before[device_id].add(channel_id)

    upserts: list[dict[str, Any]] = []
    stale: list[dict[str, Any]] = []
    results: list[CatalogStored] = []
    stored: list[CatalogStore] = []
    for st in stores:
        if st.device_id not in found:
            results.append(CatalogStored([], [], found=False))
            continue
        mine: dict[str, dict[str, Any]] = {}
        for item in st.channels:  # a later duplicate of an id wins, as in replace_channels_txn
            row = {name: getattr(item, name) for name in _CHANNEL_FIELDS}
            row.update(device_id=st.device_id, kind=item.kind or catalog_kind(item.channel_id), updated_at=st.at)
            mine[item.channel_id] = row
        upserts.extend(mine.values())
        old = before[st.device_id]
        # A partial sync deletes nothing (WVP issues #853/#858: NVRs that send 10 of 140 channels).
        removed = sorted(old - mine.keys()) if st.status == "done" else []
        stale.extend({"b_device_id": st.device_id, "b_channel_id": c} for c in removed)
        results.append(CatalogStored(sorted(mine.keys() - old), removed))
        stored.append(st)

    connection = s.connection()
    if upserts:
        stmt = _cached_statement(s, "channel_upsert", _channel_upsert)
        for part in _chunks(upserts, 1000):
            connection.execute(stmt, list(part))
    if stale:
        connection.execute(_cached_statement(s, "channel_delete", _channel_delete), stale)
    counts: dict[str, int] = {}
    for chunk in _chunks([st.device_id for st in stored]):
        counted = s.execute(
            select(channels.c.device_id, func.count())
            .where(channels.c.device_id.in_(chunk))
            .group_by(channels.c.device_id)
        )
        counts.update((device_id, n) for device_id, n in counted)
    if stored:
        connection.execute(_cached_statement(s, "catalog_update", _catalog_update), [
            {
                "b_device_id": st.device_id,
                "b_count": counts.get(st.device_id, 0),
                "b_status": st.status,
                "b_total": st.total,
                "b_received": st.received,
                # The reason can quote a device's SIP reason phrase: keep the row small.
                "b_error": None if st.status == "done" or st.error is None else st.error[:MAX_CATALOG_ERROR],
                "b_at": st.at,
                "b_own_name": st.own_name or None,
            }
            for st in stored
        ])
    return results


@read_only
def list_channels_txn(
    s: Session,
    device_id: str,
    *,
    offset: int = 0,
    limit: int = 100,
    parent_id: str | None = None,
) -> Page[ChannelRecord]:
    """A device's channels ordered by id; ``parent_id`` also matches the last
    element of a '/'-separated ParentID path."""
    _check_page(offset, limit)
    where: list[ColumnElement[bool]] = [channels.c.device_id == device_id]
    if parent_id is not None:
        where.append(
            or_(
                channels.c.parent_id == parent_id,
                channels.c.parent_id.endswith("/" + parent_id, autoescape=True),
            )
        )
    total = s.scalar(select(func.count()).select_from(channels).where(*where)) or 0
    rows = s.execute(
        select(channels).where(*where).order_by(channels.c.channel_id).offset(offset).limit(limit)
    ).mappings()
    return Page([_channel(r) for r in rows], total, offset, limit)


@read_only
def get_channel_txn(
    s: Session, channel_id: str, *, device_id: str | None = None
) -> ChannelRecord | None:
    """A channel by id.  Ids are unique per device only; without ``device_id``
    the oldest row wins."""
    where = [channels.c.channel_id == channel_id]
    if device_id is not None:
        where.append(channels.c.device_id == device_id)
    row = s.execute(select(channels).where(*where).order_by(channels.c.id).limit(1)).mappings().first()
    return None if row is None else _channel(row)


def _last_path_element(parent_id: str | None) -> str | None:
    if not parent_id:
        return None
    parts = [p.strip() for p in parent_id.split("/") if p.strip()]
    return parts[-1] if parts else None


@read_only
def channel_tree_txn(
    s: Session, device_id: str, *, platform_id: str | None = None
) -> list[TreeNode]:
    """Build a device's catalog tree.

    The parent of a node is, in order: the last element of its ParentID (some
    devices send a '/'-separated path); for a virtual organisation, its
    BusinessGroupID; for a civil-code node, the longest civil-code prefix
    present (3402 is the parent of 340200); for other nodes without a
    ParentID, their CivilCode node.  A ParentID equal to the device's or the
    platform's id (Hikvision sends the platform domain, WVP issue #21), an
    unknown parent, or a parent cycle makes the node a root.  Siblings sort
    groups before channels, then by id.
    """
    rows = s.execute(
        select(
            channels.c.channel_id,
            channels.c.name,
            channels.c.kind,
            channels.c.status,
            channels.c.parent_id,
            channels.c.business_group_id,
            channels.c.civil_code,
        )
        .where(channels.c.device_id == device_id)
        .order_by(channels.c.channel_id)  # makes cycle breaking deterministic
    ).all()
    nodes = {r.channel_id: TreeNode(r.channel_id, r.name, r.kind, r.status) for r in rows}
    root_ids = {device_id} | ({platform_id} if platform_id else set())

    def parent_of(r: Any) -> str | None:
        named = _last_path_element(r.parent_id)
        if named in root_ids:
            return None
        candidates: list[str | None] = [named]
        if r.kind == "virtual_org":
            candidates.append(r.business_group_id)
        if r.kind == "civil_code":
            candidates.extend(civil_code_ancestors(r.channel_id))
        elif named is None:
            candidates.append(r.civil_code)
        for candidate in candidates:
            if candidate and candidate != r.channel_id and candidate in nodes:
                return candidate
        return None

    parents = {r.channel_id: parent_of(r) for r in rows}
    _break_cycles(parents)

    roots: list[TreeNode] = []
    for channel_id, node in nodes.items():
        parent = parents[channel_id]
        (roots if parent is None else nodes[parent].children).append(node)
    order = {kind: i for i, kind in enumerate(CHANNEL_KINDS)}

    # Iterative: a hostile catalog can nest deeper than the recursion limit.
    levels = [roots]
    while levels:
        level = levels.pop()
        level.sort(key=lambda n: (order.get(n.kind, len(order)), n.id))
        levels.extend(n.children for n in level if n.children)
    return roots


def _break_cycles(parents: dict[str, str | None]) -> None:
    """Cut parent cycles (A→B→A from a confused device) so that every node is
    reachable from a root; the node where the cycle closes becomes a root."""
    done: set[str] = set()
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        while node is not None and node not in done:
            if node in on_path:
                parents[node] = None
                break
            on_path.add(node)
            path.append(node)
            node = parents[node]
        done.update(path)
