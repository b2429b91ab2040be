"""RtpReceiver, the Twisted edge of RTP receiving, against MemoryReactorClock and fakes."""

from __future__ import annotations

import builtins
import logging
import os
import select
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet import protocol as protocol_module
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from media import accel
from media.frame import Frame
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.ports import PortLease
from media.receiver import READS_PER_PASS, RtpReceiver, RtpUdpPort, UdpDrainer
from media.reorder import ReorderBuffer
from media.rtp import RtpPacket
from tests.media_captures import udp_payloads
from tests.unit.accel_paths import accel_path  # noqa: F401 - the fixture

# Every test twice: the compiled receive path and the pure-Python one.
pytestmark = pytest.mark.usefixtures("accel_path")

SSRC = 200001234
DEVICE = ("192.0.2.10", 15060)


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


class FakeSocket:
    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.rcvbuf = 0

    def setsockopt(self, level: int, opt: int, value: int) -> None:
        if (level, opt) == (socket.SOL_SOCKET, 33):  # SO_RCVBUFFORCE without CAP_NET_ADMIN
            raise PermissionError(1, "Operation not permitted")
        assert (level, opt) == (socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.rcvbuf = value if self.cap is None else min(value, self.cap)

    def getsockopt(self, level: int, opt: int) -> int:
        return self.rcvbuf


class FakeUdpPort:
    def __init__(self, port: int, protocol: Any, interface: str, cap: int | None) -> None:
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.handle = FakeSocket(cap)
        self.stopped = 0
        self.reading = True

    def getHost(self) -> IPv4Address:  # noqa: N802 - Twisted API
        return IPv4Address("UDP", self.interface, self.port)

    def stopListening(self) -> None:  # noqa: N802 - Twisted API
        self.stopped += 1

    def getHandle(self) -> FakeSocket:  # noqa: N802 - Twisted API
        return self.handle

    def stopReading(self) -> None:  # noqa: N802 - Twisted API
        self.reading = False


class FakeListenUdp:
    """Stands in for ``reactor.listenUDP`` (MemoryReactor has none)."""

    def __init__(self, cap: int | None = None, refuse: set[int] | None = None) -> None:
        self.ports: dict[int, FakeUdpPort] = {}
        self.cap = cap
        self.refuse = refuse or set()

    def __call__(self, port: int, protocol: Any, interface: str = "") -> FakeUdpPort:
        if port in self.refuse:
            raise CannotListenError(interface, port, OSError("address in use"))
        self.ports[port] = FakeUdpPort(port, protocol, interface, self.cap)
        return self.ports[port]


class Harness:
    def __init__(self, mode: str = "udp", **kw: Any) -> None:
        self.clock = MemoryReactorClock()
        self.sink = Collector()
        dispatcher = FrameDispatcher()
        dispatcher.add_sink(self.sink)
        self.ingest = RtpIngest(dispatcher, reorder=ReorderBuffer(capacity=64, max_wait=0.2))
        self.lease = PortLease(30000, "34020000001320000001_0")
        self.udp = FakeListenUdp(cap=kw.pop("cap", None), refuse=kw.pop("refuse", None))
        self.timeouts: list[str] = []
        self.receiver = RtpReceiver(
            self.clock,
            self.ingest,
            self.lease,
            mode=mode,  # type: ignore[arg-type]
            listen_udp=self.udp,
            on_timeout=self.timeouts.append,
            **kw,
        )

    def send(self, data: bytes, source: tuple[str, int] = DEVICE) -> None:
        protocol = self.udp.ports[30000].protocol
        if accel.ext is not None:
            # What RtpUdpPort hands on the compiled path: a read pass, here of one.
            protocol.datagramsReceived([data], source)
        else:
            protocol.datagramReceived(data, source)

    def connect_tcp(
        self, factory: Any, peer: tuple[str, int] = DEVICE
    ) -> tuple[Any, StringTransport]:
        proto = factory.buildProtocol(IPv4Address("TCP", *peer))
        transport = StringTransport(peerAddress=IPv4Address("TCP", *peer))
        proto.makeConnection(transport)
        return proto, transport


def rtp(seq: int, ssrc: int = SSRC, payload: bytes = b"\x00" * 20) -> bytes:
    return RtpPacket(
        payload_type=96, sequence=seq, timestamp=seq * 3600, ssrc=ssrc, payload=payload
    ).serialize()


def framed(data: bytes) -> bytes:
    """RFC 4571 §2: a two-byte length before each packet."""
    return struct.pack("!H", len(data)) + data


# -- UDP -------------------------------------------------------------------


def test_udp_binds_the_rtp_port_and_its_rtcp_neighbour() -> None:
    h = Harness(host="10.0.0.5")
    h.receiver.start()
    assert sorted(h.udp.ports) == [30000, 30001]
    assert {p.interface for p in h.udp.ports.values()} == {"10.0.0.5"}
    assert h.receiver.local_port == 30000
    assert h.udp.ports[30000].handle.rcvbuf == 4 * 1024 * 1024


def test_udp_datagrams_reach_the_ingest() -> None:
    h = Harness()
    h.receiver.start()
    for seq in range(1, 4):
        h.send(rtp(seq))
    assert h.ingest.stats.packets == 3
    assert h.receiver.stats.datagrams == 3 and h.receiver.stats.sources == 1


def test_rtcp_datagrams_are_counted_and_ignored() -> None:
    h = Harness()
    h.receiver.start()
    h.udp.ports[30001].protocol.datagramReceived(b"\x80\xc9\x00\x01" + b"\x00" * 4, DEVICE)
    assert h.receiver.stats.rtcp_datagrams == 1
    assert h.ingest.stats.packets == h.ingest.stats.bad_packets == 0


def test_other_sources_still_reach_the_ingest_which_filters_by_ssrc() -> None:
    h = Harness()
    h.receiver.start()
    h.send(rtp(1))
    h.send(rtp(2), ("192.0.2.10", 15062))  # NAT rebinding: same SSRC, new port
    h.send(rtp(3, ssrc=999), ("198.51.100.1", 4000))  # another camera's stream
    assert h.receiver.stats.sources == 3
    assert h.ingest.stats.packets == 2 and h.ingest.stats.foreign_ssrc == 1


def test_rcvbuf_is_configurable_and_a_kernel_cap_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(rcvbuf=8 * 1024 * 1024, cap=212992)
    with caplog.at_level(logging.INFO, logger="media.receiver"):
        h.receiver.start()
    assert h.udp.ports[30000].handle.rcvbuf == 212992
    assert any(r.levelno == logging.INFO and "capped" in r.getMessage() for r in caplog.records)


def test_rtcp_bind_failure_closes_the_rtp_port_and_propagates() -> None:
    h = Harness(refuse={30001})
    with pytest.raises(CannotListenError):
        h.receiver.start()
    assert h.udp.ports[30000].stopped == 1
    assert h.clock.getDelayedCalls() == []
    done = h.receiver.stop()
    assert done.called and h.clock.getDelayedCalls() == []


def test_bad_input_and_ingest_errors_never_raise(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness()
    h.receiver.start()
    h.send(b"\x01\x02")
    assert h.ingest.stats.bad_packets == 1

    def broken(data: bytes, now: float) -> None:
        raise RuntimeError("demuxer bug")

    monkeypatch.setattr(h.ingest, "datagram", broken)
    with caplog.at_level(logging.ERROR, logger="media.receiver"):
        h.send(rtp(1))
    assert h.receiver.stats.ingest_errors == 1
    assert any(r.exc_info and "demuxer bug" in str(r.exc_info[1]) for r in caplog.records)


def test_the_captured_stream_gives_its_frames_through_udp(shared_dir: Path) -> None:
    h = Harness()
    h.receiver.start()
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap"):
        h.send(payload)
        h.clock.advance(0.0025)
    h.receiver.stop()
    assert h.ingest.stats.packets == 3757
    assert len(h.sink.frames) == 250  # the last frame is cut off by the capture's end


# -- timers ----------------------------------------------------------------


def test_no_rtp_timeout_fires_once() -> None:
    h = Harness(no_rtp_timeout=10.0)
    h.receiver.start()
    h.clock.advance(9.9)
    assert h.timeouts == []
    h.clock.advance(0.1)
    assert h.timeouts == ["no RTP received in 10 s"]
    h.clock.advance(100)
    assert len(h.timeouts) == 1 and h.receiver.stats.timeouts == 1
    assert h.clock.getDelayedCalls() == []


def test_packets_push_the_timeout_back() -> None:
    h = Harness(no_rtp_timeout=10.0)
    h.receiver.start()
    h.clock.advance(5)
    h.send(rtp(1))
    h.clock.advance(6)  # t=11: the first deadline passes, a packet came at 5
    assert h.timeouts == []
    h.clock.advance(3.9)
    assert h.timeouts == []
    h.clock.advance(0.1)  # t=15
    assert h.timeouts == ["no RTP for 10 s"]


def test_foreign_ssrc_packets_do_not_keep_the_stream_alive() -> None:
    h = Harness(no_rtp_timeout=10.0)
    h.ingest.rekey(SSRC)
    h.receiver.start()
    for _ in range(10):
        h.clock.advance(1)
        h.send(rtp(1, ssrc=7))
    assert len(h.timeouts) == 1


def test_timeout_handler_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()

    def boom(reason: str) -> None:
        raise RuntimeError("BYE failed")

    h.receiver.on_timeout = boom
    h.receiver.start()
    with caplog.at_level(logging.ERROR, logger="media.receiver"):
        h.clock.advance(10)
    assert any("timeout handler" in r.getMessage() for r in caplog.records)


def test_reorder_timer_is_armed_for_the_ingest_deadline_and_re_armed() -> None:
    h = Harness(no_rtp_timeout=100.0)
    h.receiver.start()
    h.send(rtp(1))
    assert len(h.clock.getDelayedCalls()) == 1  # only the watchdog: nothing waits
    h.send(rtp(3))  # 2 is missing: 3 waits max_wait
    times = sorted(c.getTime() for c in h.clock.getDelayedCalls())
    assert times == [pytest.approx(0.2), 100.0]
    h.clock.advance(0.2)
    assert h.ingest.reorder.stats.lost == 1 and h.ingest.reorder.pending == 0
    assert len(h.clock.getDelayedCalls()) == 1
    h.clock.advance(1.0)
    h.send(rtp(4))
    h.send(rtp(6))
    times = sorted(c.getTime() for c in h.clock.getDelayedCalls())
    assert times == [pytest.approx(1.4), 100.0]
    h.send(rtp(5))  # the gap fills: nothing waits, the timer goes
    assert len(h.clock.getDelayedCalls()) == 1


# -- TCP passive -----------------------------------------------------------


def test_tcp_passive_listens_on_the_lease_port_and_feeds_the_ingest() -> None:
    h = Harness("tcp-passive", host="10.0.0.5")
    h.receiver.start()
    port, factory, _, interface = h.clock.tcpServers[0]
    assert (port, interface) == (30000, "10.0.0.5")
    assert h.receiver.local_port == 30000
    _, transport = h.connect_tcp(factory)
    stream = b"".join(framed(rtp(seq)) for seq in range(1, 6))
    h.receiver.connection.dataReceived(stream[:7])  # type: ignore[union-attr]
    h.receiver.connection.dataReceived(stream[7:])  # type: ignore[union-attr]
    assert h.ingest.stats.packets == 5
    assert not transport.disconnecting


def test_tcp_passive_accepts_one_connection_and_refuses_a_second() -> None:
    h = Harness("tcp-passive")
    h.receiver.start()
    factory = h.clock.tcpServers[0][1]
    first, t1 = h.connect_tcp(factory)
    second, t2 = h.connect_tcp(factory, ("203.0.113.9", 40000))
    assert t2.disconnecting and not t1.disconnecting
    assert h.receiver.stats.refused_connections == 1 and h.receiver.stats.connections == 1
    second.dataReceived(framed(rtp(1)))
    second.connectionLost(None)
    assert h.ingest.stats.packets == 0 and h.receiver.connection is first
    # Once the first goes, the device may reconnect.
    first.connectionLost(None)
    third, t3 = h.connect_tcp(factory)
    assert h.receiver.connection is third and not t3.disconnecting


def test_tcp_framing_failure_closes_the_connection() -> None:
    h = Harness("tcp-passive")
    h.receiver.start()
    proto, transport = h.connect_tcp(h.clock.tcpServers[0][1])
    proto.dataReceived(framed(rtp(1)))
    assert not transport.disconnecting
    proto.dataReceived(b"\x00\x05hello")  # 5 < an RTP header
    assert transport.disconnecting
    assert h.ingest.failed is not None and h.receiver.stats.framing_failures == 1
    assert h.ingest.stats.packets == 1


def test_tcp_passive_listen_failure_propagates() -> None:
    h = Harness("tcp-passive")

    def refuse(*args: Any, **kw: Any) -> None:
        raise CannotListenError("", 30000, OSError("address in use"))

    h.clock.listenTCP = refuse  # type: ignore[method-assign]
    with pytest.raises(CannotListenError):
        h.receiver.start()
    assert h.clock.getDelayedCalls() == []


# -- TCP active ------------------------------------------------------------


def test_tcp_active_connects_to_the_answered_address() -> None:
    h = Harness("tcp-active", connect_timeout=5.0)
    h.receiver.start()
    d = h.receiver.connect("192.0.2.20", 6000)
    host, port, factory, timeout, _ = h.clock.tcpClients[0]
    assert (host, port, timeout) == ("192.0.2.20", 6000, 5.0)
    assert not d.called
    _, transport = h.connect_tcp(factory, ("192.0.2.20", 6000))
    assert d.called and d.result is None
    h.receiver.connection.dataReceived(framed(rtp(1)) + framed(rtp(2)))  # type: ignore[union-attr]
    assert h.ingest.stats.packets == 2


def test_tcp_active_connect_failure_errbacks() -> None:
    h = Harness("tcp-active")
    h.receiver.start()
    d = h.receiver.connect("192.0.2.20", 6000)
    factory = h.clock.tcpClients[0][2]
    factory.clientConnectionFailed(h.clock.connectors[0], Failure(ConnectionRefusedError()))
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(ConnectionRefusedError)


def test_connect_is_only_for_tcp_active() -> None:
    h = Harness("udp")
    with pytest.raises(ValueError, match="tcp-active"):
        h.receiver.connect("192.0.2.20", 6000)


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown RTP transport mode"):
        Harness("sctp")


# -- stop ------------------------------------------------------------------


def test_stop_closes_everything_and_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    closed: list[float] = []
    real_close = h.ingest.close

    def close(now: float) -> None:
        closed.append(now)
        real_close(now)

    monkeypatch.setattr(h.ingest, "close", close)
    h.receiver.start()
    h.send(rtp(1))
    h.send(rtp(3))  # arms the reorder timer
    assert len(h.clock.getDelayedCalls()) == 2
    d1 = h.receiver.stop()
    d2 = h.receiver.stop()
    assert d1.called and d2.called
    assert h.clock.getDelayedCalls() == []
    assert [p.stopped for p in h.udp.ports.values()] == [1, 1]
    assert closed == [0.0]
    h.send(rtp(4))  # a datagram already queued in the socket
    assert h.ingest.stats.packets == 2
    h.clock.advance(100)
    assert h.timeouts == []


def test_stop_closes_the_tcp_connection_and_listener() -> None:
    h = Harness("tcp-passive")
    h.receiver.start()
    _, transport = h.connect_tcp(h.clock.tcpServers[0][1])
    h.receiver.stop()
    assert transport.disconnecting and h.receiver.connection is None
    assert h.clock.getDelayedCalls() == []


def test_stop_cancels_a_pending_connect() -> None:
    h = Harness("tcp-active")
    h.receiver.start()
    d = h.receiver.connect("192.0.2.20", 6000)
    h.receiver.stop()
    assert h.clock.connectors[0].stoppedConnecting
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(defer.CancelledError)
    assert h.clock.getDelayedCalls() == []


def test_stop_waits_for_the_ports_to_close() -> None:
    h = Harness("tcp-passive")
    h.receiver.start()
    closing: defer.Deferred[None] = defer.Deferred()
    h.receiver._tcp_port.stopListening = lambda: closing  # noqa: SLF001
    d1 = h.receiver.stop()
    d2 = h.receiver.stop()
    assert not d1.called and not d2.called
    closing.callback(None)
    assert d1.called and d2.called
    assert h.receiver.stop().called


# -- reading: RtpUdpPort and UdpDrainer ------------------------------------------


class QueueSocket:
    """recvfrom() from a queue, then EAGAIN, like a non-blocking UDP socket."""

    def __init__(self, datagrams: list[bytes], error: OSError | None = None) -> None:
        self.queue = list(datagrams)
        self.error = error
        self.calls = 0

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        return self.recv(size), DEVICE

    def recv(self, size: int) -> bytes:
        self.calls += 1
        if self.queue:
            return self.queue.pop(0)[:size]
        if self.error is not None:
            raise self.error
        raise BlockingIOError(11, "EAGAIN")


class Recorder(protocol_module.DatagramProtocol):
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.got: list[tuple[bytes, Any]] = []
        self.fail_on = fail_on

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802 - Twisted API
        if datagram == self.fail_on:
            raise RuntimeError("handler bug")
        self.got.append((datagram, addr))


def rtp_port(sock: QueueSocket, proto: Recorder) -> RtpUdpPort:
    port = RtpUdpPort(0, proto, "127.0.0.1", 8192, MemoryReactorClock())
    port.socket = sock
    return port


def test_rtp_udp_port_reads_until_the_socket_is_empty() -> None:
    proto = Recorder()
    sock = QueueSocket([b"a", b"b", b"c"])
    rtp_port(sock, proto).doRead()
    assert proto.got == [(b"a", DEVICE), (b"b", DEVICE), (b"c", DEVICE)] and sock.calls == 4


def test_rtp_udp_port_reads_a_bounded_batch_per_pass() -> None:
    proto = Recorder()
    sock = QueueSocket([b"x"] * (READS_PER_PASS + 5))
    port = rtp_port(sock, proto)
    port.doRead()
    assert len(proto.got) == READS_PER_PASS and sock.calls == READS_PER_PASS
    port.doRead()
    assert len(proto.got) == READS_PER_PASS + 5


def test_rtp_udp_port_survives_refusals_handler_errors_and_closing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    proto = Recorder(fail_on=b"bad")
    # The OS error (builtins), not Twisted's ConnectionRefusedError imported above.
    sock = QueueSocket([b"bad", b"ok"], error=builtins.ConnectionRefusedError(111, "refused"))
    port = rtp_port(sock, proto)
    with caplog.at_level(logging.ERROR, logger="media.receiver"):
        port.doRead()
    assert proto.got == [(b"ok", DEVICE)]
    assert any("handler failed" in r.getMessage() for r in caplog.records)
    del port.socket  # what connectionLost does
    port.doRead()


class FakeReadable:
    def __init__(self, fail: bool = False) -> None:
        self.reads = 0
        self.reading = True
        self.fail = fail

    def stopReading(self) -> None:  # noqa: N802 - Twisted API
        self.reading = False

    def doRead(self) -> None:  # noqa: N802 - Twisted API
        self.reads += 1
        if self.fail:
            raise OSError("EBADF")


def test_drainer_reads_every_port_on_one_timer() -> None:
    clock = MemoryReactorClock()
    drainer = UdpDrainer(clock, interval=0.005)
    a, b = FakeReadable(), FakeReadable()
    drainer.add(a)
    drainer.add(b)
    assert not a.reading and not b.reading  # off the reactor's read set
    assert len(clock.getDelayedCalls()) == 1
    for _ in range(4):
        clock.advance(0.005)
    assert (a.reads, b.reads, drainer.passes) == (4, 4, 4)
    drainer.remove(a)
    drainer.remove(a)  # harmless
    clock.advance(0.005)
    assert (a.reads, b.reads) == (4, 5)
    drainer.remove(b)
    assert clock.getDelayedCalls() == []  # no ports, no timer
    drainer.add(a)
    clock.advance(0.005)
    assert a.reads == 5


def test_drainer_drops_a_port_whose_read_fails(caplog: pytest.LogCaptureFixture) -> None:
    clock = MemoryReactorClock()
    drainer = UdpDrainer(clock)
    bad, good = FakeReadable(fail=True), FakeReadable()
    drainer.add(bad)
    drainer.add(good)
    with caplog.at_level(logging.ERROR, logger="media.receiver"):
        clock.advance(drainer.interval)
        clock.advance(drainer.interval)
    assert (bad.reads, good.reads) == (1, 2) and list(drainer.ports.values()) == [good]
    with pytest.raises(ValueError):
        UdpDrainer(clock, interval=0)


def test_receiver_registers_its_rtp_socket_with_the_drainer() -> None:
    clock_drainer = UdpDrainer(MemoryReactorClock())
    h = Harness(drainer=clock_drainer)
    h.receiver.start()
    port = h.udp.ports[30000]
    assert list(clock_drainer.ports.values()) == [port] and port.reading is False
    h.receiver.stop()
    assert clock_drainer.ports == {}


class PipeReadable(FakeReadable):
    """A port whose fd is a pipe: readable while a byte waits (epoll works on pipes)."""

    def __init__(self) -> None:
        super().__init__()
        self.r, self.w = os.pipe()

    def fileno(self) -> int:
        return self.r

    def doRead(self) -> None:  # noqa: N802 - Twisted API
        self.reads += 1
        os.read(self.r, 1)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux-only")
def test_drainer_reads_only_the_ports_with_data_waiting() -> None:
    clock = MemoryReactorClock()
    drainer = UdpDrainer(clock)
    busy, idle = PipeReadable(), PipeReadable()
    try:
        drainer.add(busy)
        drainer.add(idle)
        os.write(busy.w, b"x")
        clock.advance(drainer.interval)
        assert (busy.reads, idle.reads) == (1, 0)
        clock.advance(drainer.interval)  # drained: nobody is read
        assert (busy.reads, idle.reads) == (1, 0)
        os.write(idle.w, b"y")
        drainer.remove(busy)
        clock.advance(drainer.interval)
        assert (busy.reads, idle.reads) == (1, 1)
        drainer.remove(idle)
        assert clock.getDelayedCalls() == []
    finally:
        busy.close()
        idle.close()


class SourcesSocket(QueueSocket):
    def __init__(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        super().__init__([d for d, _ in datagrams])
        self.sources = [a for _, a in datagrams]

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        data = self.recv(size)
        return data, self.sources.pop(0)


def test_rtp_udp_port_reads_each_source_when_told_to() -> None:
    other = ("192.0.2.99", 7000)
    sent = [(b"a", DEVICE), (b"b", other), (b"c", DEVICE)]
    proto = Recorder()
    port = rtp_port(SourcesSocket(sent), proto)
    port.doRead()
    assert [a for _, a in proto.got] == [DEVICE, DEVICE, DEVICE]  # one address per pass
    proto = Recorder()
    port = rtp_port(SourcesSocket(sent), proto)
    port.exact_sources = True
    port.doRead()
    assert proto.got == sent
