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

Reading (the live-ingest benchmark, docs/performance.md): RTP sockets are
``RtpUdpPort``s, Twisted's UDP port with a leaner read loop. With a
``UdpDrainer`` they are not watched by the reactor at all: one timer reads
every stream's socket every few milliseconds until it is empty, so a camera
that paces its packets costs one ``recvfrom`` per packet instead of a reactor
wakeup (epoll round, dispatch, failed read) per packet; the socket's large
``SO_RCVBUF`` holds the few milliseconds in between. The timer asks a private
epoll set which sockets have data, so idle sockets cost nothing.

With the compiled extension (media/accel.py) a read pass is one ``recvmmsg``
call for up to 64 datagrams, handed on as one list (``datagramsReceived`` ->
``datagrams_received`` -> ``RtpIngest.datagrams``); the single port splits a
pass into runs of one SSRC. Without it, or with ``GBP_PUREPYTHON=1``, each
datagram is read and handed on by itself, as the Python reference does.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from twisted.application.service import Service
from twisted.internet import defer, protocol, udp
from twisted.internet.error import NotConnectingError
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from media import accel
from media.framing import FramingError
from media.ingest import RtpIngest
from media.ports import PortLease

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RCVBUF",
    "DEFAULT_SINGLE_PORT_RCVBUF",
    "DEFAULT_DRAIN_INTERVAL",
    "ReceiverStats",
    "RtpUdpPort",
    "UdpDrainer",
    "RtpReceiver",
    "SharedPortReceiver",
    "SharedPortStats",
    "SharedRtpPort",
    "TransportMode",
]

TransportMode = Literal["udp", "tcp-passive", "tcp-active"]
MODES: tuple[TransportMode, ...] = ("udp", "tcp-passive", "tcp-active")

DEFAULT_RCVBUF = 4 * 1024 * 1024
# socket(7); Python's socket module does not export it.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
# The single port's socket holds every stream's bursts: 200 x 4 Mbit/s streams
# lost packets with 4 MiB and none with 64 MiB (docs/performance.md).
DEFAULT_SINGLE_PORT_RCVBUF = 64 * 1024 * 1024
# 5 ms of 4 Mbit/s is 2.5 KB per socket; a 1080p I-frame burst of ~100 KB fits
# SO_RCVBUF many times over.
DEFAULT_DRAIN_INTERVAL = 0.005
# Datagrams one read pass takes from one socket before the next socket's turn
# (Twisted's udp.Port reads up to 256 KiB, the same order).
READS_PER_PASS = 256
# The single port's socket: 200 streams send ~75,000 datagrams a second, 375
# per 5 ms drain pass.
SHARED_READS_PER_PASS = 4096
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
    # Distinct UDP source addresses, up to MAX_TRACKED_SOURCES; an RtpUdpPort
    # reads the address once per read pass (see there).
    sources: int = 0
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
        drainer: UdpDrainer | None = None,
        adopt: tuple[int, ...] = (),
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
        self._listen_udp: ListenUdp = (
            listen_udp if listen_udp is not None else rtp_listen_udp(reactor)
        )
        self.drainer = drainer
        # Sockets another process bound (a media worker's, gbplatform/sessions/worker_process.py):
        # udp (RTP, RTCP) or tcp-passive (the listener), adopted at start() instead of bound.
        self.adopt = adopt
        self.stats = ReceiverStats()
        self._rtp_port: Any = None
        self._rtcp_port: Any = None
        self._tcp_port: Any = None
        self._connector: Any = None
        self._connecting: defer.Deferred[None] | None = None
        self.connection: RtpStreamProtocol | None = None
        self._sources: set[tuple[str, int]] = set()
        self._last_source: tuple[str, int] | None = None
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

        ``CannotListenError`` propagates: another program holds the port, so
        the caller logs it, gives the lease back and tries the next pair
        (``gbplatform.sessions.live.LiveStreams._bind``).
        """
        if self._stopped:
            raise RuntimeError("RtpReceiver already stopped")
        if self._started:
            raise RuntimeError("RtpReceiver already started")
        self._open_transport()
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

    def _open_transport(self) -> None:
        if self.adopt:
            self._adopt_transport()
        elif self.mode == "udp":
            self._start_udp()
        elif self.mode == "tcp-passive":
            self._tcp_port = self.reactor.listenTCP(
                self.lease.rtp, RtpServerFactory(self), interface=self.host
            )

    def _adopt_transport(self) -> None:
        """Take over sockets the platform's main process bound and passed (SCM_RIGHTS, unix(7)).

        udp: the RTP socket and, if passed, the RTCP one; tcp-passive: the
        listening socket. The descriptors are duplicated; the caller closes its own.
        """
        fds, self.adopt = self.adopt, ()
        if self.mode == "udp":
            self._rtp_port = adopt_udp(self.reactor, fds[0], RtpDatagramProtocol(self))
            if len(fds) > 1:
                self._rtcp_port = adopt_udp(self.reactor, fds[1], RtcpDatagramProtocol(self))
            _set_rcvbuf(self._rtp_port, self.rcvbuf)
            if self.drainer is not None:
                self.drainer.add(self._rtp_port)
        elif self.mode == "tcp-passive":
            self._tcp_port = self.reactor.adoptStreamPort(fds[0], socket_family(fds[0]), RtpServerFactory(self))

    def _close_transport(self) -> list[defer.Deferred[Any]]:
        """Stop listening on this stream's own ports; Deferreds of the closes."""
        if self.drainer is not None and self._rtp_port is not None:
            self.drainer.remove(self._rtp_port)
        closing: list[defer.Deferred[Any]] = []
        for attr in ("_rtp_port", "_rtcp_port", "_tcp_port"):
            port = getattr(self, attr)
            if port is not None:
                setattr(self, attr, None)
                closing.append(defer.maybeDeferred(port.stopListening))
        return closing

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
        if self.drainer is not None:
            self.drainer.add(self._rtp_port)

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
        closing = self._close_transport()
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
        if source != self._last_source:
            self._new_source(source)
        try:
            self.ingest.datagram(data, self.reactor.seconds())
        except Exception:
            self.stats.ingest_errors += 1
            log.exception("RTP ingest of %s failed; packet dropped", self.lease.owner)
        # Most packets arrive in order: nothing waits in the reorder buffer and no
        # timer is armed, so there is nothing to re-arm.
        if self._tick_timer is not None or self.ingest.reorder.waiting:
            self._rearm_tick()

    def datagrams_received(self, batch: list[bytes], source: tuple[str, int]) -> None:
        """Datagrams of one read pass (``RtpUdpPort`` with the compiled path), all at one ``now``.

        The same as ``datagram_received`` for each, but the source is the
        first datagram's and the ingest takes the batch at once
        (``RtpIngest.datagrams``). Should the ingest raise (a bug, never bad
        input), the rest of the batch is dropped with the error logged.
        """
        if self._stopped:
            return
        self.stats.datagrams += len(batch)
        if source != self._last_source:
            self._new_source(source)
        try:
            self.ingest.datagrams(batch, self.reactor.seconds())
        except Exception:
            self.stats.ingest_errors += 1
            log.exception("RTP ingest of %s failed; %d datagrams dropped", self.lease.owner,
                          len(batch))
        if self._tick_timer is not None or self.ingest.reorder.waiting:
            self._rearm_tick()

    def _new_source(self, source: tuple[str, int]) -> None:
        self._last_source = source
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
        # Twisted hands (host, port) for IPv4 and trims IPv6 addresses to it.
        self.owner.datagram_received(datagram, addr)

    def datagramsReceived(self, datagrams: list[bytes], addr: Any) -> None:  # noqa: N802
        """A read pass of ``RtpUdpPort`` (compiled path): the first datagram's source."""
        self.owner.datagrams_received(datagrams, addr)


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


class RtpUdpPort(udp.Port):
    """Twisted's UDP port with the read loop cut to what RTP needs.

    ``udp.Port.doRead`` counts bytes, checks the address family and wraps the
    protocol call per datagram; this one reads up to ``reads_per_pass``
    datagrams and hands each to the protocol, which catches its own errors
    (``RtpReceiver.datagram_received``). An unconnected socket's
    ECONNREFUSED (an ICMP error from an earlier send) is ignored, as Twisted does.

    Only the first datagram of a pass is read with ``recvfrom``; the rest
    with ``recv`` and handed the same source address. Turning the peer's
    sockaddr into a ``(host, port)`` tuple is a third of a ``recvfrom``, and
    the address only feeds logs and the sources count: the ingest tells
    streams apart by SSRC, never by address. A second source sending at the
    same time is therefore seen at the start of a later pass, not at once.
    A socket that many devices share (single-port mode) sets
    ``exact_sources`` and reads every datagram with ``recvfrom``.
    """

    exact_sources = False
    reads_per_pass = READS_PER_PASS

    def doRead(self) -> None:  # noqa: N802 - Twisted API
        try:
            sock = self.socket
        except AttributeError:
            return  # closed meanwhile (connectionLost deletes the socket)
        size = self.maxPacketSize
        ext = accel.ext
        if ext is not None:
            batch = getattr(self.protocol, "datagramsReceived", None)
            if batch is not None:
                self._read_batch(ext, sock, size, batch)
                return
        deliver = self.protocol.datagramReceived
        if self.exact_sources:
            self._read_with_sources(sock, size, deliver)
            return
        try:
            data, addr = sock.recvfrom(size)
        except (BlockingIOError, ConnectionRefusedError):
            return
        if self.addressFamily == socket.AF_INET6:
            addr = addr[:2]
        recv = sock.recv
        for _ in range(self.reads_per_pass - 1):
            try:
                deliver(data, addr)
            except Exception:
                log.exception("RTP datagram handler failed; datagram dropped")
            try:
                data = recv(size)
            except (BlockingIOError, ConnectionRefusedError):
                return
        try:
            deliver(data, addr)
        except Exception:
            log.exception("RTP datagram handler failed; datagram dropped")

    def _read_batch(
        self, ext: Any, sock: Any, size: int, deliver: Callable[[list[bytes], Any], None]
    ) -> None:
        """The compiled path: ``recvmmsg`` reads the pass, the protocol takes it at once.

        The same pass as the Python loop below: up to ``reads_per_pass``
        datagrams, stopping at an empty queue or ECONNREFUSED; the address of
        the first datagram, or of each with ``exact_sources`` (a list then).
        Any other socket error propagates as from ``recv``.
        """
        datagrams, addrs = ext.recv_batch(sock.fileno(), self.reads_per_pass, size,
                                          self.exact_sources)
        if not datagrams:
            return
        try:
            deliver(datagrams, addrs)
        except Exception:
            log.exception("RTP datagram handler failed; %d datagrams dropped", len(datagrams))

    def _read_with_sources(self, sock: Any, size: int, deliver: Callable[..., Any]) -> None:
        recvfrom = sock.recvfrom
        v6 = self.addressFamily == socket.AF_INET6
        for _ in range(self.reads_per_pass):
            try:
                data, addr = recvfrom(size)
            except (BlockingIOError, ConnectionRefusedError):
                return
            try:
                deliver(data, addr[:2] if v6 else addr)
            except Exception:
                log.exception("RTP datagram handler failed; datagram dropped")


def rtp_listen_udp(reactor: Any) -> ListenUdp:
    """``listenUDP`` making ``RtpUdpPort``s on a POSIX reactor, else the reactor's own."""
    from twisted.internet.posixbase import PosixReactorBase

    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUDP  # type: ignore[no-any-return]

    def listen(port: int, proto: Any, interface: str = "", maxPacketSize: int = 8192) -> RtpUdpPort:  # noqa: N803
        p = RtpUdpPort(port, proto, interface, maxPacketSize, reactor)  # type: ignore[no-untyped-call]
        p.startListening()  # type: ignore[no-untyped-call]
        return p

    return listen


def socket_family(fd: int) -> int:
    """The address family of the socket ``fd`` (AF_INET or AF_INET6), leaving it open."""
    sock = socket.socket(fileno=fd)
    try:
        return int(sock.family)
    finally:
        sock.detach()


def adopt_udp(reactor: Any, fd: int, proto: Any) -> Any:
    """A bound UDP socket ``fd`` (duplicated) as an ``RtpUdpPort`` on a POSIX reactor, else the reactor's port."""
    from twisted.internet.posixbase import PosixReactorBase

    family = socket_family(fd)
    if not isinstance(reactor, PosixReactorBase):
        return reactor.adoptDatagramPort(fd, family, proto)
    p = RtpUdpPort._fromListeningDescriptor(reactor, fd, family, proto, maxPacketSize=8192)  # type: ignore[no-untyped-call]
    p.startListening()
    return p


class UdpDrainer:
    """Reads many UDP ports on one timer instead of a reactor wakeup per datagram.

    ``add`` takes a listening port (``RtpUdpPort``, or anything with
    ``doRead``/``stopReading`` and optionally ``fileno``) off the reactor's
    read set. Every ``interval`` seconds one ``epoll_wait`` with a zero timeout
    (a private epoll set, level-triggered) names the ports with datagrams
    waiting, and each is read until empty (at most ``READS_PER_PASS``
    datagrams, then the next port): one system call per pass, none for an idle
    socket. Ports without a ``fileno`` (or without epoll) are read every pass.
    ``remove`` before the port stops listening. The timer runs only while
    ports are registered. A port whose read raises is dropped (logged): its
    stream's watchdog ends it.
    """

    def __init__(self, reactor: Any, interval: float = DEFAULT_DRAIN_INTERVAL) -> None:
        if interval <= 0:
            raise ValueError(f"drain interval {interval} must be positive")
        self.reactor = reactor
        self.interval = interval
        self.ports: dict[int, Any] = {}  # id(port) -> port, in insertion order
        self.passes = 0
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._by_fd: dict[int, Any] = {}  # ports watched by the epoll set
        self._fds: dict[int, int] = {}  # id(port) -> its fd in the epoll set
        self._always: dict[int, Any] = {}  # ports read every pass
        self._loop: LoopingCall | None = None

    def add(self, port: Any) -> None:
        port.stopReading()
        self.ports[id(port)] = port
        fileno = getattr(port, "fileno", None)
        if self._epoll is not None and callable(fileno):
            fd = int(fileno())
            self._epoll.register(fd, select.EPOLLIN)
            self._by_fd[fd] = port
            self._fds[id(port)] = fd
        else:
            self._always[id(port)] = port
        if self._loop is None:
            self._loop = LoopingCall(self.drain)
            self._loop.clock = self.reactor
            d = self._loop.start(self.interval, now=False)
            d.addErrback(lambda f: log.error("RTP drain timer failed: %s", f.getTraceback()))

    def remove(self, port: Any) -> None:
        if self.ports.pop(id(port), None) is None:
            return
        self._always.pop(id(port), None)
        fd = self._fds.pop(id(port), None)
        if fd is not None and self._epoll is not None:
            del self._by_fd[fd]
            try:
                self._epoll.unregister(fd)
            except OSError as e:  # already closed: the kernel dropped it from the set
                log.debug("unregistering RTP socket %d from the drain set: %s", fd, e)
        if not self.ports and self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()

    def drain(self) -> None:
        self.passes += 1
        ready = list(self._always.values())
        if self._by_fd and self._epoll is not None:
            by_fd = self._by_fd
            ready.extend(by_fd[fd] for fd, _ in self._epoll.poll(0) if fd in by_fd)
        for port in ready:
            try:
                port.doRead()
            except Exception:
                # Not retried every few ms: the stream's no-RTP watchdog ends it.
                log.exception("reading an RTP socket failed; no longer reading it")
                self.remove(port)


def _set_rcvbuf(port: Any, size: int, *, force: bool = False) -> None:
    """Ask for a large receive buffer; the kernel may cap it (``net.core.rmem_max``).

    ``force``: first try ``SO_RCVBUFFORCE`` (Linux socket(7)), which passes the
    cap for a process with CAP_NET_ADMIN and fails with EPERM otherwise.
    """
    try:
        sock = port.getHandle()
        forced = False
        if force and _SO_RCVBUFFORCE is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
                forced = True
            except OSError:
                log.debug("SO_RCVBUFFORCE refused (no CAP_NET_ADMIN); asking SO_RCVBUF")
        if not forced:
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


# -- single-port mode ----------------------------------------------------------

_SSRC = struct.Struct("!I")
# RFC 5761 §4: an RTCP packet type (SR 200 ... XR 207, and the range reserved
# for them) read as an RTP marker/payload-type byte falls in 192-223.
_RTCP_TYPES = range(192, 224)


@dataclass
class SharedPortStats:
    """Counts of the shared port; per-stream ones stay in each receiver and ingest."""

    datagrams: int = 0
    rtcp_datagrams: int = 0  # RTCP multiplexed on the RTP port (RFC 5761), ignored
    short_datagrams: int = 0  # below the 12-byte RTP header
    unknown_ssrc: int = 0  # datagrams no stream expects, dropped
    connections: int = 0  # TCP connections accepted on the shared listener
    unknown_ssrc_connections: int = 0  # closed: their first packet's SSRC is nobody's
    ssrc_conflicts: int = 0  # a stream asked for an SSRC another stream receives


class SharedRtpPort(Service):
    """Single-port mode: one UDP socket and one TCP listener for every stream, by SSRC.

    The WVP/ZLMediaKit "单端口" mode (ZLMediaKit ``rtp_proxy.port``): every
    INVITE offers the same port and a distinct ``y=`` SSRC (GB/T 28181-2016
    §F.1), and the receiver routes each RTP packet by the SSRC in its fixed
    header (RFC 3550 §5.1, octets 8-11) to the stream's ``RtpIngest``. A TCP
    connection carries one stream: it is bound to a stream by the SSRC of its
    first packet (RFC 4571 frame), and from then on its bytes go to that
    stream as in per-port mode. Datagrams and connections whose SSRC no stream
    expects are counted and dropped.

    The sockets belong to this service (bound at ``startService``, closed at
    ``stopService``); a stream's ``SharedPortReceiver`` only adds and removes
    its route, so one stream stopping never closes the port under the others.
    tcp-active streams connect out per stream, as in per-port mode.
    """

    name = "rtp-single-port"

    def __init__(
        self,
        reactor: Any,
        port: int,
        *,
        host: str = "0.0.0.0",
        rcvbuf: int = DEFAULT_SINGLE_PORT_RCVBUF,
        listen_udp: ListenUdp | None = None,
        drainer: UdpDrainer | None = None,
    ) -> None:
        self.reactor = reactor
        self.port = port
        self.drainer = drainer
        self.host = host
        self.rcvbuf = rcvbuf
        self._listen_udp: ListenUdp = (
            listen_udp if listen_udp is not None else rtp_listen_udp(reactor)
        )
        self.routes: dict[int, SharedPortReceiver] = {}
        self.stats = SharedPortStats()
        self._udp_port: Any = None
        self._tcp_port: Any = None

    @property
    def local_port(self) -> int:
        if self._udp_port is not None:
            return int(self._udp_port.getHost().port)
        return self.port

    # -- lifecycle -----------------------------------------------------------
    def startService(self) -> None:  # noqa: N802 - Twisted API
        self.start()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> defer.Deferred[Any]:  # noqa: N802 - Twisted API
        super().stopService()  # type: ignore[no-untyped-call]
        return self.stop()

    def start(self) -> None:
        """Bind the UDP port and listen on the TCP one; ``CannotListenError`` propagates."""
        self._udp_port = self._listen_udp(
            self.port, SharedDatagramProtocol(self), interface=self.host
        )
        if isinstance(self._udp_port, RtpUdpPort):
            self._udp_port.exact_sources = True  # every device sends here
            # Every stream's packets: a drain pass must be able to take them all.
            self._udp_port.reads_per_pass = SHARED_READS_PER_PASS
        try:
            self._tcp_port = self.reactor.listenTCP(
                self.local_port, SharedServerFactory(self), interface=self.host
            )
        except Exception:
            port, self._udp_port = self._udp_port, None
            port.stopListening()
            raise
        # One socket takes every stream's bursts: it needs far more than rmem_max's default.
        _set_rcvbuf(self._udp_port, self.rcvbuf, force=True)
        if self.drainer is not None:
            self.drainer.add(self._udp_port)
        log.info("RTP single port %s:%d (UDP and TCP), streams told apart by SSRC",
                 self.host, self.local_port)

    def stop(self) -> defer.Deferred[Any]:
        """Close both sockets (service stop); streams still routed here then time out."""
        if self.drainer is not None and self._udp_port is not None:
            self.drainer.remove(self._udp_port)
        closing = []
        for attr in ("_udp_port", "_tcp_port"):
            port = getattr(self, attr)
            if port is not None:
                setattr(self, attr, None)
                closing.append(defer.maybeDeferred(port.stopListening))
        d = defer.gatherResults(closing, consumeErrors=True)
        d.addErrback(lambda f: log.warning("closing the RTP single port failed: %s", f.value))
        return d

    def receiver(
        self,
        ingest: RtpIngest,
        lease: PortLease,
        *,
        mode: TransportMode,
        no_rtp_timeout: float = 10.0,
        on_timeout: TimeoutHandler | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> SharedPortReceiver:
        """A stream's receiver on this port (what ``RtpReceiver`` is in per-port mode)."""
        return SharedPortReceiver(
            self, ingest, lease, mode=mode, no_rtp_timeout=no_rtp_timeout,
            on_timeout=on_timeout, connect_timeout=connect_timeout,
        )

    # -- routes --------------------------------------------------------------
    def add_route(self, ssrc: int, receiver: SharedPortReceiver) -> bool:
        """Send ``ssrc``'s packets to ``receiver``; False if another stream has it."""
        owner = self.routes.get(ssrc)
        if owner is not None and owner is not receiver:
            self.stats.ssrc_conflicts += 1
            log.warning(
                "SSRC %d of %s is already received by %s: %s gets no RTP on the single port",
                ssrc, receiver.lease.owner, owner.lease.owner, receiver.lease.owner,
            )
            return False
        self.routes[ssrc] = receiver
        return True

    def remove_route(self, ssrc: int, receiver: SharedPortReceiver) -> None:
        if self.routes.get(ssrc) is receiver:
            del self.routes[ssrc]

    # -- inputs --------------------------------------------------------------
    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        stats = self.stats
        stats.datagrams += 1
        if len(data) < 12:
            stats.short_datagrams += 1
            return
        if data[1] in _RTCP_TYPES:
            stats.rtcp_datagrams += 1
            return
        receiver = self.routes.get(_SSRC.unpack_from(data, 8)[0])
        if receiver is None:
            stats.unknown_ssrc += 1
            if stats.unknown_ssrc <= 10 or stats.unknown_ssrc % 1000 == 0:
                log.info(
                    "dropping RTP with SSRC %d from %s:%d: no stream expects it (%d so far)",
                    _SSRC.unpack_from(data, 8)[0], source[0], source[1], stats.unknown_ssrc,
                )
            return
        receiver.datagram_received(data, source)

    def datagrams_received(self, batch: list[bytes], sources: list[tuple[str, int]]) -> None:
        """A read pass (compiled path): ``datagram_received`` for each, a stream's run at once.

        Consecutive datagrams of one SSRC (a camera's frame burst) go to their
        stream's receiver as one batch, with the run's first source address.
        """
        ext = accel.ext
        if ext is None:
            for data, source in zip(batch, sources, strict=True):
                self.datagram_received(data, source)
            return
        stats = self.stats
        stats.datagrams += len(batch)
        routes = self.routes
        for key, start, end in ext.ssrc_runs(batch):
            if key == -1:
                stats.short_datagrams += end - start
            elif key == -2:
                stats.rtcp_datagrams += end - start
            else:
                receiver = routes.get(key)
                if receiver is not None:
                    receiver.datagrams_received(batch[start:end], sources[start])
                    continue
                for i in range(start, end):
                    stats.unknown_ssrc += 1
                    if stats.unknown_ssrc <= 10 or stats.unknown_ssrc % 1000 == 0:
                        log.info(
                            "dropping RTP with SSRC %d from %s:%d: no stream expects it (%d so far)",
                            key, sources[i][0], sources[i][1], stats.unknown_ssrc,
                        )

    def bind_connection(self, conn: SharedStreamProtocol, ssrc: int) -> RtpReceiver | None:
        """The stream a new TCP connection's first packet belongs to, or None."""
        receiver = self.routes.get(ssrc)
        if receiver is None:
            self.stats.unknown_ssrc_connections += 1
            log.warning(
                "closing RTP/TCP connection from %s:%d: SSRC %d of its first packet is no stream's",
                conn.peer[0], conn.peer[1], ssrc,
            )
        return receiver


class SharedPortReceiver(RtpReceiver):
    """One stream's receiver in single-port mode: same interface as ``RtpReceiver``.

    ``start`` adds the stream's route (its ingest's SSRC) to the shared port
    instead of binding; ``stop`` removes it and closes only this stream's TCP
    connection. The route follows ``ingest.rekey`` (a device answering another
    ``y=``). tcp-active streams connect out per stream and need no route.
    """

    def __init__(
        self,
        shared: SharedRtpPort,
        ingest: RtpIngest,
        lease: PortLease,
        *,
        mode: TransportMode,
        no_rtp_timeout: float = 10.0,
        on_timeout: TimeoutHandler | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(
            shared.reactor, ingest, lease, mode=mode, host=shared.host, rcvbuf=shared.rcvbuf,
            no_rtp_timeout=no_rtp_timeout, on_timeout=on_timeout, listen_udp=shared._listen_udp,
            connect_timeout=connect_timeout,
        )
        self.shared = shared
        self.route: int | None = None

    @property
    def local_port(self) -> int:
        return self.shared.local_port

    def _open_transport(self) -> None:
        if self.ingest.ssrc is None:
            raise ValueError("single-port mode routes by SSRC: the stream's ingest needs one")
        if self.mode != "tcp-active" and self.shared.add_route(self.ingest.ssrc, self):
            self.route = self.ingest.ssrc
        self.ingest.rekey_listeners.append(self._rekeyed)

    def _close_transport(self) -> list[defer.Deferred[Any]]:
        if self._rekeyed in self.ingest.rekey_listeners:
            self.ingest.rekey_listeners.remove(self._rekeyed)
        if self.route is not None:
            self.shared.remove_route(self.route, self)
            self.route = None
        return []

    def _rekeyed(self, old: int | None, new: int) -> None:
        if self._stopped or self.mode == "tcp-active":
            return
        if self.route is not None:
            self.shared.remove_route(self.route, self)
            self.route = None
        if self.shared.add_route(new, self):
            self.route = new
        log.info("single-port route of %s moved from SSRC %s to %d", self.lease.owner, old, new)


class SharedDatagramProtocol(protocol.DatagramProtocol):
    def __init__(self, shared: SharedRtpPort) -> None:
        self.shared = shared

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 - Twisted API
        self.shared.datagram_received(datagram, addr)

    def datagramsReceived(self, datagrams: list[bytes], addrs: Any) -> None:  # noqa: N802
        """A read pass of ``RtpUdpPort`` (compiled path, ``exact_sources``): one address each."""
        self.shared.datagrams_received(datagrams, addrs)


class SharedStreamProtocol(RtpStreamProtocol):
    """A TCP connection on the shared port: unbound until its first packet's SSRC is read.

    Only the first frame's prefix and RTP fixed header (at most 16 bytes) are
    held before binding; then everything read so far goes to the stream's
    ingest, which de-frames it (RFC 4571) as in per-port mode.
    """

    def __init__(self, shared: SharedRtpPort) -> None:
        self.shared = shared
        self.peer = ("", 0)
        self.accepted = False
        self._head = bytearray()
        self._bound = False

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        t: Any = self.transport
        peer = t.getPeer()
        self.peer = (str(getattr(peer, "host", "")), int(getattr(peer, "port", 0)))
        self.shared.stats.connections += 1

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        if self.accepted:
            self.owner.stream_bytes(self, data)
            return
        if self._bound:
            return  # refused or closing
        self._head += data
        try:
            ssrc = peek_ssrc(self._head)
        except FramingError as e:
            log.warning("closing RTP/TCP connection from %s:%d: %s", *self.peer, e)
            self._bound = True
            self.close()
            return
        if ssrc is None:
            return
        self._bound = True
        receiver = self.shared.bind_connection(self, ssrc)
        if receiver is None:
            self.close()
            return
        self.owner = receiver
        self.accepted = receiver.connection_made(self)
        if not self.accepted:
            self.close()
            return
        head, self._head = bytes(self._head), bytearray()
        receiver.stream_bytes(self, head)


def peek_ssrc(head: bytes | bytearray) -> int | None:
    """SSRC of the first RTP packet of a framed TCP stream; None until enough bytes came.

    Skips empty RFC 4571 frames; the prefix is RFC 4571 §2 or RTSP interleaved
    (RFC 2326 §10.12), as ``Rfc4571Framer`` reads it. Raises ``FramingError``
    for a declared length below the RTP fixed header.
    """
    pos = 0
    while True:
        if len(head) - pos < 2:
            return None
        if head[pos] == 0x24:
            if len(head) - pos < 4:
                return None
            length = head[pos + 2] << 8 | head[pos + 3]
            start = pos + 4
        else:
            length = head[pos] << 8 | head[pos + 1]
            start = pos + 2
        if length == 0:
            pos = start
            continue
        if length < 12:
            raise FramingError(f"declared frame length {length} is below the 12-byte RTP header")
        if len(head) < start + 12:
            return None
        return int(_SSRC.unpack_from(head, start + 8)[0])


class SharedServerFactory(protocol.ServerFactory):
    def __init__(self, shared: SharedRtpPort) -> None:
        self.shared = shared

    def buildProtocol(self, addr: Any) -> SharedStreamProtocol:  # noqa: N802 - Twisted API
        return SharedStreamProtocol(self.shared)
