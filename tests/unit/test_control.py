"""Device control through the API against in-memory devices (GB/T 28181-2016 §9.3, Annex A.3).

The platform (``platform_harness``) and a fake NVR talk SIP in memory with
a stepped clock; the API is called over StubTreq (``test_api.Client``).
"""

from __future__ import annotations

from typing import Any

import pytest

from gbplatform.api.app import Api
from sip import manscdp
from sip.useragent import PtzFrontEnd, QueryAnswers
from tests.unit.platform_harness import DEV, FakeDevice, Harness, has_fired
from tests.unit.test_api import Client, Reply

CH = "34020000001310000001"  # a camera channel of the NVR DEV
LEFT_16 = "A50F0002100000C6"  # test_ptz: left, pan speed 0x10
STOP = "A50F0000000000B4"


def nvr(h: Harness) -> FakeDevice:
    """A registered NVR whose catalog (one channel, CH) is stored."""
    dev = h.registered_device()
    info = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(info.sn, DEV, manufacturer="Hikvision"))
    cat = dev.last_query("Catalog")
    items = [manscdp.CatalogItem(device_id=CH, name="Gate", status="ON", parent_id=DEV)]
    dev.message(manscdp.encode_catalog_response(cat.sn, DEV, len(items), items))
    h.advance(1)
    assert [c.channel_id for c in h.channels()] == [CH]
    return dev


def answer_control(dev: FakeDevice, result: str = "OK") -> manscdp.DeviceControl:
    """Answer the platform's last DeviceControl with ``result`` (§A.2.6.2)."""
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl)
    dev.message(manscdp.encode_control_response(msg.sn, msg.device_id, result=result))
    return msg


def controls(dev: FakeDevice) -> list[str | None]:
    return [m.ptz_cmd for m in dev.queries("DeviceControl") if isinstance(m, manscdp.DeviceControl)]


@pytest.fixture
def client(h: Harness) -> Client:
    return Client(Api(h.platform))


def call(h: Harness, client: Client, method: str, path: str, body: Any = None,
         answer: FakeDevice | None = None) -> Reply:
    d = client.start(method, f"/channels/{path}", body=body)
    h.pump()
    if answer is not None:
        answer_control(answer)
    return client.finish(d)


def test_ptz_goes_to_the_owning_device_with_the_channel_as_device_id(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = call(h, client, "POST", f"{CH}/ptz", {"action": "left", "speed": 16}, answer=dev)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "channel_id": CH, "result": "OK", "ptz_cmd": LEFT_16}
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl)
    assert msg.device_id == CH and msg.ptz_cmd == LEFT_16
    assert msg.info == manscdp.ControlInfo(control_priority=5)


def test_the_device_result_is_answered_as_sent(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("POST", f"/channels/{CH}/aux", body={"switch": 1, "on": True})
    h.pump()
    answer_control(dev, "ERROR")
    reply = client.finish(d)
    assert reply.code == 200 and reply.json["result"] == "ERROR"
    assert reply.json["ptz_cmd"] == "A50F008C01000041"  # wiper on, test_ptz


@pytest.mark.parametrize(("path", "body", "wire"), [
    ("lens", {"action": "iris_open", "speed": 0x40}, "A50F004400400038"),
    ("presets/3", {"action": "set"}, "A50F008100030038"),
    ("presets/255", {"action": "delete"}, "A50F008300FF0036"),
    ("cruise", {"action": "add_point", "group": 1, "point": 2}, "A50F00840102003B"),
    ("cruise", {"action": "set_speed", "group": 1, "value": 0x123}, "A50F00860123106E"),
    ("cruise", {"action": "start", "group": 1}, "A50F00880100003D"),
    ("cruise", {"action": "stop", "group": 1}, STOP),
    ("scan", {"action": "set_left"}, "A50F00890001003E"),
    ("scan", {"action": "set_speed", "value": 0xFF}, "A50F008A00FF003D"),
    ("scan", {"action": "stop"}, STOP),
    ("aux", {"switch": 1, "on": False}, "A50F008D01000042"),
])
def test_each_command_family_sends_its_a3_bytes(h: Harness, client: Client, path: str, body: Any,
                                                 wire: str) -> None:
    dev = nvr(h)
    reply = call(h, client, "POST", f"{CH}/{path}", body, answer=dev)
    assert reply.code == 200, reply.json
    assert controls(dev) == [wire]


def test_unknown_channel_is_404_and_offline_device_409(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert call(h, client, "POST", "34020000001310000099/ptz", {"action": "stop"}).code == 404
    assert dev.register_auth(expires=0).status == 200
    reply = call(h, client, "POST", f"{CH}/ptz", {"action": "stop"})
    assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")
    assert controls(dev) == []


def test_a_device_that_does_not_answer_is_504_after_the_query_timeout(h: Harness, client: Client) -> None:
    nvr(h)
    d = client.start("POST", f"/channels/{CH}/ptz", body={"action": "up", "speed": 1})
    h.pump()
    h.advance(h.config.sip.query_timeout - 0.5)
    assert not has_fired(d)
    h.advance(1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")


def test_a_timed_move_is_stopped_by_the_platform(h: Harness, client: Client) -> None:
    dev = nvr(h)
    call(h, client, "POST", f"{CH}/ptz", {"action": "left", "speed": 16, "duration_ms": 1500}, answer=dev)
    assert h.platform.control.pending_stop(CH)
    h.advance(1.4)
    assert controls(dev) == [LEFT_16]
    h.advance(0.2)
    assert controls(dev) == [LEFT_16, STOP]
    answer_control(dev)
    assert not h.platform.control.pending_stop(CH)


def test_a_new_move_cancels_the_pending_stop(h: Harness, client: Client) -> None:
    dev = nvr(h)
    call(h, client, "POST", f"{CH}/ptz", {"action": "left", "speed": 16, "duration_ms": 1000}, answer=dev)
    call(h, client, "POST", f"{CH}/ptz", {"action": "zoomin", "speed": 0x50}, answer=dev)
    h.advance(5)
    assert controls(dev) == [LEFT_16, "A50F001000005014"]
    assert not h.platform.control.pending_stop(CH)


def test_presets_are_listed_from_the_device_answer(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("GET", f"/channels/{CH}/presets")
    h.pump()
    query = dev.last_query("PresetQuery")
    assert query.kind == "Query" and query.device_id == CH
    dev.message(manscdp.encode_preset_query_response(query.sn, CH, [
        manscdp.Preset(preset_id="1", preset_name="Gate"), manscdp.Preset(preset_id="2")]))
    reply = client.finish(d)
    assert reply.code == 200
    assert reply.json == {"device_id": DEV, "channel_id": CH, "result": "OK", "items": [
        {"preset_id": "1", "name": "Gate"}, {"preset_id": "2", "name": None}]}


@pytest.mark.parametrize(("path", "body", "field"), [
    ("ptz", {"action": "sideways"}, "action"),
    ("ptz", {"action": "left", "speed": 256}, "speed"),
    ("ptz", {"action": "left", "duration_ms": 0}, "duration_ms"),
    ("ptz", {"action": "left", "sped": 3}, "sped"),
    ("ptz", {}, "action"),
    ("lens", {"action": "zoomin"}, "action"),
    ("presets/0", {"action": "set"}, "index"),
    ("presets/256", {"action": "set"}, "index"),
    ("presets/1", {"action": "goto"}, "action"),
    ("cruise", {"action": "add_point", "group": 1}, "point"),
    ("cruise", {"action": "set_dwell", "group": 1}, "value"),
    ("cruise", {"action": "set_dwell", "group": 1, "value": 4096}, "value"),
    ("cruise", {"action": "start"}, "group"),
    ("scan", {"action": "set_speed"}, "value"),
    ("aux", {"switch": 1}, "on"),
    ("aux", {"switch": -1, "on": True}, "switch"),
])
def test_bad_input_is_400_naming_the_field(h: Harness, client: Client, path: str, body: Any, field: str) -> None:
    dev = nvr(h)
    reply = call(h, client, "POST", f"{CH}/{path}", body)
    assert reply.code == 400, reply.json
    assert reply.json["error"]["code"] == "invalid" and reply.json["error"]["field"] == field
    assert controls(dev) == []


def test_the_simulated_front_end_keeps_presets_and_records_commands() -> None:
    front = PtzFrontEnd(lambda: "GB2312")
    answers = QueryAnswers()
    front.register(answers)

    def control(wire: str) -> manscdp.ManscdpMessage:
        [body] = answers.answer(manscdp.decode(manscdp.encode_device_control(7, CH, wire)))
        return manscdp.decode(body)

    assert control("A50F008100030038").fields["Result"] == "OK"  # set 3
    assert control("A50F00810005003A").fields["Result"] == "OK"  # set 5
    assert control("A50F0000000000B5").fields["Result"] == "ERROR"  # bad checksum
    [body] = answers.answer(manscdp.decode(manscdp.encode_query("PresetQuery", 8, CH)))
    listed = manscdp.decode(body)
    assert isinstance(listed, manscdp.PresetQueryResponse)
    assert [p.preset_id for p in listed.presets] == ["3", "5"]
    control("A50F00830003003A")  # delete 3
    [body] = answers.answer(manscdp.decode(manscdp.encode_query("PresetQuery", 9, CH)))
    listed = manscdp.decode(body)
    assert isinstance(listed, manscdp.PresetQueryResponse)
    assert [p.preset_id for p in listed.presets] == ["5"]
    assert [c for _, c in front.received] == [
        "A50F008100030038", "A50F00810005003A", "A50F0000000000B5", "A50F00830003003A"]


def test_control_responses_match_their_schemas(h: Harness, client: Client) -> None:
    """A ControlResult, a PresetList, a CommandResult and a DeviceConfigResult validate against the components the OpenAPI document generates."""
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform.api.openapi import build_openapi

    components = build_openapi("x")["components"]

    def check(reply: Reply, name: str) -> None:
        assert reply.code == 200, reply.json
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components}).validate(
            reply.json)

    dev = nvr(h)
    check(call(h, client, "POST", f"{CH}/ptz", {"action": "stop"}, answer=dev), "ControlResult")
    d = client.start("GET", f"/channels/{CH}/presets")
    h.pump()
    query = dev.last_query("PresetQuery")
    dev.message(manscdp.encode_preset_query_response(query.sn, CH, [manscdp.Preset(preset_id="1")]))
    check(client.finish(d), "PresetList")
    d = client.start("POST", f"/devices/{DEV}/reboot")
    h.pump()
    answer_control(dev)
    check(client.finish(d), "CommandResult")
    d = client.start("GET", f"/devices/{DEV}/config")
    h.pump()
    query = dev.last_query("ConfigDownload")
    dev.message(manscdp.encode_config_download_response(query.sn, DEV, manscdp.BasicParam(name="N")))
    check(client.finish(d), "DeviceConfigResult")


def test_a_device_without_a_catalog_is_its_own_channel(h: Harness, client: Client) -> None:
    dev = h.registered_device()  # an IPC addressed by its own ID
    reply = call(h, client, "POST", f"{DEV}/ptz", {"action": "stop"}, answer=dev)
    assert reply.code == 200 and reply.json["device_id"] == DEV == reply.json["channel_id"]


def test_a_timed_move_that_timed_out_is_still_stopped(h: Harness, client: Client) -> None:
    """The Response may be lost while the camera moves: the stop is armed whatever the answer."""
    dev = nvr(h)
    d = client.start("POST", f"/channels/{CH}/ptz", body={"action": "up", "speed": 1, "duration_ms": 500})
    h.pump()
    h.advance(h.config.sip.query_timeout + 0.1)
    assert client.finish(d).code == 504
    h.advance(0.5)
    assert controls(dev)[-1] == STOP
    answer_control(dev)


# --- the other DeviceControl commands (GB/T 28181-2016 §A.2.3.1) ------------------------------------

BOX = {"length": 1920, "width": 1080, "mid_x": 960, "mid_y": 540, "length_x": 480, "length_y": 270}
DRAG = manscdp.DragZoom(length=1920, width=1080, mid_x=960, mid_y=540, length_x=480, length_y=270)


def post(h: Harness, client: Client, path: str, body: Any = None, answer: FakeDevice | None = None) -> Reply:
    d = client.start("POST", path, body=body)
    h.pump()
    if answer is not None:
        answer_control(answer)
    return client.finish(d)


@pytest.mark.parametrize(("path", "body", "target", "command", "sent"), [
    (f"/devices/{DEV}/reboot", None, DEV, "TeleBoot", {"tele_boot": "Boot"}),
    (f"/channels/{CH}/device-record", {"record": True}, CH, "Record", {"record_cmd": "Record"}),
    (f"/channels/{CH}/device-record", {"record": False}, CH, "StopRecord", {"record_cmd": "StopRecord"}),
    (f"/devices/{DEV}/guard", {"armed": True}, DEV, "SetGuard", {"guard_cmd": "SetGuard"}),
    (f"/devices/{DEV}/guard", {"armed": False}, DEV, "ResetGuard", {"guard_cmd": "ResetGuard"}),
    (f"/devices/{DEV}/alarm/reset", {}, DEV, "ResetAlarm", {"alarm_cmd": "ResetAlarm", "info": None}),
    (f"/devices/{DEV}/alarm/reset", {"method": 5, "type": 1}, DEV, "ResetAlarm",
     {"alarm_cmd": "ResetAlarm", "info": manscdp.ControlInfo(alarm_method=5, alarm_type=1)}),
    (f"/channels/{CH}/iframe", None, CH, "IFameCmd", {"iframe_cmd": "Send"}),
    (f"/channels/{CH}/dragzoom", {"direction": "in", **BOX}, CH, "DragZoomIn", {"drag_zoom_in": DRAG}),
    (f"/channels/{CH}/dragzoom", {"direction": "out", **BOX}, CH, "DragZoomOut", {"drag_zoom_out": DRAG}),
    (f"/channels/{CH}/home-position", {"enabled": True, "reset_time": 60, "preset_index": 3}, CH, "HomePosition",
     {"home_position": manscdp.HomePosition(enabled=1, reset_time=60, preset_index=3)}),
    (f"/channels/{CH}/home-position", {"enabled": False}, CH, "HomePosition",
     {"home_position": manscdp.HomePosition(enabled=0, reset_time=0, preset_index=1)}),
])
def test_each_device_control_command_is_sent_and_answered(h: Harness, client: Client, path: str, body: Any,
                                                           target: str, command: str, sent: dict[str, Any]) -> None:
    dev = nvr(h)
    reply = post(h, client, path, body, answer=dev)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "target_id": target, "command": command, "result": "OK"}
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl) and msg.device_id == target and msg.ptz_cmd is None
    assert {k: getattr(msg, k) for k in sent} == sent


def test_device_commands_answer_404_for_a_channel_or_unknown_id_and_409_offline(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert post(h, client, f"/devices/{CH}/reboot").code == 404  # a channel is not a device
    assert post(h, client, "/devices/34020000001320000099/guard", {"armed": True}).code == 404
    assert post(h, client, "/channels/34020000001310000099/iframe").code == 404
    assert dev.register_auth(expires=0).status == 200
    for path, body in ((f"/devices/{DEV}/reboot", None), (f"/channels/{CH}/device-record", {"record": True})):
        reply = post(h, client, path, body)
        assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")
    assert dev.queries("DeviceControl") == []


def test_a_device_command_not_answered_is_504(h: Harness, client: Client) -> None:
    nvr(h)
    d = client.start("POST", f"/devices/{DEV}/guard", body={"armed": True})
    h.pump()
    h.advance(h.config.sip.query_timeout + 0.1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")


@pytest.mark.parametrize(("path", "body", "field"), [
    (f"/channels/{CH}/device-record", {}, "record"),
    (f"/channels/{CH}/device-record", {"record": "yes"}, "record"),
    (f"/devices/{DEV}/guard", {"arm": True}, "arm"),
    (f"/devices/{DEV}/alarm/reset", {"method": -1}, "method"),
    (f"/devices/{DEV}/alarm/reset", {"type": "video"}, "type"),
    (f"/channels/{CH}/dragzoom", {"direction": "sideways", **BOX}, "direction"),
    (f"/channels/{CH}/dragzoom", {"direction": "in", **BOX, "length": 0}, "length"),
    (f"/channels/{CH}/dragzoom", {"direction": "in", **BOX, "mid_x": 2000}, "mid_x"),
    (f"/channels/{CH}/dragzoom", {"direction": "in", **BOX, "length_y": 1081}, "length_y"),
    (f"/channels/{CH}/dragzoom", {"direction": "in", "length": 10, "width": 10}, "mid_x"),
    (f"/channels/{CH}/home-position", {"enabled": True, "preset_index": 0}, "preset_index"),
    (f"/channels/{CH}/home-position", {"enabled": True, "reset_time": -1}, "reset_time"),
    (f"/channels/{CH}/home-position", {}, "enabled"),
])
def test_bad_device_command_input_is_400_naming_the_field(h: Harness, client: Client, path: str, body: Any,
                                                          field: str) -> None:
    dev = nvr(h)
    reply = post(h, client, path, body)
    assert reply.code == 400, reply.json
    assert reply.json["error"]["code"] == "invalid" and reply.json["error"]["field"] == field
    assert dev.queries("DeviceControl") == []


@pytest.mark.parametrize("values", [
    {"tele_boot": "Boot"}, {"record_cmd": "StopRecord"}, {"guard_cmd": "SetGuard"},
    {"alarm_cmd": "ResetAlarm", "info": manscdp.ControlInfo(alarm_method=2, alarm_type=7)},
    {"iframe_cmd": "Send"}, {"drag_zoom_in": DRAG}, {"drag_zoom_out": DRAG},
    {"home_position": manscdp.HomePosition(enabled=1, reset_time=5, preset_index=255)},
])
def test_each_device_control_round_trips_through_its_declaration(values: dict[str, Any]) -> None:
    msg = manscdp.decode(manscdp.encode_device_command(11, CH, **values))
    assert isinstance(msg, manscdp.DeviceControl) and (msg.sn, msg.device_id) == (11, CH)
    assert {k: getattr(msg, k) for k in values} == values


def test_iframe_is_read_under_both_spellings_and_sent_as_the_standard_one() -> None:
    """§A.2.3.1.7 spells it IFameCmd; devices that send or expect IFrameCmd are read the same way."""
    sent = manscdp.encode_device_command(3, CH, iframe_cmd="Send")
    assert b"<IFameCmd>Send</IFameCmd>" in sent
    variant = manscdp.decode(sent.replace(b"IFameCmd", b"IFrameCmd"))
    assert isinstance(variant, manscdp.DeviceControl) and variant.iframe == "Send"


def test_the_simulated_front_end_keeps_the_state_of_device_commands() -> None:
    front = PtzFrontEnd(lambda: "GB2312")
    answers = QueryAnswers()
    front.register(answers)

    def control(target: str = CH, **values: Any) -> str | None:
        [body] = answers.answer(manscdp.decode(manscdp.encode_device_command(7, target, **values)))
        answer = manscdp.decode(body)
        assert isinstance(answer, manscdp.Response)
        return answer.result

    assert control(record_cmd="Record") == "OK" and front.recording == {CH: True}
    assert control(DEV, guard_cmd="SetGuard") == "OK" and front.guard == {DEV: True}
    control(DEV, guard_cmd="ResetGuard")
    assert front.guard == {DEV: False}
    home = manscdp.HomePosition(enabled=1, reset_time=30, preset_index=2)
    control(home_position=home)
    assert front.home == {CH: home}
    control(DEV, tele_boot="Boot")
    assert front.boots == 1
    assert control(record_cmd="Pause") == "ERROR"
    assert [c for _, c in front.commands] == ["Record", "SetGuard", "ResetGuard", "HomePosition", "TeleBoot",
                                               "Pause"]


# --- ConfigDownload (GB/T 28181-2016 §A.2.4.7, §A.2.6.8) ------------------------------------------

def get_config(h: Harness, client: Client, device_id: str, query: str = "") -> Reply:
    d = client.start("GET", f"/devices/{device_id}/config{query}")
    h.pump()
    return client.finish(d)


def test_config_download_answers_the_basic_param_as_json(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("GET", f"/devices/{DEV}/config?type=BasicParam")
    h.pump()
    query = dev.last_query("ConfigDownload")
    assert query.fields["ConfigType"] == "BasicParam" and query.device_id == DEV
    dev.message(manscdp.encode_config_download_response(query.sn, DEV, manscdp.BasicParam(
        name="Gate NVR", expiration=3600, heart_beat_interval=30, heart_beat_count=4, position_capability=0)))
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert reply.json["device_id"] == DEV and reply.json["config_type"] == "BasicParam"
    assert reply.json["result"] == "OK" and reply.json["video_param_opt"] is None
    basic = reply.json["basic_param"]
    assert (basic["name"], basic["expiration"], basic["heartbeat_interval"], basic["heartbeat_count"],
            basic["position_capability"]) == ("Gate NVR", 3600, 30, 4, 0)


def test_config_download_answers_the_video_param_opt(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("GET", f"/devices/{DEV}/config?type=VideoParamOpt")
    h.pump()
    query = dev.last_query("ConfigDownload")
    assert query.fields["ConfigType"] == "VideoParamOpt"
    dev.message(manscdp.encode_config_download_response(
        query.sn, DEV, None, video_param_opt=manscdp.VideoParamOpt(download_speed="1/2/4", resolution="5/6")))
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert reply.json["video_param_opt"] == {"download_speed": "1/2/4", "resolution": "5/6"}
    assert reply.json["basic_param"] is None


def test_config_download_answers_an_svac_config_as_its_leaves_by_path(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("GET", f"/devices/{DEV}/config?type=SVACEncodeConfig")
    h.pump()
    query = dev.last_query("ConfigDownload")
    assert query.fields["ConfigType"] == "SVACEncodeConfig"
    svac = {"SVCParam": {"SVCSpaceDomainMode": "1", "SVCTimeDomainMode": "0"},
            "SurveillanceParam": {"TimeFlag": "1"}}
    dev.message(manscdp.encode_config_download_response(query.sn, DEV, None, extra={"SVACEncodeConfig": svac}))
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert reply.json["svac"] == {"SVCParam/SVCSpaceDomainMode": "1", "SVCParam/SVCTimeDomainMode": "0",
                                  "SurveillanceParam/TimeFlag": "1"}
    assert reply.json["basic_param"] is None and reply.json["video_param_opt"] is None


def test_svac_leaves_round_trip_with_repeated_siblings_numbered() -> None:
    raw = manscdp.encode_config_download_response(1, DEV, None, extra={"SVACDecodeConfig": {
        "SVCParam": {"SVCSTMMode": "1"}}})
    msg = manscdp.decode(raw.replace(b"</SVCParam>", b"</SVCParam><ROIParam><Item><ROISeq>1</ROISeq></Item>"
                                                     b"<Item><ROISeq>2</ROISeq></Item></ROIParam>"))
    assert isinstance(msg, manscdp.ConfigDownloadResponse) and msg.svac_encode_config == {}
    leaves = {"SVCParam/SVCSTMMode": "1", "ROIParam/Item[1]/ROISeq": "1", "ROIParam/Item[2]/ROISeq": "2"}
    assert msg.svac_decode_config == leaves
    again = manscdp.decode(manscdp.encode(msg))
    assert isinstance(again, manscdp.ConfigDownloadResponse) and again.svac_decode_config == leaves


def test_config_download_is_404_409_504_and_400_naming_the_type(h: Harness, client: Client) -> None:
    dev = nvr(h)
    before = len(dev.queries("ConfigDownload"))
    reply = get_config(h, client, DEV, "?type=Wifi")
    assert (reply.code, reply.json["error"]["field"]) == (400, "type")
    assert get_config(h, client, CH).code == 404  # a channel is not a device
    d = client.start("GET", f"/devices/{DEV}/config")
    h.pump()
    h.advance(h.config.sip.query_timeout + 0.1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")
    # The API's query, and onboarding's (unanswered by nvr()), timed out meanwhile and asked once more.
    assert len(dev.queries("ConfigDownload")) == before + 2
    assert dev.register_auth(expires=0).status == 200
    reply = get_config(h, client, DEV)
    assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")



# --- DeviceConfig (GB/T 28181-2016 §A.2.3.2, §A.2.6.3) ---------------------------------------------

def put_config(h: Harness, client: Client, path: str, body: Any, answer: FakeDevice | None = None,
               result: str = "OK") -> Reply:
    d = client.start("PUT", f"/devices/{path}", body=body)
    h.pump()
    if answer is not None:
        msg = answer.last_query("DeviceConfig")
        answer.message(manscdp.encode_config_response(msg.sn, msg.device_id, result=result))
    return client.finish(d)


def test_device_config_basic_sends_only_the_given_leaves_and_applies_the_heartbeat(h: Harness,
                                                                                   client: Client) -> None:
    dev = nvr(h)
    reply = put_config(h, client, f"{DEV}/config/basic", {"name": "Gate NVR", "heartbeat_interval": 30,
                                                          "heartbeat_count": 5}, answer=dev)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "target_id": DEV, "command": "BasicParam", "result": "OK"}
    msg = dev.last_query("DeviceConfig")
    assert isinstance(msg, manscdp.DeviceConfig) and msg.device_id == DEV and msg.video_param_opt is None
    assert msg.basic_param == manscdp.BasicParam(name="Gate NVR", heart_beat_interval=30, heart_beat_count=5)
    live = h.platform.control.devices.live[DEV]
    assert (live.interval, live.count) == (30, 5)


def test_a_device_config_refused_leaves_the_heartbeat_as_it_was(h: Harness, client: Client) -> None:
    dev = nvr(h)
    live = h.platform.control.devices.live[DEV]
    before = (live.interval, live.count)
    reply = put_config(h, client, f"{DEV}/config/basic", {"heartbeat_interval": 30}, answer=dev, result="ERROR")
    assert reply.code == 200 and reply.json["result"] == "ERROR"
    assert (live.interval, live.count) == before


def test_device_config_video_sends_the_video_param_opt(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = put_config(h, client, f"{DEV}/config/video", {"resolution": "6"}, answer=dev)
    assert reply.code == 200 and reply.json["command"] == "VideoParamOpt", reply.json
    msg = dev.last_query("DeviceConfig")
    assert isinstance(msg, manscdp.DeviceConfig) and msg.basic_param is None
    assert msg.video_param_opt == manscdp.VideoParamOpt(resolution="6")


@pytest.mark.parametrize(("path", "body", "field"), [
    ("config/basic", {}, "name"),
    ("config/basic", {"name": ""}, "name"),
    ("config/basic", {"name": "x" * 129}, "name"),
    ("config/basic", {"name": "a\nb"}, "name"),
    ("config/basic", {"expiration": 10}, "expiration"),
    ("config/basic", {"heartbeat_interval": 0}, "heartbeat_interval"),
    ("config/basic", {"heartbeat_interval": 3601}, "heartbeat_interval"),
    ("config/basic", {"heartbeat_count": 101}, "heartbeat_count"),
    ("config/basic", {"heartbeat": 30}, "heartbeat"),
    ("config/video", {}, "download_speed"),
    ("config/video", {"resolution": "HD"}, "resolution"),
])
def test_bad_device_config_is_400_naming_the_field(h: Harness, client: Client, path: str, body: Any,
                                                   field: str) -> None:
    dev = nvr(h)
    reply = put_config(h, client, f"{DEV}/{path}", body)
    assert reply.code == 400, reply.json
    assert reply.json["error"]["code"] == "invalid" and reply.json["error"]["field"] == field
    assert dev.queries("DeviceConfig") == []


def test_device_config_is_404_409_and_504(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert put_config(h, client, f"{CH}/config/basic", {"name": "x"}).code == 404
    d = client.start("PUT", f"/devices/{DEV}/config/video", body={"resolution": "5"})
    h.pump()
    h.advance(h.config.sip.query_timeout + 0.1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")
    assert dev.register_auth(expires=0).status == 200
    reply = put_config(h, client, f"{DEV}/config/basic", {"name": "x"})
    assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")


def test_device_config_round_trips_through_its_declaration() -> None:
    basic = manscdp.BasicParam(name="名字", expiration=3600, heart_beat_interval=30, heart_beat_count=3)
    video = manscdp.VideoParamOpt(download_speed="1/2", resolution="5")
    msg = manscdp.decode(manscdp.encode_device_config(7, DEV, basic_param=basic, video_param_opt=video))
    assert isinstance(msg, manscdp.DeviceConfig)
    assert (msg.sn, msg.basic_param, msg.video_param_opt) == (7, basic, video)
    answer = manscdp.decode(manscdp.encode_config_response(7, DEV, result="ERROR"))
    assert isinstance(answer, manscdp.Response) and (answer.cmd_type, answer.result) == ("DeviceConfig", "ERROR")
