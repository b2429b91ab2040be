"""JSON <-> typed values for the HTTP API.

Inbound: request bodies are bounded by :func:`parse_json_body` (sizes, 64-bit
integers, finite numbers, no lone surrogates), then converted to their shape
(the msgspec Structs in each domain's ``shapes.py``), then given the checks a
type cannot express (GB ids, stream choices); query strings are checked here.
Anything wrong raises :class:`ValidationError` naming the offending field, so
the client learns what to fix (the API maps it to 400). Unknown body fields
are refused rather than ignored: a typo such as ``"pasword"`` must not
silently leave a device without its password.

Outbound: registry records, live state and service results become their
response shapes (``*_json`` here; ``Routes._json`` serialises them with
:func:`to_json` and :func:`dumps`). Datetimes are ISO 8601 UTC strings ending in ``Z``;
passwords never leave the process, not even as their digest HA1
(``has_password`` says whether one is set).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast, overload

import msgspec
from msgspec import UNSET

from gbplatform.api import shapes as api_shapes
from gbplatform.api.shapes import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    BodyError,
    S,
    Shape,
    convert_body,
)
from gbplatform.core.clock import utc_datetime
from gbplatform.core.errors import DomainError
from gbplatform.core.ids import is_gb_id
from gbplatform.db.queries import ChannelRecord, DeviceRecord, Page, TreeNode
from gbplatform.devices import shapes as device_shapes
from gbplatform.devices.registrar import DeviceLive
from gbplatform.devices.shapes import CHARSETS, MAX_NAME, MAX_PASSWORD, MEDIA_TRANSPORTS
from gbplatform.recording import shapes as record_shapes
from gbplatform.recording.shapes import RECORD_MODES
from gbplatform.signalling.trace import TraceEntry
from sip.channel_fields import STORED_FIELDS
from sip.gbid import is_loose_id
from sip.manscdp.dialects import dialect_of
from sip.sdp import SdpError, parse_stream_choice

if TYPE_CHECKING:
    from gbplatform.recording.manager import DownloadJob
    from gbplatform.recording.queries import PlanRecord, PolicyRecord, SegmentRecord

T = TypeVar("T")
P = TypeVar("P", bound=api_shapes.Page)

__all__ = [
    "CHARSETS", "DEFAULT_PAGE_LIMIT", "DEFAULT_TRACE_LIMIT", "MAX_BODY", "MAX_NAME", "MAX_PAGE_LIMIT",
    "MAX_PASSWORD", "MAX_SEARCH", "MAX_TRACE_LIMIT", "MEDIA_TRANSPORTS", "RECORD_MODES",
]

MAX_BODY: Final = 64 * 1024
MAX_TRACE_LIMIT: Final = 1000
DEFAULT_TRACE_LIMIT: Final = 100
MAX_SEARCH: Final = 64

# Non-strict mode (sip.strict_id = false) still needs an ID that is a SIP
# user part and fits the registry's 32-character column.


# --- errors -----------------------------------------------------------------


class BadJson(DomainError):
    status = 400
    code = "bad_json"


class ValidationError(DomainError):
    """A request field is missing, of the wrong type, or out of range."""

    status = 400
    code = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Unauthorized(DomainError):
    """Missing or wrong bearer token (RFC 6750 §3)."""

    status = 401
    code = "unauthorized"


class PayloadTooLarge(DomainError):
    status = 413
    code = "payload_too_large"


def error_json(code: str, message: str, field: str | None = None) -> api_shapes.Error:
    return api_shapes.Error(error=api_shapes.ErrorBody(code=code, message=message,
                                                       field=UNSET if field is None else field))


def dumps(obj: Any) -> bytes:
    # allow_nan=False: NaN is not JSON; a value that gets here is a bug to see.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def to_json(obj: Shape) -> Any:
    """A response shape as JSON-able data: every declared field, ``None`` as null;
    only ``UNSET`` fields (declared optional) are left out."""
    # to_builtins then json.dumps rather than msgspec.json.encode: the latter
    # writes NaN as null, where a NaN reaching here is a bug to see (dumps raises).
    return msgspec.to_builtins(obj)


# --- times ------------------------------------------------------------------


@overload
def iso(value: dt.datetime) -> str: ...
@overload
def iso(value: dt.datetime | None) -> str | None: ...
def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` and milliseconds: ``2023-11-14T22:13:20.000Z``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)  # the registry only stores UTC
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@overload
def iso_epoch(epoch: float) -> str: ...
@overload
def iso_epoch(epoch: float | None) -> str | None: ...
def iso_epoch(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return iso(utc_datetime(epoch))


# --- inbound: bodies --------------------------------------------------------


#: The registry's integers are SQL BIGINT (SQLite INTEGER): 64-bit signed.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


class _BadNumber:
    """A JSON number the API cannot store, kept until its object names the field."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _BadNumber:
    # By length first: int() of a literal over 4,300 digits raises ValueError
    # (CPython's int_max_str_digits), and 2^63 has 19 digits.
    if len(text) > 20:
        return _BadNumber(text)
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else _BadNumber(text)


def _parse_float(text: str) -> float | _BadNumber:
    value = float(text)
    return value if math.isfinite(value) else _BadNumber(text)


def _parse_constant(text: str) -> _BadNumber:
    # NaN, Infinity and -Infinity, which json.loads takes: not JSON (RFC 8259 §6).
    return _BadNumber(text)


def printable(text: str) -> str:
    """``text`` with lone surrogates escaped, so that an error about it can be UTF-8 encoded."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _checked_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: refuse what a field cannot hold, naming the field.

    A ``\\ud800`` escape decodes to a lone surrogate, which no UTF-8 column
    can store (RFC 8259 §8.2: such a string is not interoperable). Objects
    nested in this one were checked by their own call; lists are walked here.
    """
    for key, value in pairs:
        if _SURROGATE.search(key):
            raise ValidationError(printable(key), "a field name must not contain a lone surrogate escape")
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str) and _SURROGATE.search(item):
                raise ValidationError(key, "must not contain a lone surrogate escape (\\ud800-\\udfff)")
            if isinstance(item, _BadNumber):
                raise ValidationError(key, f"number {item.text[:24]!r} out of range: integers are 64-bit "
                                           "and numbers finite")
            if isinstance(item, list):
                stack.extend(item)
    return dict(pairs)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A JSON object from a request body; :class:`BadJson` otherwise.

    Numbers are bounded while parsing (integers to 64 bits, floats finite,
    no NaN/Infinity) and strings must be Unicode scalar values: either is a
    :class:`ValidationError` naming the field, never a 500 further on.
    """
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"request body over {MAX_BODY} bytes")
    if not raw.strip():
        raise BadJson("request body is empty; a JSON object is expected")
    try:
        value = json.loads(raw.decode("utf-8"), parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=_parse_constant, object_pairs_hook=_checked_object)
    except UnicodeDecodeError:
        raise BadJson("request body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise BadJson(f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise BadJson("request body nests too deeply") from None
    if not isinstance(value, dict):
        raise BadJson(f"a JSON object is expected, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class DeviceChanges:
    """Writable device fields from a POST or PATCH body.

    ``fields`` are registry column values; the password is kept apart since
    only its digest HA1 is stored, for the realm ``sip.domain``.
    """

    fields: dict[str, Any] = field(default_factory=dict)
    password: str | None = field(default=None, repr=False)
    clear_password: bool = False

    @property
    def empty(self) -> bool:
        return not self.fields and self.password is None and not self.clear_password


@dataclass(frozen=True)
class DeviceCreate:
    device_id: str
    changes: DeviceChanges


def parse_body(obj: Mapping[str, Any], shape: type[S], messages: Mapping[str, str] | None = None) -> S:
    """A checked JSON body as ``shape``; a 400 ``ValidationError`` naming the field otherwise."""
    try:
        return convert_body(obj, shape, messages)
    except BodyError as e:
        raise ValidationError(e.field, e.message) from None


def _check_device_id(value: Any, *, strict: bool, name: str = "device_id") -> str:
    if not isinstance(value, str):
        raise ValidationError(name, "a string is required")
    if strict:
        if not is_gb_id(value):
            raise ValidationError(name, "must be 20 digits (GB/T 28181-2016 Annex D)")
    elif not is_loose_id(value):
        raise ValidationError(name, "1-32 characters: letters, digits, '_', '.', '-'")
    return value


# Choices a client may send in any case (``"utf-8"``); the shape holds the canonical spelling.
_CASELESS: Final = {"charset": CHARSETS, "media_transport": MEDIA_TRANSPORTS}


def _device_body(obj: Mapping[str, Any], shape: type[S]) -> S:
    canonical = dict(obj)
    for name, choices in _CASELESS.items():
        value = obj.get(name)
        if isinstance(value, str) and value.upper() in choices:
            canonical[name] = value.upper()
    try:
        return convert_body(canonical, shape, device_shapes.DEVICE_MESSAGES)
    except BodyError as e:
        if e.field == "password" and obj["password"] == "":
            raise ValidationError("password", "must not be empty (null removes the password)") from None
        raise ValidationError(e.field, e.message) from None


def _device_changes(body: device_shapes.DevicePatch, *, patch: bool) -> DeviceChanges:
    fields: dict[str, Any] = {}
    password: str | None = None
    clear = False
    if body.name is not UNSET:
        fields["name"] = body.name.strip() if body.name and body.name.strip() else None
    for name in ("enabled", "charset", "media_transport", "sdp_y_line"):
        if getattr(body, name) is not UNSET:
            fields[name] = getattr(body, name)
    if body.stream_index is not UNSET:
        index = body.stream_index
        if index is not None:
            try:
                kind, number = parse_stream_choice(index)
            except SdpError as e:
                raise ValidationError("stream_index", str(e)) from None
            index = f"{kind}:{'main' if number == 0 else 'sub'}" if kind == "streamMode" else f"{kind}:{number}"
        fields["stream_index"] = index
    if body.password is not UNSET:
        password = body.password
        clear = password is None and patch
    return DeviceChanges(fields, password, clear)


def parse_device_create(obj: Mapping[str, Any], *, strict_id: bool) -> DeviceCreate:
    """``POST /devices`` body (``DeviceCreate``): ``device_id`` plus optional writable fields."""
    if "device_id" not in obj:
        raise ValidationError("device_id", "is required")
    device_id = _check_device_id(obj["device_id"], strict=strict_id)
    body = _device_body(obj, device_shapes.DeviceCreate)
    return DeviceCreate(device_id, _device_changes(body, patch=False))


def parse_device_patch(obj: Mapping[str, Any]) -> DeviceChanges:
    """``PATCH /devices/{id}`` body (``DevicePatch``): any writable fields; ``"password": null`` clears it."""
    if "device_id" in obj:
        raise ValidationError("device_id", "cannot be changed; delete the device and add it again")
    return _device_changes(_device_body(obj, device_shapes.DevicePatch), patch=True)


# --- inbound: query strings -------------------------------------------------

Args = Mapping[bytes, Sequence[bytes]]


def _arg(args: Args, name: str) -> str | None:
    values = args.get(name.encode())
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(name, "is not UTF-8") from None


def int_arg(args: Args, name: str, default: int, lo: int, hi: int) -> int:
    raw = _arg(args, name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValidationError(name, f"an integer is required, got {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise ValidationError(name, f"must be between {lo} and {hi}")
    return value


def bool_arg(args: Args, name: str) -> bool | None:
    raw = _arg(args, name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValidationError(name, "must be true or false")


def str_arg(args: Args, name: str, max_len: int) -> str | None:
    raw = _arg(args, name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise ValidationError(name, f"at most {max_len} characters")
    return raw


@dataclass(frozen=True)
class Paging:
    offset: int
    limit: int


def parse_paging(args: Args) -> Paging:
    return Paging(
        offset=int_arg(args, "offset", 0, 0, 2**31 - 1),
        limit=int_arg(args, "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT),
    )


@dataclass(frozen=True)
class DeviceListQuery:
    online: bool | None
    q: str | None
    paging: Paging


def parse_device_list(args: Args) -> DeviceListQuery:
    return DeviceListQuery(bool_arg(args, "online"), str_arg(args, "q", MAX_SEARCH), parse_paging(args))


@dataclass(frozen=True)
class ChannelListQuery:
    parent_id: str | None
    paging: Paging


def parse_channel_list(args: Args) -> ChannelListQuery:
    return ChannelListQuery(str_arg(args, "parent_id", 32), parse_paging(args))


def parse_trace_limit(args: Args) -> int:
    return int_arg(args, "limit", DEFAULT_TRACE_LIMIT, 1, MAX_TRACE_LIMIT)


# --- outbound ---------------------------------------------------------------


def _address(host: str | None, port: int | None) -> str | None:
    if not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port else shown


def device_json(
    record: DeviceRecord,
    live: DeviceLive | None,
    *,
    now: float,
    wall: float,
    catalog: Mapping[str, Any] | None = None,
) -> device_shapes.Device:
    """A device as the API shows it.

    The live state, when the device manager has one, wins over the registry:
    lifecycle writes reach the database in batches, so it is the fresher
    source. ``now`` is clock.seconds() (the timebase of ``DeviceLive``),
    ``wall`` clock.time(). ``catalog`` is a running sync's progress.
    """
    online = record.online
    transport, host, port = record.transport, record.host, record.port
    contact, user_agent, charset = record.contact, record.user_agent, record.charset
    interval, count = record.keepalive_interval, record.keepalive_count
    registered_at = iso(record.registered_at)
    expires_at = iso(record.register_expires_at)
    keepalive_at = iso(record.last_keepalive_at)
    if live is not None:
        online = live.online
        transport, host, port = live.addr
        contact = live.contact or contact
        user_agent = live.user_agent or user_agent
        charset, interval, count = live.charset, live.interval, live.count
        if live.registered_wall:
            registered_at = iso_epoch(live.registered_wall)
        expires_at = iso_epoch(wall + (live.expires_at - now))
        if live.last_keepalive_wall is not None:
            keepalive_at = iso_epoch(live.last_keepalive_wall)
    status, total, received = record.catalog_status, record.catalog_total, record.catalog_received
    catalog_error = record.catalog_error
    if catalog is not None and catalog.get("status") == "running":
        status, total, received = "running", catalog.get("total") or 0, catalog.get("received") or 0
        catalog_error = None  # the stored reason belongs to the previous sync
    return device_shapes.Device(
        device_id=record.device_id,
        name=record.name,
        manufacturer=record.manufacturer,
        model=record.model,
        firmware=record.firmware,
        enabled=record.enabled,
        pre_added=record.pre_added,
        online=online,
        transport=transport,
        host=host,
        port=port,
        address=_address(host, port),
        contact=contact,
        user_agent=user_agent,
        charset=charset,
        media_transport=cast(device_shapes.MediaTransport, record.media_transport),
        stream_index=record.stream_index,
        sdp_y_line=record.sdp_y_line,
        **dialect_fields(record, live),
        registered_at=registered_at,
        register_expires_at=expires_at,
        last_keepalive_at=keepalive_at,
        keepalive_interval=interval,
        keepalive_count=count,
        online_at=iso(record.online_at),
        offline_at=iso(record.offline_at),
        catalog=device_shapes.DeviceCatalog(
            status=cast(device_shapes.CatalogStatus, status),
            total=total,
            received=received,
            synced_at=iso(record.catalog_synced_at),
            error=catalog_error,
        ),
        channel_count=record.channel_count,
        has_password=record.has_password,
        created_at=iso(record.created_at),
        updated_at=iso(record.updated_at),
    )


def dialect_fields(record: DeviceRecord, live: DeviceLive | None) -> dict[str, Any]:
    """The dialect members of ``Device`` and ``DeviceDialect``: the live registration's announced edition
    (GB/T 28181-2022 §9.1) wins over the stored one, which the state writer may not have written yet."""
    detected = live.gb_version if live is not None else record.gb_version
    return {
        "gb_version": dialect_of(detected, record.gb_version_setting),
        "gb_version_detected": detected,
        "gb_version_setting": record.gb_version_setting,
        "iframe_element": record.iframe_element,
    }


def _finite(value: float | None) -> float | None:
    # A device can send "NaN" or "inf" as a coordinate; neither is JSON.
    return value if value is not None and math.isfinite(value) else None


def channel_json(record: ChannelRecord) -> Any:
    """A channel as the ``Channel`` shape (``devices.shapes``): the stored catalog
    fields of ``sip.channel_fields`` plus the registry's bookkeeping."""
    stored: dict[str, Any] = {}
    for row in STORED_FIELDS:
        value = getattr(record, str(row.name))
        stored[str(row.name)] = _finite(value) if row.value is float else value
    return device_shapes.Channel(device_id=record.device_id, **stored, kind=record.kind, extra=record.extra,
                                 updated_at=iso(record.updated_at))


def page_json(page: Page[T], item: Callable[[T], Any], shape: type[P]) -> P:
    """One page of a list as its ``*Page`` shape (``DevicePage``, ``ChannelPage``)."""
    return shape(items=[item(x) for x in page.items], total=page.total, offset=page.offset, limit=page.limit)


def _open_list(shape: Shape) -> bytes:
    """``shape`` serialised up to the inside of its last field, an empty list: ``{...,"children":[``."""
    text = dumps(to_json(shape))
    assert text.endswith(b"[]}")  # the list is the shape's last field
    return text[:-2]


def _node_head(node: TreeNode) -> bytes:
    return _open_list(device_shapes.TreeNode(id=node.id, name=node.name, kind=node.kind, status=node.status,
                                             children=[]))


def tree_bytes(device_id: str, roots: Sequence[TreeNode]) -> bytes:
    """The ``ChannelTree`` shape: ``{"device_id", "items": [node...]}`` with nested ``children``.

    Serialised with an explicit stack: a hostile catalog can nest deeper than
    json.dumps' recursion limit (the tree query is iterative for the same reason).
    Each object is still built as its shape, serialised with its list left open.
    """
    out: list[bytes] = [_open_list(device_shapes.ChannelTree(device_id=device_id, items=[]))]
    stack: list[tuple[Sequence[TreeNode], int]] = [(roots, 0)]
    while stack:
        nodes, i = stack.pop()
        if i == len(nodes):
            out.append(b"]}" if stack else b"]")
            continue
        if i:
            out.append(b",")
        stack.append((nodes, i + 1))
        out.append(_node_head(nodes[i]))
        stack.append((nodes[i].children, 0))
    out.append(b"}")
    return b"".join(out)


def catalog_progress_json(
    device_id: str, progress: Mapping[str, Any] | None, record: DeviceRecord | None
) -> device_shapes.CatalogProgress:
    """Catalog sync progress: from the running or last session, else the registry."""
    synced_at = iso(record.catalog_synced_at) if record is not None else None
    if progress is not None:
        if progress["status"] in ("done", "partial"):
            synced_at = iso_epoch(progress["finished_at"])
        return device_shapes.CatalogProgress(
            device_id=device_id,
            status=progress["status"],
            sn=progress["sn"],
            total=progress["total"] or 0,
            received=progress["received"],
            parts=progress["parts"],
            duplicates=progress["duplicates"],
            started_at=iso_epoch(progress["started_at"]),
            finished_at=iso_epoch(progress["finished_at"]),
            error=progress["error"],
            synced_at=synced_at,
        )
    assert record is not None
    return device_shapes.CatalogProgress(
        device_id=device_id,
        status=cast(device_shapes.CatalogStatus, record.catalog_status),
        sn=None,
        total=record.catalog_total,
        received=record.catalog_received,
        parts=None,
        duplicates=None,
        started_at=None,
        finished_at=None,
        error=record.catalog_error,
        synced_at=synced_at,
    )


def trace_json(device_id: str, entries: Sequence[TraceEntry]) -> device_shapes.Trace:
    items = []
    for entry in entries:
        items.append(device_shapes.TraceEntry(
            at=iso_epoch(entry.at), direction=entry.direction, transport=entry.transport,  # type: ignore[arg-type]
            peer=entry.peer, summary=entry.summary, message=entry.text))
    return device_shapes.Trace(device_id=device_id, items=items)


# --- recording (issue 4) ---------------------------------------------------------

MAX_RANGE_SECONDS: Final = 7 * 86400


@dataclass(frozen=True)
class PlanBody:
    name: str | None
    schedule: list[dict[str, Any]] | None


def _plan_name(name: str | None, *, partial: bool) -> None:
    if name is not None and not name.strip():
        raise ValidationError("name", "must not be empty")
    if not partial and name is None:
        raise ValidationError("name", "is required")


def _schedule(value: Any) -> list[dict[str, Any]]:
    from gbplatform.recording.schedule import ScheduleError, parse_schedule

    try:
        return parse_schedule(value)
    except ScheduleError as e:
        raise ValidationError("schedule", str(e)) from None


def parse_plan(obj: Mapping[str, Any], *, partial: bool) -> PlanBody:
    """``POST``/``PUT /record/plans`` (``RecordPlanBody``): ``name`` and ``schedule`` (weekly windows).

    The name is checked before the schedule, and the schedule by
    ``recording.schedule.parse_schedule``, whose messages say which window is
    wrong (and which returns it normalised).
    """
    try:
        body = convert_body(obj, record_shapes.RecordPlanBody)
    except BodyError as e:
        if e.field == "name" and obj["name"] is None:
            raise ValidationError("name", "must not be null") from None
        if e.field == "schedule":  # the name passed its shape
            _plan_name(obj.get("name"), partial=partial)
            _schedule(obj["schedule"])
        raise ValidationError(e.field, e.message) from None
    name = None if body.name is UNSET else body.name
    _plan_name(name, partial=partial)
    schedule = _schedule(obj["schedule"]) if "schedule" in obj else None
    if not partial and schedule is None:
        raise ValidationError("schedule", "is required")
    return PlanBody(name, schedule)


PolicyBody = record_shapes.RecordPolicyBody


def parse_policy(obj: Mapping[str, Any]) -> PolicyBody:
    """``PUT /channels/{id}/record`` (``RecordPolicyBody``): ``mode``, ``plan_id`` (mode plan),
    ``retention_days`` (null: global)."""
    body = parse_body(obj, record_shapes.RecordPolicyBody, record_shapes.POLICY_MESSAGES)
    if body.mode == "plan" and body.plan_id is None:
        raise ValidationError("plan_id", "is required when mode is plan")
    if body.mode != "plan" and body.plan_id is not None:
        raise ValidationError("plan_id", "only with mode plan")
    return body


#: Recording times the API takes: 1970-01-01 up to 2100-01-01 (UTC). Outside
#: them no segment can exist, and datetime arithmetic overflows (year 10000).
MIN_EPOCH: Final = 0
MAX_EPOCH: Final = 4102444800
MIN_YEAR: Final = 1970
MAX_YEAR: Final = 2099


def parse_time_arg(args: Args, name: str) -> float:
    """A required time: ISO 8601 (with offset or Z; naive means UTC) or epoch seconds,
    finite and between ``MIN_EPOCH`` and ``MAX_EPOCH``."""
    raw = _arg(args, name)
    if raw is None or raw == "":
        raise ValidationError(name, "is required (ISO 8601 or epoch seconds)")
    try:
        epoch = float(raw)
    except ValueError:
        try:
            value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "+"))
        except ValueError:
            raise ValidationError(name, f"expected ISO 8601 or epoch seconds, got {raw[:40]!r}") from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        try:
            epoch = value.timestamp()
        except (OverflowError, ValueError):  # year 9999 with a negative offset
            epoch = math.inf
    # float() takes "nan", "inf" and "1e999"; NaN compares false with everything.
    if not (math.isfinite(epoch) and MIN_EPOCH <= epoch <= MAX_EPOCH):
        raise ValidationError(name, "must be a time between 1970-01-01T00:00:00Z and 2100-01-01T00:00:00Z "
                                    f"(epoch {MIN_EPOCH}-{MAX_EPOCH}), got {raw[:40]!r}")
    return epoch


def parse_time_range(args: Args) -> tuple[float, float]:
    start, end = parse_time_arg(args, "start"), parse_time_arg(args, "end")
    if end <= start:
        raise ValidationError("end", "must be after start")
    if end - start > MAX_RANGE_SECONDS:
        raise ValidationError("end", f"a range is at most {MAX_RANGE_SECONDS // 86400} days")
    return start, end


def parse_day(args: Args) -> dt.date:
    raw = _arg(args, "date")
    if raw is None or raw == "":
        raise ValidationError("date", "is required (YYYY-MM-DD)")
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise ValidationError("date", f"expected YYYY-MM-DD, got {raw[:20]!r}") from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        # The timeline reads the next day too: 9999-12-31 would overflow.
        raise ValidationError("date", f"must be between {MIN_YEAR}-01-01 and {MAX_YEAR}-12-31")
    return day


def path_id(name: str, value: int) -> int:
    """A row id from the URL path: a positive 64-bit integer (the registry's BIGINT)."""
    if not 1 <= value <= INT64_MAX:
        raise ValidationError(name, f"must be an id between 1 and {INT64_MAX}")
    return value


def plan_json(plan: PlanRecord) -> record_shapes.RecordPlan:
    return record_shapes.RecordPlan(
        id=plan.id, name=plan.name, schedule=[record_shapes.ScheduleWindow(**w) for w in plan.schedule],
        created_at=iso(plan.created_at), updated_at=iso(plan.updated_at))


def policy_json(policy: PolicyRecord, recording: record_shapes.RecordingStatus | None) -> record_shapes.RecordPolicy:
    return record_shapes.RecordPolicy(
        channel_id=policy.channel_id, mode=policy.mode, plan_id=policy.plan_id,  # type: ignore[arg-type]
        retention_days=policy.retention_days, updated_at=iso(policy.updated_at), status=recording)


def segment_json(seg: SegmentRecord) -> record_shapes.RecordSegment:
    return record_shapes.RecordSegment(
        id=seg.id, start=iso_epoch(seg.start), end=iso_epoch(seg.end), size=seg.size,
        backend=seg.backend, state=seg.state, local=seg.local, has_audio=seg.has_audio,  # type: ignore[arg-type]
        keyframes=len(seg.keyframes))


def timeline_json(channel_id: str, day: dt.date, result: Mapping[str, Any],
                  urls: Callable[[float, float], record_shapes.RecordUrls]) -> record_shapes.RecordTimeline:
    def span(a: float, b: float) -> record_shapes.Span:
        return record_shapes.Span(start=iso_epoch(a), end=iso_epoch(b), seconds=round(b - a, 3))

    return record_shapes.RecordTimeline(
        channel_id=channel_id,
        date=day.isoformat(),
        start=iso_epoch(result["start"]),
        end=iso_epoch(result["end"]),
        recorded_seconds=result["seconds"],
        intervals=[record_shapes.Interval(start=iso_epoch(a), end=iso_epoch(b), seconds=round(b - a, 3),
                                          urls=urls(a, b)) for a, b in result["intervals"]],
        gaps=[span(a, b) for a, b in result["gaps"]],
        segments=[segment_json(s) for s in result["segments"]],
    )


def download_json(job: DownloadJob) -> record_shapes.Download:
    p = job.progress
    return record_shapes.Download(
        id=job.id, channel_id=job.channel_id, start=iso_epoch(job.start), end=iso_epoch(job.end),
        state=p.state, total_seconds=round(p.total_seconds, 3),  # type: ignore[arg-type]
        done_seconds=round(p.done_seconds, 3),
        percent=round(100 * p.done_seconds / p.total_seconds, 1) if p.total_seconds else 100.0,
        bytes=p.bytes, error=p.error)
