"""FLV muxer: real 1080p H.264 from the ZLMediaKit capture, decoded back with PyAV."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from media.aac import adts_header
from media.flv import FlvMuxer, FlvSink, hevc_decoder_configuration_record
from media.frame import Codec, Frame
from media.ingest import RtpIngest
from media.nal import split_nals
from media.pipeline import FrameDispatcher
from tests.media_audio import aac_frames, g711_frames, merge_by_dts
from tests.media_captures import udp_payloads


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


@dataclass
class Tag:
    type: int
    timestamp: int
    body: bytes


def parse_flv(data: bytes) -> tuple[bytes, list[Tag]]:
    """Walk the tags by DataSize, checking every PreviousTagSize (FLV §E.3, §E.4.1)."""
    assert data[:3] == b"FLV" and data[3] == 1
    header_size = struct.unpack_from(">I", data, 5)[0]
    assert header_size == 9 and data[9:13] == b"\x00\x00\x00\x00"
    pos = 13
    tags: list[Tag] = []
    while pos < len(data):
        kind = data[pos]
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        assert data[pos + 8 : pos + 11] == b"\x00\x00\x00"
        body = data[pos + 11 : pos + 11 + size]
        assert len(body) == size
        assert struct.unpack_from(">I", data, pos + 11 + size)[0] == 11 + size
        tags.append(Tag(kind, ts, body))
        pos += 11 + size + 4
    assert pos == len(data)
    return data[:9], tags


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[Frame]:
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap"):
        ingest.datagram(payload, 0.0)
    ingest.close(1.0)
    assert len(sink.frames) == 250 and sink.frames[0].keyframe
    return sink.frames


def mux(frames: list[Frame], *, audio: bool = False) -> bytes:
    out: list[bytes] = []
    sink = FlvSink(out.append, audio=audio)
    for frame in frames:
        sink.input_frame(frame)
    return b"".join(out)


def test_capture_decodes_with_pyav(frames: list[Frame], tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    path = tmp_path / "clip.flv"
    path.write_bytes(mux(frames))
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == (1920, 1080)
        decoded = list(container.decode(video=0))
    assert len(decoded) >= 240
    assert {(f.width, f.height) for f in decoded} == {(1920, 1080)}
    times = [round(f.time * 1000) for f in decoded]
    assert times[0] == 0
    assert {b - a for a, b in zip(times, times[1:], strict=False)} == {40}


def test_tag_structure_of_the_capture(frames: list[Frame]) -> None:
    header, tags = parse_flv(mux(frames))
    assert header[4] == 0x01  # video only
    assert all(t.type == 9 for t in tags)
    seq, first, *rest = tags
    assert seq.body[:5] == b"\x17\x00\x00\x00\x00" and seq.timestamp == 0
    sps = next(bytes(n) for n in split_nals(frames[0].data) if n[0] & 0x1F == 7)
    record = seq.body[5:]
    assert record[:6] == bytes((1, sps[1], sps[2], sps[3], 0xFF, 0xE1))
    assert record[6:8] == len(sps).to_bytes(2, "big") and record[8 : 8 + len(sps)] == sps
    assert first.body[:2] == b"\x17\x01" and first.timestamp == 0
    assert len(rest) == 249 and [t.timestamp for t in rest[:3]] == [40, 80, 120]
    assert sum(t.body[0] == 0x17 for t in rest) == 4  # GOP 50: keyframes 50, 100, 150, 200
    # The payload is 4-byte length-prefixed NALs with no AUD/SPS/PPS left in it.
    for tag in (first, *rest[:60]):
        payload, pos, types = tag.body[5:], 0, []
        while pos < len(payload):
            n = struct.unpack_from(">I", payload, pos)[0]
            types.append(payload[pos + 4] & 0x1F)
            pos += 4 + n
        assert pos == len(payload) and not {7, 8, 9} & set(types) and types[-1] in (1, 5)


def test_nothing_before_the_first_keyframe_and_timestamps_relative(frames: list[Frame]) -> None:
    start = next(i for i, f in enumerate(frames) if f.keyframe and i > 0)  # the second GOP
    out: list[bytes] = []
    sink = FlvSink(out.append)
    for frame in frames[1:start]:
        sink.input_frame(frame)
    assert out == [] and sink.muxer.stats.waiting_for_keyframe == start - 1
    for frame in frames[start:]:
        sink.input_frame(frame)
    _, tags = parse_flv(b"".join(out))
    assert tags[0].body[:2] == b"\x17\x00" and tags[1].body[:2] == b"\x17\x01"
    assert tags[0].timestamp == tags[1].timestamp == 0 and tags[2].timestamp == 40
    assert len(tags) == 1 + len(frames) - start


def test_parameter_set_change_sends_a_new_sequence_header(frames: list[Frame]) -> None:
    muxer = FlvMuxer()
    key = frames[0]
    assert len(muxer.frame(key)) == 2
    assert len(muxer.frame(frames[1])) == 1
    assert (
        len(muxer.frame(Frame(Codec.H264, key.data, key.pts + 7200, key.dts + 7200, True, 0xE0)))
        == 1
    )
    changed = key.data.replace(b"\x00\x00\x00\x01\x68", b"\x00\x00\x00\x01\x68\x00", 1)
    again = muxer.frame(Frame(Codec.H264, changed, key.pts + 10800, key.dts + 10800, True, 0xE0))
    assert len(again) == 2 and again[0][11:13] == b"\x17\x00"
    assert muxer.stats.sequence_headers == 2


def avc(data: bytes, dts: int, *, pts: int | None = None, key: bool = False) -> Frame:
    return Frame(Codec.H264, data, dts if pts is None else pts, dts, key, 0xE0)


SPS = b"\x67\x42\xc0\x1e\xda\x02\x80\xbf\xe5\x84\x00\x00\x03\x00\x04\x00\x00\x03\x00\xca\x3c\x58\xba\x80"
PPS = b"\x68\xce\x0f\x2c\x80"
IDR = (
    b"\x00\x00\x00\x01\x09\xf0"
    + b"\x00\x00\x00\x01"
    + SPS
    + b"\x00\x00\x00\x01"
    + PPS
    + b"\x00\x00\x01\x65\x88\x84"
)


def test_extended_timestamp_wrap_and_composition_time() -> None:
    muxer = FlvMuxer()
    base = (1 << 33) - 900  # 10 ms before the 33-bit PES clock wraps
    tags = muxer.frame(avc(IDR, base, key=True))
    late = (1 << 24) * 90 + 3600 - 900  # past 2^24 ms after the wrap
    (tag,) = muxer.frame(avc(b"\x00\x00\x01\x41\x9a", late, pts=late + 7200))
    _, parsed = parse_flv(muxer.header() + b"".join(tags) + tag)
    assert parsed[-1].timestamp == (1 << 24) + 40
    assert tag[7] == 0x01  # TimestampExtended holds bit 24
    assert parsed[-1].body[:5] == b"\x27\x01\x00\x00\x50"  # inter frame, CTS 80 ms


def test_g711_audio_tags() -> None:
    muxer = FlvMuxer(audio=True)
    assert muxer.header()[4] == 0x05
    pcm = bytes(range(160))
    assert muxer.frame(Frame(Codec.G711A, pcm, 0, 0, False, 0xC0)) == []  # no video yet
    muxer.frame(avc(IDR, 9000, key=True))
    (tag,) = muxer.frame(Frame(Codec.G711A, pcm, 9000 + 1800, 9000 + 1800, False, 0xC0))
    assert tag == b"\x08\x00\x00\xa1\x00\x00\x14\x00\x00\x00\x00" + b"\x72" + pcm + struct.pack(
        ">I", 11 + 161
    )
    (mu,) = muxer.frame(Frame(Codec.G711U, pcm, 9000, 9000, False, 0xC0))
    assert mu[11] == 0x82
    assert muxer.frame(Frame(Codec.AAC, b"\xff\xf1", 9000, 9000, False, 0xC0)) == []  # not ADTS
    assert muxer.stats.dropped == 1
    assert FlvMuxer().frame(Frame(Codec.G711A, pcm, 0, 0, False, 0xC0)) == []  # audio off


# H.265 Main, 1920x1080, 8-bit 4:2:0 (conformance window 8 lines), one sub-layer.
VPS = bytes.fromhex("40010c01ffff016000000300b0000003000003007b170240")
HEVC_SPS = bytes.fromhex("420101016000000300b0000003000003007ba003c08010e7f96bb9")
HEVC_PPS = bytes.fromhex("4401c172b46240")
HEVC_IDR = b"".join(
    b"\x00\x00\x00\x01" + n for n in (b"\x46\x01\x50", VPS, HEVC_SPS, HEVC_PPS, b"\x26\x01\xaf\x06")
)


def test_h265_sequence_start_and_coded_frames() -> None:
    muxer = FlvMuxer()
    start, coded = muxer.frame(Frame(Codec.H265, HEVC_IDR, 3600, 0, True, 0xE0))
    _, (seq, pic) = parse_flv(muxer.header() + start + coded)
    assert seq.body[:5] == b"\x90hvc1"  # IsExHeader | key frame | SequenceStart
    record = seq.body[5:]
    # general profile_tier_level, emulation prevention removed: Main, progressive, level 4.1
    assert record[0] == 1 and record[1:13] == bytes.fromhex("0160000000b000000000007b")
    assert record[13:16] == b"\xf0\x00\xfc"
    assert record[16:19] == b"\xfd\xf8\xf8"  # chroma 4:2:0, 8-bit luma and chroma
    # 1 temporal layer, nested, 4-byte lengths; 3 arrays
    assert record[21] == 0x0F and record[22] == 3
    pos, arrays = 23, []
    for _ in range(3):
        kind, count = record[pos] & 0x3F, int.from_bytes(record[pos + 1 : pos + 3], "big")
        size = int.from_bytes(record[pos + 3 : pos + 5], "big")
        arrays.append((kind, count, record[pos + 5 : pos + 5 + size]))
        pos += 5 + size
    assert pos == len(record)
    assert arrays == [(32, 1, VPS), (33, 1, HEVC_SPS), (34, 1, HEVC_PPS)]
    assert pic.body[:8] == b"\x91hvc1\x00\x00\x28"  # CodedFrames, CTS 40 ms
    assert pic.body[8:] == struct.pack(">I", 4) + b"\x26\x01\xaf\x06"
    (inter,) = muxer.frame(Frame(Codec.H265, b"\x00\x00\x01\x02\x01\xd0", 7200, 3600, False, 0xE0))
    assert inter[11:12] == b"\xa1" and inter[4:7] == b"\x00\x00\x28"
    assert muxer.frame(avc(IDR, 7200, key=True)) == [] and muxer.stats.dropped == 1


def test_hevc_record_rejects_missing_parameter_sets() -> None:
    from media.flv import FlvError

    with pytest.raises(FlvError):
        hevc_decoder_configuration_record([VPS], [], [HEVC_PPS])
    with pytest.raises(FlvError, match="H.265 SPS"):
        hevc_decoder_configuration_record([VPS], [HEVC_SPS[:16]], [HEVC_PPS])


def test_keyframe_without_parameter_sets_waits() -> None:
    muxer = FlvMuxer()
    assert muxer.frame(avc(b"\x00\x00\x01\x65\x88", 0, key=True)) == []
    assert muxer.stats.waiting_for_keyframe == 1
    assert len(muxer.frame(avc(IDR, 3600, key=True))) == 2


def test_h265_enhanced_flv_is_recognised_by_ffmpeg(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    if av.library_versions["libavformat"] < (60, 16):
        pytest.skip("FFmpeg before 6.1 does not demux enhanced FLV")
    muxer = FlvMuxer()
    path = tmp_path / "hevc.flv"
    path.write_bytes(
        muxer.header() + b"".join(muxer.frame(Frame(Codec.H265, HEVC_IDR, 0, 0, True, 0xE0)))
    )
    with av.open(str(path)) as container:
        (stream,) = container.streams.video
        assert stream.codec_context.name == "hevc"
        assert stream.codec_context.extradata[:1] == b"\x01"  # our HEVCDecoderConfigurationRecord


# -- audio: G.711 and AAC next to the capture's video ---------------------------------------------


def with_audio(frames: list[Frame], codec: Codec) -> list[Frame]:
    seconds = (frames[-1].pts + 3600 - frames[0].pts) / 90_000
    start = frames[0].pts
    sound = aac_frames(seconds, start) if codec is Codec.AAC else g711_frames(codec, seconds, start)
    return merge_by_dts(frames, sound)


def test_aac_sequence_header_then_raw_frames_without_adts() -> None:
    muxer = FlvMuxer(audio=True)
    muxer.frame(avc(IDR, 9000, key=True))
    raw1, raw2 = b"\x21" * 20, b"\x22" * 30
    pes = adts_header(2, 4, 2, 20) + raw1 + adts_header(2, 4, 2, 30) + raw2
    seq, first, second = muxer.frame(Frame(Codec.AAC, pes, 9000, 9000, True, 0xC0))
    _, tags = parse_flv(muxer.header() + seq + first + second)
    assert [t.type for t in tags] == [8, 8, 8]
    assert tags[0].body == b"\xaf\x00" + bytes.fromhex("1210")  # AudioSpecificConfig: LC, 44.1 kHz, stereo
    assert (tags[1].body, tags[2].body) == (b"\xaf\x01" + raw1, b"\xaf\x01" + raw2)
    assert [t.timestamp for t in tags] == [0, 0, 23]  # the second frame is 1024 samples on
    # Same config: no new sequence header; a new one when the header changes.
    (again,) = muxer.frame(Frame(Codec.AAC, adts_header(2, 4, 2, 20) + raw1, 9000 + 4180, 9000 + 4180, True, 0xC0))
    assert again[11:13] == b"\xaf\x01"
    mono = muxer.frame(Frame(Codec.AAC, adts_header(2, 8, 1, 20) + raw1, 18000, 18000, True, 0xC0))
    assert [t[11:13] for t in mono] == [b"\xaf\x00", b"\xaf\x01"] and mono[0][13:15] == bytes.fromhex("1408")
    assert muxer.stats.sequence_headers == 3 and muxer.stats.audio_frames == 4


@pytest.mark.parametrize("codec", [Codec.G711A, Codec.G711U, Codec.AAC])
def test_capture_with_audio_decodes_both_with_pyav(frames: list[Frame], codec: Codec, tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    out: list[bytes] = []
    sink = FlvSink(out.append)  # the default: audio when the stream has it
    for frame in with_audio(frames, codec):
        sink.input_frame(frame)
    data = b"".join(out)
    assert data[4] == 0x05  # TypeFlagsAudio | TypeFlagsVideo
    path = tmp_path / "av.flv"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        names = {s.type: s.codec_context.name for s in container.streams}
        assert names == {"video": "h264", "audio": {Codec.G711A: "pcm_alaw", Codec.G711U: "pcm_mulaw",
                                                   Codec.AAC: "aac"}[codec]}
        counts = {"video": 0, "audio": 0}
        last = {"video": 0.0, "audio": 0.0}
        for frame in container.decode(*container.streams):
            kind = "audio" if isinstance(frame, av.AudioFrame) else "video"
            counts[kind] += 1
            last[kind] = frame.time
    assert counts["video"] >= 240 and counts["audio"] >= 200
    assert abs(last["video"] - last["audio"]) < 0.1  # both run the clip's 10 s


def test_header_audio_flag_follows_the_stream(frames: list[Frame]) -> None:
    # Shared tracks that already know the stream: a late joiner holds nothing back.
    d = FrameDispatcher()
    for frame in with_audio(frames[:30], Codec.G711A):
        d.input_frame(frame)
    out: list[bytes] = []
    sink = FlvSink(out.append, tracks=d.tracks)
    d.add_sink(sink)  # the GOP replay
    assert out and out[0][4] == 0x05

    video_only = FrameDispatcher()
    for frame in frames[:30]:
        video_only.input_frame(frame)
    out = []
    video_only.add_sink(FlvSink(out.append, tracks=video_only.tracks))
    assert out and out[0][4] == 0x01

    # Own tracks, from the stream's first keyframe: frames wait for the probe.
    out = []
    sink = FlvSink(out.append)
    mixed = with_audio(frames[:30], Codec.G711U)
    sink.input_frame(mixed[0])
    assert out == [] and sink.held == 1
    for frame in mixed[1:]:
        sink.input_frame(frame)
    assert out[0][4] == 0x05 and sink.held == 0
    _, tags = parse_flv(b"".join(out))
    assert tags[0].type == 9 and {t.type for t in tags} == {8, 9}

    # Forced off: video only even though the stream has audio.
    out = []
    sink = FlvSink(out.append, audio=False)
    for frame in mixed:
        sink.input_frame(frame)
    assert out[0][4] == 0x01 and {t.type for t in parse_flv(b"".join(out))[1]} == {9}
