"""``GET /api/v1/events`` (Server-Sent Events) and ``GET /api/v1/events/stats``.

``EventRoutes`` is mounted into the root API (``gbplatform.api.app``). The
stream is a long-lived response, like HTTP-FLV (``gbplatform.outputs.http``):
the route writes the headers, hands the request to ``EventStreams`` as a
``ClientSink`` and awaits a Deferred that fires only when the stream ends
(overflow, shutdown); Klein cancels it when the client goes away. Each
client is its response's push producer (``request.registerProducer``), so
the connection's send buffer pauses it: see ``gbplatform.events.sse``.

Browsers' ``EventSource`` cannot set headers, so besides ``Authorization:
Bearer`` the API token is also taken as ``?token=`` (RFC 6750 §2.3); the
access log writes ``token=***`` (``gbplatform.api.app.access_log_line``).
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from gbplatform.api.routing import Routes, Web, set_header
from gbplatform.core.clock import Clock
from gbplatform.events.shapes import EventStats, StreamStats, WebhookStats
from gbplatform.events.sse import EVENT_STREAM_TYPE, EventStreams, parse_filter, parse_last_event_id

__all__ = ["EventRoutes"]

log = Logger()

#: Seconds a disconnected slow client may take to read what its connection still holds; then it is cut.
CLOSE_GRACE = 10.0


def _peer(request: Request) -> str:
    addr = request.getClientAddress()  # type: ignore[no-untyped-call]
    return f"{getattr(addr, 'host', addr)}:{getattr(addr, 'port', '')}"


class _RequestSink:
    """A client's request as the stream's ``ClientSink``."""

    def __init__(self, request: Request, clock: Clock, ended: Deferred[None]) -> None:
        self.request = request
        self.clock = clock
        self.ended = ended
        self.gone = False  # the response is finished or the connection lost: nothing more is written
        request.notifyFinish().addBoth(self._finished)

    def _finished(self, _: object) -> None:
        self.gone = True

    def write(self, data: bytes) -> None:
        if not self.gone:
            self.request.write(data)  # type: ignore[no-untyped-call]

    def close(self, reason: str) -> None:
        if self.gone:
            return
        transport: Any = self.request.transport
        self.request.unregisterProducer()  # type: ignore[no-untyped-call]
        if not self.ended.called:
            self.ended.callback(None)  # the route returns; Klein finishes the response (last chunk)
        if transport is None:
            return
        # Not kept alive for another request: a client cut off for being slow, or at shutdown,
        # reconnects anew. What the socket holds is sent first, for CLOSE_GRACE seconds at most.
        transport.loseConnection()
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            self.clock.call_later(CLOSE_GRACE, abort)


class EventRoutes(Routes):
    """``/api/v1/events`` and ``/api/v1/events/stats``."""

    app = Klein()

    def __init__(self, web: Web) -> None:
        super().__init__(web)
        api = self.platform.config.api
        self.streams = EventStreams(self.platform.bus, self.platform.clock, max_clients=api.event_clients,
                                    keepalive=api.event_keepalive, max_buffer=api.event_client_buffer)

    @app.route("/api/v1/events", methods=["GET"])
    async def events(self, request: Request) -> bytes:
        self.authorize(request, query_token=True)
        event_filter = parse_filter(request.args)
        last_id = parse_last_event_id(request.getHeader(b"last-event-id"), request.args)
        ended: Deferred[None] = Deferred()
        sink = _RequestSink(request, self.platform.clock, ended)
        client = self.streams.open(sink, event_filter, peer=_peer(request))  # 503 past api.event_clients
        try:
            request.setResponseCode(200)
            set_header(request, b"Content-Type", EVENT_STREAM_TYPE)
            set_header(request, b"Cache-Control", b"no-store")
            # nginx buffers proxied responses unless told not to; an event must not wait there.
            set_header(request, b"X-Accel-Buffering", b"no")
            # Before the first write: a full send buffer must already pause this client.
            request.registerProducer(client, True)  # type: ignore[no-untyped-call]
            client.start(last_id)
            # Fires when the stream ends here (overflow, shutdown); Klein cancels it when the client leaves.
            await ended
        finally:
            client.close("connection closed")
            if not sink.gone:
                request.unregisterProducer()  # type: ignore[no-untyped-call]
        return b""

    @app.route("/api/v1/events/stats", methods=["GET"])
    async def stats(self, request: Request) -> bytes:
        self.authorize(request)
        bus = self.platform.bus
        s = self.streams.stats
        webhooks = self.platform.webhooks
        return self._json(request, EventStats(
            last_id=bus.last_id,
            published=dict(bus.published),
            stream=StreamStats(clients=len(self.streams.clients), max_clients=self.streams.max_clients,
                               accepted=s.accepted, rejected=s.rejected, overflowed=s.overflowed,
                               events_sent=s.events_sent),
            webhooks=webhooks.state() if webhooks is not None else WebhookStats(types=[], targets=[]),
        ))
