"""RTSP server (RFC 2326): the sans-IO core, then the Twisted adapter against real frames."""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from media.frame import Codec, Frame
from media.ingest import RtpIngest
from media.packetize import G711Packetizer, H264Packetizer
from media.pipeline import FrameDispatcher, GopCache, StreamTracks
from media.rtp import RtpPacket
from media.rtsp import (
    MAX_HEAD,
    TRANSITIONS,
    Describe,
    InterleavedData,
    Play,
    RtpSender,
    RtspError,
    RtspParseError,
    RtspParser,
    RtspRequest,
    RtspServerConnection,
    SessionExpired,
    SessionState,
    Setup,
    Teardown,
    Transport,
    interleave,
    parse_rtsp_url,
    parse_transport,
    serialize_response,
)
from media.rtsp_server import RtspFactory, RtspProtocol
from tests.media_audio import aac_frames, g711_frames, merge_by_dts
from tests.media_captures import udp_payloads

TOKEN = "s3cret"
CH = "34020000001310000001"
URL = f"rtsp://127.0.0.1:8554/live/{CH}"
AUTHED = f"{URL}?token={TOKEN}"  # players keep the token in every request (issue 8 item 4)


def req(method: str, uri: str = URL, cseq: int = 1, **headers: str) -> bytes:
    lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- parser ---------------------------------------------------------------------------

DESCRIBE = req("DESCRIBE", cseq=2, Accept="application/sdp")
WITH_BODY = b"GET_PARAMETER rtsp://h/live/1 RTSP/1.0\r\nCSeq: 3\r\nContent-Length: 5\r\n\r\nhello"
RTCP = interleave(1, b"\x81\xc9\x00\x01abcd")


def check_messages(items: list[RtspRequest | InterleavedData]) -> None:
    assert [type(i) for i in items] == [RtspRequest, InterleavedData, RtspRequest]
    first, rtcp, second = items
    assert isinstance(first, RtspRequest) and isinstance(second, RtspRequest)
    assert (first.method, first.uri, first.cseq, first.header("accept")) == (
        "DESCRIBE", URL, "2", "application/sdp")
    assert rtcp == InterleavedData(1, b"\x81\xc9\x00\x01abcd")
    assert (second.method, second.body, second.header("content-length")) == ("GET_PARAMETER", b"hello", "5")


def test_parser_whole_input() -> None:
    check_messages(RtspParser().feed(DESCRIBE + RTCP + WITH_BODY))


def test_parser_one_byte_at_a_time() -> None:
    parser = RtspParser()
    items: list[RtspRequest | InterleavedData] = []
    for i, b in enumerate(DESCRIBE + RTCP + WITH_BODY):
        items += parser.feed(bytes((b,)))
        if i < len(DESCRIBE) - 1:
            assert items == []
    check_messages(items)


def test_parser_keeps_trailing_bytes_for_the_next_feed() -> None:
    parser = RtspParser()
    items = parser.feed(DESCRIBE + RTCP + WITH_BODY[:-2])
    assert len(items) == 2
    items += parser.feed(WITH_BODY[-2:] + b"\r\n")  # a stray CRLF between messages is skipped
    check_messages(items)
    assert parser.feed(b"") == []


def test_parser_folds_continuation_lines() -> None:
    [r] = RtspParser().feed(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-A: one\r\n two\r\n\r\n")
    assert isinstance(r, RtspRequest) and r.header("x-a") == "one two"


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"DESCRIBE rtsp://h/ RTSP/1.0 extra\r\n\r\n", 400, "bad request line"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "bad request line"),
        (b"DESCRIBE rtsp://h/ RTSP/2.0\r\n\r\n", 505, "unsupported version"),
        (b"OPTIONS * RTSP/1.0\r\nno colon\r\n\r\n", 400, "bad header line"),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: x\r\n\r\n", 400, "bad Content-Length"),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: 70000\r\n\r\n", 400, "exceeds 65536"),
        (b"OPTIONS * RTSP/1.0\r\nX: \xff\r\n\r\n", 400, "not UTF-8"),
        (b"OPTIONS * RTSP/1.0\r\nX: " + b"a" * MAX_HEAD, 400, "longer than 8192"),
    ],
)
def test_parser_errors(data: bytes, status: int, message: str) -> None:
    parser = RtspParser()
    with pytest.raises(RtspParseError, match=message) as e:
        parser.feed(data)
    assert e.value.status == status
    with pytest.raises(RtspParseError, match=message):  # framing is lost for good
        parser.feed(b"OPTIONS * RTSP/1.0\r\n\r\n")


def test_serialize_response_and_interleave() -> None:
    assert serialize_response(200, [("CSeq", "1")], b"v=0\r\n") == (
        b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nv=0\r\n")
    assert interleave(0, b"\x80" * 300) == b"$\x00\x01\x2c" + b"\x80" * 300
    with pytest.raises(ValueError, match="does not fit"):
        interleave(0, bytes(70000))


@pytest.mark.parametrize(
    ("uri", "channel", "token", "track"),
    [
        (URL, CH, None, None),
        (f"{URL}?token=abc", CH, "abc", None),
        (f"{URL}/trackID=0", CH, None, 0),
        (f"{URL}?token=abc/trackID=0", CH, "abc", 0),  # relative control appended to the query
        (f"/live/{CH}", CH, None, None),
    ],
)
def test_parse_rtsp_url(uri: str, channel: str, token: str | None, track: int | None) -> None:
    url = parse_rtsp_url(uri)
    assert (url.channel_id, url.token, url.track) == (channel, token, track)


@pytest.mark.parametrize("uri", ["rtsp://h/", "rtsp://h/record/1", "rtsp://h/live/a/b", "rtsp://h/live/%00"])
def test_parse_rtsp_url_rejects_other_paths(uri: str) -> None:
    with pytest.raises(RtspError) as e:
        parse_rtsp_url(uri)
    assert e.value.status == 404


def test_parse_transport() -> None:
    tcp = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1")
    assert tcp == Transport(tcp=True, interleaved=(0, 1))
    assert tcp.header() == "RTP/AVP/TCP;unicast;interleaved=0-1"
    udp = parse_transport("RTP/AVP/TCP;multicast, RTP/AVP;unicast;client_port=5000-5001;mode=play")
    assert udp == Transport(tcp=False, client_port=(5000, 5001))
    answer = Transport(tcp=False, client_port=(5000, 5001), server_port=(7000, 7001), ssrc=0xAB)
    assert answer.header() == "RTP/AVP;unicast;client_port=5000-5001;server_port=7000-7001;ssrc=000000AB"
    for bad in ("RTP/AVP;multicast", "RAW/RAW/UDP;unicast", "RTP/AVP;unicast", "RTP/AVP;client_port=x"):
        with pytest.raises(RtspError) as e:
            parse_transport(bad)
        assert e.value.status == 461


# -- connection core ------------------------------------------------------------------------


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split server output into (status, headers, body); interleaved packets are skipped."""
    out = []
    while data:
        if data[:1] == b"$":
            data = data[4 + int.from_bytes(data[2:4], "big"):]
            continue
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        n = int(headers.get("Content-Length", "0"))
        out.append((int(lines[0].split(" ")[1]), headers, rest[:n]))
        data = rest[n:]
    return out


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """The interleaved (channel, packet) frames in server output."""
    out = []
    while data:
        if data[:1] == b"$":
            n = int.from_bytes(data[2:4], "big")
            out.append((data[1], data[4 : 4 + n]))
            data = data[4 + n:]
            continue
        head, _, rest = data.partition(b"\r\n\r\n")
        n = next((int(line.split(b": ")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-Length")), 0)
        data = rest[n:]
    return out


def conn() -> RtspServerConnection:
    return RtspServerConnection(token=TOKEN, rng=random.Random(1))


def test_options_needs_no_token_and_lists_methods() -> None:
    c = conn()
    assert c.receive_data(req("OPTIONS", "*"), 0.0) == []
    [(status, headers, _)] = responses(c.data_to_send())
    assert status == 200 and headers["CSeq"] == "1"
    assert headers["Public"] == "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"


@pytest.mark.parametrize("auth", [None, "Basic " + base64.b64encode(b"u:wrong").decode(), "Bearer s3cret"])
def test_describe_without_the_token_is_401(auth: str | None) -> None:
    c = conn()
    headers = {"Authorization": auth} if auth else {}
    assert c.receive_data(req("DESCRIBE", **headers), 0.0) == []
    [(status, h, _)] = responses(c.data_to_send())
    assert status == 401 and h["WWW-Authenticate"] == 'Basic realm="gbplatform"'


def test_an_empty_configured_token_never_matches() -> None:
    c = RtspServerConnection(token="", rng=random.Random(1))
    c.receive_data(req("DESCRIBE", f"{URL}?token="), 0.0)
    assert responses(c.data_to_send())[0][0] == 401


@pytest.mark.parametrize("how", ["query", "basic"])
def test_token_in_query_or_basic_auth_is_checked_on_every_request(how: str) -> None:
    c = conn()
    if how == "query":
        events = c.receive_data(req("DESCRIBE", f"{URL}?token={TOKEN}"), 0.0)
    else:
        auth = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        events = c.receive_data(req("DESCRIBE", Authorization=auth), 0.0)
    assert [type(e) for e in events] == [Describe] and events[0].channel_id == CH  # type: ignore[union-attr]
    # Issue 8 item 4: one good request no longer trusts the connection.
    assert c.receive_data(req("SETUP", f"{URL}/trackID=0", 2, Transport="RTP/AVP/TCP;interleaved=0-1"), 1.0) == []
    assert responses(c.data_to_send())[-1][0] == 401
    # Players keep the query in the control URLs they build (URL?token=t/trackID=0) or resend Basic.
    setup_url = f"{URL}?token={TOKEN}/trackID=0" if how == "query" else f"{URL}/trackID=0"
    headers = {} if how == "query" else {"Authorization": auth}
    [setup] = c.receive_data(req("SETUP", setup_url, 3, Transport="RTP/AVP/TCP;interleaved=0-1", **headers), 1.0)
    assert isinstance(setup, Setup) and setup.transport.tcp


def playback_conn(valid: set[tuple[str, str, str]]) -> RtspServerConnection:
    return RtspServerConnection(token=TOKEN, rng=random.Random(1), playback=lambda t, app, ch: (t, app, ch) in valid)


def test_a_playback_token_opens_its_channel_only() -> None:
    c = playback_conn({("p", "live", CH)})
    [describe] = c.receive_data(req("DESCRIBE", f"{URL}?token=p"), 0.0)
    assert isinstance(describe, Describe)
    for uri in (f"rtsp://h/live/{CH[:-1]}2?token=p", f"rtsp://h/vod/{CH}?start=1&end=2&token=p", f"{URL}?token=q"):
        assert c.receive_data(req("DESCRIBE", uri), 0.0) == [], uri
        assert responses(c.data_to_send())[-1][0] == 401, uri
    auth = "Basic " + base64.b64encode(b"viewer:p").decode()
    [describe] = c.receive_data(req("DESCRIBE", URL, Authorization=auth), 0.0)
    assert isinstance(describe, Describe)


def test_a_playback_token_is_checked_on_every_request_of_a_session() -> None:
    valid = {("p", "live", CH)}
    c = playback_conn(valid)
    [setup] = c.receive_data(req("SETUP", f"{URL}?token=p/trackID=0", Transport="RTP/AVP/TCP;interleaved=0-1"), 0.0)
    sid = c.accept_setup(setup, Transport(tcp=True), 0.0).id
    c.data_to_send()
    valid.clear()  # expired, say
    assert c.receive_data(req("PLAY", f"{URL}?token=p", 2, Session=sid), 1.0) == []
    assert responses(c.data_to_send())[-1][0] == 401
    # The API token still works for API clients.
    [play] = c.receive_data(req("PLAY", f"{URL}?token={TOKEN}", 3, Session=sid), 1.0)
    assert isinstance(play, Play)


def test_malformed_basic_credentials_are_400() -> None:
    c = conn()
    c.receive_data(req("DESCRIBE", Authorization="Basic !!!"), 0.0)
    assert responses(c.data_to_send())[0][0] == 400


def test_unknown_method_is_501_and_bad_input_closes() -> None:
    c = conn()
    c.receive_data(req("RECORD", f"{URL}?token={TOKEN}"), 0.0)
    assert responses(c.data_to_send())[0][0] == 501
    assert not c.closing
    c.receive_data(b"garbage\r\n\r\n", 0.0)
    assert c.data_to_send().startswith(b"RTSP/1.0 400 Bad Request\r\n") and c.closing
    assert c.receive_data(req("OPTIONS"), 0.0) == []


def test_unknown_path_is_404() -> None:
    c = conn()
    c.receive_data(req("DESCRIBE", f"rtsp://h/record/x?token={TOKEN}"), 0.0)
    assert responses(c.data_to_send())[0][0] == 404


@pytest.mark.parametrize("uri", [
    "rtsp://[::1/vod/x",  # issue 8 item 7: urlsplit's "Invalid IPv6 URL"
    "rtsp://h]/live/x",
    f"rtsp://h/live/{CH}/trackID=" + "9" * 5000,  # int()'s digit limit
])
def test_unparseable_request_url_is_answered_400(uri: str) -> None:
    with pytest.raises(RtspError) as e:
        parse_rtsp_url(uri)
    assert e.value.status == 400
    c = conn()
    assert c.receive_data(f"DESCRIBE {uri} RTSP/1.0\r\nCSeq: 7\r\n\r\n".encode(), 0.0) == []
    [(status, headers, _)] = responses(c.data_to_send())
    assert (status, headers["CSeq"]) == (400, "7")
    # A bad URL is one bad request, not a broken stream: the connection goes on.
    assert not c.closing
    c.receive_data(req("OPTIONS", "*", 8), 0.0)
    assert responses(c.data_to_send())[0][:1] == (200,)


def setup_session(c: RtspServerConnection, now: float = 0.0) -> str:
    [event] = c.receive_data(req("SETUP", f"{URL}/trackID=0?token={TOKEN}", Transport="RTP/AVP/TCP;interleaved=0-1"),
                             now)
    assert isinstance(event, Setup)
    session = c.accept_setup(event, Transport(tcp=True), now)
    [(status, headers, _)] = responses(c.data_to_send())
    assert status == 200 and headers["Session"] == f"{session.id};timeout=60"
    assert headers["Transport"] == "RTP/AVP/TCP;unicast;interleaved=0-1"
    return session.id


def test_session_ids_come_from_the_injected_rng() -> None:
    assert setup_session(conn()) == setup_session(conn()) == f"{random.Random(1).getrandbits(64):016X}"


def test_play_teardown_and_session_checks() -> None:
    c = conn()
    c.receive_data(req("PLAY", f"{URL}?token={TOKEN}"), 0.0)
    assert responses(c.data_to_send())[0][0] == 455  # Init: no PLAY before SETUP
    sid = setup_session(c)
    c.receive_data(req("PLAY", AUTHED, Session="0000"), 1.0)
    assert responses(c.data_to_send())[0][0] == 454
    c.receive_data(req("PLAY", f"rtsp://h/live/other?token={TOKEN}", Session=sid), 1.0)
    assert responses(c.data_to_send())[0][0] == 459
    [play] = c.receive_data(req("PLAY", AUTHED, Session=sid), 1.0)
    assert isinstance(play, Play)
    c.accept_play(play, f"url={URL};seq=1;rtptime=2")
    [(status, headers, _)] = responses(c.data_to_send())
    assert status == 200 and headers["RTP-Info"] == f"url={URL};seq=1;rtptime=2"
    assert play.session.state is SessionState.PLAYING
    c.receive_data(req("GET_PARAMETER", AUTHED, Session=sid), 2.0)
    assert responses(c.data_to_send())[0][0] == 200
    [down] = c.receive_data(req("TEARDOWN", AUTHED, Session=sid), 3.0)
    assert isinstance(down, Teardown) and c.session is None
    [(status, headers, _)] = responses(c.data_to_send())
    assert status == 200 and "Session" not in headers


STATES = list(SessionState)
METHODS = ["OPTIONS", "DESCRIBE", "GET_PARAMETER", "SETUP", "PLAY", "TEARDOWN"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("method", METHODS)
def test_state_table(state: SessionState, method: str) -> None:
    """Every (state, method) pair: table entries proceed, missing ones are 455 (RFC 2326 A.1)."""
    c = conn()
    headers: dict[str, str] = {"Transport": "RTP/AVP/TCP;interleaved=0-1"}
    if state is not SessionState.INIT:
        sid = setup_session(c)
        assert c.session is not None
        c.session.state = state
        headers["Session"] = sid
    events = c.receive_data(req(method, f"{URL}?token={TOKEN}", **headers), 1.0)
    out = responses(c.data_to_send())
    stateless = method in ("OPTIONS", "DESCRIBE", "GET_PARAMETER")
    if not stateless and (state, method) not in TRANSITIONS:
        assert out[0][0] == 455 and events == []
        return
    expected = {"DESCRIBE": Describe, "SETUP": Setup, "PLAY": Play}.get(method)
    if method == "TEARDOWN" and state is not SessionState.INIT:
        expected = Teardown
    assert [type(e) for e in events] == ([expected] if expected else [])
    if expected is None:
        assert out[0][0] == 200


def test_session_times_out_without_requests() -> None:
    c = conn()
    setup_session(c, now=10.0)
    assert c.next_timer() == 70.0
    c.receive_data(req("GET_PARAMETER"), 50.0)  # keepalive pushes the deadline
    c.data_to_send()
    assert c.next_timer() == 110.0 and c.handle_timer(109.9) == []
    [expired] = c.handle_timer(110.0)
    assert isinstance(expired, SessionExpired) and c.session is None and c.next_timer() is None


# -- real frames -------------------------------------------------------------------------------


class Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[Frame]:
    """The 1080p H.264 clip of ZLMediaKit's PS-over-RTP capture, as the ingest gives it."""
    sink = Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    now = 0.0
    for _, payload in udp_payloads(shared_dir / "captures" / "zlm_ps_rtp_udp_1080p.pcap"):
        ingest.datagram(payload, now)
        now += 0.0025
    ingest.close(now)
    first_key = next(i for i, f in enumerate(sink.frames) if f.keyframe)
    return sink.frames[first_key:]


def test_sender_drops_to_the_next_keyframe_past_the_backlog(frames: list[Frame]) -> None:
    sent: list[bytes] = []
    sender = RtpSender(H264Packetizer(1, random.Random(2)), sent.append, max_backlog=200_000)
    sender.input_frame(frames[0])
    key_packets = len(sent)
    assert key_packets > 1 and sender.frames_sent == 1
    sender.pause()
    for f in frames[1:60]:
        sender.input_frame(f)
    assert sender.dropping and sender.backlog > 200_000
    dropped = sender.frames_dropped
    sender.resume()
    sender.input_frame(frames[60])  # not a keyframe: still dropping
    assert sender.frames_dropped == dropped + 1
    key = next(f for f in frames[1:] if f.keyframe)
    before = len(sent)
    sender.input_frame(key)
    assert not sender.dropping and len(sent) > before
    types = [RtpPacket.parse(p).payload[0] & 0x1F for p in sent[before:]]
    assert 7 in types and 8 in types  # the keyframe carries its SPS/PPS


def test_sender_skips_other_codecs(frames: list[Frame]) -> None:
    sent: list[bytes] = []
    sender = RtpSender(H264Packetizer(1, random.Random(2)), sent.append)
    sender.input_frame(Frame(Codec.G711A, b"\xd5" * 160, 0, 0, False, 0xC0))
    assert sent == [] and sender.frames_sent == 0


# -- Twisted adapter -------------------------------------------------------------------------------


class FakeStream:
    def __init__(self, probe_ticks: int = 0) -> None:
        self.dispatcher = FrameDispatcher()
        # Video-only tests: no audio probe, the tracks are ready at the first keyframe.
        self.dispatcher.tracks = StreamTracks(probe_ticks=probe_ticks)
        self.on_closed: list[Any] = []

    def close(self) -> None:
        callbacks, self.on_closed = self.on_closed, []  # as LiveStreams._close does
        for cb in callbacks:
            cb(self)


class FakeLive:
    def __init__(self) -> None:
        self.streams: dict[str, FakeStream] = {}
        self.opened: list[str] = []
        self.attached: list[Any] = []
        self.fail: RtspError | None = None

    async def open(self, channel_id: str) -> FakeStream:
        self.opened.append(channel_id)
        if self.fail is not None:
            raise self.fail
        if channel_id not in self.streams:
            raise RtspError(404, f"channel {channel_id} not found")
        return self.streams[channel_id]

    def attach(self, stream: Any, sink: Any) -> None:
        self.attached.append(sink)
        stream.dispatcher.add_sink(sink)

    def detach(self, stream: Any, sink: Any) -> None:
        self.attached.remove(sink)
        stream.dispatcher.remove_sink(sink)


class FakeUdpTransport:
    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


class FakePort:
    def __init__(self, port: int) -> None:
        self.port = port
        self.listening = True

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("UDP", "127.0.0.1", self.port)

    def stopListening(self) -> None:  # noqa: N802
        self.listening = False


class Env:
    def __init__(self) -> None:
        self.clock = Clock()
        self.live = FakeLive()
        self.stream = FakeStream()
        self.live.streams[CH] = self.stream
        self.udp: list[tuple[FakePort, Any, FakeUdpTransport]] = []
        self.factory = RtspFactory(self.live, reactor=self.clock, token=TOKEN, rng=random.Random(7),
                                   listen_udp=self.listen_udp)
        self.proto = self.factory.buildProtocol(IPv4Address("TCP", "10.0.0.9", 40000))
        self.tr = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 40000),
                                  hostAddress=IPv4Address("TCP", "10.0.0.1", 8554))
        self.proto.makeConnection(self.tr)
        self.cseq = 0

    def listen_udp(self, port: int, proto: Any) -> FakePort:
        fake = FakePort(7000 + len(self.udp))
        t = FakeUdpTransport()
        proto.makeConnection(t)
        self.udp.append((fake, proto, t))
        return fake

    def send(self, method: str, uri: str = f"{URL}?token={TOKEN}", **headers: str) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        self.tr.clear()
        self.proto.dataReceived(req(method, uri, self.cseq, **headers))
        out = responses(self.tr.value())
        assert out, f"no answer to {method}"
        assert out[0][1]["CSeq"] == str(self.cseq)
        return out[0]


@pytest.fixture
def env() -> Env:
    return Env()


def feed(env: Env, frames: list[Frame]) -> None:
    for f in frames:
        env.stream.dispatcher.input_frame(f)


def test_describe_waits_for_a_keyframe_and_answers_sdp(env: Env, frames: list[Frame]) -> None:
    env.tr.clear()
    env.proto.dataReceived(req("DESCRIBE", f"{URL}?token={TOKEN}"))
    assert env.tr.value() == b""  # no keyframe yet
    env.clock.advance(0.1)
    feed(env, frames[:3])
    env.clock.advance(0.1)
    [(status, headers, body)] = responses(env.tr.value())
    assert status == 200 and headers["Content-Type"] == "application/sdp"
    sdp = body.decode()
    lines = sdp.split("\r\n")
    assert lines[0] == "v=0" and lines[1].startswith("o=- ") and lines[1].endswith(" IN IP4 10.0.0.1")
    for line in ("s=gbplatform live", "c=IN IP4 0.0.0.0", "t=0 0", "a=control:*", "m=video 0 RTP/AVP 96",
                 "a=rtpmap:96 H264/90000", "a=control:trackID=0"):
        assert line in lines
    assert "a=fmtp:96 packetization-mode=1;profile-level-id=" in sdp and "sprop-parameter-sets=" in sdp


def test_describe_gives_up_without_a_keyframe(env: Env) -> None:
    env.tr.clear()
    env.proto.dataReceived(req("DESCRIBE", f"{URL}?token={TOKEN}"))
    env.clock.pump([0.1] * 60)
    assert responses(env.tr.value())[0][0] == 503


def test_unknown_channel_is_404_and_device_errors_503(env: Env) -> None:
    assert env.send("DESCRIBE", f"rtsp://h/live/99?token={TOKEN}")[0] == 404
    env.live.fail = RtspError(503, "device offline")
    assert env.send("DESCRIBE")[0] == 503


def test_no_token_is_401(env: Env) -> None:
    status, headers, _ = env.send("DESCRIBE", URL)
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="gbplatform"'
    assert env.live.opened == []


def test_tcp_play_sends_the_gop_then_live_frames_interleaved(env: Env, frames: list[Frame]) -> None:
    feed(env, frames[:10])
    assert env.send("DESCRIBE")[0] == 200
    status, headers, _ = env.send("SETUP", f"{URL}?token={TOKEN}/trackID=0",
                                  Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert status == 200
    assert headers["Transport"].startswith("RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=")
    sid = headers["Session"].split(";")[0]
    assert headers["Session"] == f"{sid};timeout=60"
    env.tr.clear()
    env.proto.dataReceived(req("PLAY", AUTHED, 9, Session=sid))
    out = env.tr.value()
    assert out.startswith(b"RTSP/1.0 200 OK\r\n")  # the answer precedes the first packet
    [(status, headers, _)] = responses(out)
    info = dict(kv.split("=", 1) for kv in headers["RTP-Info"].split(";"))
    replay = packets(out)
    assert {ch for ch, _ in replay} == {0}
    first = RtpPacket.parse(replay[0][1])
    assert (first.sequence, first.timestamp) == (int(info["seq"]), int(info["rtptime"]))
    types = [RtpPacket.parse(p).payload[0] & 0x1F for _, p in replay[:6]]
    assert 7 in types and 8 in types  # the GOP cache starts on the keyframe with its SPS/PPS
    stamps = [RtpPacket.parse(p).timestamp for _, p in replay]
    assert len(set(stamps)) == 10  # the ten cached frames
    seqs = [RtpPacket.parse(p).sequence for _, p in replay]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    env.tr.clear()
    feed(env, frames[10:12])
    live = packets(env.tr.value())
    assert RtpPacket.parse(live[0][1]).sequence == (seqs[-1] + 1) & 0xFFFF
    assert len({RtpPacket.parse(p).timestamp for _, p in live}) == 2

    status, headers, _ = env.send("TEARDOWN", AUTHED, Session=sid)
    assert status == 200 and env.live.attached == [] and env.stream.dispatcher.sinks == ()
    env.tr.clear()
    feed(env, frames[12:14])
    assert env.tr.value() == b""
    assert env.tr.producer is None


def test_udp_play_sends_from_a_server_socket_to_the_client_port(env: Env, frames: list[Frame]) -> None:
    feed(env, frames[:5])
    status, headers, _ = env.send("SETUP", f"{URL}/trackID=0?token={TOKEN}",
                                  Transport="RTP/AVP;unicast;client_port=5000-5001")
    assert status == 200
    assert headers["Transport"].startswith("RTP/AVP;unicast;client_port=5000-5001;server_port=7000-7001;ssrc=")
    sid = headers["Session"].split(";")[0]
    assert env.send("PLAY", AUTHED, Session=sid)[0] == 200
    (port, _, udp), (rtcp_port, _, rtcp) = env.udp
    assert udp.written and {addr for _, addr in udp.written} == {("10.0.0.9", 5000)}
    assert rtcp.written == []
    assert len({RtpPacket.parse(d).timestamp for d, _ in udp.written}) == 5
    assert packets(env.tr.value()) == []  # nothing interleaved
    env.proto.connectionLost(Failure(ConnectionError("gone")))  # connection loss = teardown
    assert env.live.attached == [] and not port.listening and not rtcp_port.listening


def test_backpressure_pauses_the_sender(env: Env, frames: list[Frame]) -> None:
    feed(env, frames[:1])
    _, headers, _ = env.send("SETUP", Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    env.send("PLAY", AUTHED, Session=headers["Session"].split(";")[0])
    assert env.tr.producer is env.proto and env.tr.streaming
    [sender] = env.live.attached
    env.proto.pauseProducing()
    assert sender.paused
    env.proto.resumeProducing()
    assert not sender.paused


def test_session_timeout_tears_down_and_closes(env: Env, frames: list[Frame]) -> None:
    feed(env, frames[:1])
    _, headers, _ = env.send("SETUP", Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    sid = headers["Session"].split(";")[0]
    env.send("PLAY", AUTHED, Session=sid)
    env.clock.advance(59)
    env.send("GET_PARAMETER", AUTHED, Session=sid)
    env.clock.advance(59)
    assert env.live.attached and not env.tr.disconnecting
    env.clock.advance(1)
    assert env.live.attached == [] and env.tr.disconnecting


def test_stream_end_closes_the_viewer(env: Env, frames: list[Frame]) -> None:
    feed(env, frames[:1])
    _, headers, _ = env.send("SETUP", Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    env.send("PLAY", AUTHED, Session=headers["Session"].split(";")[0])
    env.stream.close()
    assert env.live.attached == [] and env.tr.disconnecting


def test_pipelined_requests_are_answered_in_order(env: Env, frames: list[Frame]) -> None:
    env.tr.clear()
    env.proto.dataReceived(req("DESCRIBE", f"{URL}?token={TOKEN}", 1) + req("OPTIONS", "*", 2)
                           + req("SETUP", AUTHED, 3, Transport="RTP/AVP/TCP;interleaved=0-1"))
    # OPTIONS is answered by the core at once; DESCRIBE and SETUP wait for the keyframe, in order.
    feed(env, frames[:1])
    env.clock.advance(0.1)
    assert [h["CSeq"] for _, h, _ in responses(env.tr.value())] == ["2", "1", "3"]
    assert isinstance(env.proto, RtspProtocol)


# -- audio tracks -----------------------------------------------------------------------------

AUDIO_URL = f"{URL}?token={TOKEN}/trackID=1"  # as ffmpeg builds it from the SDP's control


def with_audio(frames: list[Frame], codec: Codec) -> list[Frame]:
    seconds = (frames[-1].pts - frames[0].pts) / 90_000
    sound = aac_frames(seconds, frames[0].pts) if codec is Codec.AAC else g711_frames(codec, seconds, frames[0].pts)
    return merge_by_dts(frames, sound)


def test_parse_transport_default_channels_follow_the_track() -> None:
    assert parse_transport("RTP/AVP/TCP;unicast", (2, 3)).interleaved == (2, 3)
    assert parse_transport("RTP/AVP/TCP;unicast;interleaved=4-5", (2, 3)).interleaved == (4, 5)


def test_core_routes_setup_by_track() -> None:
    c = conn()
    c.receive_data(req("OPTIONS", f"{URL}?token={TOKEN}"), 0.0)  # not authorizing: OPTIONS needs no token
    events = c.receive_data(req("SETUP", AUDIO_URL, 2, Transport="RTP/AVP/TCP;unicast"), 0.0)
    [setup] = events
    assert isinstance(setup, Setup) and setup.track == 1 and setup.transport.interleaved == (2, 3)
    c.receive_data(req("SETUP", f"{URL}?token={TOKEN}/trackID=2", 3, Transport="RTP/AVP/TCP"), 0.0)
    assert responses(c.data_to_send())[-1][0] == 404


@pytest.mark.parametrize(("codec", "media"), [
    (Codec.G711A, ["m=audio 0 RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=control:trackID=1"]),
    (Codec.G711U, ["m=audio 0 RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "a=control:trackID=1"]),
    (Codec.AAC, ["m=audio 0 RTP/AVP 97", "a=rtpmap:97 mpeg4-generic/44100/2",
                 "a=fmtp:97 streamtype=5;profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
                 "indexdeltalength=3;config=1210", "a=control:trackID=1"]),
])
def test_describe_has_an_audio_section_after_the_video(frames: list[Frame], codec: Codec, media: list[str]) -> None:
    env = Env()
    feed(env, with_audio(frames[:10], codec))
    status, _, body = env.send("DESCRIBE")
    lines = body.decode().split("\r\n")
    assert status == 200
    video_at = lines.index("m=video 0 RTP/AVP 96")
    audio_at = lines.index(media[0])
    assert video_at < audio_at and lines[audio_at : audio_at + len(media)] == media
    assert lines.count("a=control:trackID=0") == 1


def test_describe_waits_for_the_audio_probe(frames: list[Frame]) -> None:
    env = Env()
    env.stream.dispatcher.tracks = StreamTracks()  # the real probe: 0.5 s of video
    mixed = with_audio(frames[:20], Codec.G711A)
    video_only = [f for f in mixed if f.codec.is_video]
    env.tr.clear()
    env.proto.dataReceived(req("DESCRIBE", f"{URL}?token={TOKEN}"))
    feed(env, video_only[:3])  # a keyframe, but maybe audio is still coming
    env.clock.advance(0.1)
    assert env.tr.value() == b""
    feed(env, [next(f for f in mixed if not f.codec.is_video)])
    env.clock.advance(0.1)
    [(status, _, body)] = responses(env.tr.value())
    assert status == 200 and b"m=audio 0 RTP/AVP 8" in body

    quiet = Env()
    quiet.stream.dispatcher.tracks = StreamTracks()
    quiet.tr.clear()
    quiet.proto.dataReceived(req("DESCRIBE", f"{URL}?token={TOKEN}"))
    feed(quiet, video_only[:13])  # 0.48 s after the keyframe: not yet
    quiet.clock.advance(0.1)
    assert quiet.tr.value() == b""
    feed(quiet, video_only[13:14])  # 0.52 s: video-only
    quiet.clock.advance(0.1)
    [(status, _, body)] = responses(quiet.tr.value())
    assert status == 200 and b"m=audio" not in body


def test_tcp_play_sends_both_tracks_on_their_channels_with_rtp_info(frames: list[Frame]) -> None:
    env = Env()
    mixed = with_audio(frames[:10], Codec.G711A)
    feed(env, mixed)
    video_url = f"{URL}?token={TOKEN}/trackID=0"
    status, headers, _ = env.send("SETUP", video_url, Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert status == 200
    sid = headers["Session"].split(";")[0]
    status, headers, _ = env.send("SETUP", AUDIO_URL, Transport="RTP/AVP/TCP;unicast", Session=sid)
    assert status == 200 and headers["Transport"].startswith("RTP/AVP/TCP;unicast;interleaved=2-3;ssrc=")
    env.tr.clear()
    env.proto.dataReceived(req("PLAY", AUTHED, 9, Session=sid))
    out = env.tr.value()
    [(status, headers, _)] = responses(out)
    infos = [dict(kv.split("=", 1) for kv in part.split(";")) for part in headers["RTP-Info"].split(",")]
    assert [i["url"] for i in infos] == [video_url, AUDIO_URL]
    sent = packets(out)
    by_channel = {ch: [RtpPacket.parse(p) for c, p in sent if c == ch] for ch in (0, 2)}
    assert {ch for ch, _ in sent} == {0, 2}
    video_rtp, audio_rtp = by_channel[0], by_channel[2]
    assert {p.payload_type for p in video_rtp} == {96} and {p.payload_type for p in audio_rtp} == {8}
    assert video_rtp[0].ssrc != audio_rtp[0].ssrc
    for info, rtp in ((infos[0], video_rtp), (infos[1], audio_rtp)):
        assert rtp[0].sequence == int(info["seq"])
    # rtptime names the same instant (the keyframe's PTS) on both clocks: A/V stay in sync.
    audio_frames = [f for f in mixed if f.codec is Codec.G711A]
    assert video_rtp[0].timestamp == int(infos[0]["rtptime"])
    offset = (audio_frames[0].pts - mixed[0].pts) * 8000 // 90_000
    assert (audio_rtp[0].timestamp - int(infos[1]["rtptime"])) & 0xFFFFFFFF == offset & 0xFFFFFFFF
    assert b"".join(bytes(p.payload) for p in audio_rtp) == b"".join(f.data for f in audio_frames)

    env.tr.clear()
    feed(env, with_audio(frames[10:12], Codec.G711A))  # live frames follow on both channels
    assert {ch for ch, _ in packets(env.tr.value())} == {0, 2}
    assert env.send("TEARDOWN", AUTHED, Session=sid)[0] == 200
    assert env.stream.dispatcher.sinks == ()


def test_udp_play_sends_each_track_to_its_client_ports(frames: list[Frame]) -> None:
    env = Env()
    feed(env, with_audio(frames[:5], Codec.AAC))
    _, headers, _ = env.send("SETUP", f"{URL}?token={TOKEN}/trackID=0", Transport="RTP/AVP;unicast;client_port=5000-5001")
    sid = headers["Session"].split(";")[0]
    status, headers, _ = env.send("SETUP", AUDIO_URL, Transport="RTP/AVP;unicast;client_port=5002-5003", Session=sid)
    assert status == 200
    assert headers["Transport"].startswith("RTP/AVP;unicast;client_port=5002-5003;server_port=7002-7003;ssrc=")
    assert env.send("PLAY", AUTHED, Session=sid)[0] == 200
    (vport, _, vudp), _, (aport, _, audp), _ = env.udp
    assert {addr for _, addr in vudp.written} == {("10.0.0.9", 5000)}
    assert {addr for _, addr in audp.written} == {("10.0.0.9", 5002)}
    assert {RtpPacket.parse(d).payload_type for d, _ in audp.written} == {97}
    assert all(RtpPacket.parse(d).payload[:2] == b"\x00\x10" for d, _ in audp.written)
    env.proto.connectionLost(Failure(ConnectionError("gone")))
    assert all(not port.listening for port, _, _ in env.udp)


def test_audio_setup_without_audio_or_on_taken_channels_fails(env: Env, frames: list[Frame]) -> None:
    feed(env, frames[:5])
    assert env.send("SETUP", AUDIO_URL, Transport="RTP/AVP/TCP;unicast")[0] == 404
    with_sound = Env()
    feed(with_sound, with_audio(frames[:5], Codec.G711U))
    _, headers, _ = with_sound.send("SETUP", Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    sid = headers["Session"].split(";")[0]
    status, _, _ = with_sound.send("SETUP", AUDIO_URL, Transport="RTP/AVP/TCP;unicast;interleaved=1-2", Session=sid)
    assert status == 461


def test_audio_only_setup_plays_audio_only(frames: list[Frame]) -> None:
    env = Env()
    feed(env, with_audio(frames[:5], Codec.G711A))
    _, headers, _ = env.send("SETUP", AUDIO_URL, Transport="RTP/AVP/TCP;unicast")
    env.tr.clear()
    env.proto.dataReceived(req("PLAY", AUTHED, 9, Session=headers["Session"].split(";")[0]))
    assert {ch for ch, _ in packets(env.tr.value())} == {2}


def test_sender_drops_audio_with_the_video_until_a_keyframe(frames: list[Frame]) -> None:
    video_out: list[bytes] = []
    audio_out: list[bytes] = []
    sender = RtpSender(H264Packetizer(1, random.Random(2)), video_out.append, max_backlog=1)
    sender.add_track(G711Packetizer(2, random.Random(3), Codec.G711A), audio_out.append)
    block = Frame(Codec.G711A, b"\xd5" * 320, 0, 0, True, 0xC0)
    sender.input_frame(block)
    assert len(audio_out) == 1
    sender.input_frame(frames[0])  # the video starts on its keyframe
    sender.pause()
    sender.input_frame(frames[1])  # over the 1-byte backlog: dropping starts
    assert sender.dropping
    sender.resume()
    sender.input_frame(block)  # audio is a "keyframe" for the demuxer, but not a place to resume
    assert len(audio_out) == 1 and sender.dropping
    sender.input_frame(frames[0])
    sender.input_frame(block)
    assert not sender.dropping and len(audio_out) == 2


def test_sender_starts_the_video_on_a_keyframe_and_the_audio_at_once(frames: list[Frame]) -> None:
    video_out: list[bytes] = []
    audio_out: list[bytes] = []
    sender = RtpSender(H264Packetizer(1, random.Random(2)), video_out.append)
    sender.add_track(G711Packetizer(2, random.Random(3), Codec.G711A), audio_out.append)
    sender.input_frame(frames[1])  # joined mid-GOP (no GOP cache): undecodable, dropped
    sender.input_frame(Frame(Codec.G711A, b"\xd5" * 320, 0, 0, True, 0xC0))
    assert video_out == [] and len(audio_out) == 1
    assert (sender.frames_waiting, sender.frames_sent, sender.video_started) == (1, 1, False)
    sender.input_frame(frames[0])
    assert sender.video_started and 7 in [RtpPacket.parse(p).payload[0] & 0x1F for p in video_out]
    sender.input_frame(frames[1])  # from then on every frame goes
    assert sender.frames_waiting == 1 and sender.frames_sent == 3


def test_play_without_a_gop_cache_starts_at_the_next_keyframe(env: Env, frames: list[Frame]) -> None:
    env.stream.dispatcher.cache = GopCache(max_bytes=0)
    next_key = next(i for i, f in enumerate(frames) if i and f.keyframe)
    feed(env, frames[:10])
    status, headers, _ = env.send("SETUP", f"{URL}?token={TOKEN}/trackID=0",
                                  Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
    assert status == 200
    env.tr.clear()
    env.proto.dataReceived(req("PLAY", AUTHED, 9, Session=headers["Session"].split(";")[0]))
    [(status, headers, _)] = responses(env.tr.value())
    info = dict(kv.split("=", 1) for kv in headers["RTP-Info"].split(";"))
    assert status == 200 and packets(env.tr.value()) == []  # nothing cached to replay
    viewer = env.proto.viewer
    assert viewer is not None and viewer.sender is not None
    # rtptime: the latest keyframe's instant, the closest one known at PLAY.
    packetizer = viewer.tracks[0].packetizer
    assert int(info["rtptime"]) == packetizer.rtp_timestamp(frames[0].pts)
    env.tr.clear()
    feed(env, frames[10:next_key])
    assert env.tr.value() == b"" and viewer.sender.frames_waiting == next_key - 10
    feed(env, frames[next_key:next_key + 2])
    sent = [RtpPacket.parse(p) for _, p in packets(env.tr.value())]
    assert sent[0].sequence == int(info["seq"])
    assert 7 in [p.payload[0] & 0x1F for p in sent[:6]]  # the keyframe with its SPS/PPS comes first
    assert {p.timestamp for p in sent} == {packetizer.rtp_timestamp(f.pts) for f in frames[next_key:next_key + 2]}
