"""Twisted edge of RTP receiving: one ``RtpReceiver`` per stream feeds an ``RtpIngest``.

GB/T 28181-2016 §9.2 (and Annex C) carry a live stream's MPEG-PS in RTP by one
of three transport modes, chosen per device:

- ``udp``: we bind the lease's even port for RTP and the odd one for RTCP
  (RFC 3550 §11); RTCP datagrams are counted and ignored. The RTP socket gets
  a large ``SO_RCVBUF`` because a 1080p I-frame is a burst of hundreds of
  datagrams arriving faster than one reactor wakeup drains them.
- ``tcp-passive``: we listen on the lease's port and the device connects
  (RFC 4145 ``a=setup:passive`` from our offer); RFC 4571 framing.
- ``tcp-active``: we connect to the IP:port of the device's SDP answer.

Theory of operation (the aioquic adapter pattern): the adapter hands bytes and
``reactor.seconds()`` to the sans-IO ingest, then re-arms one timer for the
ingest's next reorder deadline. A second timer is the no-RTP watchdog; it is
not pushed on every packet (that would cost a timer operation per datagram)
but, when it fires, compares the clock with ``ingest.stats.last_packet_at``
and re-arms itself for the remaining time. Only packets the ingest accepted
(right SSRC, parseable) count as activity, so a stream of another camera's
packets on our port still times out.

Bad input never raises into the reactor: an exception from the ingest is
logged and the packet dropped.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from twisted.internet import defer, protocol
from twisted.internet.error import NotConnectingError
from twisted.python.failure import Failure

from media.ingest import RtpIngest
from media.ports import PortLease

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_RCVBUF", "ReceiverStats", "RtpReceiver", "TransportMode"]

TransportMode = Literal["udp", "tcp-passive", "tcp-active"]
MODES: tuple[TransportMode, ...] = ("udp", "tcp-passive", "tcp-active")

DEFAULT_RCVBUF = 4 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
# Distinct UDP sources remembered per stream; a spoofing flood must not grow memory.
MAX_TRACKED_SOURCES = 64
# Slack for float clocks: a deadline computed as ``last + timeout`` may be a
# few ulps past the instant the reactor fires it.
EPSILON = 1e-6

TimeoutHandler = Callable[[str], None]
ListenUdp = Callable[..., Any]


@dataclass
class ReceiverStats:
    """Transport-level counts; packet-level ones are in ``ingest.stats``."""

    datagrams: int = 0
    rtcp_datagrams: int = 0
    sources: int = 0  # distinct UDP source addresses, up to MAX_TRACKED_SOURCES
    connections: int = 0  # TCP connections accepted
    refused_connections: int = 0  # TCP connections beyond the one a stream may have
    framing_failures: int = 0
    ingest_errors: int = 0  # exceptions from the ingest, packet dropped
    timeouts: int = 0


class RtpReceiver:
    """Binds, listens or connects for one stream and feeds its ``RtpIngest``.

    The owner leases the ports, calls ``start()`` (and ``connect()`` in
    tcp-active mode), and after ``stop()`` releases the lease itself.
    """

    def __init__(
        self,
        reactor: Any,
        ingest: RtpIngest,
        lease: PortLease,
        *,
        mode: TransportMode,
        host: str = "0.0.0.0",
        rcvbuf: int = DEFAULT_RCVBUF,
        no_rtp_timeout: float = 10.0,
        on_timeout: TimeoutHandler | None = None,
        listen_udp: ListenUdp | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown RTP transport mode {mode!r}; expected one of {MODES}")
        if no_rtp_timeout <= 0:
            raise ValueError(f"no_rtp_timeout {no_rtp_timeout} must be positive")
        self.reactor = reactor
        self.ingest = ingest
        self.lease = lease
        self.mode: TransportMode = mode
        self.host = host
        self.rcvbuf = rcvbuf
        self.no_rtp_timeout = no_rtp_timeout
        self.on_timeout = on_timeout
        self.connect_timeout = connect_timeout
        # MemoryReactor has no listenUDP: tests inject a fake.
        self._listen_udp: ListenUdp = listen_udp if listen_udp is not None else reactor.listenUDP
        self.stats = ReceiverStats()
        self._rtp_port: Any = None
        self._rtcp_port: Any = None
        self._tcp_port: Any = None
        self._connector: Any = None
        self._connecting: defer.Deferred[None] | None = None
        self.connection: RtpStreamProtocol | None = None
        self._sources: set[tuple[str, int]] = set()
        self._tick_timer: Any = None
        self._tick_at: float | None = None
        self._watchdog: Any = None
        self._started_at: float | None = None
        self._timed_out = False
        self._started = False
        self._stopped = False
        self._stop_done = False
        self._stop_waiters: list[defer.Deferred[None]] = []

    # -- lifecycle ---------------------------------------------------------
    @property
    def local_port(self) -> int:
        """The port the device sends to (the bound one, else the lease's)."""
        for port in (self._rtp_port, self._tcp_port):
            if port is not None:
                return int(port.getHost().port)
        return self.lease.rtp

    @property
    def stopped(self) -> bool:
        return self._stopped

    def start(self) -> None:
        """Bind (udp) or listen (tcp-passive) and arm the no-RTP watchdog.

        ``CannotListenError`` propagates: the caller marks the lease unusable
        (``PortPool.unusable``) and tries another.
        """
        if self._stopped:
            raise RuntimeError("RtpReceiver already stopped")
        if self._started:
            raise RuntimeError("RtpReceiver already started")
        if self.mode == "udp":
            self._start_udp()
        elif self.mode == "tcp-passive":
            self._tcp_port = self.reactor.listenTCP(
                self.lease.rtp, RtpServerFactory(self), interface=self.host
            )
        self._started = True
        self._started_at = self.now()
        self._watchdog = self.reactor.callLater(self.no_rtp_timeout, self._on_watchdog)
        log.info(
            "RTP receiver for %s listening: %s on %s:%d",
            self.lease.owner,
            self.mode,
            self.host,
            self.local_port,
        )

    def _start_udp(self) -> None:
        self._rtp_port = self._listen_udp(
            self.lease.rtp, RtpDatagramProtocol(self), interface=self.host
        )
        try:
            # RFC 3550 §11: RTCP on the odd neighbour; bound so the device's
            # RTCP does not draw ICMP port-unreachable back at it.
            self._rtcp_port = self._listen_udp(
                self.lease.rtcp, RtcpDatagramProtocol(self), interface=self.host
            )
        except Exception:
            port, self._rtp_port = self._rtp_port, None
            port.stopListening()
            raise
        _set_rcvbuf(self._rtp_port, self.rcvbuf)

    def connect(self, host: str, port: int) -> defer.Deferred[None]:
        """tcp-active: connect to the device's answered address (its SDP ``c=``/``m=``).

        Fires with None once connected; errbacks with the connect failure
        (refused, timeout after ``connect_timeout``) or with ``CancelledError`` if ``stop()`` comes first.
        """
        if self.mode != "tcp-active":
            raise ValueError(f"connect() is for tcp-active receivers, not {self.mode}")
        if self._stopped:
            return defer.fail(defer.CancelledError("RTP receiver stopped"))
        if self._connecting is not None or self.connection is not None:
            raise RuntimeError("RtpReceiver already connecting or connected")
        d: defer.Deferred[None] = defer.Deferred()
        self._connecting = d
        self._connector = self.reactor.connectTCP(
            host, port, RtpClientFactory(self, (host, port)), timeout=self.connect_timeout
        )
        return d

    def stop(self) -> defer.Deferred[None]:
        """Close every socket and connection, cancel the timers, flush the ingest.

        Idempotent: later calls return a Deferred firing when the first stop
        completes. The lease is the owner's to release afterwards.
        """
        if self._stopped:
            if self._stop_done:
                return defer.succeed(None)
            waiter: defer.Deferred[None] = defer.Deferred()
            self._stop_waiters.append(waiter)
            return waiter
        self._stopped = True
        self._cancel(self._watchdog)
        self._watchdog = None
        self._cancel(self._tick_timer)
        self._tick_timer, self._tick_at = None, None
        if self._connector is not None:
            try:
                self._connector.stopConnecting()
            except NotConnectingError:
                log.debug("RTP/TCP connector of %s already done", self.lease.owner)
            self._connector = None
        self._connect_failed(defer.CancelledError("RTP receiver stopped"))
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        closing = []
        for attr in ("_rtp_port", "_rtcp_port", "_tcp_port"):
            port = getattr(self, attr)
            if port is not None:
                setattr(self, attr, None)
                closing.append(defer.maybeDeferred(port.stopListening))
        try:
            self.ingest.close(self.now())
        except Exception:
            log.exception("RTP ingest of %s failed to close", self.lease.owner)
        waiter = defer.Deferred()
        self._stop_waiters.append(waiter)
        d = defer.gatherResults(closing, consumeErrors=True)
        d.addErrback(self._log_stop_failure)
        d.addBoth(self._stop_finished)
        return waiter

    def _log_stop_failure(self, failure: Failure) -> None:
        log.warning("closing RTP sockets of %s failed: %s", self.lease.owner, failure.value)

    def _stop_finished(self, _: object) -> None:
        self._stop_done = True
        waiters, self._stop_waiters = self._stop_waiters, []
        for w in waiters:
            w.callback(None)

    # -- inputs ------------------------------------------------------------
    def now(self) -> float:
        return float(self.reactor.seconds())

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        if self._stopped:
            return
        self.stats.datagrams += 1
        if source not in self._sources and len(self._sources) < MAX_TRACKED_SOURCES:
            self._sources.add(source)
            self.stats.sources = len(self._sources)
            if len(self._sources) == 1:
                log.info("RTP for %s from %s:%d", self.lease.owner, *source)
            else:
                # Handed to the ingest anyway: it filters by SSRC, and a device
                # may legitimately change its source port (NAT rebinding).
                log.info(
                    "RTP for %s from another source %s:%d (%d sources)",
                    self.lease.owner,
                    source[0],
                    source[1],
                    len(self._sources),
                )
        try:
            self.ingest.datagram(data, self.now())
        except Exception:
            self.stats.ingest_errors += 1
            log.exception("RTP ingest of %s failed; packet dropped", self.lease.owner)
        self._rearm_tick()

    def rtcp_received(self, data: bytes, source: tuple[str, int]) -> None:
        # RTCP SR/RR are not needed to play the stream; counted so the API can
        # tell a device that sends RTCP but no RTP.
        self.stats.rtcp_datagrams += 1

    def connection_made(self, conn: RtpStreamProtocol) -> bool:
        """Accept a stream connection unless the stream already has one."""
        if self._stopped or self.connection is not None:
            self.stats.refused_connections += 1
            log.warning(
                "refusing a second RTP/TCP connection for %s from %s:%d",
                self.lease.owner,
                *conn.peer,
            )
            return False
        self.connection = conn
        self.stats.connections += 1
        log.info("RTP/TCP for %s connected with %s:%d", self.lease.owner, *conn.peer)
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            self._connector = None
            d.callback(None)
        return True

    def stream_bytes(self, conn: RtpStreamProtocol, data: bytes) -> None:
        if self._stopped or conn is not self.connection:
            return
        try:
            ok = self.ingest.stream_bytes(data, self.now())
        except Exception:
            self.stats.ingest_errors += 1
            log.exception("RTP ingest of %s failed; packet dropped", self.lease.owner)
            ok = True
        if not ok:
            # RFC 4571 framing lost: nothing later on this connection can be trusted.
            self.stats.framing_failures += 1
            log.warning(
                "closing RTP/TCP connection of %s from %s:%d: %s",
                self.lease.owner,
                conn.peer[0],
                conn.peer[1],
                self.ingest.failed,
            )
            conn.close()
        self._rearm_tick()

    def connection_lost(self, conn: RtpStreamProtocol) -> None:
        if self.connection is conn:
            self.connection = None
            if not self._stopped:
                # The watchdog reports the stream dead if nothing reconnects.
                log.info("RTP/TCP connection of %s closed", self.lease.owner)

    def connect_failed(self, reason: Failure) -> None:
        self._connector = None
        if self._connecting is not None:
            log.warning("RTP/TCP connect for %s failed: %s", self.lease.owner, reason.value)
        self._connect_failed(reason)

    def _connect_failed(self, reason: Failure | Exception) -> None:
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.errback(reason)

    # -- timers ------------------------------------------------------------
    def _rearm_tick(self) -> None:
        """One timer at the ingest's next reorder deadline (aioquic ``_rearm``)."""
        if self._stopped:
            return
        at = self.ingest.next_deadline()
        active = self._tick_timer is not None and self._tick_timer.active()
        if at is None:
            if active:
                self._tick_timer.cancel()
            self._tick_timer, self._tick_at = None, None
            return
        if active and self._tick_at == at:
            return
        if active:
            self._tick_timer.cancel()
        self._tick_timer = self.reactor.callLater(max(0.0, at - self.now()), self._on_tick)
        self._tick_at = at

    def _on_tick(self) -> None:
        self._tick_timer, self._tick_at = None, None
        if self._stopped:
            return
        try:
            self.ingest.tick(self.now())
        except Exception:
            self.stats.ingest_errors += 1
            log.exception("RTP ingest of %s failed; packet dropped", self.lease.owner)
        self._rearm_tick()

    def _on_watchdog(self) -> None:
        self._watchdog = None
        if self._stopped or self._timed_out or self._started_at is None:
            return
        now = self.now()
        last = self.ingest.stats.last_packet_at
        since = self._started_at if last is None else max(last, self._started_at)
        due = since + self.no_rtp_timeout
        if now + EPSILON < due:
            self._watchdog = self.reactor.callLater(due - now, self._on_watchdog)
            return
        self._timed_out = True
        self.stats.timeouts += 1
        if last is None:
            reason = f"no RTP received in {self.no_rtp_timeout:g} s"
        else:
            reason = f"no RTP for {now - last:g} s"
        log.warning("RTP stream of %s timed out: %s", self.lease.owner, reason)
        if self.on_timeout is not None:
            try:
                self.on_timeout(reason)
            except Exception:
                log.exception("RTP timeout handler of %s failed", self.lease.owner)

    @staticmethod
    def _cancel(call: Any) -> None:
        if call is not None and call.active():
            call.cancel()


class RtpDatagramProtocol(protocol.DatagramProtocol):
    def __init__(self, owner: RtpReceiver) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 - Twisted API
        self.owner.datagram_received(datagram, (addr[0], addr[1]))


class RtcpDatagramProtocol(protocol.DatagramProtocol):
    def __init__(self, owner: RtpReceiver) -> None:
        self.owner = owner

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 - Twisted API
        self.owner.rtcp_received(datagram, (addr[0], addr[1]))


class RtpStreamProtocol(protocol.Protocol):
    """One RTP-over-TCP connection (RFC 4571), passive or active."""

    def __init__(self, owner: RtpReceiver) -> None:
        self.owner = owner
        self.peer: tuple[str, int] = ("", 0)
        self.accepted = False

    def close(self) -> None:
        t: Any = self.transport
        if t is not None:
            t.loseConnection()

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        t: Any = self.transport
        peer = t.getPeer()
        self.peer = (str(getattr(peer, "host", "")), int(getattr(peer, "port", 0)))
        self.accepted = self.owner.connection_made(self)
        if not self.accepted:
            self.close()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        if self.accepted:
            self.owner.stream_bytes(self, data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted API
        if self.accepted:
            self.owner.connection_lost(self)


class RtpServerFactory(protocol.ServerFactory):
    def __init__(self, owner: RtpReceiver) -> None:
        self.owner = owner

    def buildProtocol(self, addr: Any) -> RtpStreamProtocol:  # noqa: N802 - Twisted API
        return RtpStreamProtocol(self.owner)


class RtpClientFactory(protocol.ClientFactory):
    def __init__(self, owner: RtpReceiver, dest: tuple[str, int]) -> None:
        self.owner = owner
        self.dest = dest

    def buildProtocol(self, addr: Any) -> RtpStreamProtocol:  # noqa: N802 - Twisted API
        return RtpStreamProtocol(self.owner)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        self.owner.connect_failed(reason)


def _set_rcvbuf(port: Any, size: int) -> None:
    """Ask for a large receive buffer; the kernel may cap it (``net.core.rmem_max``)."""
    try:
        sock = port.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        got = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    except (OSError, AttributeError) as e:
        log.warning("cannot set the RTP UDP receive buffer: %s", e)
        return
    # Linux reports double the size set (bookkeeping overhead), so only a
    # value below the request means a cap.
    if got < size:
        log.info(
            "RTP UDP receive buffer capped by the kernel at %d bytes (asked %d); "
            "raise net.core.rmem_max",
            got,
            size,
        )
