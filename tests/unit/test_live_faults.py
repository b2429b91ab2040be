"""Live-stream INVITEs that go wrong (issue 8): a refused media connection, a
taken RTP port, an INVITE nobody answers in ``media.invite_timeout``, and a
stream stopped while its INVITE is in flight (RFC 3261 §9.1 CANCEL, §13.2.2.4
ACK then BYE for a 2xx that comes too late)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.logger import LogEvent, globalLogPublisher

from gbplatform.core.errors import DeviceTimeout
from gbplatform.core.ids import SsrcAllocator
from gbplatform.sessions.live import LiveStreams, MediaConnectFailed, StreamStopped
from media.ports import PortPool
from media.receiver import RtpReceiver
from sip import sdp
from sip.endpoint import EndpointEvent, RequestReceived
from sip.message import Request, make_response
from tests.unit.platform_harness import (
    DEV,
    DEV2,
    FakeDevice,
    Harness,
    Inbound,
    has_fired,
    result_of,
)
from tests.unit.test_live import CHANNEL, Camera, Receiver, play
from tests.unit.test_media_receiver import FakeListenUdp


class SlowCamera(Camera):
    """Keeps the INVITE unanswered (optionally after 100 Trying) until ``answer()``."""

    trying = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.held: list[tuple[Request, Any]] = []

    def _events(self, events: list[EndpointEvent]) -> None:
        rest: list[EndpointEvent] = []
        for event in events:
            if isinstance(event, RequestReceived) and event.request.method == "INVITE" and event.transaction:
                self.held.append((event.request, event.transaction))
                self.inbound.append(Inbound(event.request, None, None))
                if self.trying:
                    self.send_trying()
            else:
                rest.append(event)
        FakeDevice._events(self, rest)

    def send_trying(self) -> None:
        req, tx = self.held[-1]
        self.endpoint.respond(tx, make_response(req, 100), self.harness.clock.seconds())
        self.harness.pump()

    def answer(self, status: int = 200) -> None:
        req, tx = self.held[-1]
        body = b""
        if status == 200:
            body = sdp.build_gb_answer(sdp.parse(req.body), device_id=CHANNEL, ip="10.0.0.64", port=15060).serialize()
        resp = make_response(req, status, to_tag="cam-tag", body=body,
                             headers=[("Contact", f"<sip:{CHANNEL}@127.0.0.1:5070>"),
                                      ("Content-Type", "Application/SDP")] if body else [])
        self.endpoint.respond(tx, resp, self.harness.clock.seconds())
        self.harness.pump()


def sent(h: Harness, method: str) -> list[bytes]:
    return [data for data, _ in h.sent if data.startswith(method.encode() + b" ")]


def make_streams(h: Harness, factory: Any = None, **kw: Any) -> tuple[LiveStreams, list[Any]]:
    receivers: list[Any] = []

    def fake(ingest: Any, lease: Any, *, mode: str, on_timeout: Any) -> Receiver:
        receivers.append(Receiver(ingest, lease, mode=mode, on_timeout=on_timeout))
        return receivers[-1]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        receivers.append(factory(*args, **kwargs))
        return receivers[-1]

    rng = random.Random(5)
    streams = LiveStreams(
        router=h.platform.router, clock=h.clock, ports=PortPool(30000, 30019, rng),
        ssrcs=SsrcAllocator("3402000000", rng), receiver_factory=fake if factory is None else wrapped,
        media_ip="192.0.2.10", **kw,
    )
    return streams, receivers


@pytest.fixture
def slow(h: Harness) -> tuple[Harness, SlowCamera, LiveStreams, list[Any]]:
    cam = SlowCamera(h, DEV)
    assert cam.register_auth().status == 200
    streams, receivers = make_streams(h, invite_timeout=10.0)
    return h, cam, streams, receivers


class LogCapture:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        self.events.append(event)

    def __enter__(self) -> LogCapture:
        globalLogPublisher.addObserver(self)  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)  # type: ignore[arg-type]

    def formats(self) -> list[str]:
        return [str(e.get("log_format")) for e in self.events]


# --- item 12: tcp-active connection refused ---------------------------------------------


def test_tcp_active_connect_refused_is_a_502_with_the_reason_and_the_call_is_ended(h: Harness) -> None:
    cam = Camera(h, DEV)
    assert cam.register_auth().status == 200

    class Refused(Receiver):
        def connect(self, host: str, port: int) -> Deferred[None]:
            return fail(ConnectionRefusedError(host, port))

    streams, receivers = make_streams(h, Refused, media_mode=lambda device_id: "TCP-ACTIVE")
    with pytest.raises(MediaConnectFailed, match="10.0.0.64:15060.*refused") as info:
        result_of(play(h, streams))
    assert info.value.status == 502 and info.value.code == "media_connect_failed"
    assert "BYE" in cam.methods()  # the device accepted the call: end it
    assert streams.ports.in_use == 0 and streams.get(CHANNEL) is None and receivers[0].stopped == 1


# --- item 13: a port of the range held by another program --------------------------------


def test_a_taken_port_is_skipped_logged_and_the_play_succeeds(h: Harness) -> None:
    cam = Camera(h, DEV)
    assert cam.register_auth().status == 200
    listen = FakeListenUdp()
    taken: list[int] = []

    def listen_udp(port: int, protocol: Any, interface: str = "") -> Any:
        if not taken:  # the first pair asked for is another program's
            taken.append(port)
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return listen(port, protocol, interface)

    def factory(ingest: Any, lease: Any, *, mode: str, on_timeout: Any) -> RtpReceiver:
        return RtpReceiver(h.clock.reactor, ingest, lease, mode=mode, on_timeout=on_timeout,  # type: ignore[arg-type]
                           listen_udp=listen_udp)

    streams, receivers = make_streams(h, factory)
    with LogCapture() as logs:
        stream = result_of(play(h, streams))
    assert stream.state == "playing" and stream.lease.rtp != taken[0]
    assert sorted(listen.ports) == [stream.lease.rtp, stream.lease.rtcp]
    assert any(e.get("port") == taken[0] and "taken" in str(e.get("log_format")) for e in logs.events)
    # The pair goes back to the pool (the other program may let it go), behind the others.
    assert streams.ports.in_use == 1 and streams.ports.available == streams.ports.capacity - 1
    streams.stop(CHANNEL)
    h.pump()


def test_when_every_free_pair_is_taken_the_play_is_a_503(h: Harness) -> None:
    cam = Camera(h, DEV)
    assert cam.register_auth().status == 200

    def factory(ingest: Any, lease: Any, *, mode: str, on_timeout: Any) -> RtpReceiver:
        def refuse(port: int, protocol: Any, interface: str = "") -> Any:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return RtpReceiver(h.clock.reactor, ingest, lease, mode=mode, on_timeout=on_timeout,  # type: ignore[arg-type]
                           listen_udp=refuse)

    streams, _ = make_streams(h, factory)
    from gbplatform.sessions.live import NoPorts

    with pytest.raises(NoPorts, match="taken"):
        result_of(play(h, streams))
    assert streams.ports.in_use == 0 and streams.ports.available == streams.ports.capacity
    assert streams.get(CHANNEL) is None and "INVITE" not in cam.methods()


# --- item 14: media.invite_timeout ---------------------------------------------------------


def test_an_invite_answered_only_100_is_cancelled_after_invite_timeout(slow: Any) -> None:
    h, cam, streams, receivers = slow
    d = play(h, streams)
    ssrc = streams.get(CHANNEL).ssrc
    h.advance(9.5)
    assert not has_fired(d) and not sent(h, "CANCEL")
    h.advance(1.0)
    with pytest.raises(DeviceTimeout, match="10 s"):
        result_of(d)
    assert streams.ports.in_use == 0 and streams.get(CHANNEL) is None and receivers[0].stopped == 1
    assert not streams.ssrcs.is_leased(ssrc)
    # RFC 3261 §9.1: CANCEL with the INVITE's Via, Call-ID, From, To and CSeq number.
    (cancel,) = sent(h, "CANCEL")
    invite = cam.held[0][0]
    for name in (b"Call-ID", b"From", b"To"):
        assert f"{name.decode()}: {invite.headers.get(name.decode())}".encode() in cancel
    assert f"CSeq: {invite.cseq[0]} CANCEL".encode() in cancel
    branch = invite.headers.get_all("Via")[0].split("branch=")[1].split(";")[0]
    assert cancel.count(b"Via: ") == 1 and f";branch={branch}\r\n".encode() in cancel
    h.advance(60)  # the device's 487 is ACKed by the transaction; nothing else happens
    assert "BYE" not in cam.methods() and not h.failures()


def test_a_silent_device_fails_the_play_after_invite_timeout_and_a_late_200_is_ended(slow: Any) -> None:
    h, cam, streams, _ = slow
    cam.trying = False
    d = play(h, streams)
    h.advance(10.5)
    with pytest.raises(DeviceTimeout):
        result_of(d)
    assert streams.ports.in_use == 0 and not sent(h, "CANCEL")  # §9.1: not before a provisional
    cam.answer(200)
    assert sent(h, "ACK") and "BYE" in cam.methods()  # §13.2.2.4: ACK, then end the call
    assert streams.get(CHANNEL) is None and streams.ports.in_use == 0


def test_a_provisional_after_invite_timeout_gets_the_cancel(slow: Any) -> None:
    h, cam, streams, _ = slow
    cam.trying = False
    d = play(h, streams)
    h.advance(10.5)
    with pytest.raises(DeviceTimeout):
        result_of(d)
    cam.send_trying()
    assert len(sent(h, "CANCEL")) == 1


# --- item 21: stopped while the INVITE is in flight ------------------------------------------


def test_stop_during_the_invite_fails_every_waiter_and_cancels(slow: Any) -> None:
    h, cam, streams, receivers = slow
    first, second = play(h, streams), play(h, streams)
    assert not has_fired(first) and not has_fired(second)
    assert streams.stop(CHANNEL, "stopped through the API")
    for d in (first, second):
        with pytest.raises(StreamStopped) as info:
            result_of(d)
        assert info.value.status == 409
    assert len(sent(h, "CANCEL")) == 1 and streams.ports.in_use == 0 and receivers[0].stopped == 1
    h.advance(60)
    assert "BYE" not in cam.methods() and streams.get(CHANNEL) is None


def test_stop_before_any_answer_then_a_200_is_acked_and_byed(slow: Any) -> None:
    h, cam, streams, _ = slow
    cam.trying = False
    d = play(h, streams)
    closed: list[Any] = []
    stream = streams.get(CHANNEL)
    stream.on_closed.append(closed.append)  # an HTTP-FLV viewer waiting on the stream
    streams.stop(CHANNEL)
    with pytest.raises(StreamStopped):
        result_of(d)
    assert closed == [stream]
    cam.answer(200)
    assert sent(h, "ACK") and "BYE" in cam.methods()
    assert streams.get(CHANNEL) is None and stream.state == "closed"


def test_a_new_play_after_a_stop_in_flight_invites_again(slow: Any) -> None:
    h, cam, streams, _ = slow
    d = play(h, streams)
    streams.stop(CHANNEL)
    d.addErrback(lambda f: None)
    again: Deferred[Any] = play(h, streams)
    cam.answer(200)
    assert result_of(again).state == "playing" and cam.methods().count("INVITE") == 2


# --- item 19: devices whose SDP parser rejects y= (osip2 5.x) --------------------------------


class NoYCamera(Camera):
    """Answers with or without a ``y=`` line of its own (``answer_ssrc`` None: without)."""

    def _events(self, events: list[EndpointEvent]) -> None:
        rest: list[EndpointEvent] = []
        for event in events:
            if isinstance(event, RequestReceived) and event.request.method == "INVITE" and event.transaction:
                req = event.request
                self.inbound.append(Inbound(req, None, 200))
                offer = sdp.parse(req.body)
                answer = sdp.build_gb_answer(offer, device_id=CHANNEL, ip="10.0.0.64", port=15060,
                                             ssrc=self.answer_ssrc or "1")
                if self.answer_ssrc is None:
                    answer = dataclasses.replace(answer, media=[dataclasses.replace(m, ssrc=None)
                                                                for m in answer.media])
                resp = make_response(req, 200, to_tag="cam-tag", body=answer.serialize(),
                                     headers=[("Contact", f"<sip:{CHANNEL}@127.0.0.1:5070>"),
                                              ("Content-Type", "Application/SDP")])
                self.endpoint.respond(event.transaction, resp, self.harness.clock.seconds())
            else:
                rest.append(event)
        FakeDevice._events(self, rest)


@pytest.mark.parametrize(("answer_ssrc", "expected"), [("0100000999", 100000999), (None, None)])
def test_without_y_line_the_offer_leaves_it_out_and_the_ssrc_comes_from_the_answer(
    h: Harness, answer_ssrc: str | None, expected: int | None
) -> None:
    cam = NoYCamera(h, DEV)
    cam.answer_ssrc = answer_ssrc
    assert cam.register_auth().status == 200
    streams, _ = make_streams(h, media_mode=lambda device_id: ("UDP", None, False))
    stream = result_of(play(h, streams))
    invite = next(i.request for i in cam.inbound if i.request.method == "INVITE")
    assert b"\ny=" not in invite.body and sdp.parse(invite.body).effective_ssrc is None
    assert stream.state == "playing" and stream.ingest.ssrc == expected
    if expected is None:  # no y= either way: the first RTP packet's SSRC is the stream's
        packet = bytes([0x80, 96, 0, 1, 0, 0, 0, 0]) + (4242).to_bytes(4, "big") + b"\x00" * 20
        stream.ingest.datagram(packet, h.clock.seconds())
        assert stream.ingest.ssrc == 4242 and stream.ingest.stats.packets == 1


def test_with_the_default_the_offer_has_y(env_default: Any) -> None:
    h, cam, streams = env_default
    streams.media_mode = lambda device_id: ("UDP", None, True)
    stream = result_of(play(h, streams))
    invite = next(i.request for i in cam.inbound if i.request.method == "INVITE")
    assert sdp.parse(invite.body).effective_ssrc == stream.ssrc


@pytest.fixture
def env_default(h: Harness) -> tuple[Harness, Camera, LiveStreams]:
    cam = Camera(h, DEV)
    assert cam.register_auth().status == 200
    streams, _ = make_streams(h)
    return h, cam, streams


def test_the_device_setting_is_stored_and_reaches_the_invite(h: Harness) -> None:
    from gbplatform.db import queries as q

    record = h.create_device(DEV, sdp_y_line=False)
    assert record.sdp_y_line is False
    assert h.call(q.update_device_txn, DEV, sdp_y_line=True).sdp_y_line is True
    assert h.create_device(DEV2).sdp_y_line is True  # the default: offer y= as GB/T 28181 Annex F says


@pytest.fixture
def api_env() -> Any:
    # Imported here: test_api pulls in every route's module, and a broken one
    # should fail only this test.
    from tests.unit import test_api

    platform, clock = test_api.make_platform()
    api = test_api.Api(platform)
    yield test_api.Env(platform, clock, api, test_api.Client(api))
    platform.db.engine.dispose()


def test_the_api_sets_and_shows_sdp_y_line(api_env: Any) -> None:
    from tests.unit.test_api import add_device, assert_error

    env = api_env
    assert add_device(env)["sdp_y_line"] is True
    reply = env.client("PATCH", f"/devices/{DEV}", body={"sdp_y_line": False})
    assert reply.code == 200 and reply.json["sdp_y_line"] is False
    assert env.client("GET", f"/devices/{DEV}").json["sdp_y_line"] is False
    assert_error(env.client("PATCH", f"/devices/{DEV}", body={"sdp_y_line": "no"}), 400, "invalid", "sdp_y_line")
    assert add_device(env, DEV2, sdp_y_line=False)["sdp_y_line"] is False


def test_an_flv_viewer_waiting_on_a_stopped_invite_gets_an_answer(slow: Any) -> None:
    from treq.testing import StubTreq

    from gbplatform.api.app import Api
    from gbplatform.db import queries as q
    from tests.unit.platform_harness import API_TOKEN

    h, cam, streams, _ = slow
    h.call(q.replace_channels_txn, DEV, [q.ChannelData(channel_id=CHANNEL)], complete=True)
    h.platform.live = streams
    stub = StubTreq(Api(h.platform).app.resource())  # type: ignore[no-untyped-call]
    d = stub.get(f"http://gbp.test/live/{CHANNEL}.flv?token={API_TOKEN}")
    stub.flush()
    h.pump()
    assert streams.get(CHANNEL) is not None and streams.get(CHANNEL).state == "inviting"
    streams.stop(CHANNEL)
    stub.flush()
    response = result_of(d)  # answered now, not when the player gives up
    assert response.code == 409
    body = result_of(stub.json_content(response))
    stub.flush()
    assert body["error"]["code"] == "stream_stopped"
