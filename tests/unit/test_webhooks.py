"""Webhooks: order per URL, retry with exponential back-off on the clock, 4xx not retried, the bounded queue,
the HMAC signature, the type filter and the stats; ``AgentPoster`` against a fake agent."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from gbplatform.app.config import WebhooksConfig
from gbplatform.core.clock import FakeClock
from gbplatform.events.bus import EventBus
from gbplatform.events.webhooks import AgentPoster, Webhooks, redact_url, signature
from tests.unit.platform_harness import result_of

DEV = "34020000001320000001"
A, B = "http://a.example/hook", "https://user:pw@b.example/hook?x=1"


@dataclass
class Call:
    url: str
    body: bytes
    headers: dict[str, str]
    answer: Deferred[int] = field(default_factory=Deferred)

    @property
    def event(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


class Poster:
    """Records each POST; the test answers it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        call = Call(url, body, headers)
        self.calls.append(call)
        return call.answer

    def to(self, url: str) -> list[Call]:
        return [c for c in self.calls if c.url == url]


def setup(**kw: Any) -> tuple[EventBus, Webhooks, Poster, FakeClock]:
    clock = FakeClock()
    bus = EventBus(clock)
    poster = Poster()
    hooks = Webhooks(WebhooksConfig(**{"urls": (A,), **kw}), clock, poster)
    hooks.start(bus)
    return bus, hooks, poster, clock


def test_each_url_gets_every_event_in_order_one_at_a_time() -> None:
    bus, hooks, poster, _ = setup(urls=(A, B))
    for n in range(3):
        bus.publish("alarm", device_id=DEV, n=n)
    assert [c.event["n"] for c in poster.to(A)] == [0] and [c.event["n"] for c in poster.to(B)] == [0]
    first = poster.to(A)[0]
    assert first.event == {"id": 1, "type": "alarm", "time": FakeClock.DEFAULT_WALL_START, "device_id": DEV,
                           "channel_id": None, "n": 0}
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-GBPlatform-Event"] == "alarm" and first.headers["X-GBPlatform-Delivery"] == "1"
    assert "X-GBPlatform-Signature" not in first.headers
    first.answer.callback(200)
    assert [c.event["n"] for c in poster.to(A)] == [0, 1]  # the next goes once the first is answered
    poster.to(A)[1].answer.callback(204)
    poster.to(A)[2].answer.callback(200)
    (state_a, state_b) = hooks.state().targets
    assert (state_a.delivered, state_a.queued, state_a.last_status) == (3, 0, 200)
    assert (state_b.delivered, state_b.queued) == (0, 2)
    assert state_b.url == "https://***@b.example/hook?x=1"  # no password in the stats


def test_5xx_and_connection_errors_are_retried_with_exponential_back_off() -> None:
    bus, hooks, poster, clock = setup(max_attempts=4)
    bus.publish("device", device_id=DEV)
    bus.publish("device", device_id=DEV, n=2)
    poster.calls[0].answer.callback(503)
    assert len(poster.calls) == 1
    clock.advance(0.999)
    assert len(poster.calls) == 1
    clock.advance(0.001)  # 1 s after the first failure
    assert len(poster.calls) == 2 and poster.calls[1].event["id"] == 1  # the same event: order is kept
    poster.calls[1].answer.errback(Failure(ConnectionRefusedError()))
    clock.advance(1.999)
    assert len(poster.calls) == 2
    clock.advance(0.001)  # then 2 s
    poster.calls[2].answer.callback(429)  # "try later" is retried too
    clock.advance(4)  # then 4 s
    assert len(poster.calls) == 4
    poster.calls[3].answer.callback(200)
    assert poster.calls[4].event["id"] == 2  # only now the next event
    target = hooks.state().targets[0]
    assert (target.delivered, target.retries, target.failed, target.last_error) == (1, 3, 0, "HTTP 429")


def test_an_event_is_given_up_after_max_attempts_and_4xx_is_not_retried() -> None:
    bus, hooks, poster, clock = setup(max_attempts=2)
    bus.publish("record", device_id=DEV)
    bus.publish("record", device_id=DEV)
    bus.publish("record", device_id=DEV)
    poster.calls[0].answer.callback(500)
    clock.advance(1)
    poster.calls[1].answer.callback(502)
    assert poster.calls[2].event["id"] == 2  # given up after 2 attempts: the next goes at once
    poster.calls[2].answer.callback(400)
    assert poster.calls[3].event["id"] == 3  # refused: not retried
    poster.calls[3].answer.callback(200)
    target = hooks.state().targets[0]
    assert (target.failed, target.rejected, target.delivered, target.retries) == (1, 1, 1, 1)
    assert clock.pending() == 0


def test_back_off_is_capped_at_60_s() -> None:
    bus, _, poster, clock = setup(max_attempts=10)
    bus.publish("alarm", device_id=DEV)
    waits = []
    for _ in range(8):
        poster.calls[-1].answer.callback(500)
        before = len(poster.calls)
        waited = 0.0
        while len(poster.calls) == before:
            clock.advance(1)
            waited += 1
        waits.append(waited)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_full_queue_drops_the_oldest_waiting_event() -> None:
    bus, hooks, poster, _ = setup(max_queue=2)
    for n in range(5):
        bus.publish("position", device_id=DEV, n=n)
    # 0 is in flight; 1 and 2 were dropped for 3 and 4.
    assert hooks.state().targets[0].dropped == 2 and hooks.state().targets[0].queued == 2
    poster.calls[0].answer.callback(200)
    poster.calls[1].answer.callback(200)
    poster.calls[2].answer.callback(200)
    assert [c.event["n"] for c in poster.calls] == [0, 3, 4]


def test_the_signature_is_the_hmac_sha256_of_the_body() -> None:
    bus, _, poster, _ = setup(secret="s3cret")
    bus.publish("alarm", device_id=DEV)
    call = poster.calls[0]
    expected = "sha256=" + hmac.new(b"s3cret", call.body, hashlib.sha256).hexdigest()
    assert call.headers["X-GBPlatform-Signature"] == expected == signature("s3cret", call.body)


def test_only_the_configured_types_are_sent_and_stop_cancels_retries() -> None:
    bus, hooks, poster, clock = setup(types=("alarm",))
    bus.publish("device", device_id=DEV)
    bus.publish("alarm", device_id=DEV)
    assert [c.event["type"] for c in poster.calls] == ["alarm"]
    poster.calls[0].answer.callback(503)
    hooks.stop()
    assert clock.pending() == 0 and bus.listeners == 0
    clock.advance(100)
    assert len(poster.calls) == 1


def test_synchronous_answers_do_not_recurse() -> None:
    clock = FakeClock()
    bus = EventBus(clock, backlog=10)
    sent: list[bytes] = []

    def post(url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        sent.append(body)
        return succeed(200)

    hooks = Webhooks(WebhooksConfig(urls=(A,), max_queue=5000), clock, post)
    hooks.start(bus)
    for _ in range(3000):
        bus.publish("position", device_id=DEV)
    assert len(sent) == 3000 and hooks.state().targets[0].delivered == 3000


def test_redact_url() -> None:
    assert redact_url("http://u:p@h/x") == "http://***@h/x"
    assert redact_url("http://h/x@y") == "http://h/x@y"


# -- AgentPoster against a fake IAgent ---------------------------------------------------


class FakeResponse:
    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.body = body

    def deliverBody(self, protocol: Any) -> None:  # noqa: N802 - Twisted's name
        protocol.makeConnection(None)
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


class FakeAgent:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, bytes, Any, bytes]] = []
        self.answer: Deferred[Any] = Deferred()

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Deferred[Any]:
        written: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                written.append(data)

        body.startProducing(Consumer())
        assert body.length == len(b"".join(written))
        self.requests.append((method, uri, headers, b"".join(written)))
        return self.answer


def test_agent_poster_posts_the_body_and_answers_the_status() -> None:
    clock = FakeClock()
    agent = FakeAgent()
    poster = AgentPoster(clock.reactor, 5.0, agent=agent)
    d = poster(A, b'{"id":1}', {"Content-Type": "application/json", "X-GBPlatform-Event": "alarm"})
    ((method, uri, headers, body),) = agent.requests
    assert (method, uri, body) == (b"POST", A.encode(), b'{"id":1}')
    assert headers.getRawHeaders(b"x-gbplatform-event") == [b"alarm"]
    agent.answer.callback(FakeResponse(202, b"ok"))
    assert result_of(d) == 202


def test_agent_poster_times_out() -> None:
    clock = FakeClock()
    agent = FakeAgent()
    poster = AgentPoster(clock.reactor, 5.0, agent=agent)
    d = poster(A, b"{}", {})
    failures: list[Failure] = []
    d.addErrback(failures.append)
    clock.advance(4.9)
    assert not failures
    clock.advance(0.1)
    assert len(failures) == 1 and isinstance(failures[0].value, DeferredTimeout)
