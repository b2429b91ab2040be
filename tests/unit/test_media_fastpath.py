"""The compiled receive path (media/_fastpath.c) against its Python reference.

Each compiled loop must leave exactly what the Python code leaves: the same
frames, counters, reorder state and errors, for good input and for bad. The
capture is replayed in read-pass batches with losses, reordering, duplicates,
foreign SSRCs, uncommon headers and garbage mixed in; random bytes and
mutated packets are fed to both paths; real UDP sockets on 127.0.0.1 check
``recv_batch`` and ``RtpUdpPort`` on top of it.
"""

from __future__ import annotations

import random
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from media import accel
from media.frame import Frame
from media.framing import FramingError, Rfc4571Framer
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.receiver import RtpUdpPort
from media.reorder import ReorderBuffer
from media.rtp import RtpPacket
from tests.media_captures import udp_payloads
from tests.unit.accel_paths import compiled

pytestmark = pytest.mark.skipif(compiled is None, reason="media._fastpath is not built here")
fast: Any = compiled


@pytest.fixture(autouse=True)
def compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled path on, even under GBP_PUREPYTHON=1; tests switch it off where they compare."""
    monkeypatch.setattr(accel, "ext", fast)


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.counts: list[int] = []  # frames out after each read pass

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def udp(shared_dir: Path) -> list[bytes]:
    return [p for _, p in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")]


def replay(
    monkeypatch: pytest.MonkeyPatch, ext: Any, batches: list[list[bytes]], **kw: Any
) -> tuple[RtpIngest, Collector]:
    """Feed read-pass batches, 5 ms apart, through an ingest built on one path."""
    monkeypatch.setattr(accel, "ext", ext)
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher, **kw)
    assert (ingest._fast_run is not None) == (ext is not None)
    now = 0.0
    for batch in batches:
        ingest.datagrams(batch, now)
        ingest.tick(now)
        sink.counts.append(len(sink.frames))
        now += 0.005
    ingest.close(now)
    return ingest, sink


def state(ingest: RtpIngest, sink: Collector) -> dict[str, Any]:
    """Everything the two paths must agree on."""
    r = ingest.reorder
    return {
        "stats": ingest.stats,
        "reorder": r.stats,
        "reorder_state": (r._expected, r._highest, r._last_ts, r._last_now, bytes(r._fate)),
        "ps": ingest.demuxer.stats,
        "dropped": ingest.dropped_frames,
        "ssrc": ingest.ssrc,
        "marker": (ingest._marker_trust, ingest._marker_pending, ingest._ps_ended),
        "when": sink.counts,
        "frames": [(f.codec, f.data, f.pts, f.dts, f.keyframe, f.stream_id) for f in sink.frames],
    }


def both(
    monkeypatch: pytest.MonkeyPatch, batches: list[list[bytes]], max_wait: float = 0.1,
    **kw: Any,
) -> dict[str, Any]:
    """Both paths, each with its own reorder buffer; their results must be equal."""
    c = state(*replay(monkeypatch, fast, batches, reorder=ReorderBuffer(max_wait=max_wait), **kw))
    py = state(*replay(monkeypatch, None, batches, reorder=ReorderBuffer(max_wait=max_wait), **kw))
    assert c == py
    return c


def chunked(packets: list[bytes], rng: random.Random, most: int = 40) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    i = 0
    while i < len(packets):
        n = rng.randint(1, most)
        out.append(packets[i : i + n])
        i += n
    return out


def test_the_capture_in_read_passes_gives_what_python_gives(
    udp: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    got = both(monkeypatch, chunked(udp, random.Random(1)))
    assert len(got["frames"]) == 250 and got["stats"].packets == len(udp)


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_marker_trust_mid_frame_markers_strays_and_lost_markers_give_what_python_gives(
    udp: list[bytes], monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The marker bit's trust (RtpIngest._deliver) taken the same way on both paths."""
    rng = random.Random(seed)
    packets = list(udp[:900])
    marker_at = [i for i, d in enumerate(packets) if d[1] & 0x80]
    # Some marker packets lost (an in-sequence gap), a stray of a marker-ended frame.
    for i in sorted(rng.sample(marker_at[5:], 3), reverse=True):
        del packets[i]
    if seed != 3:
        # A marker mid-frame, once the stream is trusted.
        i = marker_at[rng.randint(8, 20)] - 2
        b = bytearray(packets[i])
        b[1] |= 0x80
        packets[i] = bytes(b)
    got = both(monkeypatch, chunked(packets, rng), max_wait=0.01)
    trust = got["marker"][0]
    assert trust == (3 if seed == 3 else -1)
    assert (got["stats"].after_marker > 0) == (seed != 3)


def test_losses_reordering_duplicates_and_strangers_give_what_python_gives(
    udp: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    packets = list(udp[:1500])
    for _ in range(40):  # swaps: reordered packets
        i = rng.randrange(len(packets) - 3)
        packets[i], packets[i + 2] = packets[i + 2], packets[i]
    for _ in range(20):  # losses
        del packets[rng.randrange(len(packets))]
    for _ in range(20):  # duplicates
        i = rng.randrange(len(packets))
        packets.insert(i + rng.randint(0, 5), packets[i])
    foreign = bytearray(udp[3])
    foreign[8:12] = b"\x01\x02\x03\x04"
    odd = RtpPacket.parse(udp[5])  # CSRC, extension and padding: the Python parser's case
    uncommon = RtpPacket(
        payload_type=odd.payload_type, sequence=odd.sequence, timestamp=odd.timestamp,
        ssrc=odd.ssrc, payload=bytes(odd.payload), marker=odd.marker, csrcs=(9,),
        padding_size=3,
    ).serialize()
    for extra in (bytes(foreign), b"\x80", b"garbage-garbage", b"\x40" * 20, uncommon):
        packets.insert(rng.randrange(len(packets)), extra)
    got = both(monkeypatch, chunked(packets, rng), max_wait=0.02)
    r = got["reorder"]
    assert r.lost and r.duplicates and r.reordered and got["stats"].foreign_ssrc
    assert got["stats"].bad_packets == 3


def test_a_sequence_jump_h264_payloads_and_unknown_payload_types_give_what_python_gives(
    udp: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    packets = list(udp[:300])
    jumped = []
    for raw in udp[300:600]:  # a restarted sender: sequence numbers far away
        b = bytearray(raw)
        struct.pack_into("!H", b, 2, (struct.unpack_from("!H", b, 2)[0] + 20000) & 0xFFFF)
        jumped.append(bytes(b))
    retyped = []
    for raw in udp[600:700]:  # payload type 98 (H.264 by the default map), then 111 (unmapped)
        b = bytearray(raw)
        b[1] = (b[1] & 0x80) | (98 if len(retyped) < 50 else 111)
        retyped.append(bytes(b))
    got = both(monkeypatch, chunked(packets + jumped + retyped, random.Random(3)))
    # Out to +20000 and back: two restarts.
    assert got["reorder"].resets == 2 and got["stats"].unknown_payload_type == 1


def test_ssrc_set_by_the_first_packet_and_rekey_give_what_python_gives(
    udp: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    got = both(monkeypatch, chunked(udp[:400], random.Random(5)), ssrc=None)
    assert got["ssrc"] == struct.unpack_from("!I", udp[0], 8)[0]
    got = both(monkeypatch, chunked(udp[:400], random.Random(5)), ssrc=1234)
    assert got["stats"].foreign_ssrc == 400 and not got["frames"]


def test_random_bytes_and_mutated_packets_never_crash_and_match_python(
    udp: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    for _round in range(30):
        packets: list[bytes] = []
        for _ in range(120):
            kind = rng.random()
            if kind < 0.2:
                packets.append(rng.randbytes(rng.randint(0, 40)))
            else:
                b = bytearray(udp[rng.randrange(200)])
                for _ in range(rng.randint(0, 4)):
                    b[rng.randrange(len(b)) if kind < 0.6 else rng.randrange(12)] = rng.randrange(256)
                if rng.random() < 0.1:
                    del b[rng.randrange(len(b)) :]
                packets.append(bytes(b))
        both(monkeypatch, chunked(packets, rng, 20), ssrc=None)


# -- RFC 4571 ------------------------------------------------------------------


def python_split(stream: bytes, cuts: list[int]) -> tuple[list[bytes], int, str | None]:
    framer = Rfc4571Framer()
    framer._split = None
    return feed_all(framer, stream, cuts)


def feed_all(framer: Rfc4571Framer, stream: bytes, cuts: list[int]) -> tuple[list[bytes], int, str | None]:
    out: list[bytes] = []
    error = None
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    for piece in pieces:
        try:
            out += framer.feed(piece)
        except FramingError as e:
            error = str(e)
            break
    return out, framer.skipped_empty, error


def framed_stream(rng: random.Random, udp: list[bytes]) -> bytes:
    parts = []
    for raw in udp[: rng.randint(1, 30)]:
        r = rng.random()
        if r < 0.1:
            parts.append(b"\x00\x00")  # empty frame
        if r < 0.5:
            parts.append(struct.pack("!H", len(raw)) + raw)
        else:
            parts.append(b"$" + bytes([rng.randrange(4)]) + struct.pack("!H", len(raw)) + raw)
    return b"".join(parts)


def test_rfc4571_split_matches_python_in_any_chunking(udp: list[bytes]) -> None:
    rng = random.Random(2)
    for _ in range(60):
        stream = framed_stream(rng, udp)
        if rng.random() < 0.3:  # garbage or a too-short length somewhere
            i = rng.randrange(len(stream))
            stream = stream[:i] + rng.choice([b"\x00\x05", rng.randbytes(6)]) + stream[i:]
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 8))))
        framer = Rfc4571Framer()
        assert framer._split is not None
        assert feed_all(framer, stream, cuts) == python_split(stream, cuts)


def test_rfc4571_split_reports_what_it_used() -> None:
    packet = b"\x80" + bytes(15)
    stream = b"\x00\x00" + struct.pack("!H", 16) + packet + b"$\x01\x00\x10" + packet + b"\x00\x10\x80"
    packets, used, empty, bad = fast.split_rfc4571(stream)
    assert packets == [packet, packet] and used == len(stream) - 3 and empty == 1 and bad == -1
    assert fast.split_rfc4571(bytearray(b"\x00\x0b" + bytes(11))) == ([], 0, 0, 11)
    assert fast.split_rfc4571(memoryview(b"$")) == ([], 0, 0, -1)
    with pytest.raises(TypeError):
        fast.split_rfc4571("text")


def test_rfc4571_framer_fails_and_stays_failed_on_the_compiled_path() -> None:
    framer = Rfc4571Framer()
    assert framer.feed(b"\x00\x10" + b"\x80" + bytes(7)) == []  # incomplete: kept
    assert framer.buffered == 10
    with pytest.raises(FramingError, match="below the 12-byte"):
        framer.feed(bytes(8) + b"\x00\x03abc")
    with pytest.raises(FramingError, match="failed earlier"):
        framer.feed(b"\x00\x10" + bytes(16))
    small = Rfc4571Framer(max_buffer=8)
    with pytest.raises(FramingError, match="exceed"):
        small.feed(b"\x00\x20" + bytes(10))


# -- single port: SSRC runs -------------------------------------------------------


def test_ssrc_runs_group_a_read_pass_by_stream() -> None:
    def pkt(ssrc: int, b1: int = 96) -> bytes:
        return struct.pack("!BBHII", 0x80, b1, 1, 2, ssrc) + b"x"

    batch = [pkt(5), pkt(5), pkt(7), b"short", pkt(7, 200), pkt(7, 201), pkt(0xFFFFFFFF), pkt(5)]
    assert fast.ssrc_runs(batch) == [
        (5, 0, 2), (7, 2, 3), (-1, 3, 4), (-2, 4, 6), (0xFFFFFFFF, 6, 7), (5, 7, 8)
    ]
    assert fast.ssrc_runs([]) == []
    with pytest.raises(TypeError):
        fast.ssrc_runs([b"\x80" * 12, "text"])


# -- recvmmsg ---------------------------------------------------------------------


@pytest.fixture
def pair() -> Any:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    yield rx, tx
    rx.close()
    tx.close()


def send_all(tx: socket.socket, rx: socket.socket, datagrams: list[bytes]) -> None:
    for d in datagrams:
        tx.sendto(d, rx.getsockname())


def test_recv_batch_reads_many_datagrams_per_call(pair: Any) -> None:
    rx, tx = pair
    sent = [bytes([i % 256]) * (i + 1) for i in range(150)]
    send_all(tx, rx, sent)
    got, addr = fast.recv_batch(rx.fileno(), 100, 8192, False)
    assert got == sent[:100] and addr == tx.getsockname()
    got, addrs = fast.recv_batch(rx.fileno(), 100, 8192, True)
    assert got == sent[100:] and addrs == [tx.getsockname()] * 50
    assert fast.recv_batch(rx.fileno(), 100, 8192, False) == ([], None)
    assert fast.recv_batch(rx.fileno(), 100, 8192, True) == ([], [])


def test_recv_batch_truncates_to_size_and_names_each_source(pair: Any) -> None:
    rx, tx = pair
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        tx.sendto(b"a" * 100, rx.getsockname())
        other.sendto(b"b", rx.getsockname())
        tx.sendto(b"c", rx.getsockname())
        got, addrs = fast.recv_batch(rx.fileno(), 10, 10, True)
        assert got == [b"a" * 10, b"b", b"c"]
        assert addrs == [tx.getsockname(), other.getsockname(), tx.getsockname()]
    finally:
        other.close()


def test_recv_batch_rejects_bad_arguments_and_reports_socket_errors(pair: Any) -> None:
    rx, _ = pair
    with pytest.raises(ValueError):
        fast.recv_batch(rx.fileno(), 10, 0, False)
    with pytest.raises(ValueError):
        fast.recv_batch(rx.fileno(), 0, 100, False)
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = closed.fileno()
    closed.close()
    with pytest.raises(OSError):
        fast.recv_batch(fd, 10, 100, False)


def test_recv_batch_ignores_connection_refused(pair: Any) -> None:
    rx, tx = pair
    # An ICMP port-unreachable for a datagram rx sent to a closed port, as Twisted ignores it.
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    dead_addr = dead.getsockname()
    dead.close()
    rx.connect(dead_addr)
    rx.send(b"x")
    assert fast.recv_batch(rx.fileno(), 10, 100, False) == ([], None)


class BatchRecorder:
    def __init__(self) -> None:
        self.passes: list[tuple[list[bytes], Any]] = []

    def datagramsReceived(self, datagrams: list[bytes], addr: Any) -> None:  # noqa: N802
        if datagrams == [b"bad"]:
            raise RuntimeError("handler bug")
        self.passes.append((datagrams, addr))

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:  # noqa: N802
        raise AssertionError("the compiled path hands read passes")


def test_rtp_udp_port_hands_read_passes_on_the_compiled_path(
    pair: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(accel, "ext", fast)
    rx, tx = pair
    proto = BatchRecorder()
    port = RtpUdpPort(0, proto, "127.0.0.1", 8192, MemoryReactorClock())  # type: ignore[no-untyped-call]
    port.socket = rx
    port.reads_per_pass = 4
    send_all(tx, rx, [b"1", b"2", b"3", b"4", b"5"])
    port.doRead()
    port.doRead()
    port.doRead()
    assert proto.passes == [([b"1", b"2", b"3", b"4"], tx.getsockname()), ([b"5"], tx.getsockname())]
    port.exact_sources = True
    send_all(tx, rx, [b"6"])
    port.doRead()
    assert proto.passes[-1] == ([b"6"], [tx.getsockname()])
    send_all(tx, rx, [b"bad"])
    port.doRead()  # the handler raises: logged, the port keeps reading
    assert any("handler failed" in r.getMessage() for r in caplog.records)
    send_all(tx, rx, [b"7"])
    port.doRead()
    assert proto.passes[-1] == ([b"7"], [tx.getsockname()])


# -- single port: a read pass through SharedRtpPort -----------------------------------


def test_single_port_read_pass_routes_and_counts_as_python_does(
    udp: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_media_single_port import Harness as SingleHarness

    ssrc_a = struct.unpack_from("!I", udp[0], 8)[0]
    ssrc_b = ssrc_a ^ 0x5A5A

    def as_b(raw: bytes) -> bytes:
        b = bytearray(raw)
        struct.pack_into("!I", b, 8, ssrc_b)
        return bytes(b)

    rtcp = b"\x80\xc8\x00\x06" + bytes(24)
    stranger = bytearray(udp[0])
    stranger[8:12] = b"\x00\x00\x00\x09"
    batch: list[bytes] = []
    for i in range(0, 300, 15):  # frame bursts of two cameras, interleaved, with strangers
        batch += udp[i : i + 15] + [as_b(p) for p in udp[i : i + 15]]
        batch += [rtcp, b"short", bytes(stranger)]
    other = ("192.0.2.99", 4000)
    sources = [other if i % 7 == 0 else ("192.0.2.10", 15060) for i in range(len(batch))]

    def run(ext: Any) -> tuple[Any, ...]:
        monkeypatch.setattr(accel, "ext", ext)
        h = SingleHarness()
        a, b = h.stream(ssrc_a, "a"), h.stream(ssrc_b, "b")
        protocol = h.udp.ports[10000].protocol
        if ext is None:
            for data, source in zip(batch, sources, strict=True):
                protocol.datagramReceived(data, source)
        else:
            for i in range(0, len(batch), 50):
                protocol.datagramsReceived(batch[i : i + 50], sources[i : i + 50])
        for s in (a, b):
            s.receiver.stop()
        return (h.shared.stats, a.ingest.stats.packets, b.ingest.stats.packets,
                a.receiver.stats.datagrams, b.receiver.stats.datagrams,
                [f.data for f in a.sink.frames], [f.data for f in b.sink.frames])

    got = run(fast)
    assert got == run(None)
    stats = got[0]
    assert stats.rtcp_datagrams == stats.short_datagrams == stats.unknown_ssrc == 20
    assert got[1] == got[2] == 300 and got[5] and got[5] == got[6]
