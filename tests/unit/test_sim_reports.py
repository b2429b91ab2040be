"""The simulated device's alarms and positions (gbplatform/simulator/reports.py): the schedule, the
report path, the answers to the Alarm and MobilePosition queries (GB/T 28181-2016 §A.2.4.5, §A.2.4.8)."""

from __future__ import annotations

import itertools
from datetime import datetime

from twisted.internet.task import Clock

from gbplatform.simulator.reports import SimReports
from sip import manscdp
from sip.useragent import QueryAnswers

DEV = "34020000001320000001"
CH = "34020000001310000001"


def reports(clock: Clock, sent: list[tuple[str, bytes]], *, online: list[bool] | None = None,
            alarm_interval: float = 0.0, position_interval: float = 0.0) -> SimReports:
    sn = itertools.count(1)
    state = online if online is not None else [True]
    return SimReports(device_id=DEV, index=0, reactor=clock, send=lambda cmd, body: sent.append((cmd, body)),
                      next_sn=lambda: next(sn), charset=lambda: "GB2312", label=lambda body: body,
                      source=lambda: CH, online=lambda: state[0], alarm_interval=alarm_interval,
                      position_interval=position_interval)


def test_reports_on_a_schedule_through_the_report_path() -> None:
    clock = Clock()
    clock.advance(1_700_000_000)
    sent: list[tuple[str, bytes]] = []
    online = [True]
    r = reports(clock, sent, online=online, alarm_interval=30, position_interval=5)
    r.start()
    for _ in range(6):
        clock.advance(5)
    kinds = [cmd for cmd, _ in sent]
    assert kinds.count("MobilePosition") == 6 and kinds.count("Alarm") == 1
    alarm = manscdp.decode(next(body for cmd, body in sent if cmd == "Alarm"))
    assert isinstance(alarm, manscdp.AlarmNotify)
    assert (alarm.device_id, alarm.alarm_priority, alarm.alarm_method, alarm.alarm_type) == (CH, 1, 5, 2)
    positions = [manscdp.decode(body) for cmd, body in sent if cmd == "MobilePosition"]
    assert all(isinstance(p, manscdp.MobilePositionNotify) and p.device_id == DEV for p in positions)
    assert len({(p.longitude, p.latitude) for p in positions if isinstance(p, manscdp.MobilePositionNotify)}) == 6
    online[0] = False  # not registered: nothing is sent
    for _ in range(6):
        clock.advance(5)
    assert len(sent) == 7
    r.stop()
    assert clock.getDelayedCalls() == []


def test_no_intervals_no_timers_but_alarm_now() -> None:
    clock = Clock()
    sent: list[tuple[str, bytes]] = []
    r = reports(clock, sent)
    r.start()
    assert clock.getDelayedCalls() == []
    assert r.alarm_now() and [cmd for cmd, _ in sent] == ["Alarm"]


def test_answers_the_alarm_query_with_its_history_filtered() -> None:
    clock = Clock()
    clock.advance(1_700_000_000)
    sent: list[tuple[str, bytes]] = []
    r = reports(clock, sent)
    for _ in range(4):
        r.alarm_now()
    answers = QueryAnswers()
    r.register(answers)
    query = manscdp.decode(manscdp.encode_alarm_query(7, DEV))
    [body] = answers.answer(query)
    answer = manscdp.decode(body)
    assert isinstance(answer, manscdp.AlarmQueryResponse)
    assert answer.sn == 7 and answer.sum_num == len(answer.alarms) == 3 + 4  # seeded history + sent
    urgent = manscdp.decode(manscdp.encode_alarm_query(8, DEV, start_priority=1, end_priority=1,
                                                       start=datetime.fromtimestamp(clock.seconds() - 60)))
    [body] = answers.answer(urgent)
    answer = manscdp.decode(body)
    assert isinstance(answer, manscdp.AlarmQueryResponse)
    assert [a.alarm_priority for a in answer.alarms] == [1]
    position = manscdp.decode(answers.answer(manscdp.decode(manscdp.encode_mobile_position_query(9, DEV)))[0])
    assert isinstance(position, manscdp.MobilePositionNotify) and position.sn == 9
