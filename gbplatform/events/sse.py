"""The event bus as Server-Sent Events: the core of ``GET /api/v1/events``.

Theory of operation
-------------------
The wire format is the W3C/WHATWG HTML Standard's "Server-sent events"
(§9.2, ``text/event-stream``): fields are ``name: value`` lines, a blank line
ends an event. Each bus event is sent as::

    id: 42
    event: alarm
    data: {"id":42,"type":"alarm","time":1700000000.0,"device_id":...}

``data`` is the event's JSON on one line (``Event.json()``: JSON escapes
newlines, so one ``data:`` line always carries all of it). A stream starts
with ``retry: <ms>`` (how long an ``EventSource`` waits before it
reconnects) and ``id: <last id>`` (so a client that reconnects before any
event still tells where it was), and then every ``keepalive`` seconds a
comment line (``: keepalive``), which clients ignore and which keeps proxies
from closing an idle connection.

Resuming: a client that reconnects sends the last id it saw
(``Last-Event-ID``, §9.2.4; or ``?last_event_id=``). The bus's backlog
replays what came after it (``EventBus.since``). When the backlog no longer
holds all of them (also after a platform restart: each run's ids start
above the last run's, ``run_first_id``), or the id is ahead of the bus (a
clock stepped back), the client gets ``event: reset`` with ``id:`` set to
the bus's latest event: it must resynchronise from the API, then goes on
from there.

Slow clients never slow the platform. The bus hands an event to every
client at once, on the reactor thread; writing it only appends to the
connection's buffer. The HTTP connection tells its producer (each client is
an ``IPushProducer`` registered on its request) to pause when the socket's
send buffer is full (twisted's ``bufferSize``, 64 KiB); while paused, events
queue in the client, counted in bytes. Past ``max_buffer`` bytes the client
gets ``event: overflow`` (best effort: it goes behind what the socket still
holds) and is disconnected; the count is in the stats and the log line is
throttled (``media.logthrottle``). A client that goes away is dropped at
once (its request's ``notifyFinish``, or ``stopProducing``).

This module is the part without Twisted's HTTP: ``EventStreams`` is given a
``ClientSink`` per connection (write, close) by ``gbplatform.events.http``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from twisted.logger import Logger

from gbplatform.api.schemas import ValidationError
from gbplatform.core.clock import Clock, DelayedCallLike
from gbplatform.core.errors import DomainError
from gbplatform.events.bus import EVENT_KINDS, Event, EventBus
from media.logthrottle import LogThrottle

__all__ = [
    "EVENT_STREAM_TYPE",
    "ClientSink",
    "EventClient",
    "EventFilter",
    "EventStreams",
    "TooManyClients",
    "comment_frame",
    "event_frame",
    "parse_filter",
    "parse_last_event_id",
]

log = Logger()

EVENT_STREAM_TYPE: Final = b"text/event-stream; charset=utf-8"
#: ``retry:`` sent once per stream: an EventSource reconnects this many milliseconds after a drop.
RETRY_MS: Final = 3000
#: Most IDs in one ``device_id`` or ``channel_id`` filter (a query string is not a database).
MAX_FILTER_IDS: Final = 1000
MAX_ID_LENGTH: Final = 64

_NO_NEWLINES = str.maketrans({"\r": " ", "\n": " "})


class TooManyClients(DomainError):
    """``api.event_clients`` streams are open already (API: 503)."""

    status = 503
    code = "too_many_event_clients"


def event_frame(event: Event) -> bytes:
    """One bus event as an SSE event (``id``, ``event``, ``data``, blank line)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode("ascii"), event.json())


def control_frame(kind: str, data: bytes, event_id: int | None = None) -> bytes:
    """A stream-level event (``reset``, ``overflow``); with ``event_id`` it also moves the client's position."""
    head = b"id: %d\n" % event_id if event_id is not None else b""
    return head + b"event: %s\ndata: %s\n\n" % (kind.encode("ascii"), data)


def comment_frame(text: str) -> bytes:
    """A comment line (§9.2.6: a line starting with ``:`` is ignored by the client)."""
    return b": " + text.translate(_NO_NEWLINES).encode("utf-8") + b"\n\n"


# -- the query ---------------------------------------------------------------------------

Args = Mapping[bytes, list[bytes]]


def _values(args: Args, name: str) -> list[str]:
    """Every value of a repeatable, comma-separated parameter, stripped, empty ones left out."""
    out: list[str] = []
    for raw in args.get(name.encode(), []):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError(name, "is not UTF-8") from None
        out.extend(part.strip() for part in text.split(",") if part.strip())
    return out


def _ids(args: Args, name: str) -> frozenset[str] | None:
    values = _values(args, name)
    if not values:
        return None
    if len(values) > MAX_FILTER_IDS:
        raise ValidationError(name, f"at most {MAX_FILTER_IDS} IDs")
    for value in values:
        if len(value) > MAX_ID_LENGTH or not value.isprintable():
            raise ValidationError(name, f"{value[:MAX_ID_LENGTH]!r} is not an ID")
    return frozenset(values)


@dataclass(frozen=True)
class EventFilter:
    """Which events a client wants: kinds, devices, channels (``None``: any)."""

    types: frozenset[str] | None = None
    device_ids: frozenset[str] | None = None
    channel_ids: frozenset[str] | None = None

    def matches(self, event: Event) -> bool:
        if self.types is not None and event.kind not in self.types:
            return False
        if self.device_ids is not None and event.device_id not in self.device_ids:
            return False
        return self.channel_ids is None or event.channel_id in self.channel_ids


def parse_filter(args: Args) -> EventFilter:
    """``types=alarm,device``, ``device_id=`` and ``channel_id=`` (each repeatable or a comma list)."""
    types = _values(args, "types")
    unknown = [t for t in types if t not in EVENT_KINDS]
    if unknown:
        raise ValidationError("types", f"unknown event type {unknown[0][:32]!r}; one of {', '.join(EVENT_KINDS)}")
    return EventFilter(
        types=frozenset(types) if types else None,
        device_ids=_ids(args, "device_id"),
        channel_ids=_ids(args, "channel_id"),
    )


def parse_last_event_id(header: bytes | None, args: Args) -> int | None:
    """Where a reconnecting client was: the ``Last-Event-ID`` header (§9.2.4), else ``?last_event_id=``."""
    raw = header
    if raw is None:
        given = args.get(b"last_event_id")
        raw = given[0] if given else None
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 18:
        raise ValidationError("last_event_id", "an event id (a whole number) is required")
    return int(text)


# -- clients ------------------------------------------------------------------------------


class ClientSink(Protocol):
    """One client's connection as the stream sees it (``gbplatform.events.http`` adapts a request)."""

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the connection (never blocks; the connection buffers)."""

    def close(self, reason: str) -> None:
        """End the response and the connection (what was written is still sent)."""


@dataclass
class _Stats:
    accepted: int = 0
    rejected: int = 0
    overflowed: int = 0
    events_sent: int = 0
    closed: int = 0


class EventClient:
    """One connected client: its filter, its queue while the connection is paused, its keepalive timer.

    It is the ``IPushProducer`` of its response: the connection calls
    ``pauseProducing`` when its send buffer is full and ``resumeProducing``
    when it has drained.
    """

    def __init__(self, hub: EventStreams, sink: ClientSink, event_filter: EventFilter, peer: str) -> None:
        self.hub = hub
        self.sink = sink
        self.filter = event_filter
        self.peer = peer
        self.paused = False
        self.closed = False
        self.queue: deque[bytes] = deque()
        self.queued = 0  # bytes in ``queue``: what the connection has not taken yet
        self.sent = 0
        self._timer: DelayedCallLike | None = None

    # -- producer interface (twisted.internet.interfaces.IPushProducer) ----------------
    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = False
        # Writing may pause us again (the buffer fills): stop there, the rest waits.
        while self.queue and not self.paused and not self.closed:
            data = self.queue.popleft()
            self.queued -= len(data)
            self.sink.write(data)

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        """The connection is gone."""
        self.close("connection lost")

    # -- sending -----------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.paused and not self.queue:
            self.sink.write(data)
            return
        self.queue.append(data)
        self.queued += len(data)
        if self.queued > self.hub.max_buffer:
            self.hub.overflow(self)

    def deliver(self, frame: bytes) -> None:
        """An event this client's filter matched."""
        self.sent += 1
        self.hub.stats.events_sent += 1
        self.send(frame)

    def start(self, last_id: int | None) -> None:
        """``retry``, the position, then what was missed since ``last_id`` (or ``reset``)."""
        bus = self.hub.bus
        if last_id is None:
            self.send(b"retry: %d\nid: %d\n\n" % (RETRY_MS, bus.last_id))
        else:
            self.send(b"retry: %d\n\n" % RETRY_MS)
            missed = bus.since(last_id) if last_id <= bus.last_id else None
            if missed is None:
                reason = ("the platform restarted since that event" if last_id > bus.last_id
                          else "events after it are no longer kept")
                body = b'{"type":"reset","last_event_id":%d,"id":%d,"reason":"%s"}' % (
                    last_id, bus.last_id, reason.encode())
                self.send(control_frame("reset", body, bus.last_id))
            else:
                for event in missed:
                    if self.filter.matches(event):
                        self.deliver(event_frame(event))
        self._arm()

    def _arm(self) -> None:
        if not self.closed:  # a replay can overflow and close the client before its first timer
            self._timer = self.hub.clock.call_later(self.hub.keepalive, self._keepalive)

    def _keepalive(self) -> None:
        self._timer = None
        if self.closed:
            return
        if not self.queue:  # a paused client is not idle: its connection is full
            self.send(comment_frame("keepalive"))
        self._arm()

    def close(self, reason: str) -> None:
        """Stop: no more events, no timer; the hub forgets the client. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.queue.clear()
        self.queued = 0
        self.hub.forget(self, reason)


class EventStreams:
    """Every connected event-stream client, fed from the bus (see the module docstring)."""

    def __init__(self, bus: EventBus, clock: Clock, *, max_clients: int = 100, keepalive: float = 15.0,
                 max_buffer: int = 1024 * 1024) -> None:
        self.bus = bus
        self.clock = clock
        self.max_clients = max_clients
        self.keepalive = keepalive
        self.max_buffer = max_buffer
        self.clients: list[EventClient] = []
        self.stats = _Stats()
        self._throttle = LogThrottle(10.0)
        self._stop_listening: Callable[[], None] | None = None

    def open(self, sink: ClientSink, event_filter: EventFilter, *, peer: str = "") -> EventClient:
        """A new client (``start`` begins its stream); ``TooManyClients`` past ``max_clients``."""
        if len(self.clients) >= self.max_clients:
            self.stats.rejected += 1
            raise TooManyClients(f"{self.max_clients} event stream clients are connected already "
                                 "(api.event_clients); try again later")
        client = EventClient(self, sink, event_filter, peer)
        self.clients.append(client)
        self.stats.accepted += 1
        if self._stop_listening is None:
            self._stop_listening = self.bus.listen(self._publish)
        log.info("event stream client {peer} connected ({n} connected)", peer=peer, n=len(self.clients))
        return client

    def _publish(self, event: Event) -> None:
        frame: bytes | None = None  # encoded once, for every client that wants it
        for client in tuple(self.clients):
            if client.filter.matches(event):
                if frame is None:
                    frame = event_frame(event)
                client.deliver(frame)

    def overflow(self, client: EventClient) -> None:
        """``client`` fell ``max_buffer`` bytes behind: tell it (best effort) and disconnect it."""
        self.stats.overflowed += 1
        queued = client.queued
        n = self._throttle.hit("overflow", self.clock.seconds())
        if n:
            log.warn("event stream client {peer} reads too slowly: {queued} bytes of events waiting "
                     "(api.event_client_buffer {max}); disconnected ({n} slow client(s) since the last line)",
                     peer=client.peer, queued=queued, max=self.max_buffer, n=n)
        body = b'{"type":"overflow","id":%d,"queued_bytes":%d,"reason":"the client reads too slowly"}' % (
            self.bus.last_id, queued)
        sink = client.sink
        client.close("overflow")
        # Behind what the connection still holds: the client sees it if it ever reads that far.
        sink.write(control_frame("overflow", body))
        sink.close("overflow")

    def forget(self, client: EventClient, reason: str) -> None:
        if client in self.clients:
            self.clients.remove(client)
            self.stats.closed += 1
            log.info("event stream client {peer} left: {reason} ({n} connected)", peer=client.peer,
                     reason=reason, n=len(self.clients))
        if not self.clients and self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None

    def close_all(self, reason: str) -> None:
        """End every stream (the platform is stopping)."""
        for client in tuple(self.clients):
            sink = client.sink
            client.close(reason)
            sink.close(reason)

    def peers(self) -> Iterable[EventClient]:
        return tuple(self.clients)
