"""Time to first frame (issue 12): the stream's start timeline, and outputs that start at the first keyframe.

A video-only stream (its PSM lists no audio, or bare H.264/H.265 RTP) is announced at its first keyframe
instead of after the 0.5 s audio probe; RTSP's DESCRIBE wakes on the frame that completes the tracks, not
on a poll; FLV and RTSP viewers' first media is stamped in ``GET /api/v1/streams`` ``timeline``.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import msgspec
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from gbplatform.outputs.http import _no_delay
from gbplatform.sessions.live import TIMELINE_VIEWERS
from media.depacketize import Depacketizer
from media.flv import FlvSink
from media.frame import Codec, Frame
from media.packetize import H264Packetizer
from media.pipeline import StreamTracks
from media.rtsp import RtpSender
from tests.media_audio import g711_frames
from tests.media_captures import udp_payloads
from tests.unit.platform_harness import result_of
from tests.unit.test_live import env, play  # noqa: F401 - the fixture is used by name
from tests.unit.test_media_rtsp import AUTHED, CH, Env, FakeStream, feed, req, responses
from tests.unit.test_media_rtsp import frames as rtsp_frames  # noqa: F401 - the fixture is used by name

CAPTURE = "zlm_ps_rtp_udp_1080p.pcap"


def test_timeline_from_invite_to_the_first_flv_bytes(env: Any, shared_dir: Path) -> None:  # noqa: F811
    h, cam, streams, receivers = env
    h.clock.advance(1.5)
    stream = result_of(play(h, streams))
    timeline = stream.info(h.clock).timeline
    assert timeline.invite_sent_ms == round(stream.timeline.invite_sent * 1000)
    assert timeline.answered_ms is not None and timeline.answered_ms >= timeline.invite_sent_ms
    assert timeline.first_rtp_ms is None and timeline.first_keyframe_ms is None and timeline.viewers == []

    out: list[bytes] = []
    attached = h.clock.time()
    on_start = streams.viewer_started(stream, "http-flv", "192.0.2.7:50412")
    sink = FlvSink(out.append, tracks=stream.dispatcher.tracks, ready=stream.tracks_known, on_start=on_start)
    streams.attach(stream, sink)
    h.clock.advance(0.25)
    stream.ingest.rekey(None)  # type: ignore[arg-type]  # take the capture's SSRC
    payloads = [p for _, p in udp_payloads(shared_dir / "captures" / CAPTURE)]
    first_rtp = h.clock.time()
    sent = 0
    # The first frame (the keyframe) and the first packet of the second, which ends it.
    while stream.timeline.first_keyframe is None:
        stream.ingest.datagram(payloads[sent], h.clock.seconds())
        sent += 1
        h.clock.advance(0.001)
    assert sent < 100
    # Video only (the PSM lists H.264 alone): the viewer got its picture at the keyframe, no 0.5 s probe.
    assert not stream.dispatcher.tracks.ready and stream.tracks_known()
    assert out and out[0].startswith(b"FLV\x01\x01")  # header flags: video only
    # The shim that saw the keyframe stepped out of the ingest's path.
    assert stream.ingest.dispatcher is stream.dispatcher

    timeline = stream.info(h.clock).timeline
    assert timeline.first_rtp_ms == round(first_rtp * 1000)
    assert timeline.first_keyframe_ms == round((first_rtp + (sent - 1) * 0.001) * 1000)
    [viewer] = timeline.viewers
    assert (viewer.output, viewer.peer) == ("http-flv", "192.0.2.7:50412")
    assert viewer.attached_ms == round(attached * 1000) < timeline.first_rtp_ms
    assert viewer.first_frame_ms == timeline.first_keyframe_ms
    # JSON as the API sends it.
    body = msgspec.json.decode(msgspec.json.encode(stream.info(h.clock)))
    assert set(body["timeline"]) == {"invite_sent_ms", "answered_ms", "first_rtp_ms", "first_keyframe_ms",
                                     "viewers"}


def test_timeline_keeps_the_latest_viewers(env: Any) -> None:  # noqa: F811
    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    marks = [streams.viewer_started(stream, "rtsp", f"192.0.2.9:{40000 + i}") for i in range(TIMELINE_VIEWERS + 3)]
    marks[-1]()
    marks[-1]()  # once only: the first media
    viewers = stream.info(h.clock).timeline.viewers
    assert len(viewers) == TIMELINE_VIEWERS and viewers[0].peer == "192.0.2.9:40003"
    assert viewers[-1].first_frame_ms is not None and viewers[0].first_frame_ms is None


def keyframe() -> Frame:
    return Frame(Codec.H264, b"\x00\x00\x00\x01\x65\x88", 0, 0, True, 0xE0)


def test_tracks_known_follows_what_the_stream_can_carry(env: Any) -> None:  # noqa: F811
    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    assert not stream.tracks_known()  # no keyframe yet
    stream.dispatcher.input_frame(keyframe(), h.clock.seconds())
    # PS without a PSM seen: audio may come, the probe decides.
    assert not stream.tracks_known()
    # A PSM listing G.711 audio: wait for it.
    stream.ingest.demuxer.stream_types = {0xE0: 0x1B, 0xC0: 0x90}
    assert not stream.tracks_known()
    stream.dispatcher.input_frame(g711_frames(Codec.G711A, 0.04, 0)[0], h.clock.seconds())
    assert stream.tracks_known() and stream.dispatcher.tracks.audio is not None


def test_bare_video_rtp_is_known_at_its_keyframe(env: Any) -> None:  # noqa: F811
    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    # RFC 6184 payload (the answer maps 98 to H264): one video m= line, no audio can come.
    stream.ingest.depacketizers[Codec.H264] = Depacketizer(Codec.H264)
    assert not stream.tracks_known()
    stream.dispatcher.input_frame(keyframe(), h.clock.seconds())
    assert stream.tracks_known()


def test_flv_sink_without_a_ready_test_waits_for_the_probe(rtsp_frames: list[Frame]) -> None:  # noqa: F811
    out: list[bytes] = []
    started: list[int] = []
    tracks = StreamTracks()
    sink = FlvSink(out.append, tracks=tracks, on_start=lambda: started.append(len(out)))
    for frame in rtsp_frames[:13]:  # 0.48 s after the keyframe
        tracks.add(frame)
        sink.input_frame(frame)
    assert out == [] and sink.held == 13 and started == []
    tracks.add(rtsp_frames[13])
    sink.input_frame(rtsp_frames[13])
    assert len(out) == 1 and started == [1]  # header, sequence header and 14 frames in one write
    sink.input_frame(rtsp_frames[14])
    assert started == [1]

    quick: list[bytes] = []
    sink = FlvSink(quick.append, tracks=(known := StreamTracks()), ready=lambda: known.video is not None)
    known.add(rtsp_frames[0])
    sink.input_frame(rtsp_frames[0])
    assert len(quick) == 1 and sink.held == 0 and quick[0][4] == 0x01  # video-only header at the keyframe


class KnownStream(FakeStream):
    """A stream that, like the platform's ``LiveStream``, knows it carries no audio."""

    def __init__(self) -> None:
        super().__init__()
        self.dispatcher.tracks = StreamTracks()  # the real 0.5 s probe

    def tracks_known(self) -> bool:
        return self.dispatcher.tracks.video is not None


def test_describe_answers_in_the_turn_the_keyframe_arrives(rtsp_frames: list[Frame]) -> None:  # noqa: F811
    rtsp = Env()
    rtsp.stream = rtsp.live.streams[CH] = KnownStream()
    rtsp.tr.clear()
    rtsp.proto.dataReceived(req("DESCRIBE", AUTHED))
    assert rtsp.tr.value() == b"" and len(rtsp.stream.dispatcher.sinks) == 1  # the watcher, not a viewer
    assert rtsp.live.attached == []
    feed(rtsp, rtsp_frames[:1])
    rtsp.clock.advance(0)  # no poll interval: the frame's own turn
    [(status, _, body)] = responses(rtsp.tr.value())
    assert status == 200 and b"m=video" in body and b"m=audio" not in body
    assert rtsp.stream.dispatcher.sinks == ()  # the watcher is gone


def test_describe_timeout_removes_the_watcher() -> None:
    rtsp = Env()
    rtsp.tr.clear()
    rtsp.proto.dataReceived(req("DESCRIBE", AUTHED))
    rtsp.clock.advance(5.0)
    assert responses(rtsp.tr.value())[0][0] == 503
    assert rtsp.stream.dispatcher.sinks == ()


class TimedLive:
    """Adds the optional ``viewer_started`` hook to the RTSP tests' source."""

    def __init__(self, live: Any) -> None:
        self.live = live
        self.started: list[tuple[Any, str]] = []
        self.first: list[str] = []

    async def open(self, channel_id: str) -> Any:
        return await self.live.open(channel_id)

    def attach(self, stream: Any, sink: Any) -> None:
        self.live.attach(stream, sink)

    def detach(self, stream: Any, sink: Any) -> None:
        self.live.detach(stream, sink)

    def viewer_started(self, stream: Any, peer: str) -> Any:
        self.started.append((stream, peer))
        return lambda: self.first.append(peer)


def test_rtsp_viewer_first_media_is_reported_once(rtsp_frames: list[Frame]) -> None:  # noqa: F811
    rtsp = Env()
    timed = TimedLive(rtsp.live)
    rtsp.factory.source = timed
    feed(rtsp, rtsp_frames[:5])
    assert rtsp.send("DESCRIBE")[0] == 200
    status, headers, _ = rtsp.send("SETUP", f"{AUTHED}/trackID=0", Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    sid = headers["Session"].split(";")[0]
    assert rtsp.send("PLAY", AUTHED, Session=sid)[0] == 200
    assert timed.started == [(rtsp.stream, "10.0.0.9:40000")] and timed.first == ["10.0.0.9:40000"]
    feed(rtsp, rtsp_frames[5:8])
    assert timed.first == ["10.0.0.9:40000"]


def test_rtp_sender_on_start_after_the_first_keyframe_only(rtsp_frames: list[Frame]) -> None:  # noqa: F811
    sent: list[bytes] = []
    calls: list[int] = []
    sender = RtpSender(H264Packetizer(1, random.Random(2)), sent.append)
    sender.on_start = lambda: calls.append(len(sent))
    sender.input_frame(rtsp_frames[1])  # not a keyframe: dropped, not a start
    assert calls == [] and sent == []
    sender.input_frame(rtsp_frames[0])
    assert calls == [len(sent)] and sent
    sender.input_frame(rtsp_frames[1])
    assert len(calls) == 1



class NoDelayTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.no_delay: list[bool] = []

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802 - Twisted's name
        self.no_delay.append(enabled)


def test_media_connections_turn_nagle_off() -> None:
    rtsp = Env()
    proto = rtsp.factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 40001))
    tr = NoDelayTransport()
    proto.makeConnection(tr)
    assert tr.no_delay == [True]

    flv = NoDelayTransport()
    _no_delay(cast(Any, SimpleNamespace(channel=SimpleNamespace(transport=flv))))
    assert flv.no_delay == [True]
    _no_delay(cast(Any, SimpleNamespace()))  # a request without a TCP channel (tests, proxies): nothing to do


def inter_frame(n: int = 1) -> Frame:
    return Frame(Codec.H264, b"\x00\x00\x00\x01\x41\x9a", n * 3600, n * 3600, False, 0xE0)


def test_a_stream_that_starts_mid_gop_asks_for_a_keyframe_once(env: Any) -> None:  # noqa: F811
    h, cam, streams, receivers = env
    asked: list[str] = []

    async def request_keyframe(channel_id: str) -> str:
        asked.append(channel_id)
        return "OK"

    streams.request_keyframe = request_keyframe
    stream = result_of(play(h, streams))
    feed_ingest = stream.ingest.dispatcher.input_frame  # what the ingest calls
    feed_ingest(g711_frames(Codec.G711A, 0.04, 0)[0], h.clock.seconds())  # audio first: no verdict
    assert asked == []
    feed_ingest(inter_frame(1), h.clock.seconds())
    feed_ingest(inter_frame(2), h.clock.seconds())
    assert asked == [stream.channel_id]
    stream.ingest.dispatcher.input_frame(keyframe(), h.clock.seconds())
    assert stream.ingest.dispatcher is stream.dispatcher and asked == [stream.channel_id]


def test_a_stream_that_starts_on_a_keyframe_asks_nothing_and_a_failed_request_is_logged(env: Any) -> None:  # noqa: F811
    h, cam, streams, receivers = env
    asked: list[str] = []

    async def request_keyframe(channel_id: str) -> str:
        asked.append(channel_id)
        raise TimeoutError("device did not answer")

    streams.request_keyframe = request_keyframe
    stream = result_of(play(h, streams))
    stream.ingest.dispatcher.input_frame(keyframe(), h.clock.seconds())
    stream.ingest.dispatcher.input_frame(inter_frame(), h.clock.seconds())
    assert asked == []

    streams.stop(stream.channel_id)
    h.pump()
    again = result_of(play(h, streams))
    again.ingest.dispatcher.input_frame(inter_frame(), h.clock.seconds())  # mid-GOP; the request fails
    assert asked == [again.channel_id] and again.state == "playing"
