"""The GB/T 28181-2022 PTZ commands: PTZPreciseCtrl, PTZPosition, HomePositionQuery, CruiseTrackListQuery,
CruiseTrackQuery and TargetTrack (§A.2.3.1, §A.2.4.10-13, §A.2.6.12-15).

Declarations round-trip and read the variants devices send; the API goes
through the in-memory platform (``platform_harness``) to a fake 2022 NVR (200
with the device's data, ERROR as answered, 404, 409, 422 for a 2016 device,
504, 400 naming the field); the simulator's PTZ state answers the queries
from what the 2016 and 2022 commands did, on a stepped clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from gbplatform.api.app import Api
from gbplatform.control.ptz2022 import LIST_REST
from gbplatform.simulator.ptz_state import MAX_PAN_RATE, MAX_TILT_RATE, PtzState
from sip import manscdp, ptz
from sip.manscdp.ptz2022 import CRUISE_TRACK_LIST_RESPONSE, CRUISE_TRACK_RESPONSE
from sip.useragent import PtzFrontEnd, QueryAnswers
from tests.unit.platform_harness import DEV, FakeDevice, Harness, has_fired
from tests.unit.test_api import Client, Reply

CH = "34020000001310000001"
CAM2 = "34020000001310000002"
BOX = {"length": 1920, "width": 1080, "mid_x": 960, "mid_y": 540, "length_x": 200, "length_y": 400}


def head(cmd_type: str, root: str = "Response", sn: int = 7) -> str:
    return f"<?xml version=\"1.0\"?><{root}><CmdType>{cmd_type}</CmdType><SN>{sn}</SN><DeviceID>{CH}</DeviceID>"


# --- declarations ---------------------------------------------------------------------------------------


def test_precise_ctrl_round_trips_and_sends_only_the_values_given() -> None:
    sent = manscdp.encode_device_command(5, CH, ptz_precise_ctrl=manscdp.PtzPrecise(pan=90.5, zoom=4.0))
    assert b"<PTZPreciseCtrl>\n<Pan>90.5</Pan>\n<Zoom>4.0</Zoom>\n</PTZPreciseCtrl>" in sent
    msg = manscdp.decode(sent)
    assert isinstance(msg, manscdp.DeviceControl)
    assert msg.ptz_precise_ctrl == manscdp.PtzPrecise(pan=90.5, zoom=4.0) and msg.ptz_cmd is None


def test_precise_ctrl_and_target_track_are_read_in_any_case() -> None:
    body = (head("devicecontrol", "Control") + "<ptzprecisectrl><PAN>10</PAN><tilt>-5.25</tilt></ptzprecisectrl>"
            "</Control>").encode()
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.DeviceControl) and msg.ptz_precise_ctrl == manscdp.PtzPrecise(pan=10, tilt=-5.25)
    body = (head("DeviceControl", "Control") + "<targettrack>manual</targettrack><deviceid2>" + CAM2 +
            "</deviceid2><TargetArea><Length>100</Length><Width>50</Width><MidPointX>1</MidPointX>"
            "<MidPointY>2</MidPointY><LengthX>3</LengthX><LengthY>4</LengthY></TargetArea></Control>").encode()
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.DeviceControl)
    assert (msg.target_track, msg.device_id2) == (manscdp.TargetTrackMode.MANUAL, CAM2)
    assert msg.target_area == manscdp.TargetArea(length=100, width=50, mid_x=1, mid_y=2, length_x=3, length_y=4)


def test_target_track_round_trips() -> None:
    area = manscdp.TargetArea(length=1920, width=1080, mid_x=960, mid_y=540, length_x=200, length_y=400)
    msg = manscdp.decode(manscdp.encode_device_command(
        6, CH, target_track=manscdp.TargetTrackMode.MANUAL, device_id2=CAM2, target_area=area))
    assert isinstance(msg, manscdp.DeviceControl)
    assert (msg.target_track, msg.device_id2, msg.target_area) == (manscdp.TargetTrackMode.MANUAL, CAM2, area)
    msg = manscdp.decode(manscdp.encode_device_command(6, CH, target_track=manscdp.TargetTrackMode.STOP))
    assert isinstance(msg, manscdp.DeviceControl) and msg.target_track is manscdp.TargetTrackMode.STOP
    assert msg.target_area is None and msg.device_id2 is None


def test_ptz_position_answer_round_trips_and_is_read_from_a_ptzposinfo_wrapper() -> None:
    where = manscdp.PtzPosition(pan=270.25, tilt=-12.5, zoom=3.0, horizontal_field_angle=20.1,
                                vertical_field_angle=11.4, max_view_distance=150.0)
    msg = manscdp.decode(manscdp.encode_ptz_position_response(8, CH, where))
    assert isinstance(msg, manscdp.PtzPositionResponse) and msg.position == where and msg.result == "OK"
    wrapped = manscdp.decode((head("ptzposition") + "<PTZPosInfo><Pan>12.50</Pan><Tilt>-3.25</Tilt>"
                              "<Zoom>2</Zoom></PTZPosInfo></Response>").encode())
    assert isinstance(wrapped, manscdp.PtzPositionResponse)
    assert wrapped.position == manscdp.PtzPosition(pan=12.5, tilt=-3.25, zoom=2.0)


def test_a_position_value_that_is_no_number_is_none() -> None:
    msg = manscdp.decode((head("PTZPosition") + "<Pan>east</Pan><Tilt>4</Tilt></Response>").encode())
    assert isinstance(msg, manscdp.PtzPositionResponse) and (msg.pan, msg.tilt) == (None, 4.0)


def test_home_position_answer_round_trips_and_reads_the_unwrapped_variant() -> None:
    home = manscdp.HomePositionInfo(enabled="1", reset_time=60, preset_index=3)
    msg = manscdp.decode(manscdp.encode_home_position_response(9, CH, home))
    assert isinstance(msg, manscdp.HomePositionResponse) and msg.home == home and msg.home.is_enabled is True
    flat = manscdp.decode((head("HomePositionQuery") + "<Enabled>true</Enabled><ResetTime>30</ResetTime>"
                           "</Response>").encode())
    assert isinstance(flat, manscdp.HomePositionResponse) and flat.home is not None
    assert (flat.home.is_enabled, flat.home.reset_time, flat.home.preset_index) == (True, 30, None)
    empty = manscdp.decode((head("HomePositionQuery") + "<Result>OK</Result></Response>").encode())
    assert isinstance(empty, manscdp.HomePositionResponse) and empty.home is None
    assert manscdp.HomePositionInfo(enabled="0").is_enabled is False
    assert manscdp.HomePositionInfo(enabled="maybe").is_enabled is None


def test_cruise_track_list_round_trips_and_reads_item_elements() -> None:
    tracks = (manscdp.CruiseTrack(number=1, name="Gate"), manscdp.CruiseTrack(number=2, name="巡航 2"))
    msg = manscdp.decode(manscdp.encode_cruise_track_list_response(10, CH, tracks))
    assert isinstance(msg, manscdp.CruiseTrackListResponse)
    assert (msg.tracks, msg.sum_num, msg.num) == (tracks, 2, 2)
    items = manscdp.decode((head("cruisetracklistquery") + "<SumNum>1</SumNum><CruiseTrackList Num=\"1\"><Item>"
                            "<Number>4</Number><Name>N</Name></Item></CruiseTrackList></Response>").encode())
    assert isinstance(items, manscdp.CruiseTrackListResponse)
    assert items.tracks == (manscdp.CruiseTrack(number=4, name="N"),)


def test_cruise_track_round_trips_and_reads_item_and_dwell_time_variants() -> None:
    points = (manscdp.CruisePoint(preset_index=3, stay_time=10, speed=5),
              manscdp.CruisePoint(preset_index=7, stay_time=20, speed=8))
    msg = manscdp.decode(manscdp.encode_cruise_track_response(11, CH, 1, "Gate", points))
    assert isinstance(msg, manscdp.CruiseTrackResponse)
    assert (msg.number, msg.name, msg.sum_num, msg.points) == (1, "Gate", 2, points)
    variant = manscdp.decode((head("CruiseTrackQuery") + "<Number>2</Number><CruisePointList Num=\"1\"><Item>"
                              "<PresetIndex>4</PresetIndex><DwellTime>45</DwellTime><Speed>3</Speed></Item>"
                              "</CruisePointList></Response>").encode())
    assert isinstance(variant, manscdp.CruiseTrackResponse) and variant.sum_num == 1
    [point] = variant.points
    assert (point.preset_index, point.stay, point.speed) == (4, 45, 3)


def test_cruise_track_query_carries_the_number() -> None:
    msg = manscdp.decode(manscdp.encode_query("CruiseTrackQuery", 12, CH, extra={"Number": "3"}))
    assert isinstance(msg, manscdp.CruiseTrackQuery) and msg.number == 3


# --- the API through the platform ---------------------------------------------------------------------


@pytest.fixture
def client(h: Harness) -> Client:
    return Client(Api(h.platform))


def nvr(h: Harness, **kw: Any) -> FakeDevice:
    """A registered NVR (GB/T 28181-2022 unless ``x_gb_ver=None``) whose catalog (one channel, CH) is stored."""
    dev = h.registered_device(**kw)
    info = dev.last_query("DeviceInfo")
    dev.message(manscdp.encode_device_info_response(info.sn, DEV, manufacturer="Hikvision"))
    cat = dev.last_query("Catalog")
    items = [manscdp.CatalogItem(device_id=CH, name="Gate", status="ON", parent_id=DEV)]
    dev.message(manscdp.encode_catalog_response(cat.sn, DEV, len(items), items))
    h.advance(1)
    return dev


def answer_control(dev: FakeDevice, result: str = "OK") -> manscdp.DeviceControl:
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl)
    dev.message(manscdp.encode_control_response(msg.sn, msg.device_id, result=result))
    return msg


def request(h: Harness, client: Client, method: str, path: str, body: Any = None,
            answer: Any = None) -> Reply:
    """Call the API; ``answer(query)`` gives the device's answer body to the query sent, if any."""
    d = client.start(method, f"/channels/{path}", body=body)
    h.pump()
    if answer is not None:
        answer()
    return client.finish(d)


def test_precise_ptz_is_a_device_control_answered_by_its_result(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = request(h, client, "POST", f"{CH}/ptz/precise", {"pan": 90, "tilt": -15.5, "zoom": 4},
                    answer=lambda: answer_control(dev))
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "target_id": CH, "command": "PTZPreciseCtrl", "result": "OK"}
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl) and msg.device_id == CH
    assert msg.ptz_precise_ctrl == manscdp.PtzPrecise(pan=90.0, tilt=-15.5, zoom=4.0) and msg.ptz_cmd is None


def test_precise_ptz_sends_only_what_is_given_rounded(h: Harness, client: Client) -> None:
    dev = nvr(h)
    request(h, client, "POST", f"{CH}/ptz/precise", {"pan": 0.1 + 0.2}, answer=lambda: answer_control(dev))
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl) and msg.ptz_precise_ctrl == manscdp.PtzPrecise(pan=0.3)


def test_a_device_error_is_answered_as_sent(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = request(h, client, "POST", f"{CH}/target-track", {"mode": "auto"},
                    answer=lambda: answer_control(dev, "ERROR"))
    assert (reply.code, reply.json["result"], reply.json["command"]) == (200, "ERROR", "TargetTrack")


def test_target_track_sends_the_mode_the_linked_camera_and_the_box(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = request(h, client, "POST", f"{CH}/target-track",
                    {"mode": "manual", "linked_device_id": CAM2, "target_area": BOX},
                    answer=lambda: answer_control(dev))
    assert reply.code == 200, reply.json
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl)
    assert (msg.target_track, msg.device_id2) == (manscdp.TargetTrackMode.MANUAL, CAM2)
    assert msg.target_area == manscdp.TargetArea(**BOX)
    request(h, client, "POST", f"{CH}/target-track", {"mode": "stop"}, answer=lambda: answer_control(dev))
    msg = dev.last_query("DeviceControl")
    assert isinstance(msg, manscdp.DeviceControl) and msg.target_track is manscdp.TargetTrackMode.STOP
    assert msg.target_area is None and msg.device_id2 is None


def test_ptz_position_answers_the_device_data_and_publishes_it(h: Harness, client: Client) -> None:
    dev = nvr(h)
    seen: list[Any] = []
    h.platform.bus.listen(seen.append)

    def answer() -> None:
        query = dev.last_query("PTZPosition")
        assert query.kind == "Query" and query.device_id == CH
        dev.message(manscdp.encode_ptz_position_response(query.sn, CH, manscdp.PtzPosition(
            pan=90.0, tilt=-15.5, zoom=4.0, horizontal_field_angle=15.2, vertical_field_angle=8.6,
            max_view_distance=200.0)))

    reply = request(h, client, "GET", f"{CH}/ptz/position", answer=answer)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "channel_id": CH, "result": "OK", "pan": 90.0, "tilt": -15.5,
                          "zoom": 4.0, "horizontal_field_angle": 15.2, "vertical_field_angle": 8.6,
                          "max_view_distance": 200.0}
    [event] = [e for e in seen if e.kind == "ptz"]
    assert (event.device_id, event.channel_id, event.data["pan"], event.data["source"]) == (DEV, CH, 90.0, "query")


def test_a_position_that_is_not_finite_is_null(h: Harness, client: Client) -> None:
    dev = nvr(h)

    def answer() -> None:
        query = dev.last_query("PTZPosition")
        dev.message((head("PTZPosition", sn=query.sn) + "<Pan>NaN</Pan><Tilt>inf</Tilt><Zoom>2</Zoom>"
                     "</Response>").encode())

    reply = request(h, client, "GET", f"{CH}/ptz/position", answer=answer)
    assert reply.code == 200, reply.json
    assert (reply.json["pan"], reply.json["tilt"], reply.json["zoom"], reply.json["result"]) == (None, None, 2.0, None)


def test_home_position_get_answers_the_query_and_post_still_sets_it(h: Harness, client: Client) -> None:
    dev = nvr(h)

    def answer() -> None:
        query = dev.last_query("HomePositionQuery")
        assert query.device_id == CH
        dev.message(manscdp.encode_home_position_response(query.sn, CH, manscdp.HomePositionInfo(
            enabled="1", reset_time=60, preset_index=3)))

    reply = request(h, client, "GET", f"{CH}/home-position", answer=answer)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "channel_id": CH, "result": "OK", "enabled": True, "reset_time": 60,
                          "preset_index": 3}
    reply = request(h, client, "POST", f"{CH}/home-position", {"enabled": False}, answer=lambda: answer_control(dev))
    assert (reply.code, reply.json["command"]) == (200, "HomePosition")


def test_cruise_tracks_and_one_track_answer_the_device_lists(h: Harness, client: Client) -> None:
    dev = nvr(h)

    def tracks() -> None:
        query = dev.last_query("CruiseTrackListQuery")
        dev.message(manscdp.encode_cruise_track_list_response(query.sn, CH, (
            manscdp.CruiseTrack(number=1, name="Gate"), manscdp.CruiseTrack(number=2))))

    reply = request(h, client, "GET", f"{CH}/cruise-tracks", answer=tracks)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "channel_id": CH, "result": "OK", "sum_num": 2, "items": [
        {"number": 1, "name": "Gate"}, {"number": 2, "name": None}]}

    def track() -> None:
        query = dev.last_query("CruiseTrackQuery")
        assert isinstance(query, manscdp.CruiseTrackQuery) and query.number == 2
        dev.message((head("CruiseTrackQuery", sn=query.sn) + "<Number>2</Number><Name>Yard</Name><SumNum>1</SumNum>"
                     "<CruisePointList Num=\"1\"><Item><PresetIndex>4</PresetIndex><DwellTime>45</DwellTime>"
                     "<Speed>3</Speed></Item></CruisePointList></Response>").encode())

    reply = request(h, client, "GET", f"{CH}/cruise-tracks/2", answer=track)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "channel_id": CH, "result": None, "number": 2, "name": "Yard",
                          "sum_num": 1, "points": [{"preset_index": 4, "stay_time": 45, "speed": 3}]}


def list_part(sn: int, sum_num: int, *numbers: int) -> bytes:
    """One MESSAGE of a CruiseTrackListQuery answer split over several (SumNum the whole count)."""
    return manscdp.encode(CRUISE_TRACK_LIST_RESPONSE.build(
        sn, CH, result="OK", sum_num=sum_num, tracks=tuple(manscdp.CruiseTrack(number=n) for n in numbers)))


def test_a_list_split_over_several_messages_is_gathered_up_to_its_sumnum(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("GET", f"/channels/{CH}/cruise-tracks")
    h.pump()
    sn = dev.last_query("CruiseTrackListQuery").sn
    dev.message(list_part(sn, 3, 1, 2))
    assert not has_fired(d)
    dev.message(list_part(sn, 3, 3))
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert (reply.json["sum_num"], [t["number"] for t in reply.json["items"]]) == (3, [1, 2, 3])

    d = client.start("GET", f"/channels/{CH}/cruise-tracks/1")
    h.pump()
    sn = dev.last_query("CruiseTrackQuery").sn
    for index in (3, 4):
        dev.message(manscdp.encode(CRUISE_TRACK_RESPONSE.build(
            sn, CH, result="OK", number=1, name="Gate", sum_num=2,
            points=(manscdp.CruisePoint(preset_index=index, stay_time=5, speed=1),))))
    reply = client.finish(d)
    assert [p["preset_index"] for p in reply.json["points"]] == [3, 4] and reply.json["name"] == "Gate"


def test_a_list_short_of_its_sumnum_is_answered_as_sent_after_a_rest(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("GET", f"/channels/{CH}/cruise-tracks")
    h.pump()
    dev.message(list_part(dev.last_query("CruiseTrackListQuery").sn, 5, 7))
    h.advance(LIST_REST - 0.1)
    assert not has_fired(d)
    h.advance(0.2)
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert (reply.json["sum_num"], reply.json["items"]) == (5, [{"number": 7, "name": None}])


@pytest.mark.parametrize("path", [f"{CH}/cruise-tracks", f"{CH}/cruise-tracks/1", f"{CH}/ptz/position"])
def test_a_query_message_the_device_refuses_is_502(h: Harness, client: Client, path: str) -> None:
    dev = nvr(h)
    dev.answer_status = 415  # baresip-like: the MESSAGE itself refused (SIP layer)
    reply = request(h, client, "GET", path)
    assert (reply.code, reply.json["error"]["code"]) == (502, "device_rejected"), reply.json


ROUTES = [
    ("POST", f"{CH}/ptz/precise", {"pan": 10}),
    ("GET", f"{CH}/ptz/position", None),
    ("GET", f"{CH}/home-position", None),
    ("GET", f"{CH}/cruise-tracks", None),
    ("GET", f"{CH}/cruise-tracks/1", None),
    ("POST", f"{CH}/target-track", {"mode": "auto"}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_2016_device_is_refused_with_422_before_anything_is_sent(h: Harness, client: Client, method: str,
                                                                   path: str, body: Any) -> None:
    dev = nvr(h, x_gb_ver=None)
    before = len(dev.queries())
    reply = request(h, client, method, path, body)
    assert (reply.code, reply.json["error"]["code"]) == (422, "unsupported_by_device_dialect"), reply.json
    assert "GB/T 28181-2022 command" in reply.json["error"]["message"]
    assert len(dev.queries()) == before


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_unknown_channel_404_offline_409_and_silent_device_504(h: Harness, client: Client, method: str,
                                                               path: str, body: Any) -> None:
    dev = nvr(h)
    unknown = path.replace(CH, "34020000001310000099")
    assert request(h, client, method, unknown, body).code == 404
    d = client.start(method, f"/channels/{path}", body=body)
    h.pump()
    h.advance(h.config.sip.query_timeout - 0.5)
    assert not has_fired(d)
    h.advance(1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")
    assert dev.register_auth(expires=0).status == 200
    reply = request(h, client, method, path, body)
    assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", f"{CH}/ptz/precise", {}, "pan"),
    ("POST", f"{CH}/ptz/precise", {"pan": 360.5}, "pan"),
    ("POST", f"{CH}/ptz/precise", {"pan": -1}, "pan"),
    ("POST", f"{CH}/ptz/precise", {"tilt": -91}, "tilt"),
    ("POST", f"{CH}/ptz/precise", {"zoom": 0.5}, "zoom"),
    ("POST", f"{CH}/ptz/precise", {"zoom": "2x"}, "zoom"),
    ("POST", f"{CH}/ptz/precise", {"pan": 1, "speed": 3}, "speed"),
    ("POST", f"{CH}/target-track", {}, "mode"),
    ("POST", f"{CH}/target-track", {"mode": "follow"}, "mode"),
    ("POST", f"{CH}/target-track", {"mode": "manual"}, "target_area"),
    ("POST", f"{CH}/target-track", {"mode": "manual", "target_area": {**BOX, "mid_x": 1921}}, "target_area"),
    ("POST", f"{CH}/target-track", {"mode": "manual", "target_area": {**BOX, "length": 0}}, "target_area"),
    ("POST", f"{CH}/target-track", {"mode": "auto", "linked_device_id": "a b"}, "linked_device_id"),
    ("GET", f"{CH}/cruise-tracks/256", None, "number"),
])
def test_bad_input_is_400_naming_the_field(h: Harness, client: Client, method: str, path: str, body: Any,
                                           field: str) -> None:
    dev = nvr(h)
    before = len(dev.queries())
    reply = request(h, client, method, path, body)
    assert reply.code == 400, reply.json
    assert reply.json["error"]["code"] == "invalid" and reply.json["error"]["field"] == field
    assert len(dev.queries()) == before


def test_a_box_outside_the_picture_is_named_in_the_message(h: Harness, client: Client) -> None:
    nvr(h)
    reply = request(h, client, "POST", f"{CH}/target-track",
                    {"mode": "auto", "target_area": {**BOX, "length_y": 1081}})
    assert (reply.code, reply.json["error"]["field"]) == (400, "target_area")
    assert "length_y lies outside the picture" in reply.json["error"]["message"]


def every_response() -> None:
    """Every JSON answer of the 2022 PTZ routes (success paths) once, validated against its OpenAPI component
    (``test_shapes`` records which shapes were sent)."""
    h = Harness()
    try:
        _check_every_response(h, Client(Api(h.platform)))
        assert not h.failures(), h.failures()
    finally:
        h.close()


def test_responses_match_their_openapi_components() -> None:
    every_response()


def _check_every_response(h: Harness, client: Client) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform.api.openapi import build_openapi

    components = build_openapi("x")["components"]

    def check(reply: Reply, name: str) -> None:
        assert reply.code == 200, reply.json
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components}).validate(
            reply.json)

    dev = nvr(h)

    def answer(cmd_type: str, body: Any) -> Any:
        def send() -> None:
            dev.message(body(dev.last_query(cmd_type).sn))
        return send

    check(request(h, client, "GET", f"{CH}/ptz/position", answer=answer("PTZPosition", lambda sn: (
        manscdp.encode_ptz_position_response(sn, CH, manscdp.PtzPosition(pan=1.0))))), "PtzPositionResult")
    check(request(h, client, "GET", f"{CH}/home-position", answer=answer("HomePositionQuery", lambda sn: (
        manscdp.encode_home_position_response(sn, CH, manscdp.HomePositionInfo(enabled="0"))))), "HomePositionState")
    check(request(h, client, "GET", f"{CH}/cruise-tracks", answer=answer("CruiseTrackListQuery", lambda sn: (
        manscdp.encode_cruise_track_list_response(sn, CH, (manscdp.CruiseTrack(number=1),))))), "CruiseTrackList")
    check(request(h, client, "GET", f"{CH}/cruise-tracks/1", answer=answer("CruiseTrackQuery", lambda sn: (
        manscdp.encode_cruise_track_response(sn, CH, 1, None, (manscdp.CruisePoint(preset_index=2),))))),
        "CruiseTrackDetail")
    check(request(h, client, "POST", f"{CH}/ptz/precise", {"zoom": 2}, answer=lambda: answer_control(dev)),
          "CommandResult")
    check(request(h, client, "POST", f"{CH}/target-track", {"mode": "manual", "linked_device_id": CAM2,
                                                           "target_area": BOX}, answer=lambda: answer_control(dev)),
          "CommandResult")


# --- the simulator's PTZ state -----------------------------------------------------------------------


class Sim:
    """A simulated front end with its 2022 state on a stepped clock, answering as the simulator does."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.front = PtzFrontEnd(lambda: "GB2312")
        self.state = PtzState(self.front, lambda: self.t, lambda: "GB2312")
        self.answers = QueryAnswers()
        self.front.register(self.answers)
        self.state.register(self.answers)
        self.sn = 0

    def ask(self, body: bytes) -> manscdp.ManscdpMessage:
        [answer] = self.answers.answer(manscdp.decode(body))
        return manscdp.decode(answer)

    def control(self, target: str = CH, **values: Any) -> str | None:
        self.sn += 1
        answer = self.ask(manscdp.encode_device_command(self.sn, target, **values))
        assert isinstance(answer, manscdp.Response)
        return answer.result

    def ptz(self, cmd: ptz.PtzCmd) -> str | None:
        return self.control(ptz_cmd=ptz.to_hex(cmd))

    def query(self, cmd_type: str, **extra: str) -> manscdp.ManscdpMessage:
        self.sn += 1
        return self.ask(manscdp.encode_query(cmd_type, self.sn, CH, extra=extra or None))

    def position(self) -> manscdp.PtzPosition:
        answer = self.query("PTZPosition")
        assert isinstance(answer, manscdp.PtzPositionResponse)
        return answer.position


def test_the_simulator_reports_the_precise_position_and_its_field_of_view() -> None:
    sim = Sim()
    start = sim.position()
    assert (start.pan, start.tilt, start.zoom) == (0.0, 0.0, 1.0)
    assert start.horizontal_field_angle == 60.0 and start.max_view_distance == 50.0
    assert sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(pan=90.5, tilt=-15.25, zoom=4)) == "OK"
    where = sim.position()
    assert (where.pan, where.tilt, where.zoom) == (90.5, -15.25, 4.0)
    assert start.horizontal_field_angle is not None and where.horizontal_field_angle is not None
    assert where.horizontal_field_angle < start.horizontal_field_angle and where.max_view_distance == 200.0
    assert sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(zoom=2)) == "OK"
    again = sim.position()
    assert (again.pan, again.tilt, again.zoom) == (90.5, -15.25, 2.0)  # only the zoom given changed
    assert sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(tilt=95)) == "ERROR"
    assert sim.position().tilt == -15.25
    assert ("34020000001310000001", "PTZPreciseCtrl") in sim.front.commands


def test_ptzcmd_moves_turn_the_head_on_the_clock_until_stop() -> None:
    sim = Sim()
    assert sim.ptz(ptz.move("left", 255)) == "OK"
    sim.t += 2
    assert sim.position().pan == 360 - 2 * MAX_PAN_RATE  # wrapped below 0
    sim.ptz(ptz.move("stop"))
    sim.t += 5
    assert sim.position().pan == 360 - 2 * MAX_PAN_RATE
    sim.ptz(ptz.move("up", 255))
    sim.t += 10  # 400 degrees of tilt asked: stops at the top
    assert sim.position().tilt == 90.0
    sim.ptz(ptz.move("downright", 255))
    sim.t += 1
    assert (sim.position().tilt, sim.position().pan) == (90 - MAX_TILT_RATE, (360 - MAX_PAN_RATE) % 360)
    sim.ptz(ptz.move("zoomin", 255))  # zoom speed 15
    sim.t += 100
    assert sim.position().zoom == 30.0
    sim.ptz(ptz.lens("focus_near", 10))  # a lens command does not stop the zoom's motion model
    sim.ptz(ptz.move("zoomout", 255))
    sim.t += 100
    assert sim.position().zoom == 1.0


def test_presets_store_and_restore_the_position() -> None:
    sim = Sim()
    sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(pan=45, tilt=10, zoom=3))
    sim.ptz(ptz.preset(ptz.PRESET_SET, 4))
    sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(pan=200, tilt=-20, zoom=1))
    sim.ptz(ptz.preset(ptz.PRESET_CALL, 4))
    where = sim.position()
    assert (where.pan, where.tilt, where.zoom) == (45.0, 10.0, 3.0)
    sim.ptz(ptz.preset(ptz.PRESET_DELETE, 4))
    sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(pan=1))
    sim.ptz(ptz.preset(ptz.PRESET_CALL, 4))  # deleted: the camera stays
    assert sim.position().pan == 1.0


def test_cruise_commands_build_the_tracks_the_queries_answer() -> None:
    sim = Sim()
    for point in (3, 5, 7):
        sim.ptz(ptz.cruise(ptz.CRUISE_ADD, 1, point))
    sim.ptz(ptz.cruise(ptz.CRUISE_ADD, 2, 9))
    sim.ptz(ptz.cruise(ptz.CRUISE_DELETE, 1, 5))
    sim.ptz(ptz.cruise(ptz.CRUISE_SPEED, 1, 0x123))
    sim.ptz(ptz.cruise(ptz.CRUISE_DWELL, 1, 30))
    listed = sim.query("CruiseTrackListQuery")
    assert isinstance(listed, manscdp.CruiseTrackListResponse) and listed.sum_num == 2
    assert [(t.number, t.name) for t in listed.tracks] == [(1, "Cruise 1"), (2, "Cruise 2")]
    track = sim.query("CruiseTrackQuery", Number="1")
    assert isinstance(track, manscdp.CruiseTrackResponse) and (track.result, track.number) == ("OK", 1)
    assert [(p.preset_index, p.stay_time, p.speed) for p in track.points] == [(3, 30, 0x123), (7, 30, 0x123)]
    sim.ptz(ptz.cruise(ptz.CRUISE_DELETE, 2, 0))  # point 0: the whole track
    listed = sim.query("CruiseTrackListQuery")
    assert isinstance(listed, manscdp.CruiseTrackListResponse) and [t.number for t in listed.tracks] == [1]
    missing = sim.query("CruiseTrackQuery", Number="2")
    assert isinstance(missing, manscdp.CruiseTrackResponse) and (missing.result, missing.points) == ("ERROR", ())


def test_cruise_start_goes_to_the_first_point() -> None:
    sim = Sim()
    sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(pan=120, tilt=5))
    sim.ptz(ptz.preset(ptz.PRESET_SET, 3))
    sim.ptz(ptz.cruise(ptz.CRUISE_ADD, 1, 3))
    sim.control(ptz_precise_ctrl=manscdp.PtzPrecise(pan=10, tilt=0))
    sim.ptz(ptz.cruise(ptz.CRUISE_START, 1))
    assert (sim.position().pan, sim.position().tilt) == (120.0, 5.0)


def test_home_position_query_answers_what_the_2016_control_set() -> None:
    sim = Sim()
    before = sim.query("HomePositionQuery")
    assert isinstance(before, manscdp.HomePositionResponse) and before.home is not None
    assert before.home.is_enabled is False
    sim.control(home_position=manscdp.HomePosition(enabled=1, reset_time=60, preset_index=3))
    after = sim.query("HomePositionQuery")
    assert isinstance(after, manscdp.HomePositionResponse)
    assert after.home == manscdp.HomePositionInfo(enabled="1", reset_time=60, preset_index=3)


def test_target_tracking_mode_is_kept() -> None:
    sim = Sim()
    area = manscdp.TargetArea(length=1920, width=1080, mid_x=960, mid_y=540, length_x=200, length_y=400)
    assert sim.control(target_track=manscdp.TargetTrackMode.MANUAL) == "ERROR"  # no box to track
    assert CH not in sim.state.tracking
    assert sim.control(target_track=manscdp.TargetTrackMode.MANUAL, device_id2=CAM2, target_area=area) == "OK"
    assert (sim.state.tracking[CH].mode, sim.state.tracking[CH].linked_device_id) == (
        manscdp.TargetTrackMode.MANUAL, CAM2)
    assert sim.control(target_track=manscdp.TargetTrackMode.STOP) == "OK"
    assert sim.state.tracking[CH].mode is manscdp.TargetTrackMode.STOP


def test_a_malformed_ptzcmd_is_still_refused_by_the_front_end() -> None:
    sim = Sim()
    assert sim.control(ptz_cmd="A50F0000000000B5") == "ERROR"  # bad checksum
    assert sim.position().pan == 0.0
