"""The GB/T 28181-2022 configuration types (DeviceConfig §A.2.3.2, ConfigDownload §A.2.4.7/§A.2.6.8):
their declaration (encode → decode, vendor variants), the API against an in-memory device (GET typed,
PUT per type, 400 naming the field, 422 for a 2016 device, 404/409/504) and the simulator's state.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gbplatform.api.app import Api
from gbplatform.control.config2022 import KINDS
from gbplatform.simulator.config_state import defaults
from sip import manscdp
from tests.unit.platform_harness import DEV, FakeDevice, Harness
from tests.unit.test_api import Client, Reply
from tests.unit.test_control import nvr

# One value of each 2022 type, as the DeviceConfig/ConfigDownload attribute carrying it.
VALUES: dict[str, object] = {
    "video_param_attribute": (
        manscdp.VideoStreamAttribute(stream_number=0, video_format="2", resolution="6", frame_rate=25,
                                     bit_rate_type=1, video_bit_rate=4096),
        manscdp.VideoStreamAttribute(stream_number=1, video_format="5", resolution="4", frame_rate=15,
                                     bit_rate_type=2, video_bit_rate=512)),
    "video_record_plan": manscdp.VideoRecordPlan(record_enable=1, stream_number=0, record_schedules=(
        manscdp.RecordSchedule(week_day_num=1, time_segments=(
            manscdp.TimeSegment(start_hour=8, start_min=0, start_sec=0, stop_hour=12, stop_min=0, stop_sec=0),
            manscdp.TimeSegment(start_hour=13, start_min=30, start_sec=0, stop_hour=18, stop_min=0, stop_sec=0))),
        manscdp.RecordSchedule(week_day_num=7, time_segments=()))),
    "video_alarm_record": manscdp.VideoAlarmRecord(record_enable=1, record_time=30, pre_record_time=5,
                                                   stream_number=1),
    "picture_mask": manscdp.PictureMask(on=1, regions=(manscdp.MaskRegion(seq=1, point="10,20,110,220"),
                                                       manscdp.MaskRegion(seq=2, point="0,0,5,5"))),
    "frame_mirror": 2,
    "alarm_report": manscdp.AlarmReport(motion_detection=1, field_detection=0),
    "osd_config": manscdp.OsdConfig(length=1920, width=1080, time_x=16, time_y=16, time_enable=1, time_type=1,
                                    text_enable=1, items=(manscdp.OsdText(text="大门 1", x=16, y=1040),
                                                          manscdp.OsdText(text="B&C", x=900, y=500))),
}
TYPE_OF = {attr: name for name, attr in manscdp.CONFIG_TYPES_2022.items()}


# --- the declaration ----------------------------------------------------------------------------

@pytest.mark.parametrize("attr", sorted(VALUES))
@pytest.mark.parametrize("charset", ["GB2312", "UTF-8"])
def test_each_type_round_trips_through_device_config_and_config_download(attr: str, charset: str) -> None:
    value = VALUES[attr]
    sent = manscdp.decode(manscdp.encode_device_config(3, DEV, charset=charset, **{attr: value}))
    assert isinstance(sent, manscdp.DeviceConfig) and getattr(sent, attr) == value
    assert sent.basic_param is None and all(getattr(sent, other) is None for other in VALUES if other != attr)
    answer = manscdp.decode(manscdp.encode_config_download_response(4, DEV, None, charset=charset, **{attr: value}))
    assert isinstance(answer, manscdp.ConfigDownloadResponse) and getattr(answer, attr) == value
    assert answer.result == "OK"


def test_every_type_in_one_answer_in_the_standard_element_shapes() -> None:
    raw = manscdp.encode_config_download_response(5, DEV, None, **VALUES)
    text = raw.decode("gb2312")
    # Lists without a wrapper are one element per item; with one, Num is the number of items.
    assert text.count("<RecordSchedule>") == 2 and text.count("<TimeSegment>") == 2
    assert "<RecordScheduleSumNum>2</RecordScheduleSumNum>" in text
    assert "<TimeSegmentSumNum>0</TimeSegmentSumNum>" in text
    assert '<VideoParamAttribute Num="2">' in text and '<RegionList Num="2">' in text
    assert "<FrameMirror>2</FrameMirror>" in text and "<SumNum>2</SumNum>" in text
    assert "B&amp;C" in text
    msg = manscdp.decode(raw)
    assert isinstance(msg, manscdp.ConfigDownloadResponse)
    assert {attr: getattr(msg, attr) for attr in VALUES} == VALUES
    assert msg.mirror == 2


def test_an_absent_type_is_none_and_not_written_an_empty_list_is_empty() -> None:
    raw = manscdp.encode_device_config(1, DEV, frame_mirror=0)
    assert b"VideoParamAttribute" not in raw and b"OSDConfig" not in raw
    msg = manscdp.decode(raw)
    assert isinstance(msg, manscdp.DeviceConfig) and msg.video_param_attribute is None and msg.frame_mirror == 0
    empty = manscdp.decode(manscdp.encode_device_config(1, DEV, video_param_attribute=()))
    assert isinstance(empty, manscdp.DeviceConfig) and empty.video_param_attribute == ()


def _answer(inner: str) -> manscdp.ConfigDownloadResponse:
    msg = manscdp.decode(f'<?xml version="1.0" encoding="UTF-8"?><Response><CmdType>ConfigDownload</CmdType>'
                         f"<SN>9</SN><DeviceID>{DEV}</DeviceID><Result>OK</Result>{inner}</Response>".encode())
    assert isinstance(msg, manscdp.ConfigDownloadResponse)
    return msg


def test_vendor_variants_are_read() -> None:
    msg = _answer(
        # Any case; a Num attribute on each RecordSchedule/TimeSegment (seen in vendor SDKs); StreamName.
        "<videorecordplan><RECORDENABLE>1</RECORDENABLE><RecordScheduleSumNum>1</RecordScheduleSumNum>"
        '<RecordSchedule Num="1"><WeekDayNum>3</WeekDayNum><TimeSegmentSumNum>1</TimeSegmentSumNum>'
        '<TimeSegment Num="1"><StartHour>1</StartHour><StartMin>2</StartMin><StartSec>3</StartSec>'
        "<StopHour>4</StopHour><StopMin>5</StopMin><StopSec>6</StopSec></TimeSegment></RecordSchedule>"
        "<StreamNumber>0</StreamNumber></videorecordplan>"
        "<VideoParamAttribute><Item><StreamName>main</StreamName><VideoFormat>H.265</VideoFormat></Item>"
        "</VideoParamAttribute>"
        # The nested spelling of FrameMirror.
        "<FrameMirror><FrameMirrorType>3</FrameMirrorType></FrameMirror>"
        "<osdconfig><Length>704</Length><Width>576</Width><SumNum>1</SumNum><item><text>x</text><x>1</x><y>2</y>"
        "</item></osdconfig>")
    plan = msg.video_record_plan
    assert plan is not None and plan.record_enable == 1 and plan.record_schedule_sum_num == 1
    assert plan.record_schedules == (manscdp.RecordSchedule(week_day_num=3, time_segment_sum_num=1, time_segments=(
        manscdp.TimeSegment(start_hour=1, start_min=2, start_sec=3, stop_hour=4, stop_min=5, stop_sec=6),)),)
    assert msg.video_param_attribute == (manscdp.VideoStreamAttribute(stream_name="main", video_format="H.265"),)
    assert msg.frame_mirror is None and msg.mirror == 3
    assert msg.osd_config == manscdp.OsdConfig(length=704, width=576, sum_num=1,
                                               items=(manscdp.OsdText(text="x", x=1, y=2),))


def test_bad_numbers_are_logged_and_dropped_not_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sip.manscdp"):
        msg = _answer("<VideoAlarmRecord><RecordEnable>yes</RecordEnable><RecordTime>30</RecordTime>"
                      "</VideoAlarmRecord><PictureMask><On>1</On><SumNum>x</SumNum><RegionList><Item><Seq>1</Seq>"
                      "<Point>1,2,3</Point></Item></RegionList></PictureMask><FrameMirror>left</FrameMirror>")
    assert msg.video_alarm_record == manscdp.VideoAlarmRecord(record_time=30)
    mask = msg.picture_mask
    assert mask is not None and mask.sum_num == 1  # a garbled count becomes the number of regions
    assert mask.regions[0].point == "1,2,3" and mask.regions[0].box() is None
    assert msg.mirror is None
    assert "RecordEnable" in caplog.text and "FrameMirror" in caplog.text


def test_counts_a_device_sends_are_kept_and_unset_ones_count_the_items() -> None:
    assert manscdp.OsdConfig(items=(manscdp.OsdText(text="a"),)).sum_num == 1
    assert manscdp.OsdConfig(sum_num=5).sum_num == 5
    assert _answer("<PictureMask><On>0</On><SumNum>4</SumNum></PictureMask>").picture_mask == manscdp.PictureMask(
        on=0, sum_num=4)


# --- the API --------------------------------------------------------------------------------------

@pytest.fixture
def client(h: Harness) -> Client:
    return Client(Api(h.platform))


def get_config(h: Harness, client: Client, config_type: str, answer: FakeDevice | None = None,
               **values: object) -> Reply:
    d = client.start("GET", f"/devices/{DEV}/config?type={config_type}")
    h.pump()
    if answer is not None:
        query = answer.last_query("ConfigDownload")
        answer.message(manscdp.encode_config_download_response(query.sn, DEV, None, **values))
    return client.finish(d)


def put_config(h: Harness, client: Client, kind: str, body: Any, answer: FakeDevice | None = None,
               result: str = "OK", device_id: str = DEV) -> Reply:
    d = client.start("PUT", f"/devices/{device_id}/config/{kind}", body=body)
    h.pump()
    if answer is not None:
        msg = answer.last_query("DeviceConfig")
        answer.message(manscdp.encode_config_response(msg.sn, msg.device_id, result=result))
    return client.finish(d)


EXPECTED_JSON: dict[str, Any] = {
    "video_param_attribute": [
        {"stream_number": 0, "stream_name": None, "video_format": "2", "resolution": "6", "frame_rate": 25,
         "bit_rate_type": 1, "video_bit_rate": 4096},
        {"stream_number": 1, "stream_name": None, "video_format": "5", "resolution": "4", "frame_rate": 15,
         "bit_rate_type": 2, "video_bit_rate": 512}],
    "video_record_plan": {"record_enable": True, "stream_number": 0, "schedules": [
        {"week_day": 1, "segments": [
            {"start_hour": 8, "start_min": 0, "start_sec": 0, "stop_hour": 12, "stop_min": 0, "stop_sec": 0},
            {"start_hour": 13, "start_min": 30, "start_sec": 0, "stop_hour": 18, "stop_min": 0, "stop_sec": 0}]},
        {"week_day": 7, "segments": []}]},
    "video_alarm_record": {"record_enable": True, "stream_number": 1, "record_time": 30, "pre_record_time": 5},
    "picture_mask": {"on": True, "regions": [{"seq": 1, "x1": 10, "y1": 20, "x2": 110, "y2": 220},
                                             {"seq": 2, "x1": 0, "y1": 0, "x2": 5, "y2": 5}]},
    "frame_mirror": 2,
    "alarm_report": {"motion_detection": True, "field_detection": False},
    "osd_config": {"length": 1920, "width": 1080, "time_enable": True, "time_type": 1, "time_x": 16, "time_y": 16,
                   "text_enable": True, "items": [{"text": "大门 1", "x": 16, "y": 1040},
                                                  {"text": "B&C", "x": 900, "y": 500}]},
}


@pytest.mark.parametrize("attr", sorted(VALUES))
def test_get_config_answers_each_2022_type_typed(h: Harness, client: Client, attr: str) -> None:
    dev = nvr(h)
    reply = get_config(h, client, TYPE_OF[attr], dev, **{attr: VALUES[attr]})
    assert reply.code == 200, reply.json
    assert dev.last_query("ConfigDownload").fields["ConfigType"] == TYPE_OF[attr]
    assert reply.json["config_type"] == TYPE_OF[attr] and reply.json["result"] == "OK"
    assert reply.json[attr] == EXPECTED_JSON[attr]
    assert all(reply.json[other] is None for other in VALUES if other != attr)
    assert reply.json["basic_param"] is None and reply.json["svac"] is None


def test_a_full_answer_matches_the_openapi_component_and_examples_validate(h: Harness, client: Client) -> None:
    """Every 2022 member set at once (and a garbled mask point) validates against DeviceConfigResult; each
    PUT's OpenAPI examples validate against its body schema."""
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform.api.openapi import build_openapi

    doc = build_openapi("x")
    components = doc["components"]
    dev = nvr(h)
    values = {**VALUES, "picture_mask": manscdp.PictureMask(on=1, regions=(manscdp.MaskRegion(seq=1, point="x"),))}
    reply = get_config(h, client, "PictureMask", dev, **values)
    assert reply.code == 200 and reply.json["picture_mask"]["regions"] == [
        {"seq": 1, "x1": None, "y1": None, "x2": None, "y2": None}]
    jsonschema.Draft202012Validator({"$ref": "#/components/schemas/DeviceConfigResult",
                                     "components": components}).validate(reply.json)
    for kind in KINDS.values():
        op = doc["paths"][f"/api/v1/devices/{{device_id}}/config/{kind.kind}"]["put"]
        content = op["requestBody"]["content"]["application/json"]
        assert content["examples"] and "422" in op["responses"]
        for example in content["examples"].values():
            jsonschema.Draft202012Validator({**content["schema"], "components": components}).validate(
                example["value"])


def test_the_type_is_matched_in_any_case_and_sent_as_the_standard_spells_it(h: Harness, client: Client) -> None:
    dev = nvr(h)
    reply = get_config(h, client, "osdconfig", dev, osd_config=VALUES["osd_config"])
    assert reply.code == 200 and reply.json["config_type"] == "OSDConfig"
    assert dev.last_query("ConfigDownload").fields["ConfigType"] == "OSDConfig"


# What each PUT sends: the body, and the value the DeviceConfig carries.
PUTS: list[tuple[str, dict[str, Any], str, object]] = [
    ("video-attribute", {"streams": [{"stream_number": 1, "frame_rate": 10, "video_bit_rate": 256}]},
     "video_param_attribute", (manscdp.VideoStreamAttribute(stream_number=1, frame_rate=10, video_bit_rate=256),)),
    ("record-plan", {"record_enable": True, "schedules": [
        {"week_day": 2, "segments": [{"start_hour": 8, "stop_hour": 17, "stop_min": 30, "stop_sec": 0}]}]},
     "video_record_plan", manscdp.VideoRecordPlan(record_enable=1, stream_number=0, record_schedules=(
         manscdp.RecordSchedule(week_day_num=2, time_segments=(manscdp.TimeSegment(
             start_hour=8, start_min=0, start_sec=0, stop_hour=17, stop_min=30, stop_sec=0),)),))),
    ("record-plan", {"record_enable": False}, "video_record_plan",
     manscdp.VideoRecordPlan(record_enable=0, stream_number=0)),
    ("alarm-record", {"record_enable": True, "record_time": 60}, "video_alarm_record",
     manscdp.VideoAlarmRecord(record_enable=1, stream_number=0, record_time=60)),
    ("picture-mask", {"on": True, "regions": [{"x1": 1, "y1": 2, "x2": 3, "y2": 4},
                                              {"seq": 4, "x1": 0, "y1": 0, "x2": 9, "y2": 9}]},
     "picture_mask", manscdp.PictureMask(on=1, regions=(manscdp.MaskRegion(seq=1, point="1,2,3,4"),
                                                        manscdp.MaskRegion(seq=4, point="0,0,9,9")))),
    ("frame-mirror", {"mirror": 3}, "frame_mirror", 3),
    ("alarm-report", {"field_detection": True}, "alarm_report", manscdp.AlarmReport(field_detection=1)),
    ("osd", {"length": 704, "width": 576, "items": [{"text": "门", "x": 704, "y": 576}]}, "osd_config",
     manscdp.OsdConfig(length=704, width=576, time_x=0, time_y=0, time_enable=1, time_type=0, text_enable=0,
                       items=(manscdp.OsdText(text="门", x=704, y=576),))),
]


@pytest.mark.parametrize(("kind", "body", "attr", "sent"), PUTS)
def test_put_sends_the_device_config_of_its_type(h: Harness, client: Client, kind: str, body: dict[str, Any],
                                                 attr: str, sent: object) -> None:
    dev = nvr(h)
    before = h.platform.bus.last_id
    reply = put_config(h, client, kind, body, answer=dev)
    assert reply.code == 200, reply.json
    assert reply.json == {"device_id": DEV, "target_id": DEV, "command": TYPE_OF[attr], "result": "OK"}
    msg = dev.last_query("DeviceConfig")
    assert isinstance(msg, manscdp.DeviceConfig) and msg.device_id == DEV
    assert getattr(msg, attr) == sent
    assert msg.basic_param is None and all(getattr(msg, other) is None for other in VALUES if other != attr)
    events = h.platform.bus.since(before)
    assert events is not None
    assert [(e.kind, e.data["event"], e.data["config_type"]) for e in events if e.data.get("event") == "configured"] \
        == [("device", "configured", TYPE_OF[attr])]


def test_a_refused_device_config_is_answered_and_publishes_nothing(h: Harness, client: Client) -> None:
    dev = nvr(h)
    before = h.platform.bus.last_id
    reply = put_config(h, client, "frame-mirror", {"mirror": 1}, answer=dev, result="ERROR")
    assert reply.code == 200 and reply.json["result"] == "ERROR"
    assert not [e for e in h.platform.bus.since(before) or [] if e.data.get("event") == "configured"]


def test_every_kind_has_a_route_and_an_example_that_validates(h: Harness, client: Client) -> None:
    dev = nvr(h)
    for kind in KINDS.values():
        for name, example in kind.examples.items():
            reply = put_config(h, client, kind.kind, example, answer=dev)
            assert reply.code == 200, (kind.kind, name, reply.json)


def every_response() -> None:
    """Every JSON answer of the 2022 configuration routes (success paths) once, validated against its
    OpenAPI component (``test_shapes`` records which shapes were sent)."""
    jsonschema = pytest.importorskip("jsonschema")
    from gbplatform.api.openapi import build_openapi

    components = build_openapi("x")["components"]

    def check(reply: Reply, name: str) -> None:
        assert reply.code == 200, reply.json
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components}).validate(
            reply.json)

    h = Harness()
    try:
        client = Client(Api(h.platform))
        dev = nvr(h)
        check(get_config(h, client, "OSDConfig", dev, **VALUES), "DeviceConfigResult")
        for kind in KINDS.values():
            example = next(iter(kind.examples.values()))
            check(put_config(h, client, kind.kind, example, answer=dev), "CommandResult")
        assert not h.failures(), h.failures()
    finally:
        h.close()


def test_responses_match_their_openapi_components() -> None:
    every_response()


@pytest.mark.parametrize(("kind", "body", "field"), [
    ("video-attribute", {}, "streams"),
    ("video-attribute", {"streams": []}, "streams"),
    ("video-attribute", {"streams": [{"stream_number": 8}]}, "streams"),
    ("video-attribute", {"streams": [{"stream_number": 0}, {"stream_number": 0}]}, "streams"),
    ("video-attribute", {"streams": [{"stream_number": 0, "frame_rate": 0}]}, "streams"),
    ("video-attribute", {"streams": [{"stream_number": 0, "bit_rate_type": 3}]}, "streams"),
    ("video-attribute", {"streams": [{"stream_number": 0, "resolution": "1080 p"}]}, "streams"),
    ("record-plan", {}, "record_enable"),
    ("record-plan", {"record_enable": 1}, "record_enable"),
    ("record-plan", {"record_enable": True, "stream_number": 9}, "stream_number"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 0, "segments": []}]}, "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 8, "segments": []}]}, "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": d, "segments": []} for d in range(1, 9)]},
     "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 1, "segments": []},
                                                          {"week_day": 1, "segments": []}]}, "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 1, "segments": [{"start_hour": 24}]}]},
     "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 1, "segments": [
        {"start_hour": 1, "start_min": 60}]}]}, "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 1, "segments": [
        {"start_hour": 1, "start_sec": 60}]}]}, "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 1, "segments": [
        {"start_hour": 9, "stop_hour": 8}]}]}, "schedules"),
    ("record-plan", {"record_enable": True, "schedules": [{"week_day": 1, "segments": [
        {"start_hour": h} for h in range(9)]}]}, "schedules"),
    ("alarm-record", {"record_enable": True, "record_time": 3601}, "record_time"),
    ("alarm-record", {"record_enable": True, "pre_record_time": -1}, "pre_record_time"),
    ("picture-mask", {"on": True, "regions": [{"x1": 1, "y1": 1, "x2": 1, "y2": 5}]}, "regions"),
    ("picture-mask", {"on": True, "regions": [{"x1": 0, "y1": 0, "x2": 1, "y2": 1, "seq": 5}]}, "regions"),
    ("picture-mask", {"on": True, "regions": [{"x1": 0, "y1": 0, "x2": 1, "y2": 1}] * 5}, "regions"),
    ("picture-mask", {"on": True, "regions": [{"x1": 0, "y1": 0, "x2": 1, "y2": 1, "seq": 1},
                                              {"x1": 0, "y1": 0, "x2": 1, "y2": 1, "seq": 1}]}, "regions"),
    ("frame-mirror", {}, "mirror"),
    ("frame-mirror", {"mirror": 4}, "mirror"),
    ("frame-mirror", {"mirror": 1, "flip": True}, "flip"),
    ("alarm-report", {}, "motion_detection"),
    ("alarm-report", {"motion_detection": "on"}, "motion_detection"),
    ("osd", {"width": 576}, "length"),
    ("osd", {"length": 704, "width": 576, "time_x": 705}, "time_x"),
    ("osd", {"length": 704, "width": 576, "time_y": 577}, "time_y"),
    ("osd", {"length": 704, "width": 576, "time_type": 2}, "time_type"),
    ("osd", {"length": 704, "width": 576, "items": [{"text": "a", "x": 705, "y": 0}]}, "items"),
    ("osd", {"length": 704, "width": 576, "items": [{"text": "", "x": 0, "y": 0}]}, "items"),
    ("osd", {"length": 704, "width": 576, "items": [{"text": "a\nb", "x": 0, "y": 0}]}, "items"),
    ("osd", {"length": 704, "width": 576, "items": [{"text": "a", "x": 0, "y": 0}] * 9}, "items"),
])
def test_bad_bodies_are_400_naming_the_field_and_send_nothing(h: Harness, client: Client, kind: str,
                                                              body: Any, field: str) -> None:
    dev = nvr(h)
    reply = put_config(h, client, kind, body)
    assert reply.code == 400, reply.json
    assert reply.json["error"]["code"] == "invalid" and reply.json["error"]["field"] == field, reply.json
    assert dev.queries("DeviceConfig") == []


def test_a_2016_device_is_refused_422_before_anything_is_sent(h: Harness, client: Client) -> None:
    dev = h.registered_device(x_gb_ver=None)  # no X-GB-Ver: a GB/T 28181-2016 device
    assert h.platform.control.devices.gb_version(DEV) == "2016"
    sent = len(dev.queries("ConfigDownload")), len(dev.queries("DeviceConfig"))
    reply = get_config(h, client, "PictureMask")
    assert (reply.code, reply.json["error"]["code"]) == (422, "unsupported_by_device_dialect"), reply.json
    for kind in KINDS.values():
        body = next(iter(kind.examples.values()))
        reply = put_config(h, client, kind.kind, body)
        assert (reply.code, reply.json["error"]["code"]) == (422, "unsupported_by_device_dialect"), kind.kind
        assert kind.config_type in reply.json["error"]["message"]
    assert (len(dev.queries("ConfigDownload")), len(dev.queries("DeviceConfig"))) == sent
    # The 2016 types still go to it.
    d = client.start("GET", f"/devices/{DEV}/config?type=VideoParamOpt")
    h.pump()
    assert dev.last_query("ConfigDownload").fields["ConfigType"] == "VideoParamOpt"
    dev.message(manscdp.encode_config_download_response(dev.last_query("ConfigDownload").sn, DEV, None,
                                                        video_param_opt=manscdp.VideoParamOpt(resolution="5")))
    assert client.finish(d).code == 200


def test_404_409_and_504(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert put_config(h, client, "osd", {"length": 10, "width": 10}, device_id="34020000001320000099").code == 404
    d = client.start("PUT", f"/devices/{DEV}/config/frame-mirror", body={"mirror": 1})
    h.pump()
    h.advance(h.config.sip.query_timeout + 0.1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")
    d = client.start("GET", f"/devices/{DEV}/config?type=FrameMirror")
    h.pump()
    h.advance(h.config.sip.query_timeout + 0.1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")
    assert dev.register_auth(expires=0).status == 200
    reply = put_config(h, client, "frame-mirror", {"mirror": 1})
    assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")
    reply = get_config(h, client, "FrameMirror")
    assert (reply.code, reply.json["error"]["code"]) == (409, "device_offline")


# --- the simulator's state ----------------------------------------------------------------------

def test_the_simulator_answers_defaults_and_then_what_was_set() -> None:
    state = defaults("Cam")
    every = [name.lower() for name in manscdp.CONFIG_TYPES_2022]
    first = state.download(every)
    assert set(first) == set(VALUES)
    osd = first["osd_config"]
    assert isinstance(osd, manscdp.OsdConfig) and osd.items[0].text == "Cam"
    assert state.download(["basicparam"]) == {}
    for attr, value in VALUES.items():
        done = state.apply(manscdp.DeviceConfig(kind="Control", cmd_type="DeviceConfig", sn=1, device_id=DEV,
                                                charset="GB2312", **{attr: value}))
        assert done == [TYPE_OF[attr]]
        assert state.download([TYPE_OF[attr].lower()]) == {attr: value}


def test_the_simulator_changes_streams_one_by_one_and_switches_leaf_by_leaf() -> None:
    state = defaults("Cam")
    state.apply(manscdp.DeviceConfig(
        kind="Control", cmd_type="DeviceConfig", sn=1, device_id=DEV, charset="GB2312",
        video_param_attribute=(manscdp.VideoStreamAttribute(stream_number=1, frame_rate=5),
                               manscdp.VideoStreamAttribute(stream_number=2, video_format="2")),
        alarm_report=manscdp.AlarmReport(field_detection=1)))
    streams = state.download(["videoparamattribute"])["video_param_attribute"]
    assert isinstance(streams, tuple) and [(s.stream_number, s.frame_rate, s.video_bit_rate) for s in streams] == [
        (0, 25, 4096), (1, 5, 512), (2, None, None)]
    assert state.alarm_report == manscdp.AlarmReport(motion_detection=1, field_detection=1)
    nothing = manscdp.DeviceConfig(kind="Control", cmd_type="DeviceConfig", sn=1, device_id=DEV, charset="GB2312",
                                   frame_mirror=7)
    assert state.apply(nothing) == [] and state.frame_mirror == 0
