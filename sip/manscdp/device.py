"""DeviceInfo and DeviceStatus answers (GB/T 28181-2016 §A.2.6.5, §A.2.6.6)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sip.manscdp.messages import Response

# ``encode`` is also a DeviceStatus element (and parameter) of §A.2.6.6.
from sip.manscdp.registry import Command, Leaf, Repeated, Struct, declare
from sip.manscdp.registry import encode as encode_message
from sip.manscdp.xmltext import XmlValue


@dataclass(frozen=True, kw_only=True)
class DeviceInfoResponse(Response):
    """DeviceInfo answer (GB/T 28181-2016 §A.2.6.5)."""

    device_name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    channel: int | None = None


DEVICE_INFO_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="DeviceInfo", cls=DeviceInfoResponse,
    fields=(
        Leaf("DeviceName", "device_name"),
        Leaf("Result", "result"),
        Leaf("Manufacturer", "manufacturer"),
        Leaf("Model", "model"),
        Leaf("Firmware", "firmware"),
        Leaf("Channel", "channel", int),
    ),
))


@dataclass(frozen=True, kw_only=True)
class AlarmStatus:
    """One ``Alarmstatus/Item`` of a DeviceStatus answer (GB/T 28181-2016 §A.2.6.6)."""

    device_id: str | None = None
    duty_status: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceStatusResponse(Response):
    """DeviceStatus answer (GB/T 28181-2016 §A.2.6.6).

    ``device_time`` is parsed leniently; the raw text stays in ``fields``.
    """

    online: str | None = None
    status: str | None = None
    reason: str | None = None
    encode: str | None = None
    record: str | None = None
    device_time: datetime | None = None
    alarm_status: tuple[AlarmStatus, ...] = ()


DEVICE_STATUS_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="DeviceStatus", cls=DeviceStatusResponse,
    fields=(
        Leaf("Result", "result"),
        Leaf("Online", "online"),
        Leaf("Status", "status"),
        Leaf("Reason", "reason"),
        Leaf("Encode", "encode"),
        Leaf("Record", "record"),
        Leaf("DeviceTime", "device_time", datetime),
        Repeated("Alarmstatus", "alarm_status", Struct(AlarmStatus, (
            Leaf("DeviceID", "device_id"),
            Leaf("DutyStatus", "duty_status"),
        ))),
    ),
))


def encode_device_info_response(
    sn: int, device_id: str, *,
    device_name: str | None = None, manufacturer: str | None = None,
    model: str | None = None, firmware: str | None = None, channel: int | None = None,
    result: str | None = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a DeviceInfo answer (GB/T 28181-2016 §A.2.6.5)."""
    msg = DEVICE_INFO_RESPONSE.build(
        sn, device_id, charset=charset, result=result, device_name=device_name,
        manufacturer=manufacturer, model=model, firmware=firmware, channel=channel,
    )
    return encode_message(msg, extra=extra)


def encode_device_status_response(
    sn: int, device_id: str, *,
    result: str | None = "OK", online: str | None = "ONLINE", status: str | None = "OK",
    reason: str | None = None, encode: str | None = None, record: str | None = None,
    device_time: datetime | str | None = None, alarm_status: Iterable[AlarmStatus] = (),
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a DeviceStatus answer (GB/T 28181-2016 §A.2.6.6); ``Alarmstatus`` is always sent.

    ``device_time`` may be text, sent as given.
    """
    msg = DEVICE_STATUS_RESPONSE.build(
        sn, device_id, charset=charset, result=result, online=online, status=status,
        reason=reason, encode=encode, record=record, device_time=device_time,
        alarm_status=tuple(alarm_status),
    )
    return encode_message(msg, extra=extra)
