"""The receive path against ZLMediaKit's real PS-over-RTP captures, UDP and TCP."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from media.frame import Codec, Frame
from media.ingest import RtpIngest
from media.nal import sps_info
from media.pipeline import FrameDispatcher
from media.reorder import ReorderBuffer
from tests.media_captures import tcp_stream, udp_payloads
from tests.unit.accel_paths import accel_path  # noqa: F401 - the fixture

# Every test twice: the compiled receive path and the pure-Python one.
pytestmark = pytest.mark.usefixtures("accel_path")


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


def run(datagrams: list[bytes], **kw: object) -> tuple[RtpIngest, Collector]:
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher, **kw)  # type: ignore[arg-type]
    now = 0.0
    for data in datagrams:
        # A batch of one: the compiled path when it is on, else ``datagram`` itself.
        ingest.datagrams([data], now)
        now += 0.0025
    ingest.close(now)
    return ingest, sink


@pytest.fixture(scope="module")
def udp(shared_dir: Path) -> list[bytes]:
    return [payload for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")]


def check_clip(frames: list[Frame]) -> None:
    """The facts of the captures' clip: H.264 1080p, 25 fps (PTS step 3600), GOP 50."""
    assert all(f.codec is Codec.H264 for f in frames)
    keys = [i for i, f in enumerate(frames) if f.keyframe]
    assert keys[0] < 50 and {b - a for a, b in zip(keys, keys[1:], strict=False)} == {50}
    assert {b.pts - a.pts for a, b in zip(frames, frames[1:], strict=False)} == {3600}
    info = sps_info(Codec.H264, frames[keys[0]].data)
    assert info is not None and (info.width, info.height) == (1920, 1080)


def test_udp_capture_gives_every_complete_frame(udp: list[bytes]) -> None:
    ingest, sink = run(udp)
    # 251 RTP timestamps, the last frame cut off by the end of the capture.
    assert len(sink.frames) == 250
    check_clip(sink.frames)
    assert ingest.stats.packets == 3757 and ingest.stats.bad_packets == ingest.stats.foreign_ssrc == 0
    assert ingest.reorder.stats.lost == 0


def test_reordered_and_duplicated_packets_give_the_same_frames(udp: list[bytes]) -> None:
    rng = random.Random(4)
    mixed: list[bytes] = list(udp[:8])  # the stream starts in order: packets older than the first are late
    for start in range(8, len(udp), 8):
        window = udp[start : start + 8]
        rng.shuffle(window)
        mixed.extend(window)
        if start % 80 == 8:
            mixed.append(window[0])  # a duplicate
    _, clean = run(udp)
    ingest, sink = run(mixed, reorder=ReorderBuffer(capacity=64, max_wait=1.0))
    assert [f.data for f in sink.frames] == [f.data for f in clean.frames]
    assert ingest.reorder.stats.duplicates > 0 and ingest.reorder.stats.lost == 0


def test_lost_packets_cost_frames_not_the_stream(udp: list[bytes]) -> None:
    lossy = [d for i, d in enumerate(udp) if i % 400 != 200]
    ingest, sink = run(lossy, reorder=ReorderBuffer(capacity=16, max_wait=0.01))
    assert ingest.reorder.stats.lost == 9
    assert 200 < len(sink.frames) < 250
    assert ingest.demuxer.stats.resyncs > 0 or ingest.demuxer.stats.dropped > 0


def test_foreign_ssrc_and_garbage_are_counted_and_dropped(udp: list[bytes]) -> None:
    ssrc = struct.unpack_from("!I", udp[0], 8)[0]
    foreign = bytearray(udp[5])
    struct.pack_into("!I", foreign, 8, ssrc ^ 1)
    ingest, sink = run([*udp[:10], bytes(foreign), b"\x80garbage", *udp[10:]], ssrc=ssrc)
    assert ingest.stats.foreign_ssrc == 1 and ingest.stats.bad_packets == 1
    assert len(sink.frames) == 250


def test_rekey_follows_the_ssrc_the_device_answered(udp: list[bytes]) -> None:
    ssrc = struct.unpack_from("!I", udp[0], 8)[0]
    ingest, sink = run(udp[:40], ssrc=ssrc + 1)
    assert ingest.stats.packets == 0 and ingest.stats.foreign_ssrc == 40
    ingest.rekey(ssrc)
    for data in udp[40:]:
        ingest.datagram(data, 1.0)
    assert ingest.stats.packets == len(udp) - 40


def test_tcp_capture_through_rfc4571_framing(shared_dir: Path) -> None:
    stream = tcp_stream(shared_dir / "captures" / "zlm_ps_rtp_tcp_1080p.pcap")
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    rng = random.Random(9)
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 3000)
        assert ingest.stream_bytes(stream[pos : pos + step], 0.0)
        pos += step
    ingest.close(1.0)
    # 255 RTP timestamps in this run (it starts 4 frames before a keyframe), the
    # last frame cut off by the capture's end.
    assert len(sink.frames) == 254
    check_clip(sink.frames)


def test_broken_tcp_framing_marks_the_stream_unusable() -> None:
    ingest = RtpIngest(FrameDispatcher())
    assert ingest.stream_bytes(b"\x00\x05hello", 0.0) is False
    assert ingest.failed is not None
    assert ingest.stream_bytes(b"\x00\x0c" + bytes(12), 0.0) is False


def _with_marker(data: bytes, marker: bool) -> bytes:
    b = bytearray(data)
    b[1] = (b[1] & 0x7F) | (0x80 if marker else 0)
    return bytes(b)


@pytest.mark.parametrize("marker", ["as sent", "never", "always"])
def test_ps_frames_do_not_depend_on_the_marker_bit(udp: list[bytes], marker: str) -> None:
    _, clean = run(udp)
    datagrams = udp if marker == "as sent" else [_with_marker(d, marker == "always") for d in udp]
    ingest, sink = run(datagrams)
    assert [(f.data, f.pts, f.keyframe) for f in sink.frames] == [
        (f.data, f.pts, f.keyframe) for f in clean.frames
    ]
    assert ingest.demuxer.stats.dropped == 1  # only the capture's cut last frame


def test_a_ps_frame_leaves_at_the_first_packet_of_the_next(udp: list[bytes]) -> None:
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    first_ts = struct.unpack_from("!I", udp[0], 4)[0]
    n = 0
    while struct.unpack_from("!I", udp[n], 4)[0] == first_ts:
        ingest.datagram(udp[n], 0.0)
        n += 1
    assert sink.frames == []  # the marker came, but a frame is only known whole at the next
    ingest.datagram(udp[n], 0.0)
    assert len(sink.frames) == 1 and sink.frames[0].keyframe


def test_ps_payloads_without_marker_or_timestamp_change_are_demuxed_in_batches(
    udp: list[bytes],
) -> None:
    from media.ingest import PS_BATCH

    # A broken device: one timestamp and no marker for the whole stream.
    same = []
    for d in udp[: PS_BATCH * 2 + 3]:
        b = bytearray(_with_marker(d, False))
        struct.pack_into("!I", b, 4, 1234)
        same.append(bytes(b))
    ingest = RtpIngest(FrameDispatcher())
    for d in same:
        ingest.datagram(d, 0.0)
    assert len(ingest._ps_chunks) == 3  # bounded: the rest went to the demuxer
    assert ingest.demuxer.stats.bytes > 0
