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


# -- the marker bit, trusted per stream (RFC 3550 §5.1, GB/T 28181-2022 §4.3.6) --


def _frames_of(udp: list[bytes], count: int) -> list[list[bytes]]:
    """The capture's first ``count`` frames: its packets grouped by RTP timestamp."""
    frames: list[list[bytes]] = []
    last = None
    for d in udp:
        ts = struct.unpack_from("!I", d, 4)[0]
        if ts != last:
            if len(frames) == count:
                break
            frames.append([])
            last = ts
        frames[-1].append(d)
    return frames


def _live(**kw: object) -> tuple[RtpIngest, Collector]:
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    return RtpIngest(dispatcher, **kw), sink  # type: ignore[arg-type]


def test_a_marker_trusting_stream_gets_each_frame_at_its_last_packet(udp: list[bytes]) -> None:
    from media.ingest import MARKER_TRUST_FRAMES

    frames = _frames_of(udp, 12)
    assert all(f[-1][1] & 0x80 and not any(d[1] & 0x80 for d in f[:-1]) for f in frames)
    ingest, sink = _live()
    now = 0.0
    for k, packets in enumerate(frames):
        # All but the last packet one at a time, the last in a read pass of its own.
        for d in packets[:-1]:
            ingest.datagrams([d], now)
        before = len(sink.frames)
        ingest.datagrams([packets[-1]], now)
        after = len(sink.frames)
        if k < MARKER_TRUST_FRAMES:
            assert (before, after) == (k, k)  # not yet trusted: whole at the next timestamp
        else:
            assert (before, after) == (k, k + 1)  # trusted: whole at its marker packet
        now += 0.04
    _, clean = run([d for f in frames for d in f])
    assert [f.data for f in sink.frames] == [f.data for f in clean.frames[: len(sink.frames)]]
    assert ingest.stats.after_marker == 0 and ingest._marker_trust == MARKER_TRUST_FRAMES


def test_a_trusting_stream_in_read_passes_of_many_frames(udp: list[bytes]) -> None:
    _, clean = run(udp)
    ingest, sink = _live()
    for start in range(0, len(udp), 37):
        ingest.datagrams(udp[start : start + 37], start / 1000)
    ingest.close(1.0)
    assert [f.data for f in sink.frames] == [f.data for f in clean.frames]
    assert ingest.stats.after_marker == 0


@pytest.mark.parametrize("at", [1, 6])
def test_a_marker_mid_frame_ends_the_trust_for_good(udp: list[bytes], at: int) -> None:
    from media.ingest import _MARKER_DISTRUSTED

    frames = _frames_of(udp, 12)
    frames[at][1] = _with_marker(frames[at][1], True)  # a marker on a frame's second packet
    ingest, sink = _live()
    counts = []
    for packets in frames:
        for d in packets:
            ingest.datagrams([d], 0.0)
        counts.append(len(sink.frames))
    assert ingest._marker_trust == _MARKER_DISTRUSTED
    # From the broken frame on, a frame is whole at the first packet of the next:
    # feeding frame k ends frame k - 1, one frame each.
    assert [b - a for a, b in zip(counts[at + 1 :], counts[at + 2 :], strict=False)] == [1] * (
        len(frames) - at - 2
    )
    if at < 3:
        assert ingest.stats.after_marker == 0  # not trusted yet: nothing lost
        _, clean = run([d for f in _frames_of(udp, 12) for d in f])
        assert [f.data for f in sink.frames] == [f.data for f in clean.frames[: len(sink.frames)]]
    else:
        # Trusted: the frame had ended at the false marker; the rest of it is dropped, counted.
        assert ingest.stats.after_marker == len(frames[at]) - 2
        # The cut frame is the demuxer's to recover or drop; no frame beyond it is lost.
        assert counts[at - 1] == at and counts[-1] >= len(frames) - 2


def test_reordering_around_the_marker_keeps_frames_whole(udp: list[bytes]) -> None:
    frames = _frames_of(udp, 12)
    mixed: list[bytes] = []
    held: bytes | None = None
    for k, packets in enumerate(frames):
        if held is not None:
            # A packet of the previous frame after the first packet of this one.
            packets = [packets[0], held, *packets[1:]]
            held = None
        if k >= 4 and k < len(frames) - 1:
            # The marker packet before the one it follows; one more held back.
            *head, a, b, marker = packets
            packets = [*head, marker, b]
            held = a
        mixed.extend(packets)
    clean_packets = [d for f in _frames_of(udp, 12) for d in f]
    assert sorted(mixed) == sorted(clean_packets) and mixed != clean_packets
    _, clean = run(clean_packets)
    ingest, sink = run(mixed, reorder=ReorderBuffer(capacity=64, max_wait=1.0))
    assert [f.data for f in sink.frames] == [f.data for f in clean.frames]
    assert ingest.stats.after_marker == 0 and ingest._marker_trust == 3
    assert ingest.reorder.stats.reordered > 0


def test_a_late_packet_of_a_marker_ended_frame_is_dropped_and_counted(udp: list[bytes]) -> None:
    frames = _frames_of(udp, 8)
    ingest, sink = _live()
    for packets in frames[:6]:
        for d in packets:
            ingest.datagrams([d], 0.0)
    assert len(sink.frames) == 6  # trusted: the sixth ended at its marker
    # A packet of the sixth frame's timestamp, next in sequence (what a device that
    # marks mid-frame sends): not a seventh frame, not glued to the next one.
    stray = bytearray(frames[6][0])
    struct.pack_into("!I", stray, 4, struct.unpack_from("!I", frames[5][0], 4)[0])
    ingest.datagrams([bytes(stray)], 0.0)
    assert ingest.stats.after_marker == 1 and len(sink.frames) == 6
    seq = struct.unpack_from("!H", stray, 2)[0]
    for d in frames[6] + frames[7]:
        b = bytearray(d)
        seq = (seq + 1) & 0xFFFF
        struct.pack_into("!H", b, 2, seq)
        ingest.datagrams([bytes(b)], 0.0)
    ingest.close(0.0)
    _, clean = run([d for f in frames for d in f])
    assert [f.data for f in sink.frames] == [f.data for f in clean.frames]


def test_a_lost_marker_packet_ends_the_frame_at_the_next_timestamp(udp: list[bytes]) -> None:
    frames = _frames_of(udp, 12)
    lost = frames[6].pop()  # the marker packet of a frame of a trusted stream
    assert lost[1] & 0x80
    ingest, sink = _live(reorder=ReorderBuffer(capacity=16, max_wait=0.001))
    now = 0.0
    counts = []
    for packets in frames:
        for d in packets:
            ingest.datagrams([d], now)
            now += 0.0025
            ingest.tick(now)
        counts.append(len(sink.frames))
    assert ingest.reorder.stats.lost == 1 and ingest.stats.after_marker == 0
    assert counts[5] == 6 and counts[6] == 6  # no marker: the frame waits for the next timestamp
    # The cut frame and the next are the demuxer's to recover (as without the marker);
    # the stream stays trusted, and the frames after end at their marker packet.
    assert ingest._marker_trust == 3
    assert counts[9:] == [counts[8] + k for k in range(1, len(frames) - 8)]
    assert counts[-1] == len(frames) - 1  # every frame but the cut one's loss
