"""Frame fan-out, the GOP cache for late joiners, and stream statistics."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from media.aac import adts_header
from media.flv import FlvSink
from media.frame import Codec, Frame
from media.hls import HlsSegmenter
from media.pipeline import (
    GOP_CACHE_BYTES,
    AudioTrack,
    FrameDispatcher,
    GopCache,
    StreamStats,
    StreamTracks,
    TimestampRepair,
    VideoTrack,
)


def video(n: float, *, key: bool = False, size: int = 100) -> Frame:
    ts = int(n * 3600)
    return Frame(Codec.H264, bytes(size), pts=ts, dts=ts, keyframe=key, stream_id=0xE0)


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


def test_a_cache_of_zero_bytes_is_off() -> None:
    cache = GopCache(max_bytes=0)
    assert not cache.enabled and GopCache().max_bytes == GOP_CACHE_BYTES
    for n in range(4):
        cache.add(video(n, key=n == 0))
    assert cache.frames == [] and cache.size == 0 and cache.overflowed == 0
    with pytest.raises(ValueError, match="max_bytes >= 0"):
        GopCache(max_bytes=-1)


def test_without_a_cache_a_late_joiner_gets_live_frames_and_the_keyframe_is_still_kept() -> None:
    d = FrameDispatcher(GopCache(max_bytes=0))
    assert d.keyframe is None
    key = video(0, key=True)
    d.input_frame(key)
    d.input_frame(video(1))
    late = Collector()
    d.add_sink(late)
    assert late.frames == [] and d.cache.frames == []
    assert d.keyframe is key  # snapshots and stream info read it whatever the cache
    d.input_frame(video(2))
    assert [f.pts for f in late.frames] == [2 * 3600]
    newer = video(3, key=True)
    d.input_frame(newer)
    assert d.keyframe is newer


def test_every_output_joins_at_the_next_keyframe_without_a_cache(shared_dir: Path) -> None:
    """FLV, HLS and the snapshot's keyframe stay decodable when a viewer joins mid-GOP."""
    av = pytest.importorskip("av")
    from tests.unit.test_media_snapshot import capture_frames

    frames = capture_frames(shared_dir)
    first = next(i for i, f in enumerate(frames) if f.keyframe)
    second = next(i for i, f in enumerate(frames) if i > first and f.keyframe)
    d = FrameDispatcher(GopCache(max_bytes=0))
    for f in frames[:first + 10]:
        d.input_frame(f)
    flv: list[bytes] = []
    flv_sink = FlvSink(flv.append, tracks=d.tracks)
    hls = HlsSegmenter(target_duration=1.0)
    d.add_sink(flv_sink)
    d.add_sink(hls)
    for f in frames[first + 10:second]:
        d.input_frame(f)
    assert flv == [] and hls.dropped_frames == second - first - 10  # mid-GOP: nothing sent
    for f in frames[second:]:
        d.input_frame(f)
    assert flv_sink.muxer.stats.waiting_for_keyframe == second - first - 10
    with av.open(io.BytesIO(b"".join(flv)), format="flv") as container:
        pictures = list(container.decode(video=0))
    assert len(pictures) == len(frames) - second and pictures[0].key_frame
    assert hls.segments
    with av.open(io.BytesIO(hls.segments[0].data), format="mpegts") as container:
        assert next(container.decode(video=0)).key_frame
    assert d.keyframe is not None and d.keyframe.keyframe


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


# -- tracks ----------------------------------------------------------------------------------

ADTS_16K_MONO = adts_header(2, 8, 1, 4) + b"\x01\x02\x03\x04"


def aac(n: int) -> Frame:
    return Frame(Codec.AAC, ADTS_16K_MONO, pts=n * 5760, dts=n * 5760, keyframe=True, stream_id=0xC0)


def test_tracks_know_the_video_and_the_audio_from_the_frames() -> None:
    d = FrameDispatcher()
    assert (d.tracks.video, d.tracks.audio, d.tracks.ready) == (None, None, False)
    d.input_frame(audio(0))  # audio before any keyframe: known, but not ready without video
    assert d.tracks.audio == AudioTrack(Codec.G711A, 8000, 1) and not d.tracks.ready
    key = video(1, key=True)
    d.input_frame(key)
    assert d.tracks.ready and d.tracks.video == VideoTrack(Codec.H264, key)
    later = video(50, key=True)
    d.input_frame(later)
    assert d.tracks.video is not None and d.tracks.video.keyframe is later  # the latest parameter sets


def test_aac_track_config_comes_from_the_adts_header() -> None:
    tracks = StreamTracks()
    tracks.add(video(0, key=True))
    tracks.add(aac(1))
    assert tracks.ready
    assert tracks.audio == AudioTrack(Codec.AAC, 16000, 1, bytes.fromhex("1408"))


def test_video_only_is_decided_after_the_probe() -> None:
    tracks = StreamTracks()  # 0.5 s of video: 13 frames at 25 fps
    for n in range(12):
        tracks.add(video(n, key=n == 0))
        assert not tracks.ready
    tracks.add(video(12.5))  # 45000 ticks after the keyframe
    assert tracks.ready and tracks.audio is None
    stuck = StreamTracks(probe_frames=5)
    for _ in range(5):
        stuck.add(video(0, key=True))  # a DTS that never advances: the frame count decides
    assert stuck.ready
    tracks.add(audio(20))  # audio that starts late still shows up in the tracks
    assert tracks.audio is not None and tracks.audio.codec is Codec.G711A


def test_audio_within_the_probe_makes_the_tracks_ready_at_once() -> None:
    tracks = StreamTracks()
    tracks.add(video(0, key=True))
    tracks.add(video(1))
    assert not tracks.ready
    tracks.add(audio(1))
    assert tracks.ready and tracks.audio is not None


def test_aac_without_adts_is_logged_once_and_no_track(caplog: pytest.LogCaptureFixture) -> None:
    tracks = StreamTracks()
    bad = Frame(Codec.AAC, b"\x21\x10\x05", 0, 0, True, 0xC0)
    for _ in range(3):
        tracks.add(bad)
    assert tracks.audio is None and tracks.bad_audio == 3
    assert caplog.text.count("without a usable ADTS header") == 1
    tracks.add(aac(1))
    assert tracks.audio is not None and tracks.audio.sample_rate == 16000


def test_audio_frames_do_not_restart_the_gop_cache() -> None:
    d = FrameDispatcher()
    d.input_frame(aac(0))  # keyframe=True, as the PS demuxer marks every audio frame
    assert d.cache.frames == []
    d.input_frame(video(1, key=True))
    d.input_frame(aac(2))
    d.input_frame(video(2))
    assert [f.codec for f in d.cache.frames] == [Codec.H264, Codec.AAC, Codec.H264]
    assert d.stats.keyframes == 1 and d.stats.frames == 4


def test_tracks_are_updated_before_the_sinks_see_the_frame() -> None:
    d = FrameDispatcher()
    seen: list[bool] = []

    class Probe:
        def input_frame(self, frame: Frame) -> None:
            seen.append(d.tracks.audio is not None)

    d.add_sink(Probe())
    d.input_frame(audio(0))
    assert seen == [True]


# -- timestamp repair ------------------------------------------------------------------------

WRAP = 1 << 33


def test_a_looping_source_keeps_a_continuous_timeline(caplog: pytest.LogCaptureFixture) -> None:
    d = FrameDispatcher()
    sink = Collector()
    d.add_sink(sink)
    clip = [f for n in range(50) for f in (video(n, key=n == 0), audio(2 * n), audio(2 * n + 1))]
    with caplog.at_level(logging.INFO, logger="media.pipeline"):
        for _ in range(3):  # the source loops back to PTS 0 twice
            for f in clip:
                d.input_frame(f)
    assert d.timestamps is not None and d.timestamps.jumps == 2
    assert caplog.text.count("DTS jumped by -1.960 s") == 2
    videos = [f.dts for f in sink.frames if f.codec.is_video]
    audios = [f.dts for f in sink.frames if not f.codec.is_video]
    assert [b - a for a, b in zip(videos, videos[1:], strict=False)] == [3600] * 149
    assert [b - a for a, b in zip(audios, audios[1:], strict=False)] == [1800] * 299
    assert sink.frames[150].data is clip[0].data  # shifted, never copied
    assert d.tracks.video is not None and d.tracks.video.keyframe.pts == 100 * 3600


def test_the_pes_wrap_and_ordinary_gaps_are_not_jumps() -> None:
    repair = TimestampRepair()
    near = WRAP - 3600
    frames = [Frame(Codec.H264, b"", (near + i * 3600) % WRAP, (near + i * 3600) % WRAP, False, 0xE0)
              for i in range(3)]
    frames.append(Frame(Codec.H264, b"", frames[-1].dts + 5 * 90_000, frames[-1].dts + 5 * 90_000, False, 0xE0))
    out = [repair.repair(f) for f in frames]
    assert out == frames and repair.jumps == 0  # the same objects: nothing shifted
    # A big step forward is a jump too: 20 s of nothing is a new timeline, not a gap.
    # The step after the jump is the usual frame interval, not the 5 s gap.
    later = Frame(Codec.H264, b"", frames[-1].dts + 20 * 90_000 + 7200, frames[-1].dts + 20 * 90_000, False, 0xE0)
    fixed = repair.repair(later)
    assert repair.jumps == 1 and fixed.dts == frames[-1].dts + 3600 and fixed.pts == fixed.dts + 7200


def test_repair_can_be_turned_off() -> None:
    d = FrameDispatcher(repair=False)
    d.input_frame(video(100, key=True))
    d.input_frame(video(0))
    assert d.timestamps is None and [f.dts for f in d.cache.frames] == [360_000, 0]
