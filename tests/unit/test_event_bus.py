"""The event bus: numbering, backlog bounds, replay after a reconnect, listener isolation."""

from __future__ import annotations

import json

import pytest

from gbplatform.core.clock import FakeClock
from gbplatform.events.bus import EVENT_KINDS, Event, EventBus


def test_events_are_numbered_stamped_and_handed_to_every_listener() -> None:
    clock = FakeClock()
    bus = EventBus(clock)
    first: list[Event] = []
    second: list[Event] = []
    bus.listen(first.append)
    bus.listen(second.append)
    clock.advance(5)
    event = bus.publish("alarm", device_id="34020000001320000001", channel_id="34020000001340000001", priority=1)
    assert (event.id, event.kind, event.time) == (1, "alarm", clock.time())
    assert first == second == [event]
    assert json.loads(event.json()) == {"id": 1, "type": "alarm", "time": clock.time(),
                                        "device_id": "34020000001320000001",
                                        "channel_id": "34020000001340000001", "priority": 1}
    assert (event.device_id, event.channel_id) == ("34020000001320000001", "34020000001340000001")
    assert bus.publish("device", device_id="x").id == 2
    assert bus.last_id == 2 and bus.published == {"alarm": 1, "device": 1}


def test_since_replays_what_the_backlog_holds_and_says_when_it_does_not() -> None:
    bus = EventBus(FakeClock(), backlog=3)
    assert bus.since(0) == []
    for n in range(5):
        bus.publish("position", device_id="d", n=n)
    assert [e.id for e in bus.since(2)] == [3, 4, 5]
    assert [e.id for e in bus.since(4)] == [5]
    assert bus.since(5) == [] and bus.since(99) == []
    assert bus.since(1) is None  # event 2 is gone: the client must resynchronise


def test_a_failing_listener_is_logged_and_the_others_still_receive() -> None:
    bus = EventBus(FakeClock())
    got: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("consumer bug")

    from twisted.logger import globalLogPublisher

    logged: list[dict[str, object]] = []
    bus.listen(broken)
    bus.listen(got.append)
    globalLogPublisher.addObserver(logged.append)
    try:
        bus.publish("stream", device_id="d")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert len(got) == 1
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["kind"] == "stream" and "failed on" in str(failures[0]["log_format"])


def test_a_stopped_listener_receives_nothing_more() -> None:
    bus = EventBus(FakeClock())
    got: list[Event] = []
    stop = bus.listen(got.append)
    bus.publish("record", device_id="d")
    stop()
    stop()  # twice is harmless
    bus.publish("record", device_id="d")
    assert len(got) == 1 and bus.listeners == 0


def test_unknown_kinds_and_empty_backlogs_are_refused() -> None:
    bus = EventBus(FakeClock())
    with pytest.raises(ValueError, match="unknown event kind"):
        bus.publish("weather", device_id=None)
    with pytest.raises(ValueError):
        EventBus(FakeClock(), backlog=0)
    assert "alarm" in EVENT_KINDS


def test_ids_keep_increasing_across_a_restart() -> None:
    from gbplatform.events.bus import run_first_id

    clock = FakeClock()
    before = EventBus(clock, first_id=run_first_id(clock))
    last = [before.publish("device", device_id="d").id for _ in range(1000)][-1]
    clock.advance(1)  # the platform restarts a second later
    after = EventBus(clock, first_id=run_first_id(clock))
    assert after.since(last) is None  # the reconnecting client is told to resynchronise
    assert after.publish("device", device_id="d").id > last
    assert after.last_id < 2**53


def test_kept_is_the_backlog_oldest_first() -> None:
    bus = EventBus(FakeClock(), backlog=2, first_id=500)
    for _ in range(3):
        bus.publish("stream", device_id="d")
    assert [e.id for e in bus.kept()] == [501, 502]
