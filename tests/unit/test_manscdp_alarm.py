"""Alarm and MobilePosition declarations (GB/T 28181-2016 §A.2.4.5, §A.2.4.8, §A.2.5.5, §A.2.5.6, §A.2.6.2):
round trips and the vendor variants accepted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sip import manscdp
from sip.manscdp.gbtime import parse_gb_time

SRC = "34020000001340000001"
DEV = "34020000001320000001"
T = datetime(2026, 12, 5, 8, 30, 15)


def test_alarm_notify_round_trip() -> None:
    body = manscdp.encode_alarm_notify(9, SRC, priority=1, method=5, time=T, description="越界", longitude=116.397,
                                       latitude=39.909, alarm_type=2, event_type=1)
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.AlarmNotify)
    assert (msg.sn, msg.device_id, msg.alarm_priority, msg.alarm_method, msg.alarm_time) == (9, SRC, 1, 5, T)
    assert (msg.alarm_description, msg.longitude, msg.latitude) == ("越界", 116.397, 39.909)
    assert (msg.alarm_type, msg.event_type) == (2, 1)
    assert b"<Info>\n<AlarmType>2</AlarmType>\n<AlarmTypeParam>\n<EventType>1</EventType>" in body


@pytest.mark.parametrize(("xml_time", "expected"), [
    ("2026-12-05T08:30", datetime(2026, 12, 5, 8, 30)),
    ("2026-12-05T08:30:15Z", T),
    ("2026-12-05 08:30:15.250", T + timedelta(milliseconds=250)),
    ("2026-12-05T08:30:15+08:00", T.replace(tzinfo=timezone(timedelta(hours=8)))),
])
def test_alarm_time_variants(xml_time: str, expected: datetime) -> None:
    body = (f'<?xml version="1.0"?><Notify><CmdType>Alarm</CmdType><SN>1</SN><DeviceID>{SRC}</DeviceID>'
            f"<AlarmPriority>1</AlarmPriority><AlarmMethod>2</AlarmMethod><AlarmTime>{xml_time}</AlarmTime>"
            "</Notify>").encode()
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.AlarmNotify) and msg.alarm_time == expected == parse_gb_time(xml_time)


def test_alarm_vendor_variants() -> None:
    """Lower-case names, spaces around numbers, no Info, AlarmType under the root, garbage coordinates."""
    body = (b'<?xml version="1.0" encoding="GB2312"?><notify><cmdtype>alarm</cmdtype><sn>3</sn>'
            b"<deviceid>" + SRC.encode() + b"</deviceid><alarmpriority> 4 </alarmpriority>"
            b"<ALARMMETHOD>2</ALARMMETHOD><AlarmTime>2026-12-05T08:30:15</AlarmTime>"
            b"<Longitude> 116.5 </Longitude><Latitude>north</Latitude><AlarmType>1</AlarmType></notify>")
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.AlarmNotify)
    assert (msg.alarm_priority, msg.alarm_method, msg.longitude, msg.latitude) == (4, 2, 116.5, None)
    assert (msg.info, msg.alarm_type, msg.event_type) == (None, 1, None)


def test_the_platforms_alarm_response_carries_only_result() -> None:
    body = manscdp.encode_alarm_ack(9, SRC)
    assert b"<Result>OK</Result>" in body and b"AlarmList" not in body and b"SumNum" not in body
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.AlarmQueryResponse)
    assert (msg.kind, msg.cmd_type, msg.sn, msg.device_id, msg.result, msg.alarms) == (
        "Response", "Alarm", 9, SRC, "OK", ())


def test_alarm_query_and_its_answer_round_trip() -> None:
    query = manscdp.decode(manscdp.encode_alarm_query(4, DEV, start_priority=1, end_priority=3, method="1/5",
                                                      alarm_type="2", start=T, end=T + timedelta(hours=1)))
    assert isinstance(query, manscdp.AlarmQuery)
    assert (query.start_alarm_priority, query.end_alarm_priority, query.alarm_method, query.alarm_type) == (
        1, 3, "1/5", "2")
    assert (query.start_alarm_time, query.end_alarm_time) == (T, T + timedelta(hours=1))
    empty = manscdp.decode(manscdp.encode_alarm_query(5, DEV))
    assert isinstance(empty, manscdp.AlarmQuery) and empty.start_alarm_priority is None
    items = [manscdp.alarm_item(SRC, priority=2, method=5, time=T, alarm_type=2, event_type=1, longitude=1.5,
                                latitude=2.5)]
    answer = manscdp.decode(manscdp.encode_alarm_query_response(4, DEV, 3, items))
    assert isinstance(answer, manscdp.AlarmQueryResponse)
    assert (answer.result, answer.sum_num, answer.num) == ("OK", 3, 1)
    [item] = answer.alarms
    assert (item.device_id, item.alarm_priority, item.alarm_time, item.alarm_type, item.event_type) == (
        SRC, 2, T, 2, 1)


def test_mobile_position_round_trip_and_variants() -> None:
    body = manscdp.encode_mobile_position(6, DEV, time=T, longitude=116.4, latitude=39.9, speed=40.0,
                                          direction=90.5, altitude=12.0)
    msg = manscdp.decode(body)
    assert isinstance(msg, manscdp.MobilePositionNotify)
    assert (msg.time, msg.longitude, msg.latitude, msg.speed, msg.direction, msg.altitude) == (
        T, 116.4, 39.9, 40.0, 90.5, 12.0)
    sparse = manscdp.decode(
        b"<?xml version=\"1.0\"?><Notify><CmdType>mobileposition</CmdType><SN>1</SN><DeviceID>" + DEV.encode()
        + b"</DeviceID><Time>2026-12-05T08:30Z</Time><Longitude>116.4 </Longitude><Latitude> 39.9</Latitude>"
        b"</Notify>")
    assert isinstance(sparse, manscdp.MobilePositionNotify)
    assert (sparse.time, sparse.longitude, sparse.latitude, sparse.speed) == (datetime(2026, 12, 5, 8, 30),
                                                                             116.4, 39.9, None)


def test_mobile_position_query_round_trip() -> None:
    msg = manscdp.decode(manscdp.encode_mobile_position_query(2, DEV, interval=5))
    assert isinstance(msg, manscdp.MobilePositionQuery) and msg.interval == 5
