"""Simulator media: PS clip, RTP pacing, and INVITE/ACK/BYE against the in-memory platform."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from gbplatform.simulator.clip import ClipError, build_clip, spec_for
from gbplatform.simulator.media import (
    TIMESTAMP_STEP,
    MediaTarget,
    PsClip,
    PsFrame,
    RtpPacer,
    SimMedia,
)
from media import nal
from media.frame import Codec
from media.ps import PsDemuxer
from media.rtp import RtpPacket
from sip import sdp
from sip.dialog import Dialog
from sip.message import Request, Response
from tests.conftest import skip_or_fail
from tests.unit.test_simulator import DEV1, REALM, SERVER_ID, FakeUdpPort, make, port_of

SSRC = "0200000329"


def tiny_clip() -> PsClip:
    return PsClip([PsFrame(0, (b"\x00\x00\x01\xba\x00\x00\x01\xbc", b"b")), PsFrame(1, (b"c",)),
                   PsFrame(2, (b"d", b"e", b"f"))])


def offer(*, proto: str = "RTP/AVP", setup: str | None = None, session: str = "Play",
          port: int = 30000) -> bytes:
    lines = ["v=0", f"o={SERVER_ID} 0 0 IN IP4 127.0.0.1", f"s={session}", "c=IN IP4 127.0.0.1",
             "t=0 0", f"m=video {port} {proto} 96 98", "a=recvonly", "a=rtpmap:96 PS/90000",
             "a=rtpmap:98 H264/90000"]
    if setup:
        lines += [f"a=setup:{setup}", "a=connection:new"]
    lines.append(f"y={SSRC}")
    return "".join(line + "\r\n" for line in lines).encode()


# -- clip and pacer ------------------------------------------------------------------------


def test_clip_from_the_real_capture() -> None:
    path = PsClip.default_path()
    if not path.exists():
        skip_or_fail(f"{path} not present")
    clip = PsClip.from_capture(path)
    # 251 timestamps, the last one cut; the capture opens on a keyframe.
    assert len(clip) == 250 - clip.frames[0].index
    assert b"\x00\x00\x01\xbc" in clip.frames[0].chunks[0]
    assert all(c.startswith(b"\x00\x00\x01\xba") for c in (f.chunks[0] for f in clip.frames))
    assert [f.index for f in clip.frames] == list(range(clip.frames[0].index, 250))


def rtp(seq: int, ts: int, payload: bytes, marker: bool) -> bytes:
    return RtpPacket(96, seq, ts, 7, payload, marker=marker).serialize()


def test_clip_skips_leading_non_keyframes_and_the_cut_last_frame() -> None:
    data = [rtp(1, 10, b"p-frame", True), rtp(2, 20, b"\x00\x00\x01\xbc", False),
            rtp(3, 20, b"x", True), rtp(4, 30, b"y", True), rtp(5, 40, b"cut", False), b"junk"]
    clip = PsClip.from_rtp(data)
    assert [(f.index, f.chunks) for f in clip.frames] == [(1, (b"\x00\x00\x01\xbc", b"x")), (2, (b"y",))]


def test_pacer_is_continuous_across_the_loop() -> None:
    pacer = RtpPacer(tiny_clip(), ssrc=200000329, rng=random.Random(3))
    pacer.first_sequence = 65534  # wrap inside the run
    packets = [RtpPacket.parse(p) for n in range(7) for p in pacer.packets_for_frame(n)]
    assert len(packets) == 2 * 6 + 2
    seqs = [p.sequence for p in packets]
    assert seqs == [(65534 + i) & 0xFFFF for i in range(len(packets))]
    frame_ts = [pacer.first_timestamp + n * TIMESTAMP_STEP for n in (0, 0, 1, 2, 2, 2)]
    assert [p.timestamp for p in packets[:6]] == [t & 0xFFFFFFFF for t in frame_ts]
    assert packets[6].timestamp == (pacer.first_timestamp + 3 * TIMESTAMP_STEP) & 0xFFFFFFFF
    assert [p.marker for p in packets[:6]] == [False, True, True, False, False, True]
    assert {p.payload_type for p in packets} == {96} and {p.ssrc for p in packets} == {200000329}
    assert packets[6].payload == packets[0].payload


@pytest.mark.parametrize(("setup", "mode"), [("passive", "tcp-active"), ("actpass", "tcp-active"),
                                               ("active", "tcp-passive"), (None, "tcp-active")])
def test_tcp_roles_follow_rfc_4145(setup: str | None, mode: str) -> None:
    target = MediaTarget.from_offer(sdp.parse(offer(proto="TCP/RTP/AVP", setup=setup)))
    assert (target.mode, target.host, target.port, target.ssrc) == (mode, "127.0.0.1", 30000, 200000329)


# -- INVITE / ACK / BYE through the simulator -------------------------------------------------


class MediaNet:
    """The test_simulator harness plus fake media sockets outside its SIP pump."""

    def __init__(self, listen_tcp: Any = None, clip: PsClip | None = None) -> None:
        self.sim, self.platform, self.net = make()
        self.reactor = self.net.reactor
        self.udp: list[FakeUdpPort] = []
        self.sim.media = SimMedia(self.reactor, random.Random(5), clip=clip or tiny_clip(),
                                  listen_udp=self.listen_udp, listen_tcp=listen_tcp)
        self.sim.start()
        self.net.pump()
        assert self.sim.devices[0].registered

    def listen_udp(self, port: int, protocol: Any, interface: str = "") -> FakeUdpPort:
        p = FakeUdpPort(50000 + len(self.udp) * 2, protocol, interface)
        self.udp.append(p)
        return p

    def invite(self, body: bytes) -> tuple[Request, Response]:
        p = self.platform
        req = Request(method="INVITE", uri=f"sip:{DEV1}@127.0.0.1:{port_of(self.sim)}")
        h = req.headers
        h.add("From", f"<sip:{SERVER_ID}@{REALM}>;tag={p.endpoint.new_tag()}")
        h.add("To", f"<sip:{DEV1}@{REALM}>")
        h.add("Call-ID", f"{p.rng.getrandbits(64):x}@127.0.0.1")
        h.add("CSeq", "20 INVITE")
        h.add("Contact", f"<sip:{SERVER_ID}@127.0.0.1:5060>")
        h.add("Subject", f"{DEV1}:{SSRC},{SERVER_ID}:0")
        h.add("Content-Type", "APPLICATION/SDP")
        req.body = body
        tx = p.endpoint.send_request(req, ("UDP", "127.0.0.1", port_of(self.sim)), p.now())
        self.net.pump()
        return req, p.answers[tx]

    def ack_and_dialog(self, req: Request, resp: Response) -> Dialog:
        dialog = Dialog.from_uac(req, resp)
        self.platform.endpoint.send_stateless(dialog.ack_for(20), ("UDP", "127.0.0.1", port_of(self.sim)))
        self.net.pump()
        return dialog

    def bye(self, dialog: Dialog) -> Response:
        p = self.platform
        tx = p.endpoint.send_request(dialog.new_request("BYE"), ("UDP", "127.0.0.1", port_of(self.sim)), p.now())
        self.net.pump()
        return p.answers[tx]

    def run_frames(self, n: int) -> None:
        for _ in range(n):
            self.reactor.advance(0.04)


def test_udp_invite_ack_streams_at_25_fps_and_bye_stops() -> None:
    m = MediaNet()
    req, resp = m.invite(offer())
    assert resp.status == 200
    assert "<sip:" in (resp.headers.get("Contact") or "")
    answer = sdp.parse(resp.body)
    media = answer.first_media()
    assert media is not None
    assert answer.effective_ssrc == SSRC and media.direction == "sendonly"
    assert media.port == m.udp[0].port and media.rtpmap() == {96: ("PS", 90000)}
    assert m.udp[0].sent == []  # nothing before the ACK
    dialog = m.ack_and_dialog(req, resp)
    m.run_frames(25)
    sent = m.udp[0].sent
    packets = [RtpPacket.parse(d) for d, _ in sent]
    assert {addr for _, addr in sent} == {("127.0.0.1", 30000)}
    assert {p.payload_type for p in packets} == {96} and {p.ssrc for p in packets} == {int(SSRC)}
    frames = sum(p.marker for p in packets)
    assert 25 <= frames <= 26
    sender = m.sim.devices[0].plays[req.call_id].sender
    assert (sender.frames, sender.packets) == (frames, len(packets))
    assert m.bye(dialog).status == 200
    before = len(m.udp[0].sent)
    m.run_frames(50)
    assert len(m.udp[0].sent) == before
    assert m.udp[0].closed and m.sim.devices[0].plays == {}


def test_a_late_reactor_catches_up_a_few_frames_only() -> None:
    m = MediaNet()
    req, resp = m.invite(offer())
    m.ack_and_dialog(req, resp)
    m.reactor.advance(5.0)
    sender = m.sim.devices[0].plays[req.call_id].sender
    assert sender.frames <= 1 + 3


def test_two_streams_of_one_device_are_served() -> None:
    m = MediaNet()
    first = m.invite(offer())
    second = m.invite(offer(port=30002))
    assert first[1].status == second[1].status == 200
    assert len(m.sim.devices[0].plays) == 2


def test_tcp_passive_offer_device_connects_with_rfc4571_framing() -> None:
    m = MediaNet()
    req, resp = m.invite(offer(proto="TCP/RTP/AVP", setup="passive"))
    assert resp.status == 200
    media = sdp.parse(resp.body).first_media()
    assert media is not None and media.setup == "active" and media.port == 9
    assert m.reactor.tcpClients == []  # not before the ACK
    m.ack_and_dialog(req, resp)
    client: Any = m.reactor.tcpClients[-1]
    host, port, factory, _, _ = client
    assert (host, port) == ("127.0.0.1", 30000)
    proto: Any = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport: Any = StringTransport()  # type: ignore[no-untyped-call]
    proto.makeConnection(transport)
    m.run_frames(4)
    data = transport.value()
    packets = []
    while data:
        (n,) = struct.unpack_from("!H", data)
        packets.append(RtpPacket.parse(data[2:2 + n]))
        data = data[2 + n:]
    assert sum(p.marker for p in packets) == 5
    assert {p.ssrc for p in packets} == {int(SSRC)}
    sender = m.sim.devices[0].plays[req.call_id].sender
    assert sender.bytes == len(transport.value())
    transport.producer.pauseProducing()  # a slow reader: frames are dropped, not buffered
    m.run_frames(3)
    assert sender.frames_dropped == 3 and sender.frames == 5


def test_tcp_active_offer_device_listens_on_the_answer_port() -> None:
    listening: list[tuple[int, Any, str]] = []

    class Port:
        def getHost(self) -> IPv4Address:  # noqa: N802 - Twisted API
            return IPv4Address("TCP", "127.0.0.1", 41000)

        def stopListening(self) -> None:  # noqa: N802 - Twisted API
            listening.clear()

    def listen_tcp(port: int, factory: Any, interface: str = "") -> Port:
        listening.append((port, factory, interface))
        return Port()

    m = MediaNet(listen_tcp=listen_tcp)
    req, resp = m.invite(offer(proto="TCP/RTP/AVP", setup="active"))
    media = sdp.parse(resp.body).first_media()
    assert media is not None and media.setup == "passive" and media.port == 41000
    dialog = m.ack_and_dialog(req, resp)
    proto: Any = listening[0][1].buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport: Any = StringTransport()  # type: ignore[no-untyped-call]
    proto.makeConnection(transport)
    assert len(transport.value()) > 0  # pacing starts once both ACK and connection are there
    assert m.bye(dialog).status == 200
    assert transport.disconnecting and listening == []


@pytest.mark.parametrize("body", [
    b"",
    b"v=0\r\nthis is not sdp\r\n",
    offer().replace(b"y=0200000329\r\n", b""),
    offer(session="Talk"),
    offer().replace(b"PS/90000", b"XYZ/90000"),
])
def test_unusable_offers_get_488(body: bytes) -> None:
    m = MediaNet()
    _, resp = m.invite(body)
    assert resp.status == 488
    assert m.sim.devices[0].plays == {}
    assert all(p.closed for p in m.udp)


def test_bye_outside_any_dialog_is_481() -> None:
    m = MediaNet()
    tx = m.platform.send(DEV1, port_of(m.sim), "BYE")
    m.net.pump()
    assert m.platform.answers[tx].status == 481


def test_no_ack_drops_the_stream() -> None:
    m = MediaNet()
    m.invite(offer())
    m.reactor.advance(33)
    assert m.sim.devices[0].plays == {} and m.udp[0].closed


def test_simulator_stop_stops_the_streams() -> None:
    m = MediaNet()
    req, resp = m.invite(offer())
    m.ack_and_dialog(req, resp)
    m.sim.stop()
    m.net.pump()
    assert m.sim.devices[0].plays == {} and m.udp[0].closed


# -- the generated clip (gbplatform.simulator.clip) ----------------------------------------------------


def test_invite_is_answered_with_the_generated_h265_clip(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    # The cache test_sim_clip shares: the clip is encoded once per session.
    spec = spec_for("h265", "g711a", seconds=1, width=320, height=180)
    clip = build_clip(spec, tmp_path_factory.getbasetemp() / "sim-clips")
    m = MediaNet(clip=clip)
    req, resp = m.invite(offer())
    assert resp.status == 200
    m.ack_and_dialog(req, resp)
    m.run_frames(30)  # past the 25-frame clip's end: the loop goes on
    packets = [RtpPacket.parse(d) for d, _ in m.udp[0].sent]
    assert {p.ssrc for p in packets} == {int(SSRC)} and max(len(p.payload) for p in packets) <= 1400
    demuxer = PsDemuxer()
    frames = [f for p in packets for f in demuxer.feed(p.payload)] + demuxer.flush()
    video = [f for f in frames if f.codec is Codec.H265]
    audio = [f for f in frames if f.codec is Codec.G711A]
    assert len(video) == len(audio) == sum(p.marker for p in packets) >= 30
    assert [f.pts for f in video if f.keyframe] == [0, 0]
    info = nal.sps_info(Codec.H265, video[0].data)
    assert info is not None and (info.width, info.height) == (320, 180)
    assert demuxer.stats.resyncs == 0


def test_a_clip_that_cannot_be_made_answers_500() -> None:
    m = MediaNet()

    def broken() -> PsClip:
        raise ClipError("PyAV has no libx265 encoder")

    m.sim.media = SimMedia(m.reactor, random.Random(5), clip_loader=broken,
                           listen_udp=m.listen_udp)
    _, resp = m.invite(offer())
    assert resp.status == 500 and m.sim.devices[0].plays == {}
