"""``GET /api/v1/events``: SSE framing, filters, Last-Event-ID replay and reset, keepalives on the clock,
slow clients cut off while the others keep receiving, the 503 past the client bound, and the route over
StubTreq (headers, ``?token=``, 400s)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from gbplatform.api.app import Api, redact_token
from gbplatform.api.schemas import ValidationError
from gbplatform.app.config import Config
from gbplatform.core.clock import FakeClock
from gbplatform.events.bus import EventBus
from gbplatform.events.sse import (
    EventFilter,
    EventStreams,
    TooManyClients,
    parse_filter,
    parse_last_event_id,
)
from tests.unit.platform_harness import result_of
from tests.unit.test_api import TOKEN, Client, make_platform

DEV = "34020000001320000001"
DEV2 = "34020000001320000002"
CH = "34020000001310000001"


class Sink:
    """A connection in memory: what was written, and whether it was closed."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: str | None = None

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self, reason: str) -> None:
        self.closed = reason

    def frames(self) -> list[dict[str, Any]]:
        """Each SSE block as {field: value} (comments under ':'), in order (HTML §9.2.6)."""
        out = []
        for block in self.data.decode().split("\n\n"):
            if not block:
                continue
            fields: dict[str, Any] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = value
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
            out.append(fields)
        return out

    def events(self) -> list[dict[str, Any]]:
        return [f for f in self.frames() if "event" in f]


def hub(**kw: Any) -> tuple[EventBus, EventStreams, FakeClock]:
    clock = FakeClock()
    bus = EventBus(clock, backlog=kw.pop("backlog", 5))
    return bus, EventStreams(bus, clock, **kw), clock


def test_an_event_is_id_event_data_and_a_blank_line() -> None:
    bus, streams, clock = hub()
    sink = Sink()
    streams.open(sink, EventFilter()).start(None)
    assert sink.data == b"retry: 3000\nid: 0\n\n"  # where the client is, before any event
    bus.publish("alarm", device_id=DEV, channel_id=CH, priority=1, description="line\nbreak")
    block = sink.data.split(b"\n\n")[1]
    lines = block.split(b"\n")
    assert lines[:2] == [b"id: 1", b"event: alarm"]
    assert len(lines) == 3 and lines[2].startswith(b"data: ")  # one data line: JSON escapes the newline
    assert json.loads(lines[2][6:]) == {"id": 1, "type": "alarm", "time": clock.time(), "device_id": DEV,
                                        "channel_id": CH, "priority": 1, "description": "line\nbreak"}


def test_filters_by_type_device_and_channel() -> None:
    bus, streams, _ = hub()
    sinks = {name: Sink() for name in ("all", "types", "device", "channel")}
    filters = {
        "all": parse_filter({}),
        "types": parse_filter({b"types": [b"alarm,device"]}),
        "device": parse_filter({b"device_id": [DEV2.encode()]}),
        "channel": parse_filter({b"channel_id": [CH.encode(), b"x"]}),
    }
    for name, sink in sinks.items():
        streams.open(sink, filters[name]).start(None)
    bus.publish("alarm", device_id=DEV, channel_id=CH)
    bus.publish("device", device_id=DEV2)
    bus.publish("stream", device_id=DEV, channel_id="other")
    got = {name: [e["id"] for e in sink.events()] for name, sink in sinks.items()}
    assert got == {"all": ["1", "2", "3"], "types": ["1", "2"], "device": ["2"], "channel": ["1"]}
    assert streams.stats.events_sent == 3 + 2 + 1 + 1


def test_bad_filters_are_400s_naming_the_field() -> None:
    with pytest.raises(ValidationError) as e:
        parse_filter({b"types": [b"alarm,weather"]})
    assert e.value.field == "types" and "weather" in e.value.message
    with pytest.raises(ValidationError) as e:
        parse_filter({b"device_id": [b"\xff"]})
    assert e.value.field == "device_id"
    with pytest.raises(ValidationError) as e:
        parse_filter({b"channel_id": [b"a" * 65]})
    assert e.value.field == "channel_id"
    assert parse_filter({b"types": [b" alarm , ", b"ptz"], b"device_id": [b""]}) == EventFilter(
        types=frozenset({"alarm", "ptz"}))
    with pytest.raises(ValidationError) as e:
        parse_last_event_id(b"12a", {})
    assert e.value.field == "last_event_id"
    assert parse_last_event_id(None, {b"last_event_id": [b"7"]}) == 7
    assert parse_last_event_id(b"9", {b"last_event_id": [b"7"]}) == 9  # the header wins
    assert parse_last_event_id(b" ", {}) is None


def test_last_event_id_replays_what_was_missed_through_the_filter() -> None:
    bus, streams, _ = hub()
    for n in range(4):
        bus.publish("alarm" if n % 2 else "device", device_id=DEV, n=n)
    sink = Sink()
    streams.open(sink, parse_filter({b"types": [b"alarm"]})).start(1)
    assert sink.frames()[0] == {"retry": "3000"}
    assert [e["data"]["n"] for e in sink.events()] == [1, 3]
    bus.publish("alarm", device_id=DEV, n=4)
    assert [e["id"] for e in sink.events()] == ["2", "4", "5"]


def test_a_position_no_longer_kept_or_from_before_a_restart_gets_reset() -> None:
    bus, streams, _ = hub(backlog=5)
    for _ in range(8):
        bus.publish("device", device_id=DEV)
    old = Sink()
    streams.open(old, EventFilter()).start(1)  # 2..3 are gone
    (reset,) = old.events()
    assert reset["event"] == "reset" and reset["id"] == "8"  # the client goes on from the latest
    assert reset["data"] == {"type": "reset", "last_event_id": 1, "id": 8,
                             "reason": "events after it are no longer kept"}
    ahead = Sink()
    streams.open(ahead, EventFilter()).start(50)
    assert ahead.events()[0]["data"]["reason"] == "the platform restarted since that event"
    current = Sink()
    streams.open(current, EventFilter()).start(8)
    assert current.events() == []
    bus.publish("device", device_id=DEV)
    assert [e["id"] for e in old.events()] == ["8", "9"] and [e["id"] for e in current.events()] == ["9"]


def test_keepalive_comments_come_on_the_clock() -> None:
    bus, streams, clock = hub(keepalive=15.0)
    sink = Sink()
    client = streams.open(sink, EventFilter())
    client.start(None)
    clock.advance(14.9)
    assert b"keepalive" not in sink.data
    clock.advance(0.1)
    assert sink.data.endswith(b"\n\n: keepalive\n\n")
    clock.pump([15, 15])
    assert sink.data.count(b": keepalive\n\n") == 3
    client.close("gone")
    assert clock.pending() == 0  # no timer left behind


def test_a_slow_client_is_cut_off_and_the_others_keep_receiving() -> None:
    bus, streams, _ = hub(max_buffer=4096)
    slow, fast = Sink(), Sink()
    slow_client = streams.open(slow, EventFilter(), peer="192.0.2.1:5000")
    slow_client.start(None)
    streams.open(fast, EventFilter()).start(None)
    slow_client.pauseProducing()  # its connection's send buffer is full
    written = len(slow.data)
    for n in range(3):
        bus.publish("position", device_id=DEV, pad="x" * 1000, n=n)
    assert len(slow.data) == written and slow_client.queued > 3000  # queued, not written
    slow_client.resumeProducing()  # it drained: the queue goes out in order
    assert [e["data"]["n"] for e in slow.events()] == [0, 1, 2] and slow_client.queued == 0
    slow_client.pauseProducing()
    for n in range(3, 10):
        bus.publish("position", device_id=DEV, pad="x" * 1000, n=n)
    assert slow.closed == "overflow" and slow_client.closed
    assert slow.events()[-1]["event"] == "overflow"  # best effort, behind what was queued
    assert slow.events()[-1]["data"]["type"] == "overflow"
    assert streams.stats.overflowed == 1 and len(streams.clients) == 1
    assert [e["data"]["n"] for e in fast.events()] == list(range(10))
    bus.publish("position", device_id=DEV, n=10)  # the cut-off client gets nothing more
    assert slow.events()[-1]["event"] == "overflow" and fast.events()[-1]["data"]["n"] == 10


def test_clients_are_bounded_and_a_closed_one_unsubscribes_at_once() -> None:
    bus, streams, _ = hub(max_clients=2)
    first = streams.open(Sink(), EventFilter())
    streams.open(Sink(), EventFilter())
    with pytest.raises(TooManyClients):
        streams.open(Sink(), EventFilter())
    assert streams.stats.rejected == 1 and bus.listeners == 1  # one bus listener for every client
    first.stopProducing()  # the connection was lost
    assert len(streams.clients) == 1
    streams.open(Sink(), EventFilter())
    streams.close_all("stopping")
    assert streams.clients == [] and bus.listeners == 0


# -- the route ----------------------------------------------------------------------------


class Stream:
    """A GET /api/v1/events over StubTreq, its body collected as it comes."""

    def __init__(self, client: Client, query: str = "", *, token: str | None = TOKEN,
                 headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.body = b""
        self.d: Deferred[Any] = client.start("GET", "/events" + query, token=token, headers=headers)
        client.stub.flush()
        self.response = result_of(self.d)
        if self.response.code == 200:
            import treq

            self.done = treq.collect(self.response, self._chunk)

    def _chunk(self, data: bytes) -> None:
        self.body += data

    def read(self) -> bytes:
        self.client.stub.flush()
        return self.body


def test_the_route_streams_with_sse_headers_and_takes_the_token_in_the_query() -> None:
    platform, clock = make_platform()
    client = Client(Api(platform))
    base = platform.bus.last_id  # each run's ids start at its start time (run_first_id)
    stream = Stream(client, f"?types=device&token={TOKEN}", token=None)
    assert stream.response.code == 200
    assert stream.response.headers.getRawHeaders("Content-Type") == ["text/event-stream; charset=utf-8"]
    assert stream.response.headers.getRawHeaders("Cache-Control") == ["no-store"]
    platform.bus.publish("alarm", device_id=DEV)
    platform.bus.publish("device", device_id=DEV, event="registered")
    body = stream.read()
    assert body.startswith(b"retry: 3000\nid: %d\n\n" % base)
    assert b"event: alarm" not in body and b"id: %d\nevent: device\ndata: {" % (base + 2) in body
    clock.advance(15)
    assert stream.read().endswith(b": keepalive\n\n")
    stats = client("GET", "/events/stats")
    assert stats.json["stream"]["clients"] == 1 and stats.json["published"] == {"alarm": 1, "device": 1}
    assert stats.json["webhooks"] == {"types": [], "targets": []}
    # The access log never shows the token (gbplatform.api.app.access_log_line).
    assert redact_token(f"/api/v1/events?types=device&token={TOKEN}".encode()) == (
        b"/api/v1/events?types=device&token=***")


def test_the_route_replays_from_the_last_event_id_header() -> None:
    platform, _ = make_platform()
    client = Client(Api(platform))
    first, second, third = (platform.bus.publish("alarm", device_id=DEV, n=n).id for n in range(3))
    stream = Stream(client, headers={"Last-Event-ID": str(first)})
    body = stream.read()
    assert b"id: %d\nevent: alarm" % second in body and b"id: %d\nevent: alarm" % third in body
    assert b"id: %d\n" % first not in body


def test_the_route_refuses_bad_queries_missing_tokens_and_too_many_clients() -> None:
    config = Config()
    platform, _ = make_platform(replace(config, api=replace(config.api, event_clients=1)))
    client = Client(Api(platform))
    reply = client("GET", "/events?types=weather")
    assert reply.code == 400 and reply.json["error"]["field"] == "types"
    reply = client("GET", "/events", headers={"Last-Event-ID": "x"})
    assert reply.code == 400 and reply.json["error"]["field"] == "last_event_id"
    assert client("GET", "/events", token=None).code == 401
    assert client("GET", "/events?token=wrong", token=None).code == 401
    first = Stream(client)
    assert first.response.code == 200
    reply = client("GET", "/events")
    assert reply.code == 503 and reply.json["error"]["code"] == "too_many_event_clients"
    assert client("GET", "/events/stats").json["stream"]["rejected"] == 1


def test_data_keys_named_like_the_envelope_are_prefixed_with_the_kind() -> None:
    bus, _, clock = hub()
    event = bus.publish("alarm", device_id=DEV, id=77, type=5, time="2026-12-05T08:30:00Z", priority=1)
    assert json.loads(event.json()) == {"id": 1, "type": "alarm", "time": clock.time(), "device_id": DEV,
                                        "channel_id": None, "alarm_id": 77, "alarm_type": 5,
                                        "alarm_time": "2026-12-05T08:30:00Z", "priority": 1}


def test_a_replay_bigger_than_the_buffer_of_a_paused_client_overflows_at_once() -> None:
    bus, streams, clock = hub(backlog=50, max_buffer=4096)
    for n in range(20):
        bus.publish("position", device_id=DEV, pad="x" * 500, n=n)
    sink = Sink()
    client = streams.open(sink, EventFilter())
    client.pauseProducing()  # the connection is full before the first byte (a pipelined response ahead)
    client.start(0)
    assert sink.closed == "overflow" and streams.clients == [] and clock.pending() == 0
    assert sink.events()[-1]["event"] == "overflow"


def every_response() -> None:
    """``GET /api/v1/events/stats`` built once and validated against its component (``test_shapes`` records
    which shapes were sent), with a webhook target in it."""
    import jsonschema

    from gbplatform.api.openapi import build_openapi
    from gbplatform.app.config import WebhooksConfig
    from gbplatform.events.webhooks import Webhooks

    platform, clock = make_platform()
    platform.webhooks = Webhooks(WebhooksConfig(urls=("http://u:p@hooks.example/x",)), clock,
                                 lambda url, body, headers: Deferred())
    platform.webhooks.start(platform.bus)
    platform.bus.publish("device", device_id=DEV, event="registered")
    reply = Client(Api(platform))("GET", "/events/stats")
    assert reply.code == 200
    doc = build_openapi("x")
    schema = {**doc["components"]["schemas"]["EventStats"], "$defs": doc["components"]["schemas"]}
    jsonschema.validate(reply.json, json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/")))
    assert reply.json["webhooks"]["targets"][0]["url"] == "http://***@hooks.example/x"
    example = doc["paths"]["/api/v1/events/stats"]["get"]["responses"]["200"]["content"]["application/json"]
    jsonschema.validate(example["examples"]["running"]["value"],
                        json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/")))
    platform.db.engine.dispose()


def test_the_stats_answer_and_its_example_match_the_schema() -> None:
    every_response()
