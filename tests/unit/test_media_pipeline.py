"""Frame fan-out, the GOP cache for late joiners, and stream statistics."""

from __future__ import annotations

import logging

import pytest

from media.frame import Codec, Frame
from media.pipeline import FrameDispatcher, GopCache, StreamStats


def video(n: int, *, key: bool = False, size: int = 100) -> Frame:
    return Frame(Codec.H264, bytes(size), pts=n * 3600, dts=n * 3600, keyframe=key, stream_id=0xE0)


def audio(n: int) -> Frame:
    return Frame(Codec.G711A, bytes(160), pts=n * 1800, dts=n * 1800, keyframe=False, stream_id=0xC0)


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


class Broken:
    def input_frame(self, frame: Frame) -> None:
        raise RuntimeError("viewer went away badly")


def test_late_joiner_starts_on_the_last_keyframe() -> None:
    d = FrameDispatcher()
    for n in range(3):
        d.input_frame(video(n))  # before any keyframe: nothing decodable to cache
    assert d.cache.frames == []
    d.input_frame(video(3, key=True))
    d.input_frame(audio(3))
    d.input_frame(video(4))
    late = Collector()
    d.add_sink(late)
    assert [f.pts for f in late.frames] == [3 * 3600, 3 * 1800, 4 * 3600]
    assert late.frames[0].keyframe
    d.input_frame(video(5))
    assert late.frames[-1].pts == 5 * 3600


def test_every_sink_gets_every_frame_once() -> None:
    d = FrameDispatcher()
    a, b = Collector(), Collector()
    d.add_sink(a)
    d.add_sink(b)
    d.add_sink(a)  # attaching twice is once
    for n in range(10):
        d.input_frame(video(n, key=n == 0))
    assert len(a.frames) == len(b.frames) == 10
    assert d.remove_sink(a) and not d.remove_sink(a)
    d.input_frame(video(10))
    assert len(a.frames) == 10 and len(b.frames) == 11


def test_a_failing_sink_is_removed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    d = FrameDispatcher()
    good = Collector()
    d.add_sink(Broken())
    d.add_sink(good)
    with caplog.at_level(logging.ERROR, logger="media.pipeline"):
        d.input_frame(video(0, key=True))
    assert len(d.sinks) == 1 and len(good.frames) == 1
    assert "viewer went away badly" in caplog.text
    # A sink that fails on the cached GOP is never attached.
    d.add_sink(Broken())
    assert d.sinks == (good,)


def test_gop_cache_is_bounded() -> None:
    cache = GopCache(max_frames=5, max_bytes=10_000)
    cache.add(video(0, key=True))
    for n in range(1, 5):
        cache.add(video(n))
    assert len(cache.frames) == 5
    cache.add(video(5))  # a sixth frame: the runaway GOP is dropped until the next keyframe
    assert cache.frames == [] and cache.overflowed == 1
    cache.add(video(6))
    assert cache.frames == []
    cache.add(video(7, key=True, size=20_000))
    assert len(cache.frames) == 1  # a keyframe always starts a GOP
    cache.add(video(8))
    assert cache.frames == [] and cache.overflowed == 2
    cache.clear()
    assert cache.size == 0


def test_stats_report_fps_bitrate_and_gop() -> None:
    stats = StreamStats(window=2.0)
    now = 0.0
    for n in range(100):
        stats.add(video(n, key=n % 25 == 0, size=1000), now)
        stats.add(audio(n), now)
        now += 0.04
    assert stats.frames == 200 and stats.keyframes == 4
    assert stats.last_gop == 25
    assert stats.fps(now) == pytest.approx(25, rel=0.05)
    assert stats.bitrate(now) == pytest.approx(25 * 8000, rel=0.05)
    assert StreamStats().fps(1.0) == 0.0 and StreamStats().bitrate(1.0) == 0.0
