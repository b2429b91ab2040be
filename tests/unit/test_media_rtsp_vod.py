"""RTSP playback of recordings: Range/Scale parsing, the VodPlayer (seek, pause, scale, read-ahead), RTCP BYE."""

from __future__ import annotations

import random
import struct

import pytest

from media.frame import Codec, Frame
from media.rtsp import (
    Pause,
    Play,
    RtspError,
    RtspServerConnection,
    SessionState,
    Setup,
    parse_npt_start,
    parse_rtsp_url,
    parse_scale,
)
from media.rtsp_vod import VodPlayer, rtcp_sr_bye

TICK = 3600  # 40 ms at 90 kHz
GOP = 25  # frames per GOP: one GOP a second


def gop_frames(index: int, audio: bool = False) -> list[Frame]:
    base = index * GOP * TICK
    out = []
    for i in range(GOP):
        t = base + i * TICK
        out.append(Frame(Codec.H264, b"\x00\x00\x01\x65" if i == 0 else b"\x00\x00\x01\x41", t, t, i == 0, 0xE0))
        if audio:
            out.append(Frame(Codec.AAC, b"a", t, t, False, 0xC0))
    return out


def player(n: int = 10, **kw: object) -> VodPlayer:
    return VodPlayer([float(i) for i in range(n)], float(n), **kw)  # type: ignore[arg-type]


def feed(p: VodPlayer, audio: bool = False) -> None:
    for index in p.loads():
        p.gop_loaded(index, p.generation, gop_frames(index, audio))


def run(p: VodPlayer, until: float, step: float = 0.01, audio: bool = False, start: float = 0.0) -> list[Frame]:
    out: list[Frame] = []
    now = start
    while now <= until:
        feed(p, audio)
        out += p.poll(now)
        now = round(now + step, 6)
    return out


@pytest.mark.parametrize(("value", "start"), [
    ("npt=0-", 0.0), ("npt=2.5-", 2.5), ("npt = 10-20", 10.0), ("npt=now-", None), ("npt=-5", None),
    ("npt=0:01:02.5-", 62.5),
])
def test_parse_npt_start(value: str, start: float | None) -> None:
    assert parse_npt_start(value) == start


@pytest.mark.parametrize("value", ["smpte=0:10:00-", "clock=19961108T142300Z-", "npt=abc-", "npt=1"])
def test_parse_npt_rejects_other_units_with_457(value: str) -> None:
    with pytest.raises(RtspError) as e:
        parse_npt_start(value)
    assert e.value.status == 457


def test_parse_scale() -> None:
    assert parse_scale(" 2 ") == 2.0 and parse_scale("-1.5") == -1.5
    for bad in ("0", "fast", "nan", "inf"):
        with pytest.raises(RtspError):
            parse_scale(bad)


def test_vod_url() -> None:
    url = parse_rtsp_url("rtsp://h/vod/ch1?start=100&end=160.5&token=t/trackID=1")
    assert (url.app, url.channel_id, url.vod, url.token, url.track) == ("vod", "ch1", (100.0, 160.5), "t", 1)
    assert parse_rtsp_url("rtsp://h/vod/ch1/trackID=0").vod is None  # a player dropped the query
    for bad in ("rtsp://h/vod/ch1?start=5&end=1", "rtsp://h/vod/ch1?start=x&end=2", "rtsp://h/vod/ch1?start=1"):
        with pytest.raises(RtspError) as e:
            parse_rtsp_url(bad)
        assert e.value.status == 400


def test_plays_in_real_time_with_increasing_timestamps() -> None:
    p = player(3)
    start = p.play(0.0)
    assert (start.npt, start.scale, start.pts) == (0.0, 1.0, 0)
    frames = run(p, 1.0)
    assert len(frames) == 26  # frames at 0, 40 ms ... 1000 ms
    assert [f.pts for f in frames] == [i * TICK for i in range(26)]
    assert frames[0].keyframe and frames[25].keyframe


def test_read_ahead_is_bounded_and_reads_one_at_a_time() -> None:
    p = player(10, read_ahead=3)
    p.play(0.0)
    assert p.loads() == [0] and p.loads() == []  # one read in flight
    p.gop_loaded(0, p.generation, gop_frames(0))
    assert p.loads() == [1]
    p.gop_loaded(1, p.generation, gop_frames(1))
    assert p.loads() == [2]
    p.gop_loaded(2, p.generation, gop_frames(2))
    assert p.loads() == []  # three GOPs buffered: a client that reads nothing stops the reads
    p.poll(0.0)
    p.poll(0.99)  # GOP 0 sent
    assert p.loads() == [3]


def test_a_stalled_client_loses_nothing_and_the_schedule_moves() -> None:
    p = player(3)
    p.play(0.0)
    feed(p)
    assert len(p.poll(0.0)) == 1
    # Nothing polled for 5 s (transport paused): then frames resume at their pace, none skipped.
    feed(p)
    burst = p.poll(5.0)
    assert len(burst) == 1
    rest = run(p, 8.0, start=5.01)
    frames = [f.pts for f in burst + rest]
    assert frames == [i * TICK for i in range(1, 75)]
    assert p.ended


def test_seek_starts_at_the_keyframe_at_or_before_the_target() -> None:
    p = player(10)
    p.play(0.0)
    run(p, 0.5)
    sent_before = p.next_pts
    start = p.play(0.6, start=4.7)
    assert start.npt == 4.0 and start.pts == sent_before
    stale = p.generation - 1
    p.gop_loaded(0, stale, gop_frames(0))  # a read from before the seek is ignored
    frames = run(p, 1.5, start=0.6)
    assert frames[0].keyframe and frames[0].pts == sent_before
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:], strict=False))
    assert p.position >= 4.0


def test_pause_then_resume_continues_where_it_stopped() -> None:
    p = player(5)
    p.play(0.0)
    sent = run(p, 0.39)  # 10 frames
    assert len(sent) == 10
    assert p.pause() == pytest.approx(0.4)  # the next frame's npt
    assert run(p, 3.0, start=0.4) == [] and p.next_deadline() is None
    p.play(3.0)
    more = run(p, 3.39, start=3.0)
    assert [f.pts for f in sent + more] == [i * TICK for i in range(20)]


@pytest.mark.parametrize(("scale", "frames_in_a_second", "pts_step"), [
    (2.0, 51, TICK // 2),  # every frame, twice as fast; timestamps follow the delivery clock
    (0.5, 13, TICK * 2),
    (8.0, 9, 25 * TICK // 8),  # keyframes only: 8 GOPs a second
])
def test_scale(scale: float, frames_in_a_second: int, pts_step: int) -> None:
    p = player(20)
    assert p.play(0.0, scale=scale).scale == scale
    frames = run(p, 1.0, step=0.005, audio=True)
    assert all(f.codec is Codec.H264 for f in frames)  # audio at scale 1 only
    assert len(frames) == frames_in_a_second
    assert {b.pts - a.pts for a, b in zip(frames, frames[1:], strict=False)} == {pts_step}


def test_scale_is_clamped_and_reverse_plays_forward() -> None:
    assert player().play(0.0, scale=100.0).scale == 16.0
    assert player().play(0.0, scale=-2.0).scale == 1.0


def test_audio_at_scale_one_and_the_end() -> None:
    p = player(2)
    p.play(0.0)
    frames = run(p, 3.0, audio=True)
    assert sum(f.codec is Codec.AAC for f in frames) == 50 and p.ended


def test_rtcp_sr_bye() -> None:
    packet = rtcp_sr_bye(0x1234, 0.5, 90000, 7, 1000)
    assert len(packet) == 28 + 8
    v, pt, length, ssrc, ntp_s, ntp_f, rtp, count, octets = struct.unpack("!BBHIIIIII", packet[:28])
    assert (v, pt, length, ssrc, rtp, count, octets) == (0x80, 200, 6, 0x1234, 90000, 7, 1000)
    assert ntp_s == 2_208_988_800 and ntp_f == 1 << 31
    assert struct.unpack("!BBHI", packet[28:]) == (0x81, 203, 1, 0x1234)


# -- the core: PAUSE, Range and Scale reach the adapter ---------------------------------------
VOD = "rtsp://h/vod/ch1?start=100&end=200&token=tok"


def req(method: str, uri: str, cseq: int, **headers: str) -> bytes:
    lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_core_vod_session_play_pause() -> None:
    c = RtspServerConnection(token="tok", rng=random.Random(1))
    (setup,) = c.receive_data(req("SETUP", VOD + "/trackID=0", 1, Transport="RTP/AVP/TCP;unicast;interleaved=0-1"), 0)
    assert isinstance(setup, Setup) and setup.vod == (100.0, 200.0)
    session = c.accept_setup(setup, setup.transport, 0)
    assert session.app == "vod"
    (play,) = c.receive_data(req("PLAY", "rtsp://h/vod/ch1?token=tok", 2, Range="npt=12.5-", Scale="2"), 0)
    assert isinstance(play, Play) and (play.range_start, play.scale) == (12.5, 2.0)
    c.accept_play(play, "url=x", "npt=12.000-100.000", 2.0)
    assert b"Scale: 2\r\n" in c.data_to_send()
    (pause,) = c.receive_data(req("PAUSE", "rtsp://h/vod/ch1?token=tok", 3), 0)
    assert isinstance(pause, Pause)
    c.accept_pause(pause, 13.0)
    assert session.state is SessionState.READY and b"Range: npt=13.000-" in c.data_to_send()
    # A bad Range is 457; a PLAY for a live URL in this session is 459.
    assert c.receive_data(req("PLAY", "rtsp://h/vod/ch1?token=tok", 4, Range="smpte=1-"), 0) == []
    assert b"457 Invalid Range" in c.data_to_send()
    assert c.receive_data(req("PLAY", "rtsp://h/live/ch1?token=tok", 5), 0) == []
    assert b"459" in c.data_to_send()


def test_core_live_pause_is_405() -> None:
    c = RtspServerConnection(token="tok", rng=random.Random(1))
    (setup,) = c.receive_data(req("SETUP", "rtsp://h/live/ch1?token=tok", 1, Transport="RTP/AVP/TCP;interleaved=0-1"), 0)
    c.accept_setup(setup, setup.transport, 0)
    c.data_to_send()
    assert c.receive_data(req("PAUSE", "rtsp://h/live/ch1?token=tok", 2), 0) == []
    out = c.data_to_send()
    assert b"405" in out and b"Allow: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER" in out
