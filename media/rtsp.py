"""RTSP 1.0 server core for live streams and recordings (RFC 2326), sans-IO.

Theory of operation: one ``RtspServerConnection`` per TCP control connection.
The adapter feeds it bytes and ``now``; it parses requests (``RtspParser``),
authenticates them, checks them against the session state table, answers
what it can on its own (OPTIONS, GET_PARAMETER, TEARDOWN, every error) and
returns events for what needs I/O: ``Describe`` (start the stream, build the
SDP), ``Setup`` (open UDP sockets), ``Play`` (attach a sink). The adapter
answers those with ``accept_setup``/``accept_play``/``respond`` and writes
``data_to_send()``.

Session state (RFC 2326 Appendix A.1, server side), as a table; a request
missing from it is answered 455 Method Not Valid In This State (§11.3.6):

    Init    --SETUP-->    Ready
    Ready   --SETUP-->    Ready      (transport change)
    Ready   --PLAY-->     Playing
    Playing --PLAY-->     Playing
    Playing --SETUP-->    Playing
    Playing --PAUSE-->    Ready      (recordings only; live answers 405)
    any     --TEARDOWN--> Init       (the session is gone)

OPTIONS, DESCRIBE and GET_PARAMETER are valid in every state and change
nothing. A session not refreshed by any request for ``session_timeout``
seconds (§12.37, announced as ``Session: id;timeout=60``) expires like a
TEARDOWN.

Authentication: a token, either as ``?token=`` in the URL (players cannot
set headers) or as the password of RTSP Basic auth (§D.1, RFC 7617; the user
name is ignored): the platform's API token, or a playback token valid for the
request's URL kind and channel (the ``playback`` check the adapter injects,
``gbplatform.auth.play_tokens``). Every request but OPTIONS is checked, not just the
first of a connection: a token for one channel must not open another on the
same connection. Players keep the token: they build SETUP/PLAY URLs by
appending the SDP's relative control to the whole request URL, query included
(``...?token=t/trackID=0``, RFC 2326 §C.1.1), and resend Basic credentials on
every request. Logged request URLs have the token's value replaced by ``***``.

Recordings: ``/vod/<channel>?start=<epoch>&end=<epoch>`` names a time range
of a channel's recordings (``RtspUrl.vod``). Its PLAY may carry ``Range:
npt=<t>-`` (a seek, §12.29) and ``Scale`` (§12.34), parsed here into
``Play.range_start``/``Play.scale`` (``media.rtsp_vod``); pacing them is the
adapter's (``media.rtsp_vod.VodPlayer``). A session belongs to one URL kind
(live or vod) and channel; a request for another is answered 459.

Tracks: ``trackID=0`` is the video, ``trackID=1`` the audio when the
stream has audio (the SDP says which); each is SETUP on its own, by default
on interleaved channels 0-1 and 2-3 (§10.12).

``RtpSender`` is the per-viewer ``FrameSink``: it routes each frame to the
packetizer of its track, emits RTP packets, and implements the crude
backpressure policy of the TCP interleaved mode (§10.12): see its docstring.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import logging
import math
import random
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from media.frame import Codec, Frame
from media.packetize import AacPacketizer, G711Packetizer, H264Packetizer, H265Packetizer

log = logging.getLogger(__name__)

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "AudioPacketizer",
    "Describe",
    "InterleavedData",
    "Packetizer",
    "Pause",
    "Play",
    "RtpSender",
    "RtspError",
    "RtspParseError",
    "RtspParser",
    "RtspRequest",
    "RtspServerConnection",
    "RtspSession",
    "RtspUrl",
    "SessionExpired",
    "SessionState",
    "Setup",
    "Teardown",
    "Transport",
    "TRANSITIONS",
    "build_sdp",
    "interleave",
    "parse_npt_start",
    "parse_rtsp_url",
    "parse_scale",
    "parse_transport",
    "redact_token",
    "serialize_response",
]

MAX_HEAD = 8192  # request line + headers; bounded so a peer cannot grow our buffer
MAX_BODY = 65536
SESSION_TIMEOUT = 60.0  # RFC 2326 §12.37 default
VERSION = "RTSP/1.0"
PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER"
LIVE_ALLOW = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"  # a live stream cannot pause
REALM = "gbplatform"

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    457: "Invalid Range",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version not supported",
}

VIDEO_TRACK = 0
AUDIO_TRACK = 1

_CHANNEL_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TRACK = re.compile(r"/?trackID=(\d+)$")


class RtspError(Exception):
    """A request we answer with an error status (RFC 2326 §7.1.1)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RtspParseError(RtspError):
    """The byte stream is not RTSP; answered 400 and the connection closed."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


@dataclass(frozen=True)
class RtspRequest:
    """One request (RFC 2326 §6); header names keep their case, lookups ignore it."""

    method: str
    uri: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def cseq(self) -> str:
        return self.header("CSeq") or "0"


@dataclass(frozen=True)
class InterleavedData:
    """A ``$``-framed packet from the client (RFC 2326 §10.12), e.g. its RTCP RR."""

    channel: int
    payload: bytes


class RtspParser:
    """Splits a control connection's byte stream into requests and interleaved data.

    RFC 2326 §6 (request line, headers, body by Content-Length, §12.14) and
    §10.12 (``$`` + channel + 16-bit length). Bounded by ``MAX_HEAD`` and
    ``MAX_BODY``. After an error the stream has lost its framing: every later
    ``feed`` raises the same error.
    """

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self._buf = bytearray()
        self._error: RtspParseError | None = None

    def feed(self, data: bytes) -> list[RtspRequest | InterleavedData]:
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[RtspRequest | InterleavedData] = []
        try:
            while True:
                item = self._next()
                if item is None:
                    return out
                out.append(item)
        except RtspParseError as e:
            self._error = e
            self._buf.clear()
            raise

    def _next(self) -> RtspRequest | InterleavedData | None:
        buf = self._buf
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # stray line ends between messages
            del buf[: 2 if buf[:1] == b"\r" else 1]
        if not buf:
            return None
        if buf[0] == 0x24:  # "$"
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            if len(buf) < 4 + length:
                return None
            item = InterleavedData(buf[1], bytes(buf[4 : 4 + length]))
            del buf[: 4 + length]
            return item
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_head:
                raise RtspParseError(f"request head longer than {self.max_head} bytes")
            return None
        if end > self.max_head:
            raise RtspParseError(f"request head longer than {self.max_head} bytes")
        head = bytes(buf[:end])
        request = _parse_head(head)
        length_text = request.header("Content-Length") or "0"
        if not length_text.strip().isdigit():
            raise RtspParseError(f"bad Content-Length {length_text!r}")
        length = int(length_text)
        if length > self.max_body:
            raise RtspParseError(f"body of {length} bytes exceeds {self.max_body}")
        if len(buf) < end + 4 + length:
            return None
        body = bytes(buf[end + 4 : end + 4 + length])
        del buf[: end + 4 + length]
        return RtspRequest(request.method, request.uri, request.version, request.headers, body)


def _parse_head(head: bytes) -> RtspRequest:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise RtspParseError("request head is not UTF-8 (RFC 2326 §15)") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not all(parts):
        raise RtspParseError(f"bad request line {redact_token(lines[0])[:80]!r}")
    method, uri, version = parts
    if not version.startswith("RTSP/"):
        raise RtspParseError(f"bad request line {redact_token(lines[0])[:80]!r}")
    if version != VERSION:
        raise RtspParseError(f"unsupported version {version[:20]!r}", status=505)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation (RFC 2326 §4.2)
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or name != name.strip():
            raise RtspParseError(f"bad header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return RtspRequest(method, uri, version, tuple(headers))


def serialize_response(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A response (RFC 2326 §7); Content-Length is added for a body."""
    lines = [f"{VERSION} {status} {REASONS.get(status, 'Error')}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def redact_token(uri: str) -> str:
    """``uri`` for a log line: every ``token`` query parameter's value replaced by ``***``.

    The name is compared percent-decoded, as ``parse_rtsp_url`` reads it.
    """
    head, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and urllib.parse.unquote_plus(name).strip().lower() == "token":
            part = name + "=***"
        parts.append(part)
    return head + "?" + "&".join(parts)


def interleave(channel: int, packet: bytes) -> bytes:
    """``$``, channel, 16-bit length, packet (RFC 2326 §10.12)."""
    if not 0 <= channel <= 255:
        raise ValueError(f"interleaved channel {channel} is not in 0..255")
    if len(packet) > 0xFFFF:
        raise ValueError(f"{len(packet)}-byte packet does not fit interleaved framing")
    return b"$" + bytes((channel,)) + len(packet).to_bytes(2, "big") + packet


@dataclass(frozen=True)
class RtspUrl:
    channel_id: str
    token: str | None
    track: int | None
    app: str = "live"  # "live" or "vod"
    vod: tuple[float, float] | None = None  # (start, end) epoch seconds of a /vod/ URL


def _track_number(digits: str) -> int:
    # int() refuses a literal past sys.get_int_max_str_digits() (ValueError);
    # a track number is 0 or 1, so anything long is simply a bad request.
    if len(digits) > 9:
        raise RtspError(400, f"bad trackID {digits[:20]!r}...")
    return int(digits)


def parse_rtsp_url(uri: str) -> RtspUrl:
    """``rtsp://host[:port]/{live,vod}/<channel>[/trackID=N][?token=...]``.

    Players build a track's URL by appending ``/trackID=0`` to the whole
    request URL (RFC 2326 §C.1.1, relative control), so the suffix may follow
    the query: ``...?token=abc/trackID=0``. A ``/vod/`` URL carries
    ``start`` and ``end`` (epoch seconds); players may drop the query from
    later requests, so ``vod`` is None without it. Raises ``RtspError(404)``
    for an unknown path, 400 (RFC 2326 §11.3.1 Bad Request) for a bad time
    range or a URL that does not parse.
    """
    try:
        parsed = urllib.parse.urlsplit(uri)
    except ValueError as e:
        # An unbalanced '[' or ']' in the host ("Invalid IPv6 URL"), or a
        # host that changes under NFKC: the request is bad, the connection is not.
        raise RtspError(400, f"unparseable request URL: {e}") from None
    path, query = parsed.path, parsed.query
    track: int | None = None
    m = _TRACK.search(query) if query else None
    if m is not None:
        track, query = _track_number(m.group(1)), query[: m.start()]
    else:
        m = _TRACK.search(path)
        if m is not None:
            track, path = _track_number(m.group(1)), path[: m.start()]
    segments = [s for s in path.split("/") if s]
    if len(segments) != 2 or segments[0] not in ("live", "vod") or not _CHANNEL_ID.fullmatch(segments[1]):
        raise RtspError(404, f"no stream at {path[:80]!r}")
    params = urllib.parse.parse_qs(query)
    tokens = params.get("token")
    vod: tuple[float, float] | None = None
    if segments[0] == "vod" and ("start" in params or "end" in params):
        try:
            start, end = float(params["start"][0]), float(params["end"][0])
        except (KeyError, ValueError):
            raise RtspError(400, "a /vod/ URL needs start and end in epoch seconds") from None
        if not (math.isfinite(start) and math.isfinite(end) and end > start):
            raise RtspError(400, f"bad time range {start!r}..{end!r}")
        vod = (start, end)
    return RtspUrl(segments[1], tokens[0] if tokens else None, track, segments[0], vod)


@dataclass(frozen=True)
class Transport:
    """The one Transport spec we serve (RFC 2326 §12.39): unicast RTP/AVP over TCP or UDP."""

    tcp: bool
    interleaved: tuple[int, int] = (0, 1)
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    ssrc: int | None = None

    def header(self) -> str:
        if self.tcp:
            value = f"RTP/AVP/TCP;unicast;interleaved={self.interleaved[0]}-{self.interleaved[1]}"
        else:
            assert self.client_port is not None
            value = f"RTP/AVP;unicast;client_port={self.client_port[0]}-{self.client_port[1]}"
            if self.server_port is not None:
                value += f";server_port={self.server_port[0]}-{self.server_port[1]}"
        if self.ssrc is not None:
            value += f";ssrc={self.ssrc:08X}"
        return value


def _pair(value: str) -> tuple[int, int]:
    a, sep, b = value.partition("-")
    if not a.isdigit() or (sep and not b.isdigit()):
        raise RtspError(461, f"bad range {value[:20]!r}")
    first = int(a)
    second = int(b) if sep else first + 1
    return first, second


def parse_transport(value: str, default_interleaved: tuple[int, int] = (0, 1)) -> Transport:
    """The first acceptable spec of a Transport header (RFC 2326 §12.39), else 461.

    ``default_interleaved`` is used when a TCP spec names no channels.
    """
    for spec in value.split(","):
        params = [p.strip() for p in spec.split(";")]
        proto = params[0].upper()
        if proto not in ("RTP/AVP", "RTP/AVP/UDP", "RTP/AVP/TCP") or "multicast" in params[1:]:
            continue
        opts = dict(p.partition("=")[::2] for p in params[1:])
        if proto == "RTP/AVP/TCP":
            channels = _pair(opts["interleaved"]) if "interleaved" in opts else default_interleaved
            if max(channels) > 255:
                raise RtspError(461, f"interleaved channels {channels} out of range")
            return Transport(tcp=True, interleaved=channels)
        if "client_port" in opts:
            ports = _pair(opts["client_port"])
            if not all(0 < p <= 0xFFFF for p in ports):
                raise RtspError(461, f"client ports {ports} out of range")
            return Transport(tcp=False, client_port=ports)
    raise RtspError(461, f"no supported transport in {value[:80]!r}")


def build_sdp(media: str, session_id: int, origin_ip: str = "0.0.0.0", npt: str = "now-") -> bytes:
    """The DESCRIBE body (RFC 2326 Appendix C, RFC 4566): one aggregate control.

    ``npt`` is the ``a=range`` value (§C.1.5): ``now-`` for live, ``0-<seconds>``
    for a recording.
    """
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN IP4 {origin_ip}",
        "s=gbplatform live",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=control:*",
        f"a=range:npt={npt}",
    ]
    return ("".join(line + "\r\n" for line in lines) + media).encode("ascii")


_NPT = re.compile(r"\s*npt\s*=\s*(now|[0-9]+(?:\.[0-9]*)?|[0-9]+:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]*)?)?\s*-\s*([^;]*)(;.*)?")


def parse_npt_start(value: str) -> float | None:
    """The start of a ``Range: npt=<start>-[<end>]`` header (RFC 2326 §3.6, §12.29).

    ``npt=now-`` and a missing start give None (play from where we are);
    ``npt-hhmmss`` is accepted as ``h:mm:ss[.frac]``. Another unit (smpte,
    clock) or a malformed value raises ``RtspError(457)``.
    """
    m = _NPT.fullmatch(value)
    if m is None:
        raise RtspError(457, f"unsupported Range {value[:40]!r} (npt only)")
    start = m.group(1)
    if start is None or start == "now":
        return None
    if ":" in start:
        h, mm, ss = start.split(":")
        return int(h) * 3600 + int(mm) * 60 + float(ss)
    return float(start)


def parse_scale(value: str) -> float:
    """A ``Scale`` header (RFC 2326 §12.34): a non-zero decimal, negative for reverse."""
    try:
        scale = float(value.strip())
    except ValueError:
        raise RtspError(400, f"bad Scale {value[:20]!r}") from None
    if not math.isfinite(scale) or scale == 0:
        raise RtspError(400, f"bad Scale {value[:20]!r}")
    return scale


def _play_position(request: RtspRequest) -> tuple[float | None, float | None]:
    range_header = request.header("Range")
    scale_header = request.header("Scale")
    start = parse_npt_start(range_header) if range_header is not None else None
    scale = parse_scale(scale_header) if scale_header is not None else None
    return start, scale


class SessionState(enum.Enum):
    INIT = "Init"
    READY = "Ready"
    PLAYING = "Playing"


# (state, method) -> next state; RFC 2326 Appendix A.1.
TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.INIT, "SETUP"): SessionState.READY,
    (SessionState.INIT, "TEARDOWN"): SessionState.INIT,
    (SessionState.READY, "SETUP"): SessionState.READY,
    (SessionState.READY, "PLAY"): SessionState.PLAYING,
    (SessionState.READY, "TEARDOWN"): SessionState.INIT,
    (SessionState.PLAYING, "PLAY"): SessionState.PLAYING,
    (SessionState.PLAYING, "SETUP"): SessionState.PLAYING,
    (SessionState.PLAYING, "PAUSE"): SessionState.READY,
    (SessionState.PLAYING, "TEARDOWN"): SessionState.INIT,
}
_STATELESS = frozenset({"OPTIONS", "DESCRIBE", "GET_PARAMETER"})


@dataclass
class RtspSession:
    """One RTSP session (RFC 2326 §3.8, §12.37)."""

    id: str
    channel_id: str
    transport: Transport
    last_seen: float
    timeout: float = SESSION_TIMEOUT
    state: SessionState = SessionState.READY
    app: str = "live"
    vod: tuple[float, float] | None = None

    def header(self) -> str:
        return f"{self.id};timeout={int(self.timeout)}"

    @property
    def deadline(self) -> float:
        return self.last_seen + self.timeout


@dataclass(frozen=True)
class Describe:
    request: RtspRequest
    channel_id: str
    vod: tuple[float, float] | None = None  # a recording's (start, end); None: live


@dataclass(frozen=True)
class Setup:
    request: RtspRequest
    channel_id: str
    transport: Transport
    track: int = VIDEO_TRACK
    vod: tuple[float, float] | None = None


@dataclass(frozen=True)
class Play:
    """PLAY; for a recording, ``range_start`` (npt seconds, §12.29) and ``scale`` (§12.34) if asked."""

    request: RtspRequest
    session: RtspSession
    range_start: float | None = None
    scale: float | None = None


@dataclass(frozen=True)
class Pause:
    """PAUSE of a recording (§10.6); the adapter answers with ``accept_pause``."""

    request: RtspRequest
    session: RtspSession


@dataclass(frozen=True)
class Teardown:
    """The session ended by TEARDOWN; the adapter stops sending."""

    session: RtspSession


@dataclass(frozen=True)
class SessionExpired:
    """No request for ``session.timeout`` seconds (RFC 2326 §12.37): treat as TEARDOWN."""

    session: RtspSession


RtspEvent = Describe | Setup | Play | Pause | Teardown | SessionExpired
PlaybackCheck = Callable[[str, str, str], bool]


@dataclass
class RtspServerConnection:
    """One control connection's protocol state; see the module docstring."""

    token: str
    rng: random.Random
    session_timeout: float = SESSION_TIMEOUT
    server: str = "gbplatform"
    session: RtspSession | None = None
    # (token, "live" | "vod", channel_id) -> valid: playback tokens, checked by the application.
    playback: PlaybackCheck | None = None
    closing: bool = False  # a fatal error was answered: write, then close
    _parser: RtspParser = field(default_factory=RtspParser)
    _out: bytearray = field(default_factory=bytearray)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes, now: float) -> list[RtspEvent]:
        if self.closing:
            return []
        try:
            items = self._parser.feed(data)
        except RtspParseError as e:
            log.warning("RTSP: closing a connection that sent bad input: %s", e)
            self._out += serialize_response(e.status, [("Server", self.server)])
            self.closing = True
            return []
        events: list[RtspEvent] = []
        for item in items:
            if isinstance(item, InterleavedData):
                continue  # the client's RTCP receiver reports; we send no SR to correct
            try:
                event = self._handle(item, now)
            except RtspError as e:
                self._error(item, e)
                continue
            if event is not None:
                events.append(event)
        return events

    def next_timer(self) -> float | None:
        return self.session.deadline if self.session is not None else None

    def handle_timer(self, now: float) -> list[RtspEvent]:
        session = self.session
        if session is None or now < session.deadline:
            return []
        self.session = None
        return [SessionExpired(session)]

    def respond(
        self, request: RtspRequest, status: int, headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        """Answer ``request``; CSeq (§12.17), Server and Session are added here."""
        all_headers = [("CSeq", request.cseq), ("Server", self.server)]
        if self.session is not None and request.method != "TEARDOWN":
            all_headers.append(("Session", self.session.header()))
        all_headers.extend(headers or [])
        self._out += serialize_response(status, all_headers, body)

    def accept_setup(self, event: Setup, transport: Transport, now: float) -> RtspSession:
        """The adapter set the transport up: create/update the session and answer 200."""
        if self.session is None:
            session_id = f"{self.rng.getrandbits(64):016X}"
            self.session = RtspSession(
                session_id, event.channel_id, transport, now, timeout=self.session_timeout,
                app="live" if event.vod is None else "vod", vod=event.vod,
            )
        else:
            self.session.transport = transport
        session = self.session
        session.state = TRANSITIONS[(session.state, "SETUP")]
        self.respond(event.request, 200, [("Transport", transport.header())])
        return session

    def accept_play(
        self, event: Play, rtp_info: str, npt_range: str = "npt=0.000-", scale: float | None = None
    ) -> None:
        """Sending starts: answer 200 with RTP-Info (§12.33), the range played (§12.29)
        and, when the request asked for one, the Scale actually used (§12.34)."""
        event.session.state = TRANSITIONS[(event.session.state, "PLAY")]
        headers = [("Range", npt_range)]
        if scale is not None:
            headers.append(("Scale", f"{scale:g}"))
        headers.append(("RTP-Info", rtp_info))
        self.respond(event.request, 200, headers)

    def accept_pause(self, event: Pause, npt: float) -> None:
        """Sending stopped at ``npt`` seconds (§10.6): Playing -> Ready."""
        event.session.state = TRANSITIONS[(event.session.state, "PAUSE")]
        self.respond(event.request, 200, [("Range", f"npt={npt:.3f}-")])

    def _error(self, request: RtspRequest, e: RtspError) -> None:
        log.info("RTSP %s %s: %d %s", request.method, redact_token(request.uri)[:80], e.status, e)
        headers: list[tuple[str, str]] = []
        if e.status == 401:
            headers.append(("WWW-Authenticate", f'Basic realm="{REALM}"'))
        if e.status == 405:
            headers.append(("Allow", LIVE_ALLOW))
        elif e.status in (455, 501):
            headers.append(("Allow" if e.status != 501 else "Public", PUBLIC))
        self.respond(request, e.status, headers)

    def _handle(self, request: RtspRequest, now: float) -> RtspEvent | None:
        if self.session is not None:
            self.session.last_seen = now  # any request keeps the session alive
        method = request.method
        if method == "OPTIONS":
            self.respond(request, 200, [("Public", PUBLIC)])
            return None
        if method not in PUBLIC.replace(",", " ").split():
            raise RtspError(501, f"method {method[:20]!r} not implemented")
        url = parse_rtsp_url(request.uri) if request.uri != "*" else None
        self._authorize(request, url)
        if url is None:
            raise RtspError(404, "no stream at *")
        session = self._check_session(request)
        if method == "PAUSE" and url.app == "live":
            raise RtspError(405, "a live stream cannot be paused")
        state = session.state if session is not None else SessionState.INIT
        if method not in _STATELESS and (state, method) not in TRANSITIONS:
            raise RtspError(455, f"{method} not valid in state {state.value}")
        if session is not None and (
            session.channel_id != url.channel_id or session.app != url.app
            or (url.vod is not None and session.vod != url.vod)
        ):
            raise RtspError(459, "the session belongs to another stream")
        vod = url.vod if url.vod is not None or session is None else session.vod
        if url.app == "vod" and vod is None and method in ("DESCRIBE", "SETUP"):
            raise RtspError(400, "a /vod/ URL needs start and end in epoch seconds")
        if method == "GET_PARAMETER":
            self.respond(request, 200)
            return None
        if method == "DESCRIBE":
            return Describe(request, url.channel_id, vod)
        if method == "SETUP":
            track = VIDEO_TRACK if url.track is None else url.track
            if track not in (VIDEO_TRACK, AUDIO_TRACK):
                raise RtspError(404, f"no track {url.track}")
            transport = parse_transport(request.header("Transport") or "", (2 * track, 2 * track + 1))
            return Setup(request, url.channel_id, transport, track, vod)
        if method == "PLAY":
            assert session is not None  # the table has no (Init, PLAY)
            if session.app != "vod":
                return Play(request, session)  # a live stream has one position and speed: now, 1
            return Play(request, session, *_play_position(request))
        if method == "PAUSE":
            assert session is not None  # the table has PAUSE only from Playing
            return Pause(request, session)
        # TEARDOWN
        if session is None:
            self.respond(request, 200)
            return None
        self.session = None
        self.respond(request, 200)
        return Teardown(session)

    def _check_session(self, request: RtspRequest) -> RtspSession | None:
        given = request.header("Session")
        if given is None:
            # A connection holds at most one session, so a request without
            # the header can only mean that one.
            return self.session
        session_id = given.split(";")[0].strip()
        if self.session is None or not hmac.compare_digest(session_id, self.session.id):
            raise RtspError(454, f"session {session_id[:20]!r} not found")
        return self.session

    def _authorize(self, request: RtspRequest, url: RtspUrl | None) -> None:
        """Every request: the API token, or a playback token for this URL's kind and channel."""
        candidates: list[str] = []
        if url is not None and url.token is not None:
            candidates.append(url.token)
        auth = request.header("Authorization")
        if auth is not None:
            scheme, _, param = auth.partition(" ")
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    raise RtspError(400, "malformed Basic credentials") from None
                candidates.append(decoded.partition(":")[2])
        expected = self.token.encode()
        for candidate in candidates:
            # An empty configured token never matches; compare_digest: no timing leak.
            if expected and hmac.compare_digest(candidate.encode(), expected):
                return
            if url is not None and self.playback is not None and self.playback(candidate, url.app, url.channel_id):
                return
        raise RtspError(401, "a playback token for this stream or the API token is required (?token= or Basic auth)")


Packetizer = H264Packetizer | H265Packetizer
AudioPacketizer = G711Packetizer | AacPacketizer
_Route = tuple[Packetizer | AudioPacketizer, Callable[[bytes], None]]


class RtpSender:
    """One viewer's ``FrameSink``: route frames to their track, packetize, emit, shed load.

    Each track (``add_track``) has its packetizer and its own ``emit``
    (interleaved channel or UDP socket); a frame of a codec without a track
    (not in the SDP, or not SETUP) is skipped with one dict lookup.

    Backpressure (TCP interleaved): the adapter registers as the transport's
    push producer and forwards ``pause()``/``resume()``. While paused we keep
    writing (the kernel buffer may well drain) but count the bytes; past
    ``max_backlog`` (4 MiB, a few seconds of 1080p) we stop writing and drop
    every frame, audio too, until we are resumed *and* a video keyframe
    arrives, since frames after a gap do not decode until the next keyframe
    anyway (with no video track, until resumed). UDP never pauses.

    Start: video frames before the first video keyframe are dropped (counted
    in ``frames_waiting``); audio goes out at once. The dispatcher's GOP
    cache replays from a keyframe, but with the cache off (or past its
    bounds) a viewer joins mid-GOP, and pictures predicted from a reference
    it never got do not decode (ITU-T H.264 §7.4.1.2.4 / H.265 §7.4.2.4.4:
    only an IDR/IRAP picture decodes without earlier ones).
    """

    def __init__(
        self, packetizer: Packetizer | AudioPacketizer, emit: Callable[[bytes], None], *,
        max_backlog: int = 4 * 1024 * 1024,
    ) -> None:
        self.packetizer = packetizer
        self.codec = packetizer.codec
        self.emit = emit
        self.max_backlog = max_backlog
        self.paused = False
        self.backlog = 0
        self.dropping = False
        self.frames_sent = 0
        self.frames_dropped = 0
        self.frames_waiting = 0  # video frames before the first keyframe
        self.video_started = False
        self.video_codec: Codec | None = None
        self._routes: dict[Codec, _Route] = {}
        # Called once after the first frame's packets are emitted (the stream's start timeline).
        self.on_start: Callable[[], None] | None = None
        self.add_track(packetizer, emit)

    def add_track(self, packetizer: Packetizer | AudioPacketizer, emit: Callable[[bytes], None]) -> None:
        """Send ``packetizer.codec`` frames through ``packetizer`` to ``emit``; replaces a track."""
        codec = packetizer.codec
        if codec.is_video:
            if self.video_codec is not None:
                del self._routes[self.video_codec]
            self.video_codec = codec
        else:
            for other in [c for c in self._routes if not c.is_video]:
                del self._routes[other]
        self._routes[codec] = (packetizer, emit)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.backlog = 0

    def input_frame(self, frame: Frame) -> None:
        route = self._routes.get(frame.codec)
        if route is None:
            return
        if not self.video_started and frame.codec is self.video_codec:
            if not frame.keyframe:
                self.frames_waiting += 1
                return
            self.video_started = True
        if self.dropping:
            if self.paused or (
                self.video_codec is not None and not (frame.keyframe and frame.codec is self.video_codec)
            ):
                self.frames_dropped += 1
                return
            log.info("RTP sender: backlog drained; resuming after %d dropped frames", self.frames_dropped)
            self.dropping = False
        packetizer, emit = route
        packets = packetizer.packetize(frame)
        if self.paused:
            self.backlog += sum(len(p) for p in packets)
            if self.backlog > self.max_backlog:
                log.warning("RTP sender: %d bytes unsent to a slow viewer; dropping to the next keyframe",
                            self.backlog)
                self.dropping = True
                self.frames_dropped += 1
                return
        for packet in packets:
            emit(packet)
        self.frames_sent += 1
        if self.on_start is not None:
            on_start, self.on_start = self.on_start, None
            on_start()
