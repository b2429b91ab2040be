"""Tests for sip.manscdp.registry: commands declared once, decode and encode derived.

The first test is the acceptance of issue 9: a new command is declared in a
few lines, here, and round-trips without any edit to the package.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from datetime import datetime

import pytest

from sip import channel_fields, manscdp
from sip.manscdp import (
    REGISTRY,
    AlarmStatus,
    BasicParam,
    CatalogItem,
    Command,
    Leaf,
    ManscdpError,
    ManscdpMessage,
    Nested,
    Query,
    Repeated,
    Response,
    Struct,
    Total,
)

DEV = "34020000001320000001"


# --- a new command is one declaration ------------------------------------------


class CardState(enum.Enum):
    NORMAL = "Normal"
    ABSENT = "Absent"
    FAULT = "Fault"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SdCard:
    card_id: int | None = None
    state: CardState | None = None
    capacity_mb: float | None = None
    writable: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SdCardStatusQuery(Query):
    """A vendor's card status query, shaped after GB/T 28181-2022 SDCardStatus (which the package declares
    in ``sip.manscdp.maintenance``); the shape is illustrative."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SdCardStatusResponse(Response):
    sum_num: int = 0
    checked_at: datetime | None = None
    cards: tuple[SdCard, ...] = ()


def _sd_card_registry() -> manscdp.Registry:
    registry = REGISTRY.copy()  # the package's commands stay as they are
    registry.declare(Command(kind="Query", cmd_type="VendorCardStatus", cls=SdCardStatusQuery,
                             aliases=("VendorCardState",)))
    registry.declare(Command(
        kind="Response", cmd_type="VendorCardStatus", cls=SdCardStatusResponse, aliases=("VendorCardState",),
        fields=(
            Leaf("Result", "result"),
            Leaf("CheckTime", "checked_at", datetime),
            Total("SumNum", "sum_num", of="cards"),
            Repeated("SDCardList", "cards", Struct(SdCard, (
                Leaf("ID", "card_id", int),
                Leaf("Status", "state", CardState),
                Leaf("Capacity", "capacity_mb", float),
                Leaf("Writable", "writable", bool),
            ))),
        ),
    ))
    return registry


def test_a_command_declared_here_round_trips_without_touching_the_package() -> None:
    registry = _sd_card_registry()
    command = registry.lookup("Response", "vendorcardstatus")
    assert command is not None
    cards = (SdCard(card_id=1, state=CardState.NORMAL, capacity_mb=29818.5, writable=True),
             SdCard(card_id=2, state=CardState.ABSENT, writable=False))
    msg = command.build(7, DEV, result="OK", checked_at=datetime(2026, 1, 2, 3, 4, 5), sum_num=2,
                        cards=cards)
    body = manscdp.encode(msg, registry=registry)
    assert b'<SDCardList Num="2">\n<Item>\n<ID>1</ID>\n<Status>Normal</Status>' in body
    assert b"<Writable>TRUE</Writable>" in body and b"<CheckTime>2026-01-02T03:04:05</CheckTime>" in body

    decoded = manscdp.decode(body, registry=registry)
    assert isinstance(decoded, SdCardStatusResponse)
    assert (decoded.sum_num, decoded.checked_at, decoded.cards) == (2, msg.checked_at, cards)
    assert manscdp.encode(decoded, registry=registry) == body

    query = manscdp.encode_query("VendorCardState", 8, DEV)
    assert isinstance(manscdp.decode(query, registry=registry), SdCardStatusQuery)
    # The default registry does not know it: the generic Query with its leaves, as before.
    plain = manscdp.decode(query)
    assert type(plain) is Query and plain.cmd_type == "VendorCardState"


def test_declared_leaf_types_are_lenient_unless_required(caplog: pytest.LogCaptureFixture) -> None:
    registry = _sd_card_registry()
    body = (
        "<?xml version='1.0'?><Response><CmdType>VENDORCARDSTATUS</CmdType><SN>1</SN>"
        f"<DeviceID>{DEV}</DeviceID><CheckTime>never</CheckTime><SDCardList num='x'><item>"
        "<ID>one</ID><Status>FAULT</Status><Capacity>big</Capacity><Writable>maybe</Writable>"
        "</item></SDCardList></Response>"
    ).encode()
    with caplog.at_level(logging.INFO, logger="sip.manscdp"):
        msg = manscdp.decode(body, registry=registry)
    assert isinstance(msg, SdCardStatusResponse) and msg.cmd_type == "VENDORCARDSTATUS"
    assert msg.cards == (SdCard(state=CardState.FAULT),)
    assert (msg.checked_at, msg.sum_num) == (None, 1)
    assert "ignoring invalid Capacity" in caplog.text and "ignoring invalid Writable" in caplog.text

    strict = REGISTRY.copy()
    strict.declare(Command(kind="Notify", cmd_type="Strict", cls=SdNotify,
                           fields=(Leaf("Count", "count", int, required=True),)))
    ok = manscdp.encode_notify("Strict", 1, DEV, extra={"Count": 3})
    assert manscdp.decode(ok, registry=strict) == SdNotify(
        kind="Notify", cmd_type="Strict", sn=1, device_id=DEV, charset="GB2312",
        fields={"Count": "3"}, count=3)
    with pytest.raises(ManscdpError, match="missing Count"):
        manscdp.decode(manscdp.encode_notify("Strict", 1, DEV), registry=strict)
    with pytest.raises(ManscdpError, match="Count is not an integer"):
        manscdp.decode(manscdp.encode_notify("Strict", 1, DEV, extra={"Count": "x"}), registry=strict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SdNotify(manscdp.Notify):
    count: int | None = None


def test_declarations_are_checked_when_made() -> None:
    registry = REGISTRY.copy()
    with pytest.raises(ValueError, match="already declared"):
        registry.declare(Command(kind="Notify", cmd_type="KEEPALIVE", cls=manscdp.Keepalive))
    with pytest.raises(TypeError, match="must derive from Response"):
        Command(kind="Response", cmd_type="X", cls=SdNotify)
    with pytest.raises(TypeError, match="no field 'nope'"):
        Command(kind="Notify", cmd_type="X", cls=SdNotify, fields=(Leaf("Nope", "nope"),))
    with pytest.raises(ValueError, match="not an XML element name"):
        Command(kind="Notify", cmd_type="X", cls=SdNotify, fields=(Leaf("1Count", "count"),))
    with pytest.raises(ValueError, match="kind must be one of"):
        Command(kind="Reply", cmd_type="X", cls=SdNotify)
    with pytest.raises(TypeError, match="counts 'items'"):
        Command(kind="Notify", cmd_type="X", cls=SdNotify, fields=(Total("Count", "count", of="items"),))


# --- every declared command round-trips -----------------------------------------


_ITEM = CatalogItem(
    **{attr: f"{tag}-1" for attr, tag in manscdp.catalog.CATALOG_ITEM_FIELDS},
    info={"PTZType": "1", "Resolution": "6/4"}, extra={"VendorThing": "x"},
)

SAMPLES: dict[tuple[str, str], dict[str, object]] = {
    ("Notify", "Keepalive"): {"status": "OK"},
    ("Response", "Catalog"): {"sum_num": 9, "num": 2, "items": (_ITEM, CatalogItem(device_id=DEV, name="通道 1"))},
    ("Notify", "Catalog"): {"sum_num": 1, "num": 1, "items": (CatalogItem(device_id=DEV, event="ADD"),)},
    ("Response", "DeviceInfo"): {"result": "OK", "device_name": "IPC & co", "manufacturer": "m",
                                 "model": "x", "firmware": "v1", "channel": 4},
    ("Response", "DeviceStatus"): {
        "result": "OK", "online": "ONLINE", "status": "OK", "reason": "r", "encode": "ON",
        "record": "OFF", "device_time": datetime(2026, 12, 5, 17, 0, 1),
        "alarm_status": (AlarmStatus(device_id=DEV, duty_status="ONDUTY"), AlarmStatus()),
    },
    ("Response", "ConfigDownload"): {"result": "OK", "basic_param": BasicParam(
        name="cam", device_id=DEV, sip_server_id="34020000002000000001", sip_server_ip="192.0.2.1",
        sip_server_port=5060, domain_name="3402000000", expiration=3600, password="p",
        heart_beat_interval=60, heart_beat_count=3, position_capability=0, longitude="1.5",
        latitude="2.5"), "video_param_opt": manscdp.VideoParamOpt(download_speed="1/2/4", resolution="5/6"),
        "svac_encode_config": {"SVCParam/SVCSpaceDomainMode": "1", "ROIParam/Item[1]/ROISeq": "1",
                               "ROIParam/Item[2]/ROISeq": "2"}},
    ("Response", "DeviceControl"): {"result": "ERROR"},
    ("Control", "DeviceControl"): {"ptz_cmd": "A50F01021F1F00E5",
                                   "info": manscdp.ControlInfo(control_priority=5)},
    ("Query", "PresetQuery"): {},
    # GB/T 28181-2022 PTZ queries and answers (sip.manscdp.ptz2022).
    ("Query", "PTZPosition"): {},
    ("Response", "PTZPosition"): {"result": "OK", "pan": 270.5, "tilt": -12.25, "zoom": 3.0,
                                  "horizontal_field_angle": 20.0, "vertical_field_angle": 11.5,
                                  "max_view_distance": 150.0},
    ("Query", "HomePositionQuery"): {},
    ("Response", "HomePositionQuery"): {"result": "OK", "home_position": manscdp.HomePositionInfo(
        enabled="1", reset_time=60, preset_index=3)},
    ("Query", "CruiseTrackListQuery"): {},
    ("Response", "CruiseTrackListQuery"): {"result": "OK", "sum_num": 2, "num": 2, "tracks": (
        manscdp.CruiseTrack(number=1, name="巡航 1"), manscdp.CruiseTrack(number=2))},
    ("Query", "CruiseTrackQuery"): {"number": 1},
    ("Response", "CruiseTrackQuery"): {"result": "OK", "number": 1, "name": "Gate", "sum_num": 1, "num": 1,
                                       "points": (manscdp.CruisePoint(preset_index=3, stay_time=10, speed=5),)},
    ("Response", "PresetQuery"): {"result": "OK", "num": 2, "presets": (
        manscdp.Preset(preset_id="1", preset_name="门口"), manscdp.Preset(preset_id="2", preset_name=None))},
    ("Response", "DeviceConfig"): {"result": "OK"},
    ("Control", "DeviceConfig"): {"basic_param": BasicParam(name="cam", heart_beat_interval=30),
                                  "video_param_opt": manscdp.VideoParamOpt(resolution="6"),
                                  # GB/T 28181-2022 types: a nested Each (RecordSchedule/TimeSegment), an optional
                                  # Repeated, a plain leaf (tests/unit/test_config2022.py has every type).
                                  "video_record_plan": manscdp.VideoRecordPlan(record_enable=1, record_schedules=(
                                      manscdp.RecordSchedule(week_day_num=1, time_segments=(
                                          manscdp.TimeSegment(start_hour=1, stop_hour=2),)),), stream_number=0),
                                  "video_param_attribute": (manscdp.VideoStreamAttribute(stream_number=0),),
                                  "frame_mirror": 1},
    ("Query", "SDCardStatus"): {},
    ("Response", "SDCardStatus"): {"result": "OK", "sum_num": 2, "num": 2, "cards": (
        manscdp.SdCard(id="1", hdd_name="SD1", status="formatting", format_progress=40, capacity=30436.0,
                       free_space=0.5), manscdp.SdCard(id="2"))},
    ("Notify", "DeviceUpgradeResult"): {"session_id": "s-1", "upgrade_result": "ERROR", "firmware": "V1.0",
                                        "upgrade_failed_reason": "download failed: 404"},
    # GB/T 28181-2022 snapshot upload (sip.manscdp.snapshot).
    ("Notify", "UploadSnapShotFinished"): {"session_id": "s-2", "snap_shot_list": {
        "SnapShotFileID[1]": "3402000000131000000120261205100001",
        "SnapShotFileID[2]": "3402000000131000000120261205100002"}},
    ("Response", "UploadSnapShotFinished"): {"result": "OK"},
    # Alarms and positions (sip.manscdp.alarm; tests/unit/test_manscdp_alarm.py has the variants).
    ("Notify", "Alarm"): {"alarm_priority": 1, "alarm_method": 5, "alarm_time": datetime(2026, 12, 5, 8, 30),
                          "alarm_description": "越界", "longitude": 116.5, "latitude": 39.5,
                          "info": manscdp.AlarmInfo(alarm_type=2, alarm_type_param=manscdp.AlarmTypeParam(
                              event_type=1))},
    ("Response", "Alarm"): {"result": "OK", "sum_num": 3, "num": 1, "alarms": (manscdp.alarm_item(
        DEV, priority=2, method=2, time=datetime(2026, 12, 5, 8, 0), alarm_type=1),)},
    ("Query", "Alarm"): {"start_alarm_priority": 1, "end_alarm_priority": 4, "alarm_method": "1/2",
                         "alarm_type": "1", "start_alarm_time": datetime(2026, 12, 1),
                         "end_alarm_time": datetime(2026, 12, 5)},
    ("Notify", "MobilePosition"): {"time": datetime(2026, 12, 5, 8, 30, 5), "longitude": 116.5, "latitude": 39.5,
                                   "speed": 40.0, "direction": 90.0, "altitude": 12.5},
    ("Query", "MobilePosition"): {"interval": 5},
}


def _typed(msg: ManscdpMessage) -> ManscdpMessage:
    return dataclasses.replace(msg, fields={}, quirks=())


def test_every_declared_command_has_a_round_trip_sample() -> None:
    assert {(c.kind, c.cmd_type) for c in REGISTRY} == set(SAMPLES)


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_declared_command_round_trips(key: tuple[str, str]) -> None:
    command = REGISTRY.lookup(*key)
    assert command is not None
    for charset in ("GB2312", "UTF-8"):
        msg = command.build(41, DEV, charset=charset, **SAMPLES[key])
        body = manscdp.encode(msg)
        decoded = manscdp.decode(body)
        assert type(decoded) is command.cls
        assert _typed(decoded) == msg
        assert manscdp.encode(decoded) == body


def test_undeclared_commands_encode_their_leaves() -> None:
    body = manscdp.encode_response("RecordInfo", 3, DEV, extra={"Name": "cam", "SumNum": 0})
    msg = manscdp.decode(body)
    assert type(msg) is Response and msg.fields == {"Result": "OK", "Name": "cam", "SumNum": "0"}
    assert manscdp.encode(msg) == body


def test_nested_struct_absent_is_none_and_not_written() -> None:
    command = REGISTRY.lookup("Response", "configdownload")
    assert command is not None and isinstance(command.fields[1], Nested)
    msg = manscdp.decode(manscdp.encode(command.build(1, DEV, result="OK")))
    assert isinstance(msg, manscdp.ConfigDownloadResponse) and msg.basic_param is None


def test_catalog_item_matches_the_channel_field_table() -> None:
    attrs = [f.name for f in dataclasses.fields(CatalogItem)]
    assert attrs == [f.attr for f in channel_fields.ITEM_FIELDS] + ["info", "extra"]
    assert manscdp.catalog.CATALOG_ITEM_FIELDS == tuple((f.attr, f.tag) for f in channel_fields.ITEM_FIELDS)


# --- lists without a wrapper (Each) and optional lists (GB/T 28181-2022 §A.2.3.2) -------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class Slot:
    hour: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Day:
    day: int | None = None
    slots: tuple[Slot, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class WeekControl(manscdp.Control):
    days: tuple[Day, ...] = ()
    streams: tuple[Slot, ...] | None = None


def _week_registry() -> manscdp.Registry:
    registry = REGISTRY.copy()
    registry.declare(Command(kind="Control", cmd_type="VendorWeek", cls=WeekControl, fields=(
        manscdp.Each("Day", "days", Struct(Day, (
            Leaf("DayNum", "day", int),
            manscdp.Each("Slot", "slots", Struct(Slot, (Leaf("Hour", "hour", int),))),
        ))),
        Repeated("Streams", "streams", Struct(Slot, (Leaf("Hour", "hour", int),)), optional=True),
    )))
    return registry


def test_each_reads_and_writes_one_element_per_item_nested_in_a_struct() -> None:
    registry = _week_registry()
    command = registry.lookup("Control", "VendorWeek")
    assert command is not None
    days = (Day(day=1, slots=(Slot(hour=8), Slot(hour=9))), Day(day=2))
    body = manscdp.encode(command.build(1, DEV, days=days), registry=registry)
    assert b"<Day>\n<DayNum>1</DayNum>\n<Slot>\n<Hour>8</Hour>\n</Slot>\n<Slot>" in body
    assert b"Num=" not in body and b"Streams" not in body  # no wrapper; an absent optional list is not written
    decoded = manscdp.decode(body, registry=registry)
    assert isinstance(decoded, WeekControl) and decoded.days == days and decoded.streams is None
    # Any case, other children between the items, a Num attribute on an item: still read.
    odd = body.replace(b"<Day>", b'<DAY Num="1"><Note>x</Note>', 1).replace(b"</Day>", b"</DAY>", 1)
    again = manscdp.decode(odd, registry=registry)
    assert isinstance(again, WeekControl) and again.days == days


def test_an_optional_repeated_is_none_when_absent_and_empty_when_empty() -> None:
    registry = _week_registry()
    command = registry.lookup("Control", "VendorWeek")
    assert command is not None
    empty = manscdp.encode(command.build(1, DEV, streams=()), registry=registry)
    assert b'<Streams Num="0">' in empty
    decoded = manscdp.decode(empty, registry=registry)
    assert isinstance(decoded, WeekControl) and decoded.streams == () and decoded.days == ()
    full = manscdp.decode(manscdp.encode(command.build(1, DEV, streams=(Slot(hour=3),)), registry=registry),
                          registry=registry)
    assert isinstance(full, WeekControl) and full.streams == (Slot(hour=3),)


def test_a_list_of_a_hundred_thousand_items_is_cut_at_the_limit() -> None:
    """A 1 MiB body of empty items (a registered device over TCP) decodes its first MAX_LIST_ITEMS only,
    flagged, instead of holding the reactor for a second."""
    from sip import manscdp
    from sip.manscdp.quirks import QUIRK_LIST_CUT
    from sip.manscdp.registry import MAX_LIST_ITEMS

    items = b"<Item/>" * 100_000
    body = (b'<?xml version="1.0" encoding="GB2312"?><Response><CmdType>Catalog</CmdType><SN>1</SN>'
            b"<DeviceID>34020000001320000001</DeviceID><SumNum>100000</SumNum><DeviceList Num=\"100000\">"
            + items + b"</DeviceList></Response>")
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.CatalogResponse)
    assert len(msg.items) == MAX_LIST_ITEMS and QUIRK_LIST_CUT in msg.quirks
