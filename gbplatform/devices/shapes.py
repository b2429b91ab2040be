"""API shapes of devices, channels, the catalog, live queries, SIP traces and bans.

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
The channel shape is not written here: it is derived from the catalog item
field table (``sip/channel_fields.py``), like the registry columns and the
MANSCDP ``Item``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import NO_CONTROL, OptStr, OptTime, Page, Shape, Time
from gbplatform.db.queries import MEDIA_TRANSPORTS
from sip.channel_fields import STORED_FIELDS, ChannelField, parse_value
from sip.gbid import CATALOG_KINDS

__all__ = [
    "CHARSETS",
    "MAX_NAME",
    "MAX_PASSWORD",
    "MEDIA_TRANSPORTS",
    "Ban",
    "BanList",
    "CatalogProgress",
    "Channel",
    "ChannelPage",
    "ChannelTree",
    "Device",
    "DeviceCreate",
    "DeviceDialect",
    "DialectBody",
    "DeviceInfo",
    "DevicePage",
    "DevicePatch",
    "DeviceStatus",
    "Trace",
    "TraceEntry",
    "TreeNode",
]

#: MANSCDP body charsets a device may use (GB/T 28181-2016 §A.2.1; UTF-8 from the 2022 edition).
CHARSETS: Final = ("GB2312", "GBK", "GB18030", "UTF-8")
MAX_NAME: Final = 128
MAX_PASSWORD: Final = 128

CatalogStatus = Literal["idle", "running", "done", "partial", "timeout", "error"]
Charset = Literal["GB2312", "GBK", "GB18030", "UTF-8"]
MediaTransport = Literal["UDP", "TCP-PASSIVE", "TCP-ACTIVE"]
BanKind = Literal["address", "device"]
GbVersion = Literal["2011", "2016", "2022"]
Dialect = Literal["2016", "2022"]
DialectSetting = Literal["auto", "2016", "2022"]
IFrameElement = Literal["IFameCmd", "IFrameCmd"]
_CATALOG_ERROR_EXAMPLE: Final = "device 34020000001180000001 answered 415 Unsupported Media Type"


# --- requests -----------------------------------------------------------------------


class DevicePatch(Shape, forbid_unknown_fields=True):
    """The writable fields of a device; PATCH changes the ones given."""

    name: Annotated[
        Annotated[str, Meta(max_length=MAX_NAME, pattern=NO_CONTROL)] | None,
        Meta(description="Display name; the device's own DeviceName fills it when empty."),
    ] | UnsetType = UNSET
    enabled: Annotated[bool, Meta(description="A disabled device is refused at REGISTER (403).")] | UnsetType = UNSET
    charset: Annotated[Charset, Meta(description="MANSCDP body charset (case-insensitive).")] | UnsetType = UNSET
    media_transport: Annotated[MediaTransport, Meta(description="How the device sends RTP (case-insensitive).")
                               ] | UnsetType = UNSET
    stream_index: Annotated[str, Meta(max_length=32, pattern=NO_CONTROL,
                                      description="Stream to INVITE: `streamnumber:N`, `streamprofile:N`, "
                                                  "`streamMode:main|sub`; null: the device's default.")
                            ] | None | UnsetType = UNSET
    sdp_y_line: Annotated[bool, Meta(
        extra_json_schema={"default": True},
        description="Offer the GB/T 28181 `y=` SSRC line in the INVITE's SDP. false for firmware whose SDP "
                    "parser rejects it (osip2 5.x): the SSRC is then taken from the answer, or from the first "
                    "RTP packet.")] | UnsetType = UNSET
    password: Annotated[
        Annotated[str, Meta(min_length=1, max_length=MAX_PASSWORD, pattern=NO_CONTROL)] | None,
        Meta(description="Digest password (GB/T 28181-2016 §9.1.2.1). Only its HA1 for the realm `sip.domain` "
                         "is stored. In PATCH, null removes it.", extra_json_schema={"writeOnly": True}),
    ] | UnsetType = UNSET


class DeviceCreate(DevicePatch, forbid_unknown_fields=True, kw_only=True):
    """A device added before it registers: its ID plus any writable fields."""

    device_id: Annotated[str, Meta(description="20 digits when `sip.strict_id` is on.")]


class DialectBody(Shape, forbid_unknown_fields=True):
    """The GB/T 28181 dialect the platform speaks to a device, and its I-frame element; at least one."""

    version: Annotated[DialectSetting, Meta(
        description="`auto`: what the device's REGISTER announces (GB/T 28181-2022 §9.1 `X-GB-Ver`; none: "
                    "2016). `2016` / `2022`: that dialect whatever it announces.")] | UnsetType = UNSET
    iframe_element: Annotated[IFrameElement, Meta(
        description="How the I-frame request is spelt to this device: `IFameCmd` (the standard, §A.2.3.1.7) "
                    "or `IFrameCmd` (firmware that knows only this spelling).")] | UnsetType = UNSET


#: Messages of the device body fields whose msgspec wording would not say what to send.
DEVICE_MESSAGES: Final = {
    "charset": f"must be one of {', '.join(CHARSETS)}",
    "media_transport": f"must be one of {', '.join(MEDIA_TRANSPORTS)}",
}
#: The same for ``DialectBody``.
DIALECT_MESSAGES: Final = {
    "version": "must be one of auto, 2016, 2022",
    "iframe_element": "must be one of IFameCmd, IFrameCmd",
}


# --- responses ----------------------------------------------------------------------


class DeviceCatalog(Shape):
    status: CatalogStatus
    total: int
    received: int
    synced_at: OptTime
    error: Annotated[OptStr, Meta(description="Why the last sync did not end `done` (as in CatalogProgress); "
                                              "null while a sync runs and after one ends `done`.",
                                  examples=[_CATALOG_ERROR_EXAMPLE])]


class Device(Shape):
    """A device as the registry and the live state know it."""

    device_id: str
    name: OptStr
    manufacturer: OptStr
    model: OptStr
    firmware: OptStr
    enabled: bool
    pre_added: Annotated[bool, Meta(description="Created through the API, not by registering.")]
    online: bool
    transport: Annotated[OptStr, Meta(description="SIP transport last used: UDP, TCP or TLS.")]
    host: Annotated[OptStr, Meta(description="Source address of the device's last packet (not its Contact).")]
    port: int | None
    address: Annotated[OptStr, Meta(examples=["192.0.2.10:5060"])]
    contact: OptStr
    user_agent: OptStr
    charset: str
    media_transport: MediaTransport
    stream_index: OptStr
    sdp_y_line: bool
    gb_version: Annotated[Dialect, Meta(
        description="The GB/T 28181 dialect the platform speaks to the device: the setting, or with `auto` the "
                    "detected edition (2011 and none are spoken to in 2016). A 2022 command to a 2016 device "
                    "is refused with 422.")]
    gb_version_detected: Annotated[GbVersion | None, Meta(
        description="The edition the device's last REGISTER announced (GB/T 28181-2022 §9.1 `X-GB-Ver` 1.0 = "
                    "2011, 2.0 = 2016, 3.0 = 2022; no header: 2016); null before its first registration.")]
    gb_version_setting: Annotated[DialectSetting, Meta(
        description="Set with PUT /api/v1/devices/{device_id}/dialect; `auto` follows the detection.")]
    iframe_element: Annotated[IFrameElement, Meta(
        description="The I-frame request element sent to the device (§A.2.3.1.7).")]
    registered_at: OptTime
    register_expires_at: OptTime
    last_keepalive_at: OptTime
    keepalive_interval: int
    keepalive_count: int
    online_at: OptTime
    offline_at: OptTime
    catalog: DeviceCatalog
    channel_count: int
    has_password: bool
    created_at: Time
    updated_at: Time


class DevicePage(Page):
    items: list[Device]


class DeviceDialect(Shape):
    """The GB/T 28181 dialect state of a device (see ``Device``)."""

    device_id: str
    gb_version: Annotated[Dialect, Meta(description="The dialect spoken now.", examples=["2016"])]
    gb_version_detected: Annotated[GbVersion | None, Meta(
        description="The edition the last REGISTER announced (X-GB-Ver); null before the first.",
        examples=["2022"])]
    gb_version_setting: Annotated[DialectSetting, Meta(examples=["2016"])]
    iframe_element: Annotated[IFrameElement, Meta(examples=["IFrameCmd"])]


def _channel_member(row: ChannelField) -> tuple[str, Any]:
    value: Any = Annotated[row.value, Meta(max_length=row.length)] if row.length else row.value
    if row.nullable:
        value = value | None
    example = parse_value(row, row.example)
    return str(row.name), Annotated[value, Meta(description=row.description, examples=[example])]


#: A channel (GB/T 28181-2016 §A.2.6.4 catalog item) as the API shows it: the
#: stored fields of ``sip.channel_fields``, plus the registry's bookkeeping.
Channel: Final = msgspec.defstruct(
    "Channel",
    [
        ("device_id", str),
        *(_channel_member(row) for row in STORED_FIELDS),
        ("kind", Literal[CATALOG_KINDS]),
        ("extra", Annotated[dict[str, Any] | None, Meta(description="`<Info>` children and unknown elements.")]),
        ("updated_at", Time),
    ],
    bases=(Shape,),
    module=__name__,
)


class ChannelPage(Page):
    items: list[Channel]  # type: ignore[valid-type]


class TreeNode(Shape):
    id: str
    name: OptStr
    kind: str
    status: OptStr
    children: list[TreeNode]


class ChannelTree(Shape):
    device_id: str
    items: list[TreeNode]


class CatalogProgress(Shape):
    device_id: str
    status: CatalogStatus
    sn: int | None
    total: Annotated[int, Meta(description="SumNum announced by the device.")]
    received: Annotated[int, Meta(description="Distinct items received.")]
    parts: int | None
    duplicates: int | None
    started_at: OptTime
    finished_at: OptTime
    error: Annotated[OptStr, Meta(
        description="Why the sync did not end `done` (the device's answer to the query, or what was missing "
                    "when it stopped waiting); null while it runs and when it ended `done`. Kept in the "
                    "registry, so it is also shown without a session.",
        examples=[_CATALOG_ERROR_EXAMPLE])]
    synced_at: OptTime


class DeviceInfo(Shape):
    device_id: str
    result: OptStr
    device_name: OptStr
    manufacturer: OptStr
    model: OptStr
    firmware: OptStr
    channel: int | None
    fields: Annotated[dict[str, str], Meta(description="Every simple element of the answer, as sent.")]


class AlarmStatus(Shape):
    device_id: OptStr
    duty_status: OptStr


class DeviceStatus(Shape):
    device_id: str
    result: OptStr
    online: Annotated[OptStr, Meta(examples=["ONLINE"])]
    status: OptStr
    reason: OptStr
    encode: OptStr
    record: OptStr
    device_time: Annotated[OptStr, Meta(description="The device's clock (its local time).")]
    alarm_status: list[AlarmStatus]
    fields: dict[str, str]


class TraceEntry(Shape):
    at: Time
    direction: Literal["recv", "send"]
    transport: str
    peer: Annotated[str, Meta(examples=["192.0.2.10:5060"])]
    summary: Annotated[str, Meta(description="The start line.")]
    message: Annotated[str, Meta(description="The whole message (UTF-8, invalid bytes replaced).")]


class Trace(Shape):
    device_id: str
    items: list[TraceEntry]


class Ban(Shape):
    key: Annotated[str, Meta(examples=["address:192.0.2.66"])]
    kind: BanKind
    value: Annotated[str, Meta(description="The source host or the device ID.")]
    failures: Annotated[int, Meta(description="Failed digests counted before the ban.")]
    refused: Annotated[int, Meta(description="REGISTERs refused unverified since the ban (and during its back-off).")]
    since: Time
    until: Time


class BanList(Shape):
    items: list[Ban]
    stats: Annotated[dict[str, int], Meta(
        description="Counters since start: failures, bans, refused_banned, refused_backoff.")]


#: The example of the BanList component (a shape-level example has no ``Meta`` in msgspec).
BAN_LIST_EXAMPLE: Final[dict[str, Any]] = {
    "items": [{"key": "address:192.0.2.66", "kind": "address", "value": "192.0.2.66", "failures": 10,
               "refused": 2990, "since": "2024-05-01T08:00:00.000Z", "until": "2024-05-01T08:10:00.000Z"}],
    "stats": {"failures": 20, "bans": 2, "refused_banned": 2980, "refused_backoff": 16},
}
