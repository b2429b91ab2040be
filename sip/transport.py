"""Twisted adapters for the sans-IO endpoint: SIP over UDP and TCP on one port.

The adapter feeds bytes and ``reactor.seconds()`` into ``sip.endpoint.Endpoint``,
passes its events to the application, writes what it wants sent, and keeps
one timer armed for the endpoint's next deadline (the aioquic pattern).

TCP connections are reused both ways (RFC 3261 §18.2.2, §18.1.1): a device
that registered over TCP gets our requests on the connection it opened; if
that connection is gone we open one to its address.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol

from sip.endpoint import Addr, Endpoint, EndpointEvent
from sip.errors import SipParseError
from sip.parser import StreamParser

log = logging.getLogger(__name__)

EventHandler = Callable[[list[EndpointEvent]], None]
TraceHook = Callable[[str, bytes, Addr], None]

# Large enough for a burst of REGISTERs from thousands of devices.
UDP_RCVBUF = 4 * 1024 * 1024
TCP_IDLE_TIMEOUT = 600.0
TIMER_TICK = 0.05
# Bytes read from the UDP socket per reactor wakeup: small enough that a
# registration storm leaves room for HTTP between batches (Twisted's default
# is 256 KiB, several hundred datagrams).
UDP_BATCH_BYTES = 8 * 1024


class SipTransport:
    """Owns the sockets, the endpoint's timer and the TCP connection table."""

    def __init__(
        self,
        endpoint: Endpoint,
        reactor: Any,
        handler: EventHandler,
        *,
        trace: TraceHook | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.reactor = reactor
        self.handler = handler
        self.trace = trace
        self.udp: Any = None
        self.tcp_port: Any = None
        self.connections: dict[tuple[str, int], SipStreamProtocol] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._timer: Any = None
        self._timer_at: float | None = None
        self.stopped = False
        self.dropped_after_stop = 0  # messages services produced after stop(): counted, not sent

    # -- setup -------------------------------------------------------------
    def listen(self, host: str, port: int, transports: tuple[str, ...] = ("udp", "tcp")) -> None:
        reactor_udp = reactor_tcp = self.reactor
        if "udp" in transports:
            self.udp = reactor_udp.listenUDP(port, SipDatagramProtocol(self), interface=host)
            self.udp.maxThroughput = UDP_BATCH_BYTES
            _set_rcvbuf(self.udp, UDP_RCVBUF)
            bound = self.udp.getHost().port
            port = port or bound
            self.endpoint.local["UDP"] = (host, bound)
        if "tcp" in transports:
            self.tcp_port = reactor_tcp.listenTCP(port, SipStreamFactory(self), interface=host)
            self.endpoint.local["TCP"] = (host, self.tcp_port.getHost().port)

    def set_advertised_host(self, host: str) -> None:
        """The address put in our Via/Contact (the external IP when behind NAT)."""
        for transport, (_, port) in list(self.endpoint.local.items()):
            self.endpoint.local[transport] = (host, port)

    def stop(self) -> None:
        """Close the sockets; what services still produce afterwards (an onboarding query that was
        waiting, a retransmission) is counted and dropped by ``flush``, never written to a closed port."""
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for conn in list(self.connections.values()):
            conn.close()
        if self.udp is not None:
            self.udp.stopListening()
        if self.tcp_port is not None:
            self.tcp_port.stopListening()

    # -- inputs ------------------------------------------------------------
    def now(self) -> float:
        return float(self.reactor.seconds())

    def datagram_received(self, data: bytes, source: Addr) -> None:
        if self.trace is not None:
            self.trace("recv", data, source)
        events = self.endpoint.receive_datagram(data, source, self.now())
        self._dispatch(events)

    def stream_message(self, msg: Any, raw: bytes, source: Addr) -> None:
        if self.trace is not None:
            self.trace("recv", raw, source)
        self._dispatch(self.endpoint.receive_message(msg, source, self.now()))

    def stream_error(self, error: SipParseError, source: Addr) -> None:
        self._dispatch(self.endpoint.parse_failed(error, source, self.now()))

    def _dispatch(self, events: list[EndpointEvent]) -> None:
        if events:
            try:
                self.handler(events)
            except Exception:
                log.exception("SIP event handler failed")
        self.flush()

    # -- outputs -----------------------------------------------------------
    def flush(self) -> None:
        """Write what the endpoint produced and re-arm its timer."""
        if self.stopped:
            late = self.endpoint.take_output()
            if late:
                if not self.dropped_after_stop:
                    log.info("SIP transport stopped: dropping %d message(s) produced while shutting down", len(late))
                self.dropped_after_stop += len(late)
            return
        for data, dest in self.endpoint.take_output():
            self._write(data, dest)
        self._rearm()

    def _write(self, data: bytes, dest: Addr) -> None:
        if self.trace is not None:
            self.trace("send", data, dest)
        transport, host, port = dest
        if transport == "UDP":
            if self.udp is None:
                log.warning("no UDP socket to send to %s:%s", host, port)
                return
            try:
                self.udp.write(data, (host, port))
            except OSError as e:
                log.warning("UDP send to %s:%s failed: %s", host, port, e)
            return
        conn = self.connections.get((host, port))
        if conn is not None and conn.connected:
            conn.write(data)
            return
        pending = self._pending.get((host, port))
        if pending is not None:
            pending.append(data)
            return
        self._pending[(host, port)] = [data]
        self.reactor.connectTCP(host, port, SipClientFactory(self, (host, port)), timeout=10)

    def connection_made(self, conn: SipStreamProtocol, key: tuple[str, int]) -> None:
        self.connections[key] = conn
        for data in self._pending.pop(key, []):
            conn.write(data)

    def connection_lost(self, conn: SipStreamProtocol, key: tuple[str, int]) -> None:
        if self.connections.get(key) is conn:
            del self.connections[key]

    def connect_failed(self, key: tuple[str, int], reason: str) -> None:
        dropped = self._pending.pop(key, [])
        log.warning("TCP connect to %s:%s failed (%s); %d message(s) dropped", *key, reason, len(dropped))

    def _rearm(self) -> None:
        at = self.endpoint.next_timer()
        if at is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer, self._timer_at = None, None
            return
        # Coalesce deadlines onto 50 ms ticks: thousands of transactions each
        # ending at its own instant would otherwise cost a wakeup apiece.
        at = math.ceil(at / TIMER_TICK) * TIMER_TICK
        if self._timer is not None and self._timer.active() and self._timer_at == at:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.reactor.callLater(max(0.0, at - self.now()), self._on_timer)
        self._timer_at = at

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._dispatch(self.endpoint.handle_timers(self.now()))


class SipDatagramProtocol(protocol.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 - Twisted API
        self.owner.datagram_received(datagram, ("UDP", addr[0], addr[1]))


class SipStreamProtocol(protocol.Protocol):
    """One SIP-over-TCP connection: frames messages and hands them over."""

    def __init__(self, owner: SipTransport, key: tuple[str, int] | None = None) -> None:
        self.owner = owner
        self.parser = StreamParser()
        self.key = key
        self._source: Addr = ("TCP", "", 0)
        self._idle: Any = None

    def write(self, data: bytes) -> None:
        t: Any = self.transport
        t.write(data)

    def close(self) -> None:
        t: Any = self.transport
        if t is not None:
            t.loseConnection()

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        t: Any = self.transport
        peer = t.getPeer()
        host, port = getattr(peer, "host", ""), getattr(peer, "port", 0)
        if self.key is None:
            self.key = (host, port)
        self._source = ("TCP", self.key[0], self.key[1])
        self.owner.connection_made(self, self.key)
        self._touch()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        self._touch()
        try:
            messages = self.parser.feed(data)
        except SipParseError as e:
            for msg in e.framed:
                self.owner.stream_message(msg, msg.serialize() if self.owner.trace else b"", self._source)
            log.warning("closing SIP/TCP connection from %s:%s: %s", self._source[1], self._source[2], e.reason)
            self.owner.stream_error(e, self._source)
            self.close()
            return
        for msg in messages:
            self.owner.stream_message(msg, msg.serialize() if self.owner.trace else b"", self._source)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted API
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        if self.key is not None:
            self.owner.connection_lost(self, self.key)

    def _touch(self) -> None:
        clock = self.owner.reactor
        if self._idle is not None and self._idle.active():
            self._idle.reset(TCP_IDLE_TIMEOUT)
        else:
            self._idle = clock.callLater(TCP_IDLE_TIMEOUT, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self.close()


class SipStreamFactory(protocol.ServerFactory):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:  # noqa: N802 - Twisted API
        return SipStreamProtocol(self.owner)


class SipClientFactory(protocol.ClientFactory):
    def __init__(self, owner: SipTransport, key: tuple[str, int]) -> None:
        self.owner = owner
        self.key = key

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:  # noqa: N802 - Twisted API
        return SipStreamProtocol(self.owner, self.key)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        self.owner.connect_failed(self.key, str(reason.value))


def _set_rcvbuf(port: Any, size: int) -> None:
    import socket

    try:
        sock = port.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if got < size:
            log.info("SIP UDP receive buffer capped by the kernel at %d bytes (asked %d)", got, size)
    except (OSError, AttributeError) as e:
        log.warning("cannot set the SIP UDP receive buffer: %s", e)
