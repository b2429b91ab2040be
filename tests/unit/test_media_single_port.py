"""Single-port mode: one UDP socket and one TCP listener for every stream, routed by SSRC."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport

from media import accel
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.ports import PortLease, PortsExhausted, SharedPortPool
from media.receiver import SharedRtpPort, UdpDrainer, peek_ssrc
from media.reorder import ReorderBuffer
from media.rtp import RtpPacket
from tests.media_captures import udp_payloads
from tests.unit.accel_paths import accel_path  # noqa: F401 - the fixture
from tests.unit.test_media_receiver import DEVICE, Collector, FakeListenUdp, framed, rtp

# Every test twice: the compiled receive path and the pure-Python one.
pytestmark = pytest.mark.usefixtures("accel_path")

PORT = 10000
A, B = 200001111, 200002222


class Stream:
    def __init__(self, shared: SharedRtpPort, ssrc: int, name: str, mode: str = "udp") -> None:
        self.sink = Collector()
        dispatcher = FrameDispatcher()
        dispatcher.add_sink(self.sink)
        self.ingest = RtpIngest(dispatcher, ssrc=ssrc, reorder=ReorderBuffer(max_wait=0.2))
        self.timeouts: list[str] = []
        self.receiver = shared.receiver(
            self.ingest, PortLease(PORT, name), mode=mode,  # type: ignore[arg-type]
            no_rtp_timeout=10.0, on_timeout=self.timeouts.append,
        )


class Harness:
    def __init__(self) -> None:
        self.clock = MemoryReactorClock()
        self.udp = FakeListenUdp()
        self.shared = SharedRtpPort(self.clock, PORT, host="10.0.0.5", listen_udp=self.udp)
        self.shared.startService()

    def stream(self, ssrc: int, name: str = "ch", mode: str = "udp", start: bool = True) -> Stream:
        s = Stream(self.shared, ssrc, name, mode)
        if start:
            s.receiver.start()
        return s

    def send(self, data: bytes, source: tuple[str, int] = DEVICE) -> None:
        protocol = self.udp.ports[PORT].protocol
        if accel.ext is not None:
            # What RtpUdpPort hands on the compiled path: a read pass, here of one.
            protocol.datagramsReceived([data], [source])
        else:
            protocol.datagramReceived(data, source)

    @property
    def tcp_factory(self) -> Any:
        return self.clock.tcpServers[0][1]

    def connect(self, peer: tuple[str, int] = DEVICE) -> tuple[Any, StringTransport]:
        proto = self.tcp_factory.buildProtocol(IPv4Address("TCP", *peer))
        transport = StringTransport(peerAddress=IPv4Address("TCP", *peer))
        proto.makeConnection(transport)
        return proto, transport


def test_one_udp_socket_and_one_tcp_listener_on_the_same_port() -> None:
    h = Harness()
    assert list(h.udp.ports) == [PORT]
    assert [(p, i) for p, _, _, i in h.clock.tcpServers] == [(PORT, "10.0.0.5")]
    assert h.udp.ports[PORT].handle.rcvbuf == 64 * 1024 * 1024  # SO_RCVBUFFORCE refused
    a, b = h.stream(A, "a"), h.stream(B, "b", "tcp-passive")
    # Streams bind nothing of their own.
    assert list(h.udp.ports) == [PORT] and len(h.clock.tcpServers) == 1
    assert a.receiver.local_port == b.receiver.local_port == PORT


def test_datagrams_are_routed_by_ssrc() -> None:
    h = Harness()
    a, b = h.stream(A, "a"), h.stream(B, "b")
    for seq in range(1, 4):
        h.send(rtp(seq, ssrc=A))
        h.send(rtp(seq, ssrc=B))
    h.send(rtp(4, ssrc=B))
    assert (a.ingest.stats.packets, b.ingest.stats.packets) == (3, 4)
    assert a.ingest.stats.foreign_ssrc == b.ingest.stats.foreign_ssrc == 0
    assert a.receiver.stats.datagrams == 3 and h.shared.stats.datagrams == 7


def test_unknown_ssrc_short_and_rtcp_datagrams_are_counted_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    a = h.stream(A)
    with caplog.at_level(logging.INFO, logger="media.receiver"):
        h.send(rtp(1, ssrc=999))
    h.send(b"\x80\x60\x00")
    h.send(b"\x80\xc8\x00\x06" + A.to_bytes(4, "big") + bytes(20))  # RTCP SR (RFC 5761 mux)
    s = h.shared.stats
    assert (s.unknown_ssrc, s.short_datagrams, s.rtcp_datagrams) == (1, 1, 1)
    assert a.ingest.stats.packets == 0 and a.ingest.stats.bad_packets == 0
    assert any("SSRC 999" in r.getMessage() for r in caplog.records)


def test_rekey_moves_the_route() -> None:
    h = Harness()
    a = h.stream(A)
    a.ingest.rekey(B)  # the device answered y=B
    h.send(rtp(1, ssrc=A))
    h.send(rtp(2, ssrc=B))
    assert a.ingest.stats.packets == 1 and h.shared.stats.unknown_ssrc == 1
    assert h.shared.routes == {B: a.receiver}


def test_rekey_onto_another_streams_ssrc_keeps_the_streams_apart() -> None:
    h = Harness()
    a, b = h.stream(A, "a"), h.stream(B, "b")
    b.ingest.rekey(A)
    h.send(rtp(1, ssrc=A))
    assert (a.ingest.stats.packets, b.ingest.stats.packets) == (1, 0)
    assert h.shared.stats.ssrc_conflicts == 1 and h.shared.routes == {A: a.receiver}
    b.receiver.stop()
    assert h.shared.routes == {A: a.receiver}  # b never owned A: a keeps it


def test_a_stream_needs_an_ssrc() -> None:
    h = Harness()
    s = h.stream(A, start=False)
    s.ingest.ssrc = None
    with pytest.raises(ValueError, match="routes by SSRC"):
        s.receiver.start()


def test_stopping_a_stream_never_closes_the_shared_port() -> None:
    h = Harness()
    a, b = h.stream(A, "a"), h.stream(B, "b")
    a.receiver.stop()
    a.receiver.stop()  # idempotent
    assert h.udp.ports[PORT].stopped == 0
    h.send(rtp(1, ssrc=A))
    h.send(rtp(1, ssrc=B))
    assert a.ingest.stats.packets == 0 and b.ingest.stats.packets == 1
    assert h.shared.routes == {B: b.receiver} and a.ingest.rekey_listeners == []
    b.receiver.stop()
    assert h.shared.routes == {} and h.udp.ports[PORT].stopped == 0
    h.shared.stopService()
    assert h.udp.ports[PORT].stopped == 1


def test_watchdog_fires_per_stream() -> None:
    h = Harness()
    a, b = h.stream(A, "a"), h.stream(B, "b")
    for _ in range(12):
        h.clock.advance(1)
        h.send(rtp(_ + 1, ssrc=B))
    assert a.timeouts == ["no RTP received in 10 s"] and b.timeouts == []


def test_the_captured_stream_plays_beside_another(shared_dir: Path) -> None:
    h = Harness()
    a, b = h.stream(A, "a"), h.stream(B, "b")
    captured = udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")
    for _, payload in captured:
        packet = RtpPacket.parse(payload)
        for ssrc in (A, B):
            h.send(RtpPacket(packet.payload_type, packet.sequence, packet.timestamp, ssrc,
                             packet.payload, packet.marker).serialize())
        h.clock.advance(0.0025)
    a.receiver.stop()
    b.receiver.stop()
    assert len(a.sink.frames) == len(b.sink.frames) == 250
    assert [f.data for f in a.sink.frames] == [f.data for f in b.sink.frames]


# -- TCP -------------------------------------------------------------------------


def test_tcp_connection_is_bound_by_its_first_packets_ssrc() -> None:
    h = Harness()
    a, b = h.stream(A, "a", "tcp-passive"), h.stream(B, "b", "tcp-passive")
    data = b"".join(framed(rtp(seq, ssrc=B)) for seq in range(1, 6))
    proto, transport = h.connect()
    for i in range(len(data)):  # one byte at a time: the SSRC arrives split
        proto.dataReceived(data[i : i + 1])
    assert b.ingest.stats.packets == 5 and a.ingest.stats.packets == 0
    assert b.receiver.connection is proto and not transport.disconnecting
    assert h.shared.stats.connections == 1
    proto.connectionLost(None)
    assert b.receiver.connection is None


def test_udp_stream_may_come_over_tcp_too() -> None:
    h = Harness()
    a = h.stream(A)  # the port is one: the mode only changes what the offer says
    proto, _ = h.connect()
    proto.dataReceived(framed(rtp(1, ssrc=A)))
    assert a.ingest.stats.packets == 1


def test_tcp_connection_with_unknown_ssrc_is_closed() -> None:
    h = Harness()
    h.stream(A, mode="tcp-passive")
    proto, transport = h.connect()
    proto.dataReceived(framed(rtp(1, ssrc=12345)))
    assert transport.disconnecting and h.shared.stats.unknown_ssrc_connections == 1
    proto.dataReceived(framed(rtp(2, ssrc=A)))
    proto.connectionLost(None)


def test_second_tcp_connection_of_a_stream_is_refused() -> None:
    h = Harness()
    a = h.stream(A, mode="tcp-passive")
    first, t1 = h.connect()
    first.dataReceived(framed(rtp(1, ssrc=A)))
    second, t2 = h.connect(("203.0.113.9", 40000))
    second.dataReceived(framed(rtp(2, ssrc=A)))
    assert t2.disconnecting and not t1.disconnecting
    assert a.receiver.stats.refused_connections == 1 and a.ingest.stats.packets == 1
    second.connectionLost(None)
    assert a.receiver.connection is first


def test_tcp_framing_garbage_closes_the_connection() -> None:
    h = Harness()
    h.stream(A, mode="tcp-passive")
    proto, transport = h.connect()
    proto.dataReceived(b"\x00\x05hello")
    assert transport.disconnecting


def test_stopping_a_stream_closes_its_connection_only() -> None:
    h = Harness()
    a, b = h.stream(A, "a", "tcp-passive"), h.stream(B, "b", "tcp-passive")
    pa, ta = h.connect()
    pa.dataReceived(framed(rtp(1, ssrc=A)))
    pb, tb = h.connect(("192.0.2.11", 5000))
    pb.dataReceived(framed(rtp(1, ssrc=B)))
    a.receiver.stop()
    assert ta.disconnecting and not tb.disconnecting
    assert len(h.clock.tcpServers) == 1 and b.receiver.connection is pb


def test_peek_ssrc_reads_both_framings_and_skips_empty_frames() -> None:
    packet = rtp(1, ssrc=A)
    assert peek_ssrc(b"") is None
    assert peek_ssrc(framed(packet)[:13]) is None
    assert peek_ssrc(framed(packet)[:14]) == A
    assert peek_ssrc(b"\x00\x00" + framed(packet)) == A
    interleaved = b"$\x00" + len(packet).to_bytes(2, "big") + packet
    assert peek_ssrc(interleaved[:15]) is None and peek_ssrc(interleaved) == A


def test_tcp_active_still_connects_per_stream() -> None:
    h = Harness()
    a = h.stream(A, mode="tcp-active")
    assert h.shared.routes == {}  # its packets come on its own connection
    d = a.receiver.connect("192.0.2.20", 6000)
    host, port, factory, _, _ = h.clock.tcpClients[0]
    assert (host, port) == ("192.0.2.20", 6000)
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    proto.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", host, port)))
    assert d.called
    proto.dataReceived(framed(rtp(1, ssrc=A)))
    assert a.ingest.stats.packets == 1
    a.ingest.rekey(B)
    assert h.shared.routes == {}


# -- start/stop and leases -------------------------------------------------------


def test_tcp_listen_failure_closes_the_udp_socket() -> None:
    clock = MemoryReactorClock()
    udp = FakeListenUdp()

    def refuse(*args: Any, **kw: Any) -> None:
        raise CannotListenError("", PORT, OSError("address in use"))

    clock.listenTCP = refuse  # type: ignore[method-assign]
    shared = SharedRtpPort(clock, PORT, listen_udp=udp)
    with pytest.raises(CannotListenError):
        shared.start()
    assert udp.ports[PORT].stopped == 1


def test_shared_port_pool_leases_the_one_port_to_every_stream() -> None:
    pool = SharedPortPool(PORT, max_streams=2)
    first, second = pool.lease("a"), pool.lease("b")
    assert first.rtp == second.rtp == PORT and pool.in_use == 2 and pool.available == 0
    with pytest.raises(PortsExhausted, match="single RTP port 10000"):
        pool.lease("c")
    assert pool.release(first) and not pool.release(first)
    assert not pool.release(PortLease(PORT, "b"))  # equal, but not the lease handed out
    pool.unusable(second)
    assert pool.in_use == 0 and pool.capacity == 2 and pool.leases() == []
    with pytest.raises(ValueError):
        SharedPortPool(0)



def test_the_shared_socket_is_read_by_the_drainer() -> None:
    clock = MemoryReactorClock()
    udp = FakeListenUdp()
    drainer = UdpDrainer(clock)
    shared = SharedRtpPort(clock, PORT, listen_udp=udp, drainer=drainer)
    shared.startService()
    assert list(drainer.ports.values()) == [udp.ports[PORT]] and udp.ports[PORT].reading is False
    shared.stopService()
    assert drainer.ports == {} and clock.getDelayedCalls() == []
