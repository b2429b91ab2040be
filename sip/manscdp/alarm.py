"""Alarms and mobile positions: Notify ``Alarm`` and its Response, the ``Alarm`` Query and its answer,
Notify ``MobilePosition`` and the ``MobilePosition`` Query (GB/T 28181-2016 §9.4, §9.5, §A.2.4.5,
§A.2.4.8, §A.2.5.5, §A.2.5.6, §A.2.6.2).

An alarm's ``DeviceID`` is its *source*: the device itself, or one of its channels (an alarm input, a
camera's motion detection); the SIP sender is the registered device. The platform answers the alarm
with a ``Response`` of ``CmdType`` Alarm and ``Result`` OK (§9.4.2), ``encode_alarm_ack``.

Vendor variants accepted when decoding: element names in any case (the registry), times without
seconds, with a fraction or a trailing ``Z`` (``gbtime``), numbers with spaces around them, a missing
``Info``; ``AlarmType`` also directly under the root (some stacks leave ``Info`` out and put it there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sip.manscdp.messages import Notify, Query, Response
from sip.manscdp.registry import Command, Leaf, Nested, Repeated, Struct, Total, declare, encode

__all__ = [
    "ALARM_METHODS",
    "AlarmInfo",
    "AlarmItem",
    "AlarmNotify",
    "AlarmQuery",
    "AlarmQueryResponse",
    "AlarmTypeParam",
    "MobilePositionNotify",
    "MobilePositionQuery",
    "alarm_item",
    "encode_alarm_ack",
    "encode_alarm_notify",
    "encode_alarm_query",
    "encode_alarm_query_response",
    "encode_mobile_position",
    "encode_mobile_position_query",
]

ALARM_METHODS: Final = {1: "phone", 2: "device", 3: "sms", 4: "gps", 5: "video", 6: "device_fault", 7: "other"}
"""``AlarmMethod`` (GB/T 28181-2016 §A.2.5.5): 1 phone, 2 device, 3 SMS, 4 GPS, 5 video analysis,
6 device fault, 7 other."""


@dataclass(frozen=True, kw_only=True)
class AlarmTypeParam:
    """``Info/AlarmTypeParam`` (GB/T 28181-2016 §A.2.5.5): ``EventType`` of a video alarm (1 start, 2 end)."""

    event_type: int | None = None


@dataclass(frozen=True, kw_only=True)
class AlarmInfo:
    """``Info`` of an alarm (GB/T 28181-2016 §A.2.5.5): ``AlarmType`` (meaning per ``AlarmMethod``,
    e.g. method 2 type 1 video loss, 5 type 2 motion detection) and its parameter."""

    alarm_type: int | None = None
    alarm_type_param: AlarmTypeParam | None = None


_INFO: Final = Struct(AlarmInfo, (
    Leaf("AlarmType", "alarm_type", int),
    Nested("AlarmTypeParam", "alarm_type_param", Struct(AlarmTypeParam, (Leaf("EventType", "event_type", int),))),
))


@dataclass(frozen=True, kw_only=True)
class AlarmNotify(Notify):
    """Notify ``Alarm`` (GB/T 28181-2016 §A.2.5.5, §9.4.1): ``device_id`` is the alarm's source."""

    alarm_priority: int | None = None
    alarm_method: int | None = None
    alarm_time: datetime | None = None
    alarm_description: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    info: AlarmInfo | None = None
    bare_alarm_type: int | None = None  # AlarmType sent under the root instead of Info (vendor variant)

    @property
    def alarm_type(self) -> int | None:
        """``Info/AlarmType``, else an ``AlarmType`` under the root."""
        if self.info is not None and self.info.alarm_type is not None:
            return self.info.alarm_type
        return self.bare_alarm_type

    @property
    def event_type(self) -> int | None:
        """``Info/AlarmTypeParam/EventType``, when sent."""
        if self.info is None or self.info.alarm_type_param is None:
            return None
        return self.info.alarm_type_param.event_type


_ALARM_FIELDS: Final = (
    Leaf("AlarmPriority", "alarm_priority", int),
    Leaf("AlarmMethod", "alarm_method", int),
    Leaf("AlarmTime", "alarm_time", datetime),
    Leaf("AlarmDescription", "alarm_description"),
    Leaf("Longitude", "longitude", float),
    Leaf("Latitude", "latitude", float),
    Nested("Info", "info", _INFO),
)

ALARM_NOTIFY: Final = declare(Command(
    kind="Notify", cmd_type="Alarm", cls=AlarmNotify,
    fields=(*_ALARM_FIELDS, Leaf("AlarmType", "bare_alarm_type", int)),
))


@dataclass(frozen=True, kw_only=True)
class AlarmItem:
    """One alarm of a device's history (an ``AlarmList/Item`` answering the Alarm Query): the fields of
    an alarm notification (§A.2.5.5) with its source's ``DeviceID``."""

    device_id: str | None = None
    alarm_priority: int | None = None
    alarm_method: int | None = None
    alarm_time: datetime | None = None
    alarm_description: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    info: AlarmInfo | None = None

    @property
    def alarm_type(self) -> int | None:
        return None if self.info is None else self.info.alarm_type

    @property
    def event_type(self) -> int | None:
        if self.info is None or self.info.alarm_type_param is None:
            return None
        return self.info.alarm_type_param.event_type


@dataclass(frozen=True, kw_only=True)
class AlarmQueryResponse(Response):
    """Response ``Alarm``: the platform's acknowledgement of an alarm (``Result``, §A.2.6.2, §9.4.2), or
    a device's answer to the Alarm Query (``SumNum`` and ``AlarmList``, §9.5; may be split over
    several MESSAGEs like a catalog)."""

    sum_num: int = 0
    alarms: tuple[AlarmItem, ...] = ()
    num: int | None = None


ALARM_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="Alarm", cls=AlarmQueryResponse,
    fields=(
        Leaf("Result", "result"),
        Total("SumNum", "sum_num", of="alarms"),
        Repeated("AlarmList", "alarms", Struct(AlarmItem, (Leaf("DeviceID", "device_id"), *_ALARM_FIELDS)),
                 num_attr="num"),
    ),
))


@dataclass(frozen=True, kw_only=True)
class AlarmQuery(Query):
    """Query ``Alarm`` (GB/T 28181-2016 §A.2.4.5): the device's alarms by priority range, method(s)
    (``"1/2"``), type and time range."""

    start_alarm_priority: int | None = None
    end_alarm_priority: int | None = None
    alarm_method: str | None = None
    alarm_type: str | None = None
    start_alarm_time: datetime | None = None
    end_alarm_time: datetime | None = None


ALARM_QUERY: Final = declare(Command(
    kind="Query", cmd_type="Alarm", cls=AlarmQuery,
    fields=(
        Leaf("StartAlarmPriority", "start_alarm_priority", int),
        Leaf("EndAlarmPriority", "end_alarm_priority", int),
        Leaf("AlarmMethod", "alarm_method"),
        Leaf("AlarmType", "alarm_type"),
        Leaf("StartAlarmTime", "start_alarm_time", datetime),
        Leaf("EndAlarmTime", "end_alarm_time", datetime),
    ),
))


@dataclass(frozen=True, kw_only=True)
class MobilePositionNotify(Notify):
    """Notify ``MobilePosition`` (GB/T 28181-2016 §A.2.5.6, §9.10): where a mobile device (or channel,
    ``device_id``) is, its speed (km/h), direction (degrees from north) and altitude (m)."""

    time: datetime | None = None
    longitude: float | None = None
    latitude: float | None = None
    speed: float | None = None
    direction: float | None = None
    altitude: float | None = None


MOBILE_POSITION_NOTIFY: Final = declare(Command(
    kind="Notify", cmd_type="MobilePosition", cls=MobilePositionNotify,
    fields=(
        Leaf("Time", "time", datetime),
        Leaf("Longitude", "longitude", float),
        Leaf("Latitude", "latitude", float),
        Leaf("Speed", "speed", float),
        Leaf("Direction", "direction", float),
        Leaf("Altitude", "altitude", float),
    ),
))


@dataclass(frozen=True, kw_only=True)
class MobilePositionQuery(Query):
    """Query ``MobilePosition`` (GB/T 28181-2016 §A.2.4.8): report the position, then every ``Interval``
    seconds (default 5) while subscribed; the device answers with MobilePosition notifications."""

    interval: int | None = None


MOBILE_POSITION_QUERY: Final = declare(Command(
    kind="Query", cmd_type="MobilePosition", cls=MobilePositionQuery,
    fields=(Leaf("Interval", "interval", int),),
))


def _info(alarm_type: int | None, event_type: int | None) -> AlarmInfo | None:
    if alarm_type is None and event_type is None:
        return None
    param = None if event_type is None else AlarmTypeParam(event_type=event_type)
    return AlarmInfo(alarm_type=alarm_type, alarm_type_param=param)


def encode_alarm_notify(
    sn: int, device_id: str, *, priority: int, method: int, time: datetime, description: str | None = None,
    longitude: float | None = None, latitude: float | None = None, alarm_type: int | None = None,
    event_type: int | None = None, charset: str = "GB2312",
) -> bytes:
    """An alarm notification from ``device_id`` (the alarm's source, §A.2.5.5)."""
    return encode(ALARM_NOTIFY.build(
        sn, device_id, charset=charset, alarm_priority=priority, alarm_method=method, alarm_time=time,
        alarm_description=description, longitude=longitude, latitude=latitude,
        info=_info(alarm_type, event_type)))


def encode_alarm_ack(sn: int, device_id: str, *, result: str = "OK", charset: str = "GB2312") -> bytes:
    """The platform's Response to an alarm notification (§9.4.2, §A.2.6.2): the alarm's ``SN`` and
    ``DeviceID``, ``Result`` OK; no ``AlarmList``."""
    # The generic class writes the header and Result only: the declared shape would add an empty list.
    return encode(Response(kind="Response", cmd_type="Alarm", sn=sn, device_id=device_id, charset=charset,
                           result=result))


def encode_alarm_query(
    sn: int, device_id: str, *, start_priority: int | None = None, end_priority: int | None = None,
    method: str | None = None, alarm_type: str | None = None, start: datetime | None = None,
    end: datetime | None = None, charset: str = "GB2312",
) -> bytes:
    """The Alarm Query (§A.2.4.5); absent conditions are not written (all alarms)."""
    return encode(ALARM_QUERY.build(
        sn, device_id, charset=charset, start_alarm_priority=start_priority, end_alarm_priority=end_priority,
        alarm_method=method, alarm_type=alarm_type, start_alarm_time=start, end_alarm_time=end))


def alarm_item(
    device_id: str, *, priority: int, method: int, time: datetime, description: str | None = None,
    longitude: float | None = None, latitude: float | None = None, alarm_type: int | None = None,
    event_type: int | None = None,
) -> AlarmItem:
    """One ``AlarmList/Item`` of an Alarm Query answer."""
    return AlarmItem(device_id=device_id, alarm_priority=priority, alarm_method=method, alarm_time=time,
                     alarm_description=description, longitude=longitude, latitude=latitude,
                     info=_info(alarm_type, event_type))


def encode_alarm_query_response(
    sn: int, device_id: str, total: int, items: Iterable[AlarmItem], *, result: str = "OK",
    charset: str = "GB2312",
) -> bytes:
    """One MESSAGE of a device's answer to the Alarm Query: ``SumNum`` ``total``, these ``items``."""
    return encode(ALARM_RESPONSE.build(sn, device_id, charset=charset, result=result, sum_num=total,
                                       alarms=tuple(items)))


def encode_mobile_position(
    sn: int, device_id: str, *, time: datetime, longitude: float, latitude: float, speed: float | None = None,
    direction: float | None = None, altitude: float | None = None, charset: str = "GB2312",
) -> bytes:
    """A MobilePosition notification (§A.2.5.6)."""
    return encode(MOBILE_POSITION_NOTIFY.build(
        sn, device_id, charset=charset, time=time, longitude=longitude, latitude=latitude, speed=speed,
        direction=direction, altitude=altitude))


def encode_mobile_position_query(sn: int, device_id: str, *, interval: int | None = None,
                                 charset: str = "GB2312") -> bytes:
    """The MobilePosition Query (§A.2.4.8), with ``Interval`` seconds when given."""
    return encode(MOBILE_POSITION_QUERY.build(sn, device_id, charset=charset, interval=interval))
