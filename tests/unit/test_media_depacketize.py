"""Raw H.264 (RFC 6184) and H.265 (RFC 7798) RTP into Annex B access units."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.depacketize import Depacketizer
from media.frame import Codec, Frame
from media.ingest import RtpIngest, payload_formats_from_rtpmap
from media.nal import H264_NAL_AUD, nal_type, split_nals
from media.packetize import H264Packetizer, H265Packetizer
from media.pipeline import FrameDispatcher
from media.ps import PsDemuxer
from media.reorder import ReorderBuffer
from media.rtp import RtpPacket
from tests.media_captures import udp_payloads

SSRC = 0x1234
SPS = bytes.fromhex("6742c01e95a0")
PPS = bytes.fromhex("68ce3c80")
IDR = b"\x65\x88" + bytes(range(256)) * 12  # 3,074 bytes: three FU-A fragments
SLICE = b"\x41\x9a" + b"\x11" * 300
H265_VPS = bytes.fromhex("40010c01ffff")
H265_SPS = bytes.fromhex("42010101600b")
H265_PPS = bytes.fromhex("4401c172b4")
H265_IDR = bytes.fromhex("2601") + b"\xaf" * 3000  # IDR_W_RADL (19)
H265_TRAIL = bytes.fromhex("0201") + b"\x5a" * 200  # TRAIL_R (1)


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


def pkt(seq: int, ts: int, payload: bytes, marker: bool = False, pt: int = 98) -> RtpPacket:
    return RtpPacket(payload_type=pt, sequence=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF,
                     ssrc=SSRC, payload=payload, marker=marker)


def stap_a(*nals: bytes) -> bytes:
    return bytes((0x78,)) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal: bytes, step: int = 1200) -> list[bytes]:
    body = nal[1:]
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    return [
        bytes(((nal[0] & 0xE0) | 28, (nal[0] & 0x1F) | (0x80 if i == 0 else 0)
               | (0x40 if i == len(chunks) - 1 else 0))) + c
        for i, c in enumerate(chunks)
    ]


def h265_ap(*nals: bytes) -> bytes:
    return bytes((48 << 1, 1)) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def h265_fu(nal: bytes, step: int = 1200) -> list[bytes]:
    body = nal[2:]
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    kind = (nal[0] >> 1) & 0x3F
    return [
        bytes(((nal[0] & 0x81) | (49 << 1), nal[1],
               kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0))) + c
        for i, c in enumerate(chunks)
    ]


def annex_b(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def h264_gop(seq: int = 100, ts: int = 9000, frames: int = 4) -> list[RtpPacket]:
    """STAP-A(SPS, PPS) + FU-A IDR, then single-NAL P slices, 3600 ticks apart."""
    payloads = [[stap_a(SPS, PPS), *fu_a(IDR)]] + [[SLICE]] * (frames - 1)
    out = []
    for i, group in enumerate(payloads):
        for j, payload in enumerate(group):
            out.append(pkt(seq, ts + 3600 * i, payload, marker=j == len(group) - 1))
            seq += 1
    return out


def feed(d: Depacketizer, packets: list[RtpPacket]) -> list[Frame]:
    frames = [f for p in packets for f in d.feed(p)]
    return frames + d.flush()


def test_stap_a_and_fu_a_make_a_keyframe_then_single_nal_frames() -> None:
    d = Depacketizer(Codec.H264)
    frames = feed(d, h264_gop())
    assert [f.data for f in frames] == [annex_b(SPS, PPS, IDR)] + [annex_b(SLICE)] * 3
    assert [f.keyframe for f in frames] == [True, False, False, False]
    assert [f.pts for f in frames] == [9000, 12600, 16200, 19800]
    assert all(f.dts == f.pts and f.codec is Codec.H264 and f.stream_id == 0xE0 for f in frames)
    assert (d.stats.frames, d.stats.dropped, d.stats.bad_packets) == (4, 0, 0)


def test_a_frame_is_emitted_on_its_marker_not_one_late() -> None:
    d = Depacketizer(Codec.H264)
    packets = h264_gop()
    assert [len(d.feed(p)) for p in packets[:4]] == [0, 0, 0, 1]


def test_timestamp_change_ends_an_access_unit_without_marker() -> None:
    d = Depacketizer(Codec.H264)
    packets = [pkt(p.sequence, p.timestamp, bytes(p.payload)) for p in h264_gop()]
    frames = feed(d, packets)
    assert [f.data for f in frames] == [annex_b(SPS, PPS, IDR)] + [annex_b(SLICE)] * 3


def test_parameter_sets_sent_alone_go_in_front_of_the_next_picture() -> None:
    d = Depacketizer(Codec.H264)
    packets = [pkt(1, 0, SPS, marker=True), pkt(2, 10, PPS, marker=True),
               *[pkt(3 + i, 20, p, marker=i == 2) for i, p in enumerate(fu_a(IDR))]]
    frames = feed(d, packets)
    assert [(f.data, f.keyframe, f.pts) for f in frames] == [(annex_b(SPS, PPS, IDR), True, 20)]


def test_timestamps_are_unwrapped_past_2_32() -> None:
    d = Depacketizer(Codec.H264)
    ts = [0xFFFFF000, 0xFFFFFF00, 0x00000A00, 0x00001600]
    frames = feed(d, [pkt(i, t, SLICE, marker=True) for i, t in enumerate(ts)])
    assert [f.pts for f in frames] == [0xFFFFF000, 0xFFFFFF00, 0x1_0000_0A00, 0x1_0000_1600]


def test_sequence_wrap_is_not_loss() -> None:
    d = Depacketizer(Codec.H264)
    frames = feed(d, h264_gop(seq=65533))
    assert len(frames) == 4 and d.stats.dropped == 0


def test_loss_inside_an_access_unit_drops_only_that_one() -> None:
    packets = h264_gop()
    del packets[2]  # the IDR's middle FU-A fragment
    d = Depacketizer(Codec.H264)
    frames = feed(d, packets)
    assert [f.data for f in frames] == [annex_b(SLICE)] * 3
    assert d.stats.dropped == 1


def test_loss_of_a_marker_packet_drops_both_access_units_it_may_touch() -> None:
    packets = h264_gop()
    del packets[3]  # the IDR's last fragment: which unit lost what is unknowable
    d = Depacketizer(Codec.H264)
    frames = feed(d, packets)
    assert [f.pts for f in frames] == [16200, 19800]
    assert d.stats.dropped == 2


def test_lost_head_of_an_access_unit_drops_it() -> None:
    packets = h264_gop()
    del packets[0]  # STAP-A with the parameter sets: the IDR alone would not decode
    d = Depacketizer(Codec.H264)
    frames = d.feed(pkt(99, 5400, SLICE, marker=True))  # a previous frame, so the gap shows
    frames += feed(d, packets)
    assert [f.pts for f in frames] == [5400, 12600, 16200, 19800]
    assert d.stats.dropped == 1


def test_stream_joined_mid_fragment_drops_the_partial_unit() -> None:
    packets = h264_gop()[2:]
    d = Depacketizer(Codec.H264)
    frames = feed(d, packets)
    assert len(frames) == 3 and d.stats.dropped == 1


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\xe5\x00",  # forbidden_zero_bit
        stap_a(SPS)[:-1] + b"\x00\xff",  # size overruns
        b"\x78",  # empty STAP-A
        b"\x78\x00\x00",  # zero size
        b"\x7c",  # FU-A without its header
        b"\x7c\x05\x00",  # FU-A continuation without start
        b"\x59\x00\x00",  # STAP-B: interleaved mode
        b"\x7d\x85\x00",  # FU-B
    ],
)
def test_bad_payload_drops_its_access_unit_and_the_next_one_plays(bad: bytes) -> None:
    d = Depacketizer(Codec.H264)
    frames = feed(d, [pkt(1, 0, SLICE), pkt(2, 0, bad, marker=True),
                      pkt(3, 3600, SLICE, marker=True)])
    assert [f.pts for f in frames] == [3600]
    assert d.stats.dropped == 1


def test_interrupted_fragment_is_dropped() -> None:
    fragments = fu_a(IDR)
    d = Depacketizer(Codec.H264)
    frames = feed(d, [pkt(1, 0, fragments[0]), pkt(2, 0, SLICE, marker=True)])
    assert frames == [] and d.stats.bad_packets == 1 and d.stats.dropped == 1


def test_undefined_nal_types_are_ignored() -> None:
    d = Depacketizer(Codec.H264)
    frames = feed(d, [pkt(1, 0, b"\x1e\x01\x02"), pkt(2, 0, SLICE, marker=True)])
    assert [f.data for f in frames] == [annex_b(SLICE)]
    assert d.stats.ignored_packets == 1 and d.stats.dropped == 0


def test_oversized_access_unit_is_dropped() -> None:
    d = Depacketizer(Codec.H264, max_frame_bytes=800)
    frames = feed(d, [pkt(1, 0, SLICE), pkt(2, 0, SLICE), pkt(3, 0, SLICE, marker=True),
                      pkt(4, 3600, SLICE, marker=True)])
    assert [f.pts for f in frames] == [3600] and d.stats.dropped == 1


def test_h265_aggregation_and_fragments() -> None:
    d = Depacketizer(Codec.H265)
    packets = [pkt(1, 0, h265_ap(H265_VPS, H265_SPS, H265_PPS))]
    fus = h265_fu(H265_IDR)
    packets += [pkt(2 + i, 0, p, marker=i == len(fus) - 1) for i, p in enumerate(fus)]
    packets.append(pkt(2 + len(fus), 3600, H265_TRAIL, marker=True))
    frames = feed(d, packets)
    assert [f.data for f in frames] == [
        annex_b(H265_VPS, H265_SPS, H265_PPS, H265_IDR), annex_b(H265_TRAIL)
    ]
    assert [f.keyframe for f in frames] == [True, False]
    assert all(f.codec is Codec.H265 for f in frames)


def test_h265_loss_and_paci_and_bad_headers() -> None:
    fus = h265_fu(H265_IDR)
    d = Depacketizer(Codec.H265)
    packets = [pkt(1, 0, fus[0]), pkt(3, 0, fus[2], marker=True),  # seq 2 lost
               pkt(4, 3600, bytes((50 << 1, 1, 0, 0)) + H265_TRAIL),  # PACI: ignored
               pkt(5, 3600, H265_TRAIL, marker=True),
               pkt(6, 7200, b"\x02", marker=True),  # one-byte payload
               pkt(7, 10800, h265_ap(b"\x02"), marker=True),  # NAL shorter than its header
               pkt(8, 14400, H265_TRAIL, marker=True)]
    frames = feed(d, packets)
    assert [f.pts for f in frames] == [3600, 14400]
    assert d.stats.dropped == 3 and d.stats.ignored_packets == 1 and d.stats.bad_packets == 2


def test_only_h264_and_h265() -> None:
    with pytest.raises(ValueError, match="no RTP depacketizer"):
        Depacketizer(Codec.G711A)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.booleans(), st.integers(0, 3)), max_size=30),
       st.sampled_from([Codec.H264, Codec.H265]))
def test_garbage_never_raises_and_frames_are_annex_b(
    items: list[tuple[bytes, bool, int]], codec: Codec
) -> None:
    d = Depacketizer(codec)
    frames = feed(d, [pkt(i, ts * 3600, p, m) for i, (p, m, ts) in enumerate(items)])
    for f in frames:
        assert f.data.startswith(b"\x00\x00\x00\x01")
    assert d.stats.packets == len(items)


@pytest.fixture(scope="module")
def capture_frames(shared_dir: Path) -> list[Frame]:
    demuxer = PsDemuxer()
    frames: list[Frame] = []
    for _, data in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap"):
        frames += demuxer.feed(RtpPacket.parse(data).payload)
    return frames


def _nals(data: bytes) -> list[bytes]:
    return [bytes(n) for n in split_nals(data) if nal_type(Codec.H264, n) != H264_NAL_AUD]


def test_real_1080p_capture_round_trips_through_rfc6184(capture_frames: list[Frame]) -> None:
    packetizer = H264Packetizer(SSRC, random.Random(1), payload_type=98)
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher, reorder=ReorderBuffer(max_wait=0.1))
    now = 0.0
    for frame in capture_frames:
        for data in packetizer.packetize(frame):
            ingest.datagram(data, now)
            now += 0.001
    ingest.close(now)
    got = sink.frames
    assert len(got) == len(capture_frames) > 200
    assert all(f.codec is Codec.H264 for f in got)
    assert [f.keyframe for f in got] == [f.keyframe for f in capture_frames]
    assert [_nals(f.data) for f in got] == [_nals(f.data) for f in capture_frames]
    base = got[0].pts - capture_frames[0].pts
    assert [f.pts - base for f in got] == [f.pts for f in capture_frames]
    assert ingest.demuxer.stats.bytes == 0 and ingest.dropped_frames == 0


def test_h265_round_trips_through_rfc7798_with_reordering() -> None:
    packetizer = H265Packetizer(SSRC, random.Random(2), payload_type=99)
    sent = [Frame(Codec.H265, annex_b(H265_VPS, H265_SPS, H265_PPS, H265_IDR), 0, 0, True, 0xE0)]
    sent += [Frame(Codec.H265, annex_b(H265_TRAIL), 3600 * i, 3600 * i, False, 0xE0)
             for i in range(1, 5)]
    datagrams = [d for f in sent for d in packetizer.packetize(f)]
    datagrams[1], datagrams[2] = datagrams[2], datagrams[1]  # out of order on the wire
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    for i, data in enumerate(datagrams):
        ingest.datagram(data, i * 0.001)
    ingest.close(1.0)
    assert [f.data for f in sink.frames] == [f.data for f in sent]
    assert [f.keyframe for f in sink.frames] == [True, False, False, False, False]


def test_ingest_routes_by_payload_type_map() -> None:
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher, payload_formats={96: "H264"})
    for p in h264_gop():
        ingest.datagram(RtpPacket(96, p.sequence, p.timestamp, SSRC, p.payload,
                                  p.marker).serialize(), 0.0)
    assert [f.keyframe for f in sink.frames] == [True, False, False, False]
    ingest.set_payload_formats({96: "PS", 98: "H265"})
    assert ingest.payload_formats == {96: "PS", 98: "H265"}
    ingest.datagram(pkt(107, 99999, b"\x00\x00\x01\xba", pt=97).serialize(), 0.0)
    assert ingest.stats.unknown_payload_type == 1  # taken as PS
    with pytest.raises(ValueError, match="payload format"):
        ingest.set_payload_formats({96: "MPEG4"})
    with pytest.raises(ValueError, match="payload type"):
        ingest.set_payload_formats({128: "PS"})


def test_payload_formats_from_an_sdp_answer() -> None:
    rtpmap = {96: ("PS", 90000), 97: ("MPEG4", 90000), 98: ("h264", 90000),
              99: ("H265", 90000), 100: ("MP2P", 90000), 8: ("PCMA", 8000)}
    assert payload_formats_from_rtpmap(rtpmap) == {96: "PS", 98: "H264", 99: "H265", 100: "PS"}


def test_rekey_tells_listeners() -> None:
    ingest = RtpIngest(FrameDispatcher(), ssrc=1)
    seen: list[tuple[int | None, int]] = []
    ingest.rekey_listeners.append(lambda old, new: seen.append((old, new)))
    ingest.rekey(1)
    ingest.rekey(2)
    assert seen == [(1, 2)] and ingest.ssrc == 2
