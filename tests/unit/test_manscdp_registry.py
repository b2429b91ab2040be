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
    """An SD card status query, after GB/T 28181-2022; the shape is illustrative."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SdCardStatusResponse(Response):
    sum_num: int = 0
    checked_at: datetime | None = None
    cards: tuple[SdCard, ...] = ()


def _sd_card_registry() -> manscdp.Registry:
    registry = REGISTRY.copy()  # the package's commands stay as they are
    registry.declare(Command(kind="Query", cmd_type="SDCardStatus", cls=SdCardStatusQuery,
                             aliases=("SdCardStatus",)))
    registry.declare(Command(
        kind="Response", cmd_type="SDCardStatus", cls=SdCardStatusResponse, aliases=("SdCardStatus",),
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
    command = registry.lookup("Response", "sdcardstatus")
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

    query = manscdp.encode_query("SdCardStatus", 8, DEV)
    assert isinstance(manscdp.decode(query, registry=registry), SdCardStatusQuery)
    # The default registry does not know it: the generic Query with its leaves, as before.
    plain = manscdp.decode(query)
    assert type(plain) is Query and plain.cmd_type == "SdCardStatus"


def test_declared_leaf_types_are_lenient_unless_required(caplog: pytest.LogCaptureFixture) -> None:
    registry = _sd_card_registry()
    body = (
        "<?xml version='1.0'?><Response><CmdType>SDCARDSTATUS</CmdType><SN>1</SN>"
        f"<DeviceID>{DEV}</DeviceID><CheckTime>never</CheckTime><SDCardList num='x'><item>"
        "<ID>one</ID><Status>FAULT</Status><Capacity>big</Capacity><Writable>maybe</Writable>"
        "</item></SDCardList></Response>"
    ).encode()
    with caplog.at_level(logging.INFO, logger="sip.manscdp"):
        msg = manscdp.decode(body, registry=registry)
    assert isinstance(msg, SdCardStatusResponse) and msg.cmd_type == "SDCARDSTATUS"
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
    ("Response", "PresetQuery"): {"result": "OK", "num": 2, "presets": (
        manscdp.Preset(preset_id="1", preset_name="门口"), manscdp.Preset(preset_id="2", preset_name=None))},
    ("Response", "DeviceConfig"): {"result": "OK"},
    ("Control", "DeviceConfig"): {"basic_param": BasicParam(name="cam", heart_beat_interval=30),
                                  "video_param_opt": manscdp.VideoParamOpt(resolution="6")},
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
