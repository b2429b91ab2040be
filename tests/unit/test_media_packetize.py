"""RTP packetizers (RFC 6184, RFC 7798, RFC 3551) and the DESCRIBE media sections."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.aac import adts_header
from media.frame import Codec, Frame
from media.nal import H264_NAL_AUD, H264_NAL_IDR, H264_NAL_PPS, H264_NAL_SPS, nal_type, split_nals
from media.packetize import (
    FU_A,
    H265_FU,
    AacPacketizer,
    G711Packetizer,
    H264Packetizer,
    H265Packetizer,
    MissingParameterSets,
    audio_payload_type,
    sdp_audio,
    sdp_media,
)
from media.pipeline import AudioTrack
from media.rtp import RtpPacket, seq_delta, ts_delta
from tests.media_captures import udp_payloads
from tests.unit.test_media_ingest import run

SSRC = 0x1234ABCD
MTU = 1400


class Depacketizer:
    """Reassembles single NAL packets and FU-A / H.265 FUs into NAL units (test oracle).

    Strict on purpose: a fragment without a start, a start inside a fragment
    or a missing end fails the test.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.fu: bytearray | None = None

    def push(self, payload: bytes) -> bytes | None:
        if self.codec is Codec.H264:
            kind, hdr_len = payload[0] & 0x1F, 1
            fu_type = FU_A
        else:
            kind, hdr_len = (payload[0] >> 1) & 0x3F, 2
            fu_type = H265_FU
        if kind != fu_type:
            assert self.fu is None, "single NAL packet inside a fragmented unit"
            return payload
        fu_header = payload[hdr_len]
        start, end = bool(fu_header & 0x80), bool(fu_header & 0x40)
        assert not (start and end), "S and E both set (RFC 6184 §5.8, RFC 7798 §4.4.3)"
        if start:
            assert self.fu is None
            if self.codec is Codec.H264:
                assert fu_header & 0x20 == 0  # R bit
                self.fu = bytearray(((payload[0] & 0xE0) | (fu_header & 0x1F),))
            else:
                self.fu = bytearray(((payload[0] & 0x81) | ((fu_header & 0x3F) << 1), payload[1]))
        assert self.fu is not None, "fragment without a start"
        self.fu += payload[hdr_len + 1 :]
        if not end:
            return None
        nal, self.fu = bytes(self.fu), None
        return nal


def annex_b(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def video_frame(codec: Codec, data: bytes, pts: int, keyframe: bool = False) -> Frame:
    return Frame(codec=codec, data=data, pts=pts, dts=pts, keyframe=keyframe, stream_id=0xE0)


def depacketize(codec: Codec, packets: list[bytes]) -> list[list[bytes]]:
    """Access units (lists of NALs) split on the marker bit."""
    d = Depacketizer(codec)
    aus: list[list[bytes]] = []
    current: list[bytes] = []
    for raw in packets:
        pkt = RtpPacket.parse(raw)
        nal = d.push(bytes(pkt.payload))
        if nal is not None:
            current.append(nal)
        if pkt.marker:
            assert d.fu is None
            aus.append(current)
            current = []
    assert current == []
    return aus


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[Frame]:
    udp = [p for _, p in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")]
    _, sink = run(udp)
    return sink.frames


def h264_nals(frame: Frame, *, drop: tuple[int, ...] = ()) -> list[bytes]:
    return [bytes(n) for n in split_nals(frame.data) if nal_type(Codec.H264, n) not in drop]


# --- H.264 on the real capture ----------------------------------------------------------


def test_capture_packets_fit_the_mtu_and_mark_access_units(frames: list[Frame]) -> None:
    pk = H264Packetizer(SSRC, random.Random(1), mtu=MTU)
    per_au = [[RtpPacket.parse(p) for p in pk.packetize(f)] for f in frames]
    flat = [p for au in per_au for p in au]
    assert all(len(p.serialize()) <= MTU + 12 for p in flat)
    assert all(p.ssrc == SSRC and p.payload_type == 96 for p in flat)
    assert all(seq_delta(a.sequence, b.sequence) == 1 for a, b in zip(flat, flat[1:], strict=False))
    for au in per_au:
        assert [p.marker for p in au] == [False] * (len(au) - 1) + [True]
        assert len({p.timestamp for p in au}) == 1
    stamps = [au[0].timestamp for au in per_au]
    assert {ts_delta(a, b) for a, b in zip(stamps, stamps[1:], strict=False)} == {3600}
    assert (
        stamps[0]
        == pk.rtp_timestamp(frames[0].pts)
        == (frames[0].pts + pk.timestamp_offset) & 0xFFFFFFFF
    )
    assert pk.packets_sent == len(flat)
    assert pk.octets_sent == sum(len(p.payload) for p in flat)
    # 1080p slices of ~19 kB are far bigger than one packet: FU-A did the work.
    assert sum(1 for p in flat if p.payload[0] & 0x1F == FU_A) > len(frames) * 10


def test_capture_round_trips_to_the_same_nals_without_aud(frames: list[Frame]) -> None:
    pk = H264Packetizer(SSRC, random.Random(2), mtu=MTU)
    packets = [p for f in frames for p in pk.packetize(f)]
    aus = depacketize(Codec.H264, packets)
    assert aus == [h264_nals(f, drop=(H264_NAL_AUD,)) for f in frames]


def test_parameter_sets_are_sent_before_an_idr_that_lacks_them(frames: list[Frame]) -> None:
    keys = [f for f in frames if f.keyframe]
    assert len(keys) >= 2
    first = keys[0]
    sps_pps = [
        n for n in h264_nals(first) if nal_type(Codec.H264, n) in (H264_NAL_SPS, H264_NAL_PPS)
    ]
    # The camera repeats SPS/PPS at each IDR; strip them from every later keyframe.
    stripped = [
        f
        if f is first or not f.keyframe
        else video_frame(
            Codec.H264, annex_b(*h264_nals(f, drop=(H264_NAL_SPS, H264_NAL_PPS))), f.pts, True
        )
        for f in frames[frames.index(first) :]
    ]
    pk = H264Packetizer(SSRC, random.Random(3), mtu=MTU)
    aus = depacketize(Codec.H264, [p for f in stripped for p in pk.packetize(f)])
    for frame, au in zip(stripped, aus, strict=True):
        types = [nal_type(Codec.H264, n) for n in au]
        if frame.keyframe:
            if frame is not first:  # injected ahead of the camera's SEIs
                assert au[:2] == sps_pps
            assert types.count(H264_NAL_SPS) == types.count(H264_NAL_PPS) == 1
            assert types.index(H264_NAL_PPS) < types.index(H264_NAL_IDR)
        else:
            assert H264_NAL_SPS not in types


def test_idr_before_any_parameter_set_is_sent_as_is() -> None:
    pk = H264Packetizer(SSRC, random.Random(4))
    idr = bytes([0x65]) + b"\x88" * 100
    aus = depacketize(Codec.H264, pk.packetize(video_frame(Codec.H264, annex_b(idr), 0, True)))
    assert aus == [[idr]]


def test_aud_only_access_unit_sends_nothing_and_keeps_the_sequence() -> None:
    pk = H264Packetizer(SSRC, random.Random(5))
    before = pk.sequence
    assert pk.packetize(video_frame(Codec.H264, annex_b(b"\x09\xf0"), 0)) == []
    assert pk.sequence == before


def test_sequence_wraps_at_16_bits() -> None:
    pk = H264Packetizer(SSRC, random.Random(6), mtu=100)
    pk.sequence = 0xFFFE
    packets = [
        RtpPacket.parse(p)
        for p in pk.packetize(video_frame(Codec.H264, annex_b(b"\x41" + b"\x9a" * 400), 0))
    ]
    assert [p.sequence for p in packets] == [0xFFFE, 0xFFFF, 0, 1, 2]


def test_timestamp_wraps_at_32_bits() -> None:
    pk = H264Packetizer(SSRC, random.Random(7))
    pk.timestamp_offset = 0xFFFF_FFFF - 10
    (pkt,) = pk.packetize(video_frame(Codec.H264, annex_b(b"\x41\x00"), 3600))
    assert RtpPacket.parse(pkt).timestamp == 3589


def test_fu_a_header_bits() -> None:
    pk = H264Packetizer(SSRC, random.Random(8), mtu=10)
    nal = bytes([0x65]) + bytes(range(1, 21))  # NRI 3, IDR, 20 body bytes -> 8+8+4
    payloads = [
        bytes(RtpPacket.parse(p).payload)
        for p in pk.packetize(video_frame(Codec.H264, annex_b(nal), 0))
    ]
    assert [p[:2] for p in payloads] == [b"\x7c\x85", b"\x7c\x05", b"\x7c\x45"]
    assert b"".join(p[2:] for p in payloads) == nal[1:]
    assert all(len(p) <= 10 for p in payloads)


def test_nal_exactly_the_mtu_is_a_single_packet() -> None:
    pk = H264Packetizer(SSRC, random.Random(9), mtu=50)
    nal = b"\x41" + b"\x9a" * 49
    (pkt,) = pk.packetize(video_frame(Codec.H264, annex_b(nal), 0))
    assert bytes(RtpPacket.parse(pkt).payload) == nal


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20000), min_size=1, max_size=4),
    mtu=st.integers(3, 1500),
    seed=st.integers(0, 2**32),
)
def test_random_nal_sizes_round_trip_through_fu_a(sizes: list[int], mtu: int, seed: int) -> None:
    rng = random.Random(seed)
    # 0x41 (non-IDR slice) then bytes with no start code, as Annex B emulation prevention ensures.
    nals = [b"\x41" + bytes(rng.randint(1, 255) for _ in range(n - 1)) for n in sizes]
    pk = H264Packetizer(SSRC, rng, mtu=mtu)
    packets = pk.packetize(video_frame(Codec.H264, annex_b(*nals), 0))
    assert all(len(p) <= mtu + 12 for p in packets)
    assert depacketize(Codec.H264, packets) == [nals]


def test_wrong_codec_and_bad_settings_are_rejected() -> None:
    pk = H264Packetizer(SSRC, random.Random(10))
    with pytest.raises(ValueError, match="cannot packetize h265"):
        pk.packetize(video_frame(Codec.H265, b"", 0))
    with pytest.raises(ValueError, match="MTU 2"):
        H264Packetizer(SSRC, random.Random(0), mtu=2)
    with pytest.raises(ValueError, match="MTU 3"):
        H265Packetizer(SSRC, random.Random(0), mtu=3)
    with pytest.raises(ValueError, match="SSRC"):
        H264Packetizer(1 << 32, random.Random(0))
    with pytest.raises(ValueError, match="payload type"):
        H264Packetizer(SSRC, random.Random(0), payload_type=128)


# --- H.265 ------------------------------------------------------------------------------

VPS = bytes.fromhex("40010c01ffff016000000300900000030000030078959809")
SPS_265 = bytes.fromhex("420101016000000300900000030000030078a003c08010e59659")
PPS_265 = bytes.fromhex("4401c172b46240")


def h265_nal(
    kind: int, size: int, rng: random.Random, layer_tid: tuple[int, int] = (0, 1)
) -> bytes:
    layer, tid = layer_tid
    header = bytes(((kind << 1) | (layer >> 5), ((layer & 0x1F) << 3) | tid))
    return header + bytes(rng.randint(1, 255) for _ in range(size - 2))


@pytest.mark.parametrize("kind", [1, 19])
def test_h265_fu_round_trip(kind: int) -> None:
    rng = random.Random(kind)
    nal = h265_nal(kind, 5000, rng, layer_tid=(33, 3))
    pk = H265Packetizer(SSRC, rng, mtu=MTU)
    packets = [RtpPacket.parse(p) for p in pk.packetize(video_frame(Codec.H265, annex_b(nal), 0))]
    assert len(packets) == 4 and [p.marker for p in packets] == [False, False, False, True]
    for p in packets:
        hdr = bytes(p.payload[:3])
        assert len(p.payload) <= MTU
        assert (hdr[0] >> 1) & 0x3F == H265_FU
        # F, LayerId and TID are copied from the fragmented NAL (RFC 7798 §4.4.3).
        assert hdr[0] & 0x81 == nal[0] & 0x81 and hdr[1] == nal[1]
        assert hdr[2] & 0x3F == kind
    assert [p.payload[2] & 0xC0 for p in packets] == [0x80, 0, 0, 0x40]
    assert depacketize(Codec.H265, [p.serialize() for p in packets]) == [[nal]]


def test_h265_parameter_sets_before_irap_and_aud_dropped() -> None:
    rng = random.Random(11)
    aud = bytes((35 << 1, 1, 0x50))
    idr = h265_nal(19, 3000, rng)
    trail = h265_nal(1, 200, rng)
    pk = H265Packetizer(SSRC, rng)
    first = pk.packetize(video_frame(Codec.H265, annex_b(aud, VPS, SPS_265, PPS_265, idr), 0, True))
    later = [
        pk.packetize(video_frame(Codec.H265, annex_b(aud, trail), 3600)),
        pk.packetize(video_frame(Codec.H265, annex_b(aud, idr), 7200, True)),
        # An AU that carries only a new SPS still gets the remembered VPS and PPS.
        pk.packetize(video_frame(Codec.H265, annex_b(SPS_265[:-1], idr), 10800, True)),
    ]
    aus = depacketize(Codec.H265, first + [p for au in later for p in au])
    assert aus == [
        [VPS, SPS_265, PPS_265, idr],
        [trail],
        [VPS, SPS_265, PPS_265, idr],
        [VPS, PPS_265, SPS_265[:-1], idr],
    ]
    stamps = [RtpPacket.parse(au[0]).timestamp for au in [first, *later]]
    assert [ts_delta(stamps[0], s) for s in stamps] == [0, 3600, 7200, 10800]


def test_h265_nal_shorter_than_its_header_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    pk = H265Packetizer(SSRC, random.Random(12))
    trail = h265_nal(1, 10, random.Random(0))
    aus = depacketize(Codec.H265, pk.packetize(video_frame(Codec.H265, annex_b(b"\x02", trail), 0)))
    assert aus == [[trail]]
    assert "shorter than its header" in caplog.text


# --- G.711 ------------------------------------------------------------------------------


def audio_frame(codec: Codec, size: int, pts: int) -> Frame:
    return Frame(
        codec=codec,
        data=bytes(range(256)) * (size // 256) + bytes(size % 256),
        pts=pts,
        dts=pts,
        keyframe=True,
        stream_id=0xC0,
    )


@pytest.mark.parametrize(("codec", "pt"), [(Codec.G711A, 8), (Codec.G711U, 0)])
def test_g711_timestamps_are_8khz_samples(codec: Codec, pt: int) -> None:
    pk = G711Packetizer(SSRC, random.Random(13), codec)
    # 40 ms blocks: 320 samples, 3600 ticks of 90 kHz.
    packets = [
        RtpPacket.parse(p)
        for i in range(5)
        for p in pk.packetize(audio_frame(codec, 320, 90000 + 3600 * i))
    ]
    assert [p.payload_type for p in packets] == [pt] * 5
    assert [ts_delta(packets[0].timestamp, p.timestamp) for p in packets] == [
        0,
        320,
        640,
        960,
        1280,
    ]
    assert packets[0].timestamp == (8000 + pk.timestamp_offset) & 0xFFFFFFFF
    assert not any(p.marker for p in packets)
    assert all(
        seq_delta(a.sequence, b.sequence) == 1 for a, b in zip(packets, packets[1:], strict=False)
    )


def test_g711_block_over_the_mtu_is_split_by_samples() -> None:
    pk = G711Packetizer(SSRC, random.Random(14), mtu=160)
    frame = audio_frame(Codec.G711A, 400, 0)
    packets = [RtpPacket.parse(p) for p in pk.packetize(frame)]
    assert [len(p.payload) for p in packets] == [160, 160, 80]
    assert [ts_delta(packets[0].timestamp, p.timestamp) for p in packets] == [0, 160, 320]
    assert b"".join(bytes(p.payload) for p in packets) == frame.data


def test_g711_rejects_other_codecs() -> None:
    with pytest.raises(ValueError, match="not G.711"):
        G711Packetizer(SSRC, random.Random(0), Codec.AAC)
    with pytest.raises(ValueError, match="cannot packetize g711u"):
        G711Packetizer(SSRC, random.Random(0)).packetize(audio_frame(Codec.G711U, 10, 0))


# --- SDP --------------------------------------------------------------------------------


def fmtp_params(sdp: str) -> dict[str, str]:
    line = next(x for x in sdp.split("\r\n") if x.startswith("a=fmtp:"))
    return dict(kv.split("=", 1) for kv in line.split(" ", 1)[1].split(";"))


def test_h264_sdp_from_the_capture_keyframe(frames: list[Frame]) -> None:
    key = next(f for f in frames if f.keyframe)
    nals = h264_nals(key)
    sps = next(n for n in nals if nal_type(Codec.H264, n) == H264_NAL_SPS)
    pps = next(n for n in nals if nal_type(Codec.H264, n) == H264_NAL_PPS)
    sdp = sdp_media(Codec.H264, key, 96, "trackID=0")
    assert sdp.endswith("\r\n")
    lines = sdp.split("\r\n")[:-1]
    assert lines[0] == "m=video 0 RTP/AVP 96"
    assert lines[1] == "a=rtpmap:96 H264/90000"
    assert lines[3] == "a=control:trackID=0"
    params = fmtp_params(sdp)
    assert params["packetization-mode"] == "1"
    assert bytes.fromhex(params["profile-level-id"]) == sps[1:4]
    assert [base64.b64decode(s) for s in params["sprop-parameter-sets"].split(",")] == [sps, pps]


def test_h265_sdp() -> None:
    frame = video_frame(
        Codec.H265, annex_b(VPS, SPS_265, PPS_265, h265_nal(19, 50, random.Random(0))), 0, True
    )
    sdp = sdp_media(Codec.H265, frame, 97, "trackID=0")
    lines = sdp.split("\r\n")
    assert lines[:2] == ["m=video 0 RTP/AVP 97", "a=rtpmap:97 H265/90000"]
    params = fmtp_params(sdp)
    assert {k: base64.b64decode(v) for k, v in params.items()} == {
        "sprop-vps": VPS,
        "sprop-sps": SPS_265,
        "sprop-pps": PPS_265,
    }


@pytest.mark.parametrize(
    ("codec", "name", "pt"), [(Codec.G711A, "PCMA", 8), (Codec.G711U, "PCMU", 0)]
)
def test_g711_sdp(codec: Codec, name: str, pt: int) -> None:
    assert sdp_media(codec, None, pt, "trackID=1") == (
        f"m=audio 0 RTP/AVP {pt}\r\na=rtpmap:{pt} {name}/8000\r\na=control:trackID=1\r\n"
    )


def test_sdp_without_parameter_sets_is_a_clear_error() -> None:
    slice_only = video_frame(Codec.H264, annex_b(b"\x41\x00"), 0)
    with pytest.raises(MissingParameterSets, match="lacks sps/pps"):
        sdp_media(Codec.H264, slice_only, 96, "trackID=0")
    with pytest.raises(MissingParameterSets, match="lacks vps"):
        sdp_media(Codec.H265, video_frame(Codec.H265, annex_b(SPS_265, PPS_265), 0), 96, "t")
    with pytest.raises(MissingParameterSets):
        sdp_media(Codec.H264, None, 96, "t")
    with pytest.raises(ValueError, match="no RTP payload format for aac"):
        sdp_media(Codec.AAC, None, 97, "t")


# --- AAC (RFC 3640 AAC-hbr) and the audio SDP ------------------------------------------------


def adts_pes(sizes: list[int], pts: int, rate_index: int = 4, channels: int = 2) -> Frame:
    data = b"".join(adts_header(2, rate_index, channels, n) + bytes([i + 1]) * n for i, n in enumerate(sizes))
    return Frame(Codec.AAC, data, pts, pts, True, 0xC0)


def au_units(packets: list[RtpPacket]) -> list[tuple[int, int, bytes]]:
    """(timestamp, AU-size, AU bytes) per access unit, reassembling fragments (test oracle)."""
    out: list[tuple[int, int, bytes]] = []
    partial = b""
    for p in packets:
        payload = bytes(p.payload)
        assert payload[:2] == b"\x00\x10"  # AU-headers-length: one 16-bit AU-header
        size, index = payload[2] << 5 | payload[3] >> 3, payload[3] & 7
        assert index == 0
        partial += payload[4:]
        if p.marker:
            assert len(partial) == size
            out.append((p.timestamp, size, partial))
            partial = b""
    assert partial == b""
    return out


def test_aac_one_au_per_packet_stamped_in_samples() -> None:
    pk = AacPacketizer(SSRC, random.Random(21), 44100)
    frame = adts_pes([200, 300], 90_000)
    packets = [RtpPacket.parse(p) for p in pk.packetize(frame)]
    assert [p.payload_type for p in packets] == [97, 97] and all(p.marker for p in packets)
    units = au_units(packets)
    base = (44100 + pk.timestamp_offset) & 0xFFFFFFFF
    assert units == [(base, 200, b"\x01" * 200), ((base + 1024) & 0xFFFFFFFF, 300, b"\x02" * 300)]
    assert pk.rtp_timestamp(90_000) == base


def test_aac_au_over_the_mtu_is_fragmented() -> None:
    pk = AacPacketizer(SSRC, random.Random(22), 48000, mtu=100)
    packets = [RtpPacket.parse(p) for p in pk.packetize(adts_pes([250], 0, rate_index=3))]
    assert [len(p.payload) for p in packets] == [100, 100, 62]
    assert [p.marker for p in packets] == [False, False, True]
    assert len({p.timestamp for p in packets}) == 1
    assert au_units(packets) == [(packets[0].timestamp, 250, b"\x01" * 250)]


def test_aac_that_is_not_adts_is_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    pk = AacPacketizer(SSRC, random.Random(23), 16000)
    seq = pk.sequence
    assert pk.packetize(Frame(Codec.AAC, b"\x21\x10\x05\x00", 0, 0, True, 0xC0)) == []
    assert pk.dropped == 1 and pk.sequence == seq and "dropping an AAC frame" in caplog.text
    with pytest.raises(ValueError, match="cannot packetize g711a"):
        pk.packetize(audio_frame(Codec.G711A, 10, 0))
    with pytest.raises(ValueError, match="sample rate"):
        AacPacketizer(SSRC, random.Random(0), 0)


def test_audio_sdp_sections() -> None:
    assert sdp_audio(AudioTrack(Codec.G711A, 8000, 1), audio_payload_type(Codec.G711A), "trackID=1") == (
        "m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=1\r\n"
    )
    assert audio_payload_type(Codec.G711U) == 0 and audio_payload_type(Codec.AAC) == 97
    sdp = sdp_audio(AudioTrack(Codec.AAC, 44100, 2, bytes.fromhex("1210")), 97, "trackID=1")
    lines = sdp.split("\r\n")
    assert lines[:2] == ["m=audio 0 RTP/AVP 97", "a=rtpmap:97 mpeg4-generic/44100/2"]
    assert fmtp_params(sdp) == {
        "streamtype": "5", "profile-level-id": "1", "mode": "AAC-hbr", "sizelength": "13",
        "indexlength": "3", "indexdeltalength": "3", "config": "1210",
    }
    assert lines[3] == "a=control:trackID=1"
    with pytest.raises(ValueError, match="AudioSpecificConfig"):
        sdp_audio(AudioTrack(Codec.AAC, 44100, 2), 97, "t")
    with pytest.raises(ValueError, match="no RTP payload format for h264"):
        audio_payload_type(Codec.H264)
