"""Recording write path: TS index, segment muxer, bounded queue, writer, crash repair.

Frames are the real capture (1080p H.264, 25 fps, a keyframe every 50 frames)
through the real receive path; audio is AAC encoded here with PyAV. The
writer runs on the test thread (``run_pending``), its clock is a counter.
"""

from __future__ import annotations

import array
import dataclasses
import fractions
import io
import math
import sys
from pathlib import Path
from typing import Any

import av
import pytest

from gbplatform.recording.recovery import parse_key, repair
from gbplatform.recording.storage import LocalStorage
from gbplatform.recording.writer import (
    ByteQueue,
    DiskWriter,
    SegmentClosed,
    SegmentOpened,
    WriteFailed,
    _Throttle,
    segment_key,
)
from media.frame import Codec, Frame
from media.pipeline import FrameDispatcher, audio_track
from media.tsindex import TS_PACKET, TsIndexer, complete_length, scan_ts
from media.tsrecord import TsRecordMuxer
from tests.unit.test_media_snapshot import capture_frames

WALL0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[Frame]:
    return capture_frames(shared_dir)


def aac_frames(seconds: float, first_pts: int, rate: int = 16000) -> list[Frame]:
    """ADTS AAC blocks of a tone, stamped on the 90 kHz clock from ``first_pts``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="adts") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        stream.bit_rate = 32000
        samples = int(seconds * rate)
        # array, not numpy: the test install does not provide numpy (issue 8, item 26).
        pcm = array.array("h", (int(math.sin(2 * math.pi * 440 * i / rate) * 8000) for i in range(samples)))
        if sys.byteorder != "little":
            pcm.byteswap()
        for i in range(0, samples, 1024):
            chunk = pcm[i:i + 1024]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk))
            frame.planes[0].update(chunk.tobytes())
            frame.sample_rate = rate
            frame.pts = i
            frame.time_base = fractions.Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = buf.getvalue()
    out_frames, pos, n = [], 0, 0
    while pos + 7 <= len(data):
        size = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        pts = first_pts + n * 1024 * 90000 // rate
        out_frames.append(Frame(Codec.AAC, data[pos:pos + size], pts, pts, False, 0xC0))
        pos += size
        n += 1
    return out_frames


def mux(frames: list[Frame], **kw: Any) -> tuple[bytes, TsRecordMuxer]:
    out = bytearray()
    muxer = TsRecordMuxer(out.extend, video=Codec.H264, width=1920, height=1080, **kw)
    for f in frames:
        muxer.write(f)
    muxer.close()
    return bytes(out), muxer


def decode_count(data: bytes) -> tuple[int, list[int]]:
    with av.open(io.BytesIO(data), "r", format="mpegts") as c:
        pts = [p.pts for p in c.demux(video=0) if p.size]
    return len(pts), pts


# --- index -----------------------------------------------------------------------


def test_index_finds_every_keyframe_at_a_pat(frames: list[Frame]) -> None:
    data, muxer = mux(frames)
    keys = [f for f in frames if f.keyframe]
    assert len(data) % TS_PACKET == 0
    assert [e.pts for e in muxer.entries] == [f.pts for f in keys]
    for e in muxer.entries:
        assert data[e.offset:e.offset + 3] == b"\x47\x40\x00"  # a PAT with payload_unit_start
    assert muxer.indexer.video_pes == len(frames)
    assert muxer.indexer.duration_ticks() == frames[-1].pts - frames[0].pts
    # The same index from the file alone, fed whole or a byte at a time.
    assert scan_ts(data).entries == muxer.entries
    slow = TsIndexer()
    for i in range(0, len(data), 997):
        slow.feed(data[i:i + 997])
    assert slow.entries == muxer.entries


def test_every_keyframe_range_decodes_on_its_own(frames: list[Frame]) -> None:
    data, muxer = mux(frames)
    bounds = [e.offset for e in muxer.entries] + [len(data)]
    counts = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        with av.open(io.BytesIO(data[a:b]), "r", format="mpegts") as c:
            decoded = list(c.decode(video=0))
        assert decoded[0].key_frame
        counts.append(len(decoded))
    assert sum(counts) == len(frames)


def test_complete_length() -> None:
    assert complete_length(188 * 3 + 5) == 188 * 3
    assert complete_length(0) == 0


def test_audio_is_muxed_beside_the_video(frames: list[Frame]) -> None:
    audio = aac_frames(4.0, frames[0].pts)
    track = audio_track(audio[0])
    assert track is not None and track.sample_rate == 16000
    merged = sorted(frames[:100] + audio, key=lambda f: f.dts)
    data, muxer = mux(merged, audio=track)
    assert muxer.dropped == 0
    with av.open(io.BytesIO(data), "r", format="mpegts") as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        assert c.streams.audio[0].codec_context.name == "aac"
    assert len(muxer.entries) == 2


# --- queue and sink ------------------------------------------------------------------


def test_byte_queue_is_bounded_in_bytes() -> None:
    q = ByteQueue(100)
    assert q.put("a", 60) and not q.put("b", 60) and q.put("c", 40)
    assert q.bytes == 100 and len(q) == 2
    assert q.put("ctl", 0, force=True)
    assert q.get_nowait() == "a" and q.bytes == 40
    assert q.get(timeout=0) == "c" and q.get_nowait() == "ctl" and q.get(timeout=0) is None
    assert q.put("big", 500)  # an empty queue takes anything: one frame never deadlocks


def test_full_queue_drops_until_the_next_keyframe(frames: list[Frame], tmp_path: Path) -> None:
    events: list[Any] = []
    writer = DiskWriter(tmp_path, queue_bytes=sum(len(f.data) for f in frames[:10]), report=events.append,
                        segment_seconds=60)
    sink = writer.sink("c1", lambda: WALL0)
    for f in frames[:60]:  # nobody drains: the queue fills within the first GOP
        sink.input_frame(f)
    assert sink.dropping and writer.dropped_frames > 0
    queued = len(writer.queue)
    writer.run_pending()
    # Draining does not resume mid-GOP: frames 51..59 follow keyframe 50 only if it got in.
    for f in frames[60:99]:
        sink.input_frame(f)
    assert len(writer.queue) == 0 and sink.dropping  # still waiting for a keyframe
    sink.input_frame(frames[100])
    assert not sink.dropping and len(writer.queue) == 1
    assert writer.dropped_frames == sink.dropped == 60 - queued + 39


# --- writer ------------------------------------------------------------------------


def record(frames: list[Frame], root: Path, seconds: float = 2.0, **kw: Any) -> tuple[DiskWriter, list[Any]]:
    events: list[Any] = []
    writer = DiskWriter(root, segment_seconds=seconds, report=events.append, **kw)
    sink = writer.sink("34020000001310000001", lambda: WALL0)
    for f in frames:
        sink.input_frame(f)
    sink.close()
    writer.run_pending()
    return writer, events


def test_segments_are_cut_at_keyframes_and_play(frames: list[Frame], tmp_path: Path) -> None:
    writer, events = record(frames, tmp_path, seconds=3.0)
    opened = [e for e in events if isinstance(e, SegmentOpened)]
    closed = [e for e in events if isinstance(e, SegmentClosed)]
    # Keyframes every 2 s; a cut needs 3 s: at frames 100 and 200.
    assert len(opened) == len(closed) == 3
    assert [e.key for e in opened] == [e.key for e in closed]
    total = 0
    for e in closed:
        assert e.error is None and not e.has_audio
        data = (tmp_path / e.key).read_bytes()
        assert len(data) == e.size
        n, _ = decode_count(data)
        total += n
        assert e.index[0][0] == 0 or data[e.index[0][0]:e.index[0][0] + 3] == b"\x47\x40\x00"
        assert e.index[0][2] == pytest.approx(e.start)
    assert [n for n in (decode_count((tmp_path / e.key).read_bytes())[0] for e in closed)] == [100, 100, len(frames) - 200]
    assert total == len(frames)
    assert closed[0].end == pytest.approx(closed[0].start + 4.0)
    assert writer.written_bytes == sum(e.size for e in closed)


def test_gop_cache_replay_is_indexed_from_its_keyframe(frames: list[Frame], tmp_path: Path) -> None:
    """Issue 8 item 20: recording that joins a stream starts with the cached GOP, replayed at once.

    The replayed frames all arrive at the same wall time, but the file's video
    starts at the cached keyframe, captured earlier: the first segment is
    indexed from that keyframe, and its interval ends where the next begins.
    """
    events: list[Any] = []
    writer = DiskWriter(tmp_path, segment_seconds=2.0, report=events.append)
    now = [WALL0]
    sink = writer.sink("34020000001310000001", lambda: now[0])
    dispatcher = FrameDispatcher()
    cached = 12  # the keyframe and 11 more: 0.44 s of the GOP is in the cache when recording joins
    for f in frames[:cached]:
        dispatcher.input_frame(f)
    dispatcher.add_sink(sink)  # the replay: every cached frame at WALL0
    for f in frames[cached:160]:
        now[0] += 0.04  # then live, 25 fps
        dispatcher.input_frame(f)
    sink.close()
    writer.run_pending()
    closed = [e for e in events if isinstance(e, SegmentClosed)]
    assert len(closed) == 4  # cut at the keyframes 50, 100 and 150
    age = (frames[cached - 1].dts - frames[0].dts) / 90000
    assert closed[0].start == pytest.approx(WALL0 - age, abs=1e-3)
    assert closed[0].index[0][2] == pytest.approx(closed[0].start, abs=1e-3)
    # The second segment starts at frame 50, live: WALL0 + 39 x 40 ms.
    assert closed[1].start == pytest.approx(WALL0 + (50 - cached + 1) * 0.04, abs=1e-3)
    for a, b in zip(closed, closed[1:], strict=False):
        assert a.end <= b.start + 1e-6, f"{a.key} ends {a.end - b.start:.3f} s into {b.key}"


def test_first_segment_waits_briefly_for_audio(frames: list[Frame], tmp_path: Path) -> None:
    audio = aac_frames(4.0, frames[0].pts + 9000)
    merged = sorted(frames[:100] + audio, key=lambda f: f.dts)
    _, events = record(merged, tmp_path, seconds=60)
    closed = [e for e in events if isinstance(e, SegmentClosed)]
    assert len(closed) == 1 and closed[0].has_audio
    with av.open(str(tmp_path / closed[0].key)) as c:
        assert len(c.streams.audio) == 1 and len(c.streams.video) == 1


def test_unwritable_root_reports_and_keeps_consuming(frames: list[Frame], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    now = [0.0]
    writer, events = record(frames[:120], blocker, monotonic=lambda: now[0])
    failures = [e for e in events if isinstance(e, WriteFailed)]
    # One failure, then the channel waits RETRY_AFTER before trying again.
    assert len(failures) == 1 and "cannot start segment" in failures[0].error
    assert len(writer.queue) == 0 and writer.errors == 1


def test_segment_key_round_trip() -> None:
    key = segment_key("34020000001310000001", 1_700_000_000.25)
    assert key == "34020000001310000001/2023-11-14/34020000001310000001-20231114T221320.250Z.ts"
    assert parse_key(key) == ("34020000001310000001", 1_700_000_000.25)
    assert parse_key("x/y.ts") is None


# --- recovery --------------------------------------------------------------------------


def test_torn_segment_is_repaired_and_plays(frames: list[Frame], tmp_path: Path) -> None:
    _, events = record(frames, tmp_path, seconds=60)
    closed = next(e for e in events if isinstance(e, SegmentClosed))
    path = tmp_path / closed.key
    data = path.read_bytes()
    cut = 1_500_000 + 77  # mid-packet, past two keyframes
    path.write_bytes(data[:cut])
    storage = LocalStorage(tmp_path)
    fixed = repair(storage, closed.key, closed.start)
    assert fixed is not None
    assert fixed.size == path.stat().st_size == complete_length(cut) and fixed.truncated == cut % 188
    assert [k[:2] for k in fixed.keyframes] == [k[:2] for k in closed.index if k[0] < fixed.size]
    n, pts = decode_count(path.read_bytes())
    assert n >= fixed.frames - 1 >= 70
    assert fixed.end == pytest.approx(closed.start + (pts[-1] - pts[0] + 3600) / 90000, abs=0.05)
    assert repair(storage, "gone/x.ts", 0.0) is None


def test_events_are_frozen() -> None:
    e = SegmentOpened("c", "k", 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.key = "x"  # type: ignore[misc]


def test_g711_audio_is_recorded_as_aac(frames: list[Frame], tmp_path: Path) -> None:
    pytest.importorskip("media.transcode")
    # 40 ms A-law blocks (320 samples at 8 kHz) beside the video, on the same 90 kHz clock.
    alaw = [Frame(Codec.G711A, bytes((i * 7 + n) % 256 for n in range(320)), frames[0].pts + i * 3600,
                  frames[0].pts + i * 3600, False, 0xC0) for i in range(100)]
    merged = sorted(frames[:100] + alaw, key=lambda f: (f.dts, not f.codec.is_video))
    _, events = record(merged, tmp_path, seconds=60)
    closed = [e for e in events if isinstance(e, SegmentClosed)]
    assert len(closed) == 1 and closed[0].has_audio
    with av.open(str(tmp_path / closed[0].key)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        audio_packets = sum(1 for p in c.demux(audio=0) if p.size)
    assert audio_packets > 50  # ~4 s of 16 kHz AAC is ~60 frames of 1024 samples


def test_throttle_one_line_per_key_per_interval() -> None:
    now = [0.0]
    throttle = _Throttle(lambda: now[0], every=10.0)
    assert throttle.ready("drop:a") and throttle.ready("drop:b")
    assert not throttle.ready("drop:a")
    now[0] = 9.9
    assert not throttle.ready("drop:a")
    now[0] = 10.0
    assert throttle.ready("drop:a") and not throttle.ready("drop:a")
