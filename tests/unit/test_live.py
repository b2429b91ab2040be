"""Live-stream sessions (GB/T 28181-2016 §9.2): INVITE, sharing, BYE both ways, and leases back."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed

from gbplatform.core.errors import DeviceOffline, DeviceRejected, DeviceTimeout
from gbplatform.core.ids import SsrcAllocator
from gbplatform.sessions.live import LiveStreams, NoPorts
from media.ports import PortPool
from sip import sdp
from sip.endpoint import EndpointEvent, RequestReceived
from sip.message import Response, make_response
from tests.unit.platform_harness import DEV, FakeDevice, Harness, Inbound, has_fired, result_of

CHANNEL = "34020000001310000001"


class Receiver:
    def __init__(self, ingest: Any, lease: Any, *, mode: str, on_timeout: Any) -> None:
        self.ingest, self.lease, self.mode, self.on_timeout = ingest, lease, mode, on_timeout
        self.started = self.stopped = 0
        self.connected: list[tuple[str, int]] = []

    def start(self) -> None:
        self.started += 1

    def stop(self) -> Deferred[None]:
        self.stopped += 1
        return succeed(None)

    def connect(self, host: str, port: int) -> Deferred[None]:
        self.connected.append((host, port))
        return succeed(None)


class Camera(FakeDevice):
    """A device that answers INVITE with a GB SDP answer (and BYE with 200)."""

    invite_status = 200
    answer_ssrc: str | None = None

    def _events(self, events: list[EndpointEvent]) -> None:
        rest: list[EndpointEvent] = []
        for event in events:
            if isinstance(event, RequestReceived) and event.request.method == "INVITE" and event.transaction:
                req = event.request
                self.inbound.append(Inbound(req, None, self.invite_status))
                if self.invite_status is None:
                    continue
                body = b""
                if self.invite_status == 200:
                    offer = sdp.parse(req.body)
                    answer = sdp.build_gb_answer(offer, device_id=CHANNEL, ip="10.0.0.64", port=15060,
                                                 ssrc=self.answer_ssrc)
                    body = answer.serialize()
                resp = make_response(req, self.invite_status, to_tag="cam-tag", body=body,
                                     headers=[("Contact", f"<sip:{CHANNEL}@127.0.0.1:5070>"),
                                              ("Content-Type", "Application/SDP")] if body else [])
                self.endpoint.respond(event.transaction, resp, self.harness.clock.seconds())
            else:
                rest.append(event)
        super()._events(rest)

    def methods(self) -> list[str]:
        return [i.request.method for i in self.inbound]


@pytest.fixture
def env(h: Harness) -> tuple[Harness, Camera, LiveStreams, list[Receiver]]:
    cam = Camera(h, DEV)
    assert cam.register_auth().status == 200
    receivers: list[Receiver] = []

    def factory(ingest: Any, lease: Any, *, mode: str, on_timeout: Any) -> Receiver:
        receivers.append(Receiver(ingest, lease, mode=mode, on_timeout=on_timeout))
        return receivers[-1]

    rng = random.Random(5)
    streams = LiveStreams(
        router=h.platform.router, clock=h.clock, ports=PortPool(30000, 30019, rng),
        ssrcs=SsrcAllocator("3402000000", rng), receiver_factory=factory, media_ip="192.0.2.10",
    )
    return h, cam, streams, receivers


def play(h: Harness, streams: LiveStreams) -> Deferred[Any]:
    d = h.run(streams.play(DEV, CHANNEL))
    h.pump()
    return d


def test_play_invites_once_acks_and_shares(env: Any) -> None:
    h, cam, streams, receivers = env
    first = play(h, streams)
    second = play(h, streams)
    stream = result_of(first)
    assert result_of(second) is stream and stream.state == "playing"
    assert cam.methods().count("INVITE") == 1 and "ACK" not in cam.methods()  # ACK has no transaction
    invite = next(i.request for i in cam.inbound if i.request.method == "INVITE")
    assert invite.uri.startswith(f"sip:{CHANNEL}@")
    assert invite.headers.get("Subject") == f"{CHANNEL}:{stream.ssrc},{h.platform.config.sip.id}:0"
    offer = sdp.parse(invite.body)
    assert offer.effective_ssrc == stream.ssrc and offer.first_media("video").port == stream.lease.rtp
    assert offer.media_ip() == "192.0.2.10"
    assert receivers[0].started == 1 and streams.ports.in_use == 1
    assert stream.info(h.clock).state == "playing"


def test_stop_sends_bye_and_returns_port_and_ssrc(env: Any) -> None:
    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    assert streams.stop(CHANNEL, "nobody watching")
    h.pump()
    assert "BYE" in cam.methods()
    bye = next(i.request for i in cam.inbound if i.request.method == "BYE")
    assert bye.call_id == next(i.request for i in cam.inbound if i.request.method == "INVITE").call_id
    assert receivers[0].stopped == 1
    assert streams.ports.in_use == 0 and not streams.ssrcs.is_leased(stream.ssrc)
    assert streams.get(CHANNEL) is None and not streams.stop(CHANNEL)


def test_device_bye_ends_the_stream(env: Any) -> None:
    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    assert stream.dialog is not None
    bye = cam.request("BYE", uri=f"sip:{h.platform.config.sip.id}@127.0.0.1:5060")
    bye.headers.set("Call-ID", stream.dialog.id.call_id)
    bye.headers.set("From", f"<sip:{CHANNEL}@3402000000>;tag=cam-tag")
    bye.headers.set("To", f"<sip:{CHANNEL}@3402000000>;tag={stream.dialog.id.local_tag}")
    bye.headers.set("CSeq", "2 BYE")
    resp: Response | None = cam.exchange(bye)
    assert resp is not None and resp.status == 200
    assert stream.state == "closed" and streams.ports.in_use == 0 and receivers[0].stopped == 1
    assert cam.methods().count("BYE") == 0  # we do not BYE back


def test_refused_invite_returns_everything(env: Any) -> None:
    h, cam, streams, receivers = env
    cam.invite_status = 486
    d = play(h, streams)
    with pytest.raises(DeviceRejected, match="486"):
        result_of(d)
    assert streams.ports.in_use == 0 and streams.get(CHANNEL) is None and receivers[0].stopped == 1


def test_unanswered_invite_times_out(env: Any) -> None:
    h, cam, streams, _ = env
    cam.invite_status = None
    d = play(h, streams)
    assert not has_fired(d)
    h.advance(200)
    with pytest.raises(DeviceTimeout):
        result_of(d)
    assert streams.ports.in_use == 0


def test_no_rtp_ends_the_stream_with_a_bye(env: Any) -> None:
    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    receivers[0].on_timeout("no RTP for 10 s")
    h.pump()
    assert stream.state == "failed" and stream.error == "no RTP for 10 s"
    assert "BYE" in cam.methods() and streams.ports.in_use == 0


def test_answered_ssrc_is_followed(env: Any) -> None:
    h, cam, streams, _ = env
    cam.answer_ssrc = "0100000999"
    stream = result_of(play(h, streams))
    assert stream.ingest.ssrc == 100000999


def test_tcp_active_connects_to_the_answered_address(env: Any) -> None:
    h, cam, streams, receivers = env
    streams.media_mode = lambda device_id: "TCP-ACTIVE"
    result_of(play(h, streams))
    assert receivers[0].mode == "tcp-active" and receivers[0].connected == [("10.0.0.64", 15060)]


@pytest.mark.parametrize(("choice", "line"), [
    ("streamnumber:1", b"a=streamnumber:1"),
    ("streamprofile:1", b"a=streamprofile:1"),
    ("streamMode:sub", b"a=streamMode:sub"),
    ("stream:0", b"a=stream:0"),
])
def test_the_device_stream_choice_goes_into_the_offer(env: Any, choice: str, line: bytes) -> None:
    h, cam, streams, _ = env
    streams.media_mode = lambda device_id: ("UDP", choice)
    result_of(play(h, streams))
    invite = next(i.request for i in cam.inbound if i.request.method == "INVITE")
    assert line + b"\r\n" in invite.body


def test_a_bad_stored_stream_choice_is_not_offered(env: Any) -> None:
    h, cam, streams, _ = env
    streams.media_mode = lambda device_id: ("UDP", "bogus:9")
    stream = result_of(play(h, streams))
    invite = next(i.request for i in cam.inbound if i.request.method == "INVITE")
    assert stream.state == "playing" and b"stream" not in invite.body.lower().replace(b"s=play", b"")


def test_offline_device_and_exhausted_ports(env: Any) -> None:
    h, cam, streams, _ = env
    with pytest.raises(DeviceOffline):
        result_of(h.run(streams.play("34020000001320000077", CHANNEL)))
    for _ in range(streams.ports.available):
        streams.ports.lease("someone")
    with pytest.raises(NoPorts):
        result_of(play(h, streams))


# --- viewers and idle teardown -------------------------------------------------------


class Viewer:
    def __init__(self) -> None:
        self.frames: list[Any] = []

    def input_frame(self, frame: Any) -> None:
        self.frames.append(frame)


def test_a_stream_nobody_watches_is_stopped_after_the_idle_timeout(env: Any) -> None:
    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    closed: list[Any] = []
    stream.on_closed.append(closed.append)
    h.advance(streams.idle_timeout - 1)
    assert stream.state == "playing" and "BYE" not in cam.methods()
    h.advance(2)
    assert stream.state == "closed" and stream.error is None
    assert "BYE" in cam.methods() and streams.ports.in_use == 0 and receivers[0].stopped == 1
    assert closed == [stream] and stream.on_closed == []


def test_a_watched_stream_stays_and_the_countdown_starts_when_the_last_viewer_leaves(env: Any) -> None:
    h, cam, streams, _ = env
    stream = result_of(play(h, streams))
    first, second = Viewer(), Viewer()
    streams.attach(stream, first)
    streams.attach(stream, second)
    assert stream.viewers == 2 and stream.idle_since is None
    h.advance(streams.idle_timeout * 3)
    assert stream.state == "playing"
    streams.detach(stream, first)
    h.advance(streams.idle_timeout * 2)
    assert stream.state == "playing"
    streams.detach(stream, second)
    left_at = h.clock.seconds()
    h.advance(streams.idle_timeout - 1)
    assert stream.state == "playing"
    h.advance(streams.idle_timeout)
    assert stream.state == "closed" and "BYE" in cam.methods()
    assert h.clock.seconds() - left_at >= streams.idle_timeout


def test_a_sink_dropped_by_the_dispatcher_still_lets_the_stream_go_idle(env: Any) -> None:
    h, _, streams, _ = env
    stream = result_of(play(h, streams))
    stream.dispatcher.add_sink(Viewer())  # attached directly, as an output sink would be
    h.advance(streams.idle_timeout * 2)
    assert stream.state == "playing"
    stream.dispatcher.remove_sink(stream.dispatcher.sinks[0])
    h.advance(streams.idle_timeout * 3)
    assert stream.state == "closed"


def test_closing_runs_every_callback_even_after_a_failing_one(env: Any) -> None:
    h, _, streams, _ = env
    stream = result_of(play(h, streams))
    seen: list[str] = []

    def broken(s: Any) -> None:
        raise RuntimeError("viewer gone wrong")

    stream.on_closed += [broken, lambda s: seen.append(s.state)]
    streams.stop(CHANNEL)
    assert seen == ["closed"] and stream.idle_timer is None
    # The broken one is logged, with its traceback (and taken off the harness's failure list).
    assert [e["log_failure"].type for e in h.log_failures] == [RuntimeError]
    h.log_failures.clear()


# --- health in the API ----------------------------------------------------------------


def test_stream_health_from_the_capture(env: Any, shared_dir: Any) -> None:
    from tests.media_captures import udp_payloads

    h, cam, streams, receivers = env
    stream = result_of(play(h, streams))
    viewer = Viewer()
    streams.attach(stream, viewer)
    stream.ingest.rekey(None)  # type: ignore[arg-type]  # take the capture's SSRC
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")[:1200]:
        stream.ingest.datagram(payload, h.clock.seconds())
        h.clock.advance(10 / 3757)  # the capture's packet rate: 10 s of video
    health = stream.info(h.clock)
    assert (health.video_codec, health.width, health.height) == ("h264", 1920, 1080)
    assert health.audio_codec is None and health.viewers == 1
    assert 23 <= health.fps <= 27 and health.bitrate_bps > 1_000_000
    assert health.uptime_seconds >= 3.0 and health.gop == 50
    assert stream.media_info().width == 1920


def test_an_unwatched_stream_keeps_its_keyframe_alone_after_gop_cache_idle(env: Any, shared_dir: Any) -> None:
    from tests.media_captures import udp_payloads

    h, cam, streams, receivers = env
    streams.gop_cache_idle = 1.0  # media.gop_cache_idle
    stream = result_of(play(h, streams))
    assert stream.dispatcher.idle_after == 1.0
    stream.ingest.rekey(None)  # type: ignore[arg-type]  # take the capture's SSRC
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")[:1200]:
        stream.ingest.datagram(payload, h.clock.seconds())
        h.clock.advance(10 / 3757)
    cache = stream.dispatcher.cache
    assert cache.keyframe_only and cache.frames == [stream.dispatcher.keyframe]
    assert stream.info(h.clock).width == 1920  # the stream info reads the kept keyframe


def test_stream_health_without_a_gop_cache(env: Any, shared_dir: Any) -> None:
    from tests.media_captures import udp_payloads

    h, cam, streams, receivers = env
    streams.gop_cache_bytes = 0  # media.gop_cache_bytes = 0
    stream = result_of(play(h, streams))
    assert stream.dispatcher.cache.max_bytes == 0
    stream.ingest.rekey(None)  # type: ignore[arg-type]  # take the capture's SSRC
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap")[:400]:
        stream.ingest.datagram(payload, h.clock.seconds())
        h.clock.advance(10 / 3757)
    assert stream.dispatcher.cache.frames == []
    health = stream.info(h.clock)  # read off the latest keyframe instead
    assert (health.video_codec, health.width, health.height) == ("h264", 1920, 1080)
