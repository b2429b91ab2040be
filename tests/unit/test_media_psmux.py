"""PS muxer: headers by the clause, PsDemuxer round trips, and ffprobe reading what we write."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from dataclasses import astuple
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from gbplatform.simulator.clip import ClipSpec, encode_audio, encode_video
from media import nal
from media.frame import Codec, Frame
from media.ps import PsDemuxer, parse_timestamp
from media.psmux import (
    MAX_PES_PAYLOAD,
    PsMuxer,
    crc32_mpeg,
    encode_timestamp,
    pack_header,
    program_stream_map,
    split_payload,
    system_header,
)

FFPROBE = shutil.which("ffprobe")
# A ZLMediaKit PSM from /work/shared/captures/zlm_ps_rtp_udp_1080p.pcap: CRC_32 from the start code.
ZLM_PSM = bytes.fromhex("000001bc0024c10100167114697265616465722f6d656469612d73657276657200041be0000026bbeb5a")


@pytest.fixture(scope="module")
def encoded() -> dict[Codec, list[Frame]]:
    """One second of real H.264, H.265 (320x180, GOP 25) and G.711 A-law/µ-law from PyAV."""
    out: dict[Codec, list[Frame]] = {}
    for video in (Codec.H264, Codec.H265):
        out[video] = encode_video(ClipSpec(video=video, width=320, height=180, seconds=1))
    for audio in (Codec.G711A, Codec.G711U):
        out[audio] = encode_audio(ClipSpec(audio=audio, seconds=1))
    return out


def interleave(video: list[Frame], audio: list[Frame]) -> list[Frame]:
    """Audio block i after video frame i, as sim_clip lays them out."""
    frames: list[Frame] = []
    for i, v in enumerate(video):
        frames.append(v)
        frames.extend(audio[i:i + 1])
    return frames


def mux_all(muxer: PsMuxer, frames: list[Frame]) -> bytes:
    return b"".join(muxer.mux(f) for f in frames)


def demux(data: bytes, chunk: int = 1400) -> tuple[list[Frame], PsDemuxer]:
    d = PsDemuxer()
    out: list[Frame] = []
    for piece in split_payload(data, chunk):
        out += d.feed(piece)
    out += d.flush()
    return out, d


def key(f: Frame) -> tuple[Any, ...]:
    return (f.codec, f.data, f.pts, f.dts, f.keyframe)


def by_stream(frames: list[Frame]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return ([key(f) for f in frames if f.codec.is_video],
            [key(f) for f in frames if not f.codec.is_video])


# -- fields by the clause -------------------------------------------------------------------


def scr_of(pack: bytes) -> int:
    """SCR base back out of an MPEG-2 pack header (ISO/IEC 13818-1 §2.5.3.4)."""
    b = pack[4:10]
    return ((b[0] >> 3 & 7) << 30 | (b[0] & 3) << 28 | b[1] << 20 | (b[2] >> 3) << 15
            | (b[2] & 3) << 13 | b[3] << 5 | b[4] >> 3)


@pytest.mark.parametrize("ts", [0, 1, 3600, 0x1_2345_6789, (1 << 33) - 1])
def test_timestamps_and_scr_survive_encoding(ts: int) -> None:
    assert parse_timestamp(encode_timestamp(0b0010, ts)) == ts
    field = encode_timestamp(0b0011, ts)
    assert field[0] >> 4 == 0b0011 and field[0] & 1 and field[2] & 1 and field[4] & 1
    pack = pack_header(ts, mux_rate=25_000)
    assert len(pack) == 14 and pack[:4] == b"\x00\x00\x01\xba" and pack[4] >> 6 == 0b01
    assert scr_of(pack) == ts
    assert pack[4] & 4 and pack[6] & 4 and pack[8] & 4 and pack[9] & 1  # marker bits
    assert (pack[10] << 14 | pack[11] << 6 | pack[12] >> 2) == 25_000 and pack[12] & 3 == 3
    assert pack[13] & 7 == 0  # no stuffing


def test_timestamps_wrap_at_33_bits() -> None:
    assert parse_timestamp(encode_timestamp(0b0010, (1 << 33) + 5)) == 5


def test_psm_crc_is_the_mpeg_crc_over_the_whole_packet() -> None:
    assert crc32_mpeg(ZLM_PSM[:-4]) == int.from_bytes(ZLM_PSM[-4:], "big")
    psm = program_stream_map([(0x24, 0xE0), (0x90, 0xC0)])
    assert crc32_mpeg(psm) == 0  # Annex A: the decoder's register is zero after the CRC
    assert psm[:4] == b"\x00\x00\x01\xbc" and int.from_bytes(psm[4:6], "big") == len(psm) - 6
    assert psm[6] & 0x80  # current_next_indicator
    assert psm[8:10] == b"\x00\x00" and psm[10:12] == b"\x00\x08"
    assert psm[12:20] == bytes.fromhex("24e0000090c00000")


def test_system_header_declares_the_streams() -> None:
    sh = system_header(Codec.H264, Codec.G711A)
    assert sh[:4] == b"\x00\x00\x01\xbb" and int.from_bytes(sh[4:6], "big") == len(sh) - 6
    assert sh[9] >> 2 == 1 and sh[10] & 0x1F == 1  # audio_bound, video_bound
    assert sh[12:] == bytes.fromhex("e0e190c0c020")
    assert system_header(Codec.H265, None)[12:] == bytes.fromhex("e0e190")


def test_psm_goes_before_keyframes_only(encoded: dict[Codec, list[Frame]]) -> None:
    m = PsMuxer(Codec.H264, Codec.G711A)
    video, audio = encoded[Codec.H264], encoded[Codec.G711A]
    assert video[0].keyframe and not video[1].keyframe
    key_pack, p_pack, a_pack = m.mux(video[0]), m.mux(video[1]), m.mux(audio[0])
    assert key_pack[14:].startswith(m.headers) and b"\x00\x00\x01\xbc" in key_pack
    assert p_pack[14:17] == b"\x00\x00\x01" and p_pack[17] == 0xE0
    assert a_pack[14:18] == b"\x00\x00\x01\xc0" and b"\x00\x00\x01\xbc" not in a_pack


def test_audio_only_stream_repeats_its_psm_every_second() -> None:
    m = PsMuxer(None, Codec.G711U)
    packs = [m.mux(Frame(Codec.G711U, b"\xff" * 320, i * 3600, i * 3600, True, 0xC0))
             for i in range(51)]
    with_psm = [i for i, p in enumerate(packs) if b"\x00\x00\x01\xbc" in p]
    assert with_psm == [0, 25, 50]
    frames, d = demux(b"".join(packs))
    assert [f.codec for f in frames] == [Codec.G711U] * 51 and d.stream_types == {0xC0: 0x91}


def test_caller_errors() -> None:
    with pytest.raises(ValueError, match="not a video codec"):
        PsMuxer(Codec.G711A)
    with pytest.raises(ValueError, match="at least one stream"):
        PsMuxer(None, None)
    with pytest.raises(ValueError, match="PES payload limit"):
        PsMuxer(max_pes_payload=MAX_PES_PAYLOAD + 1)
    m = PsMuxer(Codec.H264, None)
    with pytest.raises(ValueError, match="g711a frame"):
        m.mux(Frame(Codec.G711A, b"x", 0, 0, True, 0xC0))
    with pytest.raises(ValueError, match="empty frame"):
        m.mux(Frame(Codec.H264, b"", 0, 0, True, 0xE0))
    with pytest.raises(ValueError, match="does not fit one PES"):
        PsMuxer(None, Codec.G711A).mux(Frame(Codec.G711A, bytes(70_000), 0, 0, True, 0xC0))


def test_split_payload() -> None:
    assert split_payload(b"abcdefg", 3) == [b"abc", b"def", b"g"]
    assert split_payload(b"", 3) == []
    with pytest.raises(ValueError):
        split_payload(b"abc", 0)


# -- round trips through PsDemuxer ----------------------------------------------------------


@pytest.mark.parametrize(("video", "audio"), [(Codec.H264, Codec.G711A), (Codec.H265, Codec.G711U),
                                              (Codec.H265, None)])
def test_round_trip_real_frames(encoded: dict[Codec, list[Frame]], video: Codec,
                                audio: Codec | None) -> None:
    frames = interleave(encoded[video], encoded[audio] if audio else [])
    data = mux_all(PsMuxer(video, audio), frames)
    out, d = demux(data)
    assert by_stream(out) == by_stream(frames)
    assert d.stats.resyncs == 0 and d.stats.dropped == 0
    types = {0xE0: 0x1B if video is Codec.H264 else 0x24}
    if audio is not None:
        types[0xC0] = 0x90 if audio is Codec.G711A else 0x91
    assert d.stream_types == types
    assert sum(f.keyframe for f in out if f.codec.is_video) == 1  # GOP 25, one second


def test_round_trip_split_pes_and_distinct_dts(encoded: dict[Codec, list[Frame]]) -> None:
    """Small PES limit: every video frame spans PES packets; PTS != DTS takes the '11' form."""
    frames = [Frame(f.codec, f.data, f.dts + 7200, f.dts, f.keyframe, f.stream_id)
              for f in encoded[Codec.H265]]
    m = PsMuxer(Codec.H265, None, max_pes_payload=1000)
    data = mux_all(m, frames)
    assert data.count(b"\x00\x00\x01\xe0") > 2 * len(frames)
    out, _ = demux(data, chunk=977)
    assert [key(f) for f in out] == [key(f) for f in frames]


def test_round_trip_frame_above_one_pes() -> None:
    big = b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 800  # 204,805 bytes: four PES
    frames = [Frame(Codec.H264, big, 900_000, 896_400, True, 0xE0),
              Frame(Codec.H264, b"\x00\x00\x00\x01\x41\x9a", 903_600, 900_000, False, 0xE0)]
    data = mux_all(PsMuxer(Codec.H264, None), frames)
    assert data.count(b"\x00\x00\x01\xe0") == 4 + 1
    out, _ = demux(data)
    assert [key(f) for f in out] == [key(f) for f in frames]


def test_byte_at_a_time_and_trailing_bytes() -> None:
    """The PES limit splits video only: an audio block stays whole."""
    m = PsMuxer(Codec.H264, Codec.G711A, max_pes_payload=50)
    frames = [Frame(Codec.H264, b"\x00\x00\x00\x01\x65" + bytes(120), 0, 0, True, 0xE0),
              Frame(Codec.G711A, b"\xd5" * 80, 0, 0, True, 0xC0),
              Frame(Codec.H264, b"\x00\x00\x00\x01\x41" + b"\x01" * 90, 3600, 3600, False, 0xE0)]
    data = mux_all(m, frames)
    out, _ = demux(data, chunk=1)
    assert by_stream(out) == by_stream(frames)
    d = PsDemuxer()
    out = d.feed(data + pack_header(7200))  # a next pack completes the last video frame
    assert by_stream(out) == by_stream(frames)


# -- ffprobe reads what we write --------------------------------------------------------------


def ffprobe(path: Path, *extra: str) -> list[dict[str, Any]]:
    assert FFPROBE is not None
    result = subprocess.run(
        [FFPROBE, "-v", "error", *extra, "-show_entries",
         "stream=id,codec_type,codec_name,width,height,sample_rate,channels,nb_read_frames",
         "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True)
    streams: list[dict[str, Any]] = json.loads(result.stdout)["streams"]
    return sorted(streams, key=lambda s: str(s["id"]))


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe not installed")
@pytest.mark.parametrize(("video", "audio", "names"), [
    (Codec.H264, Codec.G711A, ("h264", "pcm_alaw")),
    (Codec.H265, Codec.G711U, ("hevc", "pcm_mulaw")),
])
def test_ffprobe_reads_video_and_g711(encoded: dict[Codec, list[Frame]], tmp_path: Path,
                                      video: Codec, audio: Codec,
                                      names: tuple[str, str]) -> None:
    data = mux_all(PsMuxer(video, audio, max_pes_payload=4000),
                   interleave(encoded[video], encoded[audio]))
    path = tmp_path / "clip.ps"
    path.write_bytes(data)
    audio_s, video_s = ffprobe(path, "-count_frames")
    assert (video_s["id"], video_s["codec_name"], video_s["width"], video_s["height"]) == (
        "0x1e0", names[0], 320, 180)
    assert video_s["nb_read_frames"] == "25"
    assert (audio_s["id"], audio_s["codec_type"]) == ("0x1c0", "audio")
    # libavformat/mpeg.c maps stream types 0x90/0x91 to G.711 only in Hikvision's
    # "IMKH" files; with that file header it names our audio stream exactly.
    imkh = tmp_path / "imkh.ps"
    imkh.write_bytes(b"IMKH" + bytes(36) + data)
    audio_s, video_s = ffprobe(imkh)
    assert (audio_s["codec_name"], audio_s["sample_rate"], audio_s["channels"]) == (
        names[1], "8000", 1)
    assert video_s["codec_name"] == names[0]


@pytest.mark.skipif(FFPROBE is None, reason="ffprobe not installed")
def test_ffprobe_reads_aac_adts(encoded: dict[Codec, list[Frame]], tmp_path: Path) -> None:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as container:
        stream: Any = container.add_stream("aac", rate=16000, layout="mono")
        src = av.open("sine=frequency=440:sample_rate=16000:duration=1", format="lavfi")
        for frame in src.decode(audio=0):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        src.close()
    adts, aac = buf.getvalue(), list[Frame]()
    pos = 0
    while pos + 7 <= len(adts):
        n = (adts[pos + 3] & 3) << 11 | adts[pos + 4] << 3 | adts[pos + 5] >> 5
        ts = int(len(aac) * Fraction(1024 * 90_000, 16_000))
        aac.append(Frame(Codec.AAC, adts[pos:pos + n], ts, ts, True, 0xC0))
        pos += n
    assert len(aac) > 10
    frames = interleave(encoded[Codec.H264], aac)
    data = mux_all(PsMuxer(Codec.H264, Codec.AAC), frames)
    out, _ = demux(data)
    assert by_stream(out) == by_stream(frames)
    path = tmp_path / "aac.ps"
    path.write_bytes(data)
    audio_s, video_s = ffprobe(path)
    assert (audio_s["codec_name"], audio_s["sample_rate"], audio_s["channels"]) == ("aac", "16000", 1)
    assert (video_s["codec_name"], video_s["width"]) == ("h264", 320)


def test_frames_keep_nal_metadata(encoded: dict[Codec, list[Frame]]) -> None:
    """The demuxed H.265 keyframe still carries the encoder's SPS (sanity of the fixture)."""
    out, _ = demux(mux_all(PsMuxer(Codec.H265, None), encoded[Codec.H265][:1]))
    info = nal.sps_info(Codec.H265, out[0].data)
    assert info is not None and (info.width, info.height) == (320, 180)
    assert astuple(out[0])[:5] == astuple(encoded[Codec.H265][0])[:5]
