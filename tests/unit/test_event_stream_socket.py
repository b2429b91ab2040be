"""The event stream over real sockets (a real reactor, ``twisted.trial``): a client that never reads fills its
connection, its response's producer is paused by twisted.web, and past ``api.event_client_buffer`` it is cut
off with ``event: overflow``, while a client that reads gets every event."""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from gbplatform.api.app import Api
from gbplatform.app.config import Config
from tests.unit.test_api import TOKEN, make_platform

DEV = "34020000001320000001"
PAD = "x" * 32 * 1024  # one event is about 32 KiB


class Reader(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        self.done.callback(None)


def turn() -> Deferred[None]:
    """Let the reactor run once (write to sockets, read from them)."""
    return deferLater(reactor, 0, lambda: None)  # type: ignore[arg-type]


class SlowClientTest(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_a_client_that_never_reads_is_cut_off_while_one_that_reads_gets_everything(self) -> Any:
        config = Config()
        platform, _ = make_platform(replace(config, api=replace(config.api, event_client_buffer=256 * 1024)))
        api = Api(platform)
        streams = api.event_routes.streams
        site = Site(api.app.resource())
        channels: list[Any] = []  # the server's side of each connection, closed by the test's end
        build = site.buildProtocol

        def track(addr: Any) -> Any:
            channel = build(addr)
            channels.append(getattr(channel, "_channel", channel))  # the HTTP/1.1 channel behind the wrapper
            return channel

        site.buildProtocol = track  # type: ignore[method-assign]
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        address = port.getHost()

        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", address.port))
        self.addCleanup(slow.close)
        slow.sendall(f"GET /api/v1/events?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{address.port}/api/v1/events".encode(),
            Headers({b"authorization": [f"Bearer {TOKEN}".encode()]}))
        self.assertEqual(response.code, 200)
        fast = Reader()
        response.deliverBody(fast)
        for _ in range(200):
            if len(streams.clients) == 2:
                break
            yield turn()
        self.assertEqual(len(streams.clients), 2)

        published = 0
        while streams.stats.overflowed == 0 and published < 2000:
            platform.bus.publish("position", device_id=DEV, pad=PAD)
            published += 1
            yield turn()
        self.assertEqual(streams.stats.overflowed, 1, "the slow client was never cut off")
        self.assertEqual(len(streams.clients), 1)
        for _ in range(5):
            platform.bus.publish("position", device_id=DEV, pad=PAD)
            published += 1
        for _ in range(2000):
            if fast.data.count(b"event: position") == published:
                break
            yield turn()
        self.assertEqual(fast.data.count(b"event: position"), published)  # nothing lost, nothing waited for
        streams.close_all("test over")
        yield fast.done
        slow.close()  # unread data: a reset, and the platform's side of it goes at once
        yield deferLater(reactor, 0.1, lambda: None)  # type: ignore[arg-type]
        # A loaded machine may not have seen both closes yet: end the server's side here, idle
        # timers (twisted.web's TimeoutMixin) included, so no later real-reactor test finds them.
        for channel in channels:
            channel.setTimeout(None)
            if channel.transport is not None and not channel.transport.disconnected:
                channel.transport.abortConnection()
        for _ in range(100):
            if all(c.transport is None or c.transport.disconnected for c in channels):
                break
            yield turn()
