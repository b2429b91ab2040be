"""RTP receive core: RtpPacket codec, RFC 4571 framer, reorder buffer.

Vectors are hand-made headers (RFC 3550 §5.1, §5.3.1) plus the ZLMediaKit
PS-over-RTP captures in ``shared/captures`` (see its README).
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.framing import FramingError, Rfc4571Framer, TcpFrame
from media.reorder import ReorderBuffer
from media.rtp import RtpError, RtpExtension, RtpPacket, seq_delta, ts_delta
from tests.media_captures import PcapError, _reassemble, tcp_stream, udp_payloads

# V=2 P=1 X=1 CC=2, M=1 PT=96, seq 0x1234, ts 0xDEADBEEF, ssrc 0x01020304,
# CSRCs 0x0A0B0C0D and 0x11121314, extension profile 0xBEDE with one word,
# an 8-byte payload of 0xFF and 4 bytes of padding.
FULL = bytes.fromhex(
    "b2e01234deadbeef010203040a0b0c0d11121314bede000101020304ffffffffffffffff00000004"
)
HEADER_END = 28


def rtp(seq: int, ts: int = 0, payload: bytes = b"x", marker: bool = False) -> RtpPacket:
    return RtpPacket(
        payload_type=96, sequence=seq & 0xFFFF, timestamp=ts, ssrc=1, payload=payload, marker=marker
    )


def frame4571(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


# --- RtpPacket -------------------------------------------------------------


def test_parse_full_vector() -> None:
    p = RtpPacket.parse(FULL)
    assert (p.version, p.padding, p.has_extension, p.marker) == (2, True, True, True)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc) == (96, 0x1234, 0xDEADBEEF, 0x01020304)
    assert p.csrcs == (0x0A0B0C0D, 0x11121314)
    assert p.extension == RtpExtension(0xBEDE, b"\x01\x02\x03\x04")
    assert bytes(p.payload) == b"\xff" * 8
    assert p.padding_size == 4
    assert p.serialize() == FULL


def test_parse_minimal_vector() -> None:
    data = bytes.fromhex("80601234000000640000abcd") + b"hello"
    p = RtpPacket.parse(data)
    assert (p.padding, p.has_extension, p.marker, p.csrcs, p.extension) == (
        False,
        False,
        False,
        (),
        None,
    )
    assert bytes(p.payload) == b"hello"
    assert p.serialize() == data


def test_payload_is_a_view_not_a_copy() -> None:
    data = bytearray(bytes.fromhex("80601234000000640000abcd") + b"hello")
    p = RtpPacket.parse(data)
    assert isinstance(p.payload, memoryview)
    data[12] = ord("j")
    assert bytes(p.payload) == b"jello"


def test_empty_extension_and_padding_only_payload() -> None:
    # X with zero words; P with the whole rest being padding.
    data = bytes.fromhex("b0600001000000000000000a000100000003")[:-2] + b"\x00\x00\x03"
    p = RtpPacket.parse(data)
    assert p.extension == RtpExtension(1, b"")
    assert bytes(p.payload) == b""
    assert p.padding_size == 3
    assert p.serialize() == data


def expected_truncation_message(n: int) -> str:
    if n < 12:
        return f"RTP packet too short: {n} bytes, fixed header needs 12"
    if n < 20:
        return f"RTP packet too short: {n} bytes, 2 CSRCs need 20"
    if n < 24:
        return f"RTP packet too short: {n} bytes, extension header needs 24"
    if n < HEADER_END:
        return f"RTP packet too short: {n} bytes, extension of 1 words needs 28"
    if n == HEADER_END:
        return "RTP padding bit set but no padding count octet"
    if FULL[n - 1] == 0:
        return "RTP padding count is 0"
    return f"RTP padding count 255 exceeds the {n - HEADER_END} bytes after the header"


@pytest.mark.parametrize("n", range(len(FULL)))
def test_every_truncation_raises_exact_message(n: int) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(FULL[:n])
    assert str(info.value) == expected_truncation_message(n)


@pytest.mark.parametrize("version", [0, 1, 3])
def test_bad_version(version: int) -> None:
    data = bytes([version << 6]) + FULL[1:12]
    with pytest.raises(RtpError, match=f"^RTP version {version} is not 2$"):
        RtpPacket.parse(data)


def test_rtp_error_is_value_error() -> None:
    assert issubclass(RtpError, ValueError)


def test_serialize_rejects_unencodable() -> None:
    with pytest.raises(RtpError, match="16 CSRCs"):
        RtpPacket(96, 1, 1, 1, csrcs=tuple(range(16))).serialize()
    with pytest.raises(RtpError, match="multiple of 4"):
        RtpPacket(96, 1, 1, 1, extension=RtpExtension(1, b"abc")).serialize()


def test_packet_is_frozen_and_slotted() -> None:
    p = rtp(1)
    with pytest.raises(AttributeError):
        p.sequence = 2  # type: ignore[misc]
    assert not hasattr(p, "__dict__")


def test_seq_and_ts_delta_wrap() -> None:
    assert seq_delta(65530, 5) == 11
    assert seq_delta(5, 65530) == -11
    assert seq_delta(7, 7) == 0
    assert ts_delta(0xFFFF_FF00, 0x100) == 0x200
    assert ts_delta(0x100, 0xFFFF_FF00) == -0x200


@given(st.binary(max_size=80))
def test_random_bytes_raise_only_rtp_error(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    # Whatever parses must re-encode to the same header and payload.
    again = RtpPacket.parse(p.serialize())
    assert again == p


@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=40),
    st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.none() | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12)),
    st.integers(0, 255),
)
def test_roundtrip_any_header(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrcs: list[int],
    ext: tuple[int, bytes] | None,
    pad: int,
) -> None:
    extension = None if ext is None else RtpExtension(ext[0], ext[1][: len(ext[1]) // 4 * 4])
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs), extension, pad)
    wire = p.serialize()
    assert RtpPacket.parse(wire) == p
    assert RtpPacket.parse(wire).serialize() == wire


# --- captures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def udp_packets(shared_dir: Path) -> list[RtpPacket]:
    return [
        RtpPacket.parse(p)
        for _, p in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")
    ]


@pytest.fixture(scope="module")
def tcp_bytes(shared_dir: Path) -> bytes:
    return tcp_stream(shared_dir / "captures" / "zlm_ps_rtp_tcp_1080p.pcap")


def assert_capture_facts(packets: list[RtpPacket]) -> None:
    """The README facts: PT 96, one SSRC, contiguous sequence, 3600 per frame, markers."""
    assert {p.payload_type for p in packets} == {96}
    assert len({p.ssrc for p in packets}) == 1
    assert all(seq_delta(a.sequence, b.sequence) == 1 for a, b in pairwise(packets))
    steps = {ts_delta(a.timestamp, b.timestamp) for a, b in pairwise(packets)}
    assert steps == {0, 3600}
    # The marker sits on exactly each frame's last packet (timestamp changes next).
    assert all(a.marker == (a.timestamp != b.timestamp) for a, b in pairwise(packets))
    # Every frame starts a payload with an MPEG-PS pack header.
    firsts = [b for a, b in pairwise(packets) if a.marker] + [packets[0]]
    assert all(bytes(p.payload[:4]) == b"\x00\x00\x01\xba" for p in firsts)
    assert max(len(p.payload) for p in packets) <= 1400


def test_udp_capture(udp_packets: list[RtpPacket]) -> None:
    assert len(udp_packets) == 3757
    assert len({p.timestamp for p in udp_packets}) == 251
    # The capture stops inside frame 251, so its marker never arrived.
    assert sum(p.marker for p in udp_packets) == 250
    assert not udp_packets[-1].marker
    assert_capture_facts(udp_packets)
    per_frame = Counter(p.timestamp for p in udp_packets)
    assert max(per_frame.values()) == 33


def test_tcp_capture_is_its_own_run(tcp_bytes: bytes) -> None:
    # The TCP capture is a separate ZLMediaKit run (other start sequence and
    # length), so its facts are checked on their own, not against UDP.
    framer = Rfc4571Framer()
    packets = [RtpPacket.parse(f) for f in framer.feed(tcp_bytes)]
    assert len(packets) == 3817
    assert len({p.timestamp for p in packets}) == 255
    assert sum(p.marker for p in packets) == 254
    assert_capture_facts(packets)
    # The capture ends mid-frame: a partial RFC 4571 frame stays buffered.
    assert 0 < framer.buffered < 2 + 1400 + 12


def test_tcp_framing_byte_by_byte_equals_whole(tcp_bytes: bytes) -> None:
    head = tcp_bytes[:300_000]
    whole = Rfc4571Framer().feed(head)
    framer = Rfc4571Framer()
    one_by_one = [f for i in range(len(head)) for f in framer.feed(head[i : i + 1])]
    assert one_by_one == whole
    rng = random.Random(4571)
    framer, chunked, pos = Rfc4571Framer(), [], 0
    while pos < len(tcp_bytes):
        step = rng.randint(1, 5000)
        chunked += framer.feed(tcp_bytes[pos : pos + step])
        pos += step
    assert chunked == Rfc4571Framer().feed(tcp_bytes)


def test_udp_capture_through_reorder_when_shuffled(udp_packets: list[RtpPacket]) -> None:
    rng = random.Random(28181)
    shuffled = list(udp_packets)
    # The first packet stays first: anything before it would be late (see below).
    for start in range(1, len(shuffled), 16):
        window = shuffled[start : start + 16]
        rng.shuffle(window)
        shuffled[start : start + 16] = window
    buf = ReorderBuffer(capacity=64, max_wait=1.0)
    out = [p for i, pkt in enumerate(shuffled) for p in buf.push(pkt, now=i * 0.001)]
    assert [p.sequence for p in out] == [p.sequence for p in udp_packets]
    assert buf.stats.lost == 0
    assert buf.stats.reordered > 0
    assert buf.stats.delivered == buf.stats.received == 3757


# --- framer ------------------------------------------------------------------


PKT_A = RtpPacket.parse(bytes.fromhex("80601234000000640000abcd") + b"hello").serialize()
PKT_B = RtpPacket.parse(bytes.fromhex("80e01235000000640000abcd") + b"world!").serialize()


def test_framer_many_per_segment_and_empty_frames() -> None:
    framer = Rfc4571Framer()
    assert framer.feed(frame4571(PKT_A) + b"\x00\x00" + frame4571(PKT_B)) == [PKT_A, PKT_B]
    assert framer.skipped_empty == 1
    assert framer.buffered == 0


def test_framer_one_packet_over_many_segments() -> None:
    framer = Rfc4571Framer()
    wire = frame4571(PKT_A)
    assert framer.feed(wire[:1]) == []
    assert framer.feed(wire[1:5]) == []
    assert framer.feed(wire[5:]) == [PKT_A]


def test_framer_interleaved_and_mixed() -> None:
    framer = Rfc4571Framer()
    wire = b"$\x00" + frame4571(PKT_A) + frame4571(PKT_B) + b"$\x01" + frame4571(PKT_A)
    assert framer.feed_frames(wire) == [
        TcpFrame(0, PKT_A),
        TcpFrame(None, PKT_B),
        TcpFrame(1, PKT_A),
    ]
    framer = Rfc4571Framer()
    assert [f for b in wire for f in framer.feed(bytes([b]))] == [PKT_A, PKT_B, PKT_A]


def test_framer_trailing_bytes_wait() -> None:
    framer = Rfc4571Framer()
    assert framer.feed(frame4571(PKT_A) + b"\x00") == [PKT_A]
    assert framer.buffered == 1


@pytest.mark.parametrize("length", [1, 11])
def test_framer_implausible_length_fails_and_stays_failed(length: int) -> None:
    framer = Rfc4571Framer()
    with pytest.raises(FramingError, match=f"^declared frame length {length} is below"):
        framer.feed(frame4571(PKT_A) + struct.pack("!H", length) + b"x" * 20)
    with pytest.raises(FramingError, match="framer failed earlier"):
        framer.feed(frame4571(PKT_A))


def test_framer_buffer_is_bounded() -> None:
    framer = Rfc4571Framer(max_buffer=100)
    with pytest.raises(FramingError, match="exceed the 100-byte limit"):
        framer.feed(struct.pack("!H", 1000) + b"x" * 200)
    # The default holds one maximal frame.
    framer = Rfc4571Framer()
    big = bytes.fromhex("80601234000000640000abcd") + b"\x00" * (65535 - 12)
    assert framer.feed(b"$\x00" + frame4571(big)) == [big]


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_framer_raises_only_framing_error(chunks: list[bytes]) -> None:
    framer = Rfc4571Framer(max_buffer=256)
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                assert 12 <= len(frame) <= 65535
    except FramingError:
        return


# --- reorder -----------------------------------------------------------------


def push_all(buf: ReorderBuffer, packets: list[RtpPacket], now: float = 0.0) -> list[int]:
    return [p.sequence for pkt in packets for p in buf.push(pkt, now)]


def test_in_order_passes_straight_through() -> None:
    buf = ReorderBuffer()
    assert [p.sequence for p in buf.push(rtp(10), 0.0)] == [10]
    assert [p.sequence for p in buf.push(rtp(11), 0.0)] == [11]
    assert buf.pending == 0
    assert buf.next_deadline() is None


def test_shuffled_window_delivers_in_order() -> None:
    rng = random.Random(7)
    seqs = list(range(1000, 1500))
    arrival = [1000]
    for start in range(1, len(seqs), 20):
        window = seqs[start : start + 20]
        rng.shuffle(window)
        arrival += window
    buf = ReorderBuffer(capacity=64, max_wait=10.0)
    out = push_all(buf, [rtp(s) for s in arrival])
    assert out == seqs
    assert (buf.stats.lost, buf.stats.duplicates, buf.stats.late) == (0, 0, 0)
    assert buf.stats.reordered > 0


def test_gap_waits_then_declared_lost_after_max_wait() -> None:
    buf = ReorderBuffer(capacity=64, max_wait=0.1)
    assert push_all(buf, [rtp(1)], 0.0) == [1]
    assert push_all(buf, [rtp(3), rtp(4)], 0.01) == []
    assert buf.next_deadline() == pytest.approx(0.11)
    assert buf.flush(0.05) == []
    assert [p.sequence for p in buf.flush(0.11)] == [3, 4]
    assert buf.stats.lost == 1
    # The lost packet arriving afterwards is late and dropped.
    assert push_all(buf, [rtp(2)], 0.2) == []
    assert buf.stats.late == 1
    assert push_all(buf, [rtp(5)], 0.2) == [5]


def test_gap_expires_on_push_too() -> None:
    buf = ReorderBuffer(max_wait=0.1)
    push_all(buf, [rtp(1)], 0.0)
    assert push_all(buf, [rtp(4)], 0.0) == []
    # 4 waited long enough; 6 only just arrived, so the gap before it is open.
    assert push_all(buf, [rtp(6)], 0.5) == [4]
    assert buf.stats.lost == 2
    assert [p.sequence for p in buf.flush(0.6)] == [6]
    assert buf.stats.lost == 3


def test_full_buffer_declares_gap_lost() -> None:
    buf = ReorderBuffer(capacity=4, max_wait=100.0)
    push_all(buf, [rtp(0)])
    assert push_all(buf, [rtp(2), rtp(3), rtp(4)]) == []
    assert push_all(buf, [rtp(6)]) == [2, 3, 4]
    assert buf.pending == 1
    assert buf.stats.lost == 1


def test_duplicates_dropped_and_counted() -> None:
    buf = ReorderBuffer()
    out = push_all(buf, [rtp(1), rtp(1), rtp(3), rtp(3), rtp(2), rtp(2)])
    assert out == [1, 2, 3]
    assert buf.stats.duplicates == 3
    assert buf.stats.received == 6
    assert buf.stats.delivered == 3


def test_wraparound() -> None:
    buf = ReorderBuffer()
    arrival = [65530, 65531, 65533, 65532, 65534, 0, 65535, 2, 1, 3, 4, 5]
    out = push_all(buf, [rtp(s) for s in arrival])
    assert out == [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5]
    assert buf.stats.lost == 0


def test_packet_before_the_first_is_late() -> None:
    # Delivery starts at the first packet seen; an earlier one cannot be
    # delivered in order any more, so it is dropped as late.
    buf = ReorderBuffer()
    assert push_all(buf, [rtp(10), rtp(9), rtp(11)]) == [10, 11]
    assert buf.stats.late == 1


def test_big_jump_resets() -> None:
    buf = ReorderBuffer()
    push_all(buf, [rtp(100), rtp(102)])
    out = push_all(buf, [rtp(40000), rtp(40001)])
    assert out == [102, 40000, 40001]
    assert buf.stats.resets == 1
    # After the reset the old neighbourhood is forgotten, not "duplicate".
    assert push_all(buf, [rtp(40002)]) == [40002]
    backwards = push_all(buf, [rtp(30000), rtp(30001)])
    assert backwards == [30000, 30001]
    assert buf.stats.resets == 2


def test_jitter_zero_for_perfect_pacing() -> None:
    buf = ReorderBuffer(clock_rate=90000)
    for i in range(100):
        buf.push(rtp(i, ts=(1000 + i * 3600) & 0xFFFFFFFF), now=5.0 + i * 0.04)
    assert buf.stats.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_follows_rfc3550() -> None:
    buf = ReorderBuffer(clock_rate=90000)
    buf.push(rtp(0, ts=0), now=0.0)
    buf.push(rtp(1, ts=3600), now=0.05)  # 10 ms late: D = 900 ticks
    assert buf.stats.jitter == pytest.approx(900 / 16)
    assert buf.stats.jitter_seconds == pytest.approx(900 / 16 / 90000)


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        ReorderBuffer(capacity=0)
    with pytest.raises(ValueError):
        ReorderBuffer(max_wait=-1)


@given(st.lists(st.integers(0, 200), max_size=300), st.integers(1, 32))
def test_reorder_invariants(arrival: list[int], capacity: int) -> None:
    buf = ReorderBuffer(capacity=capacity, max_wait=0.05)
    out: list[int] = []
    for i, seq in enumerate(arrival):
        out += [p.sequence for p in buf.push(rtp(seq), now=i * 0.01)]
    out += [p.sequence for p in buf.flush(1e9)]
    assert all(seq_delta(a, b) > 0 for a, b in pairwise(out))
    assert len(out) == len(set(out))
    s = buf.stats
    assert s.delivered == len(out)
    assert s.received == s.delivered + s.duplicates + s.late
    assert buf.pending == 0


# --- pcap helper ------------------------------------------------------------


def test_tcp_reassembly_orders_and_dedupes() -> None:
    segs = [
        (1000, True, b""),
        (1006, False, b"world"),
        (1001, False, b"hello"),
        (1001, False, b"hello"),
        (1004, False, b"lowor"),
    ]
    assert _reassemble(segs) == b"helloworld"
    with pytest.raises(PcapError, match="TCP gap"):
        _reassemble([(1000, True, b""), (1003, False, b"x")])
