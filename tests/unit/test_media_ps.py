"""MPEG-PS demuxer (ISO/IEC 13818-1 §2.5, GB/T 28181-2016 Annex C) and NAL helpers."""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media import nal
from media.frame import Codec, Frame
from media.ps import PsDemuxer, parse_timestamp
from tests.conftest import skip_or_fail

# A real 1080p High-profile SPS (level 4.0, 1088 coded lines cropped by 8).
SPS_1080P = bytes.fromhex("6764 0028 acd9 4078 0227 e584 0000 0300 0400 0003 00c8 3c60 c658")
PPS = bytes.fromhex("68ebe3cb22c0")
AUD = b"\x09\xf0"


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def idr_au(size: int = 300) -> bytes:
    return annexb(AUD, SPS_1080P, PPS, b"\x65\x88" + bytes(range(1, 256)) * (size // 255 + 1))


def p_au(size: int = 100) -> bytes:
    return annexb(AUD, b"\x41\x9a" + b"\x5a" * size)


# -- PS builders (ISO/IEC 13818-1 §2.5.3.3, §2.5.4.1, §2.4.3.6) --------------


def ts_field(prefix: int, ts: int) -> bytes:
    return bytes(
        [
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        ]
    )


def pack_header(scr: int = 0, stuffing: int = 0) -> bytes:
    return (
        b"\x00\x00\x01\xba"
        + bytes([0x44 | ((scr >> 27) & 0x38), 0, 4, 0, 4, 1, 0x01, 0x89, 0xC3])
        + bytes([0xF8 | stuffing])
        + b"\xff" * stuffing
    )


def system_header() -> bytes:
    body = bytes.fromhex("80 c3 51 04 e1 ff e0 e0 80 c0 c0 08")
    return b"\x00\x00\x01\xbb" + struct.pack(">H", len(body)) + body


def psm(streams: dict[int, int]) -> bytes:
    es = b"".join(bytes([t, sid]) + b"\x00\x00" for sid, t in streams.items())
    body = b"\xe0\xff\x00\x00" + struct.pack(">H", len(es)) + es + b"\x00\x00\x00\x00"
    return b"\x00\x00\x01\xbc" + struct.pack(">H", len(body)) + body


def pes(stream_id: int, payload: bytes, pts: int | None = None, dts: int | None = None) -> bytes:
    if pts is None:
        flags, fields = 0x00, b""
    elif dts is None:
        flags, fields = 0x80, ts_field(0b0010, pts)
    else:
        flags, fields = 0xC0, ts_field(0b0011, pts) + ts_field(0b0001, dts)
    head = bytes([0x80, flags, len(fields)]) + fields
    return (
        b"\x00\x00\x01"
        + bytes([stream_id])
        + struct.pack(">H", len(head) + len(payload))
        + head
        + payload
    )


def video_pack(au: bytes, pts: int, *, with_psm: bool = False, chunk: int = 65000) -> bytes:
    out = [pack_header(pts)]
    if with_psm:
        out += [system_header(), psm({0xE0: 0x1B, 0xC0: 0x90})]
    for i in range(0, len(au), chunk):
        out.append(pes(0xE0, au[i : i + chunk], pts if i == 0 else None))
    return b"".join(out)


def stream_of(n: int = 6) -> tuple[bytes, list[bytes]]:
    aus = [idr_au() if i % 3 == 0 else p_au(50 + i) for i in range(n)]
    data = b"".join(video_pack(au, 3600 * i, with_psm=i % 3 == 0) for i, au in enumerate(aus))
    return data, aus


def demux_all(chunks: list[bytes], dm: PsDemuxer | None = None) -> list[Frame]:
    dm = dm or PsDemuxer()
    frames: list[Frame] = []
    for c in chunks:
        frames += dm.feed(c)
    return frames + dm.flush()


# -- nal ---------------------------------------------------------------------


def test_h264_sps_1080p() -> None:
    info = nal.parse_h264_sps(SPS_1080P)
    assert info == nal.SpsInfo(width=1920, height=1080, profile=100, level=40)


def test_split_nals_strips_start_codes_and_trailing_zeros() -> None:
    au = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x67\x42\x00\x00\x00\x00\x01\x65\x88"
    assert [bytes(n) for n in nal.split_nals(au)] == [b"\x09\xf0", b"\x67\x42", b"\x65\x88"]


def test_keyframes_and_parameter_sets_h264() -> None:
    assert nal.is_keyframe(Codec.H264, idr_au())
    assert not nal.is_keyframe(Codec.H264, p_au())
    ps = nal.parameter_sets(Codec.H264, idr_au())
    assert ps == {"sps": [SPS_1080P], "pps": [PPS]}
    assert nal.sps_info(Codec.H264, idr_au()) == nal.SpsInfo(1920, 1080, 100, 40)


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, v: int) -> None:
        self.bits += [(v >> (n - 1 - i)) & 1 for i in range(n)]

    def ue(self, v: int) -> None:
        code = v + 1
        self.u(code.bit_length() * 2 - 1, code)

    def rbsp(self) -> bytes:
        bits = self.bits + [1]
        bits += [0] * (-len(bits) % 8)
        raw = bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))
        out = bytearray()
        zeros = 0
        for b in raw:  # emulation prevention, H.265 §7.4.2
            if zeros >= 2 and b <= 3:
                out.append(3)
                zeros = 0
            out.append(b)
            zeros = zeros + 1 if b == 0 else 0
        return bytes(out)


def h265_sps_1080p() -> bytes:
    """An H.265 Main-profile SPS, level 4.1, 1920x1088 coded, conformance window bottom 4."""
    w = BitWriter()
    w.u(4, 0)  # sps_video_parameter_set_id
    w.u(3, 0)  # sps_max_sub_layers_minus1
    w.u(1, 1)  # temporal_id_nesting
    w.u(2, 0)
    w.u(1, 0)
    w.u(5, 1)  # general_profile_idc Main
    w.u(32, 0x60000000)
    w.u(48, 0x900000000000)  # progressive/frame_only flags + reserved bits
    w.u(8, 123)  # general_level_idc 4.1
    w.ue(0)  # sps_seq_parameter_set_id
    w.ue(1)  # chroma_format_idc 4:2:0
    w.ue(1920)
    w.ue(1088)
    w.u(1, 1)  # conformance_window_flag
    for v in (0, 0, 0, 4):
        w.ue(v)
    w.ue(0)  # bit_depth_luma_minus8 (rest of the SPS does not matter here)
    return b"\x42\x01" + w.rbsp()


def test_h265_sps_vps_and_keyframes() -> None:
    sps = h265_sps_1080p()
    assert nal.parse_h265_sps(sps) == nal.SpsInfo(1920, 1080, 1, 123)
    vps, pps = b"\x40\x01\x0c\x01\xff\xff", b"\x44\x01\xc1\x72\xb4"
    irap = annexb(b"\x46\x01\x10", vps, sps, pps, b"\x26\x01\xaf\x00")
    trail = annexb(b"\x46\x01\x50", b"\x02\x01\xd0\x00")
    assert nal.sniff_video_codec(irap) is Codec.H265
    assert nal.sniff_video_codec(trail) is Codec.H265
    assert nal.sniff_video_codec(idr_au()) is Codec.H264
    assert nal.is_keyframe(Codec.H265, irap)
    assert not nal.is_keyframe(Codec.H265, trail)
    assert nal.parameter_sets(Codec.H265, irap) == {"vps": [vps], "sps": [sps], "pps": [pps]}
    assert nal.sps_info(Codec.H265, irap) == nal.SpsInfo(1920, 1080, 1, 123)


def test_truncated_sps_raises_typed_error() -> None:
    with pytest.raises(nal.SpsError, match="SPS truncated"):
        nal.parse_h264_sps(SPS_1080P[:8])
    assert nal.sps_info(Codec.H264, annexb(SPS_1080P[:8])) is None


# -- ps ----------------------------------------------------------------------


def test_timestamp_round_trip() -> None:
    for ts in (0, 1, 3600, 2**32 + 12345, 2**33 - 1):
        assert parse_timestamp(ts_field(0b0010, ts)) == ts


def check_frames(frames: list[Frame], aus: list[bytes]) -> None:
    assert [f.data for f in frames] == aus
    assert [f.pts for f in frames] == [3600 * i for i in range(len(aus))]
    assert [f.keyframe for f in frames] == [i % 3 == 0 for i in range(len(aus))]
    assert all(f.codec is Codec.H264 and f.stream_id == 0xE0 and f.dts == f.pts for f in frames)


def test_whole_and_byte_by_byte() -> None:
    data, aus = stream_of()
    check_frames(demux_all([data]), aus)
    dm = PsDemuxer()
    check_frames(demux_all([data[i : i + 1] for i in range(len(data))], dm), aus)
    assert (dm.stats.frames, dm.stats.bytes, dm.stats.resyncs, dm.stats.dropped) == (
        6,
        len(data),
        0,
        0,
    )


def test_frame_emitted_when_next_pack_starts() -> None:
    data, aus = stream_of(2)
    dm = PsDemuxer()
    first = video_pack(aus[0], 0, with_psm=True)
    assert dm.feed(first) == []
    assert [f.data for f in dm.feed(data[len(first) :])] == [aus[0]]
    assert [f.data for f in dm.flush()] == [aus[1]]


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_random_chunks(cuts: list[int]) -> None:
    data, aus = stream_of()
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    check_frames(demux_all([data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]), aus)


def test_garbage_between_packs_resyncs() -> None:
    data, aus = stream_of()
    p0 = video_pack(aus[0], 0, with_psm=True)
    p1 = video_pack(aus[1], 3600)
    garbage = b"\xde\xad\x00\x00\x01\x67junk\x00\x00"
    dm = PsDemuxer()
    frames = demux_all([p0 + garbage + p1 + b"\x00\x00\x01"], dm)
    assert [f.data for f in frames] == aus[:2]
    assert dm.stats.resyncs == 1


def test_pack_header_stuffing_padding_and_private_streams_skipped() -> None:
    au = idr_au()
    padding = b"\x00\x00\x01\xbe\x00\x04\xff\xff\xff\xff"
    private = b"\x00\x00\x01\xbd\x00\x03\x80\x00\x00"
    data = pack_header(0, stuffing=3) + psm({0xE0: 0x1B}) + padding + private + pes(0xE0, au, 9000)
    (frame,) = demux_all([data])
    assert (frame.data, frame.pts, frame.keyframe) == (au, 9000, True)


def test_mpeg1_pack_header() -> None:
    mpeg1_pack = b"\x00\x00\x01\xba\x21\x00\x01\x00\x01\x80\x00\x01"
    au = idr_au()
    (frame,) = demux_all([mpeg1_pack + pes(0xE0, au, 7200)])
    assert frame.data == au and frame.pts == 7200


def test_pes_split_across_many_packets_merged() -> None:
    au = idr_au(200_000)
    data = video_pack(au, 0, with_psm=True, chunk=65_408) + video_pack(p_au(), 3600)
    assert data.count(b"\x00\x00\x01\xe0") == 5
    frames = demux_all([data])
    assert [f.data for f in frames] == [au, p_au()]
    # Continuation PES repeating the same PTS merge too.
    part = au[:60_000]
    rep = pack_header() + pes(0xE0, part[:1000], 0) + pes(0xE0, part[1000:], 0)
    assert [f.data for f in demux_all([rep])] == [part]


def test_new_pts_without_pack_header_starts_new_frame() -> None:
    a, b = idr_au(), p_au()
    data = pack_header() + pes(0xE0, a, 0, 0) + pes(0xE0, b, 7200, 3600)
    frames = demux_all([data])
    assert [(f.data, f.pts, f.dts) for f in frames] == [(a, 0, 0), (b, 7200, 3600)]


def test_oversized_frame_dropped() -> None:
    big, small = idr_au(200_000), p_au()
    data = video_pack(big, 0, with_psm=True) + video_pack(small, 3600)
    dm = PsDemuxer(max_frame_bytes=100_000)
    frames = demux_all([data], dm)
    assert [f.data for f in frames] == [small]
    assert dm.stats.dropped == 1 and dm.stats.frames == 1


def test_audio_g711_frames() -> None:
    alaw, ulaw = b"\xd5" * 320, b"\xff" * 160
    data = (
        pack_header()
        + psm({0xE0: 0x1B, 0xC0: 0x90, 0xC1: 0x91})
        + pes(0xE0, idr_au(), 0)
        + pes(0xC0, alaw, 0)
        + pes(0xC1, ulaw, 1800)
    )
    frames = demux_all([data])
    audio = [(f.codec, f.data, f.pts, f.stream_id) for f in frames if not f.codec.is_video]
    assert audio == [(Codec.G711A, alaw, 0, 0xC0), (Codec.G711U, ulaw, 1800, 0xC1)]
    assert sum(f.codec is Codec.H264 for f in frames) == 1


def test_codec_sniffed_without_psm_and_h265_from_psm() -> None:
    h265_au = annexb(b"\x46\x01\x10", b"\x40\x01\x0c\x01", h265_sps_1080p(), b"\x26\x01\xaf")
    (f,) = demux_all([pack_header() + pes(0xE0, h265_au, 0)])
    assert f.codec is Codec.H265 and f.keyframe
    (f,) = demux_all([pack_header() + pes(0xE0, idr_au(), 0)])
    assert f.codec is Codec.H264 and f.keyframe
    (f,) = demux_all([pack_header() + psm({0xE0: 0x24}) + pes(0xE0, h265_au, 0)])
    assert f.codec is Codec.H265


def test_bad_pes_header_logged_and_skipped() -> None:
    bad = b"\x00\x00\x01\xe0\x00\x03\x80\x80\x09"  # header_data_length past the end
    data = pack_header() + bad + pes(0xE0, idr_au(), 0)
    assert [f.data for f in demux_all([data])] == [idr_au()]


# -- the real capture --------------------------------------------------------


def pcap_udp_payloads(path: Path) -> list[bytes]:
    """UDP payloads of a classic pcap (Ethernet, SLL, SLL2, raw IP or BSD null link)."""
    raw = path.read_bytes()
    magic = raw[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a classic pcap file")
    linktype = struct.unpack(endian + "I", raw[20:24])[0] & 0x0FFFFFFF
    out: list[bytes] = []
    pos = 24
    while pos + 16 <= len(raw):
        incl = struct.unpack(endian + "I", raw[pos + 8 : pos + 12])[0]
        pkt = raw[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        if linktype == 1:
            ethertype, off = struct.unpack(">H", pkt[12:14])[0], 14
            while ethertype == 0x8100:
                ethertype, off = struct.unpack(">H", pkt[off + 2 : off + 4])[0], off + 4
        elif linktype == 113:
            ethertype, off = struct.unpack(">H", pkt[14:16])[0], 16
        elif linktype == 276:
            ethertype, off = struct.unpack(">H", pkt[0:2])[0], 20
        elif linktype in (101, 228):
            ethertype, off = 0x0800, 0
        elif linktype == 0:
            ethertype, off = (0x0800 if pkt[0] == 2 or pkt[3] == 2 else 0), 4
        else:
            raise ValueError(f"unsupported link type {linktype}")
        ip = pkt[off:]
        if ethertype != 0x0800 or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        udp = ip[ihl:total]
        out.append(udp[8:])
    return out


def rtp_frames(payloads: list[bytes]) -> list[list[bytes]]:
    """RTP payloads (RFC 3550 §5.1) grouped by timestamp, each group in sequence order."""
    groups: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    order: list[int] = []
    for pkt in payloads:
        if len(pkt) < 12 or pkt[0] >> 6 != 2:
            continue
        cc = pkt[0] & 0x0F
        seq, ts = struct.unpack(">HI", pkt[2:8])
        start = 12 + 4 * cc
        if pkt[0] & 0x10:
            start += 4 + 4 * struct.unpack(">H", pkt[start + 2 : start + 4])[0]
        end = len(pkt) - (pkt[-1] if pkt[0] & 0x20 else 0)
        if ts not in groups:
            order.append(ts)
        groups[ts].append((seq, pkt[start:end]))
    # Sequence numbers do not wrap within this 10 s capture (checked below).
    return [[p for _, p in sorted(groups[ts])] for ts in order]


def test_real_capture_zlm_udp(shared_dir: Path) -> None:
    path = shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap"
    if not path.exists():
        skip_or_fail(f"{path} missing")
    payloads = pcap_udp_payloads(path)
    assert len(payloads) == 3757
    groups = rtp_frames(payloads)
    assert len(groups) == 251
    assert all(g[0].startswith(b"\x00\x00\x01\xba") for g in groups)
    dm = PsDemuxer()
    frames: list[Frame] = []
    for group in groups:
        for p in group:
            frames += dm.feed(p)
    frames += dm.flush()
    # The capture stops inside the last frame: RTP timestamp 1,260,000 has a single
    # 1,400-byte packet without the marker bit, whose PES declares 43,674 bytes of
    # which 1,311 arrived. So 250 frames are whole and flush() drops the 251st.
    last = groups[-1]
    assert len(last) == 1 and payloads[-1][1] & 0x80 == 0
    assert sum(p[1] >> 7 for p in payloads) == 250  # one marker per complete frame
    assert len(frames) == 250
    assert dm.stats.resyncs == 0 and dm.stats.dropped == 1 and dm.stats.frames == 250
    assert (frames[0].pts, frames[-1].pts) == (360_000, 1_256_400)
    assert dm.stream_types == {0xE0: 0x1B}
    assert all(f.codec is Codec.H264 and f.stream_id == 0xE0 for f in frames)
    assert [i for i, f in enumerate(frames) if f.keyframe] == list(range(0, 250, 50))
    assert {b.pts - a.pts for a, b in zip(frames, frames[1:], strict=False)} == {3600}
    assert all(
        nal.nal_type(Codec.H264, nal.split_nals(f.data)[0]) == nal.H264_NAL_AUD for f in frames
    )
    for f in frames:
        if f.keyframe:
            assert nal.sps_info(Codec.H264, f.data) == nal.SpsInfo(1920, 1080, 77, 40)  # Main@4.0
    # Same frames when the byte stream arrives in arbitrary 1,000-byte slices.
    stream = b"".join(p for g in groups for p in g)
    again = demux_all([stream[i : i + 1000] for i in range(0, len(stream), 1000)])
    assert [(f.pts, f.data) for f in again] == [(f.pts, f.data) for f in frames]


def test_first_picture_is_key_agrees_with_is_keyframe() -> None:
    from media.ps import first_picture_is_key

    sps = h265_sps_1080p()
    vps, pps = b"\x40\x01\x0c\x01\xff\xff", b"\x44\x01\xc1\x72\xb4"
    cases = [
        (Codec.H265, annexb(b"\x46\x01\x10", vps, sps, pps, b"\x26\x01\xaf\x00")),
        (Codec.H265, annexb(b"\x46\x01\x50", b"\x02\x01\xd0\x00")),
        (Codec.H264, idr_au()),
        (Codec.H264, annexb(b"\x09\x30", b"\x41\x9a\x00")),
        (Codec.H264, annexb(b"\x67\x42\x00\x1e", b"\x68\xce")),  # no picture at all
        (Codec.H264, b"\x00\x00\x01"),
        (Codec.H264, b""),
    ]
    for codec, au in cases:
        assert first_picture_is_key(codec, au) == nal.is_keyframe(codec, au), (codec, au[:20])


def test_end_of_frame_emits_the_pending_unit_unless_one_is_incomplete() -> None:
    data, aus = stream_of(2)
    dm = PsDemuxer()
    first = video_pack(aus[0], 0, with_psm=True)
    assert dm.feed(first) == []
    assert [f.data for f in dm.end_of_frame()] == [aus[0]]
    assert dm.end_of_frame() == []
    rest = data[len(first) :]
    assert dm.feed(rest[:-5]) == []
    assert dm.end_of_frame() == []  # a PES is still arriving
    assert dm.feed(rest[-5:]) == []
    assert [f.data for f in dm.end_of_frame()] == [aus[1]]
    assert dm.stats.frames == 2 and dm.flush() == []


def test_feeding_bytes_or_bytearray_gives_the_same_frames() -> None:
    data, aus = stream_of(3)
    for kind in (bytes, bytearray, memoryview):
        dm = PsDemuxer()
        frames = dm.feed(kind(data)) + dm.flush()  # type: ignore[operator]
        assert [f.data for f in frames] == aus, kind
