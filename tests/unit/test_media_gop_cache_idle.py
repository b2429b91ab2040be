"""The GOP cache of an unwatched stream (``media.gop_cache_idle``) and what it holds.

An unwatched stream keeps only its latest keyframe; a viewer joining then gets
that keyframe at once and the live frames from the next keyframe on.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from media.flv import FlvSink
from media.frame import Codec, Frame
from media.pipeline import FrameDispatcher


def video(n: float, *, key: bool = False, size: int = 100) -> Frame:
    ts = int(n * 3600)
    return Frame(Codec.H264, bytes(size), pts=ts, dts=ts, keyframe=key, stream_id=0xE0)


def audio(n: int) -> Frame:
    return Frame(Codec.G711A, bytes(160), pts=n * 3600, dts=n * 3600, keyframe=False, stream_id=0xC0)


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


def feed(d: FrameDispatcher, first: int, last: int, *, gop: int = 10) -> None:
    """Video frames ``first``..``last`` at 25 fps (``now`` = n / 25 s), a keyframe every ``gop``."""
    for n in range(first, last + 1):
        d.input_frame(video(n, key=n % gop == 0, size=1000 if n % gop == 0 else 100), n / 25)


def test_an_unwatched_stream_keeps_only_its_keyframe_after_idle_after() -> None:
    d = FrameDispatcher(idle_after=1.0)
    feed(d, 0, 24)  # 0.96 s without a sink: the whole GOP is still there
    assert [f.pts // 3600 for f in d.cache.frames] == [20, 21, 22, 23, 24]
    feed(d, 25, 25)  # 1.0 s
    assert [f.pts // 3600 for f in d.cache.frames] == [20]
    assert d.cache.size == 1000 and d.cache.keyframe_only and not d.cache.complete
    assert d.cache.frames[0] is d.keyframe  # the frame the tracks hold anyway: no extra bytes
    feed(d, 26, 39)
    assert [f.pts // 3600 for f in d.cache.frames] == [30]
    assert d.cache.frames[0] is d.keyframe and d.cache.size == 1000


def test_a_viewer_of_an_idle_stream_gets_the_keyframe_then_live_video_from_the_next_one() -> None:
    d = FrameDispatcher(idle_after=1.0)
    feed(d, 0, 33)
    late = Collector()
    d.add_sink(late)
    assert [f.pts // 3600 for f in late.frames] == [30]  # a picture at once
    assert not d.cache.keyframe_only
    feed(d, 34, 36)
    d.input_frame(audio(37), 37 / 25)  # audio plays on under the still picture
    assert [(f.codec, f.pts // 3600) for f in late.frames] == [(Codec.H264, 30), (Codec.G711A, 37)]
    feed(d, 37, 42)
    assert [f.pts // 3600 for f in late.frames][2:] == [40, 41, 42]
    # Watched again: the cache holds a full GOP from that keyframe.
    assert [f.pts // 3600 for f in d.cache.frames] == [40, 41, 42] and d.cache.complete
    second = Collector()
    d.add_sink(second)
    assert [f.pts // 3600 for f in second.frames] == [40, 41, 42]
    feed(d, 43, 43)
    assert second.frames[-1].pts // 3600 == 43 and late.frames[-1].pts // 3600 == 43


def test_a_viewer_joining_right_after_the_idle_keyframe_waits_only_if_frames_were_left_out() -> None:
    d = FrameDispatcher(idle_after=0.5)
    feed(d, 0, 30)  # the keyframe of 30 arrived while idle, nothing after it yet
    assert d.cache.complete
    late = Collector()
    d.add_sink(late)
    feed(d, 31, 32)
    assert [f.pts // 3600 for f in late.frames] == [30, 31, 32]


def test_a_watched_stream_keeps_its_gop_and_the_countdown_starts_when_the_last_viewer_leaves() -> None:
    d = FrameDispatcher(idle_after=1.0)
    viewer = Collector()
    d.add_sink(viewer)
    feed(d, 0, 99)
    assert len(d.cache.frames) == 10 and not d.cache.keyframe_only
    d.remove_sink(viewer)
    feed(d, 100, 124)  # the first frame without a viewer is at 4.0 s; 4.96 s is not yet 1 s later
    assert len(d.cache.frames) == 5
    feed(d, 125, 125)
    assert len(d.cache.frames) == 1 and d.cache.keyframe_only


def test_without_idle_after_an_unwatched_stream_keeps_its_gop() -> None:
    d = FrameDispatcher()
    feed(d, 0, 1009)
    assert len(d.cache.frames) == 10
    with pytest.raises(ValueError, match="idle_after"):
        FrameDispatcher(idle_after=-1.0)


def test_a_removed_waiting_viewer_is_forgotten() -> None:
    d = FrameDispatcher(idle_after=0.0)
    feed(d, 0, 13)
    viewer = Collector()
    d.add_sink(viewer)
    assert d.remove_sink(viewer)
    d.add_sink(viewer, replay=False)  # back without the replay: live frames at once
    feed(d, 14, 14)
    assert [f.pts // 3600 for f in viewer.frames] == [10, 14]


def test_the_cache_holds_the_demuxed_frames_themselves(shared_dir: Path) -> None:
    """One copy of each frame's bytes: the cache, the track and the sinks share it."""
    from tests.unit.test_media_snapshot import capture_frames

    frames = capture_frames(shared_dir)
    d = FrameDispatcher()
    seen = Collector()
    d.add_sink(seen)
    for f in frames:
        d.input_frame(f)
    cached = d.cache.frames
    assert cached and cached[0].keyframe
    tail = seen.frames[-len(cached):]
    assert all(c is s and c.data is s.data for c, s in zip(cached, tail, strict=True))
    assert d.keyframe is cached[0]


def test_flv_of_a_viewer_joining_an_idle_stream_decodes(shared_dir: Path) -> None:
    """The keyframe, then nothing that refers to the frames left out: every picture decodes."""
    av = pytest.importorskip("av")
    from tests.unit.test_media_snapshot import capture_frames

    frames = capture_frames(shared_dir)
    keys = [i for i, f in enumerate(frames) if f.keyframe and f.codec.is_video]
    assert len(keys) >= 3
    d = FrameDispatcher(idle_after=0.5)
    for i, f in enumerate(frames[:keys[1] + 20]):
        d.input_frame(f, i / 25)
    assert d.cache.keyframe_only and d.cache.frames == [frames[keys[1]]]
    flv: list[bytes] = []
    d.add_sink(FlvSink(flv.append, tracks=d.tracks))
    for i, f in enumerate(frames[keys[1] + 20:], start=keys[1] + 20):
        d.input_frame(f, i / 25)
    with av.open(io.BytesIO(b"".join(flv)), format="flv") as container:
        pictures = list(container.decode(video=0))
    video_after = sum(1 for f in frames[keys[2]:] if f.codec.is_video)
    assert len(pictures) == 1 + video_after
    assert pictures[0].key_frame and pictures[1].key_frame


class Recorder(Collector):
    watches = False  # as gbplatform.recording.writer.RecorderSink


def test_a_recorder_is_not_a_viewer_for_the_cache() -> None:
    from gbplatform.recording.writer import RecorderSink

    assert RecorderSink.watches is False
    d = FrameDispatcher(idle_after=1.0)
    rec = Recorder()
    d.add_sink(rec)
    feed(d, 0, 25)
    assert d.cache.keyframe_only and [f.pts // 3600 for f in d.cache.frames] == [20]
    assert len(rec.frames) == 26  # the recorder still gets every frame
    viewer = Collector()
    d.add_sink(viewer)  # a viewer: the whole GOP again from the next keyframe
    assert not d.cache.keyframe_only
    feed(d, 26, 31)
    assert [f.pts // 3600 for f in d.cache.frames] == [30, 31]
    d.remove_sink(viewer)
    d.remove_sink(rec)
    d.add_sink(rec)
    feed(d, 32, 58)  # only the recorder: unwatched again from 32 (1.28 s), trimmed a second later
    assert d.cache.keyframe_only and [f.pts // 3600 for f in d.cache.frames] == [50]
