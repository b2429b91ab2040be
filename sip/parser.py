"""Sans-IO SIP message parsing: UDP datagrams and TCP stream framing.

``parse_datagram(data)`` turns one datagram into a message, or ``None`` for
traffic that is not SIP at all (STUN binding requests, CRLF keep-alives:
RFC 5626 §3.5.1, which devices send to the registrar's port).

``StreamParser.feed(data)`` frames messages out of a TCP byte stream by their
Content-Length (RFC 3261 §18.3): several messages in one segment, one message
over many segments.

Both enforce size limits and raise ``SipParseError`` with the status code to
answer; its ``message`` carries the parsed head when a reply is possible.
"""

from __future__ import annotations

import re

from sip.errors import SipParseError
from sip.headers import CSeq, is_token
from sip.message import Headers, Message, Request, Response
from sip.numbers import ascii_uint, is_ascii_digits
from sip.uri import SipUri

MAX_DATAGRAM = 65_535
MAX_HEAD = 16_384
MAX_BODY = 1_048_576

_STUN_COOKIE = b"\x21\x12\xa4\x42"
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_VERSION_RE = re.compile(r"^SIP/(\d+)\.(\d+)$", re.I)
_HEAD_END = re.compile(rb"\r\n\r\n|\n\n")
# A request starts with a method token, a response with "SIP/" (RFC 3261 §25.1).
_TOKEN_START = frozenset(
    bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
)


def is_non_sip(data: bytes) -> bool:
    """True for datagrams that are not SIP: STUN (RFC 5389 §6), keep-alive CRLFs, binary noise."""
    if not data.strip(b"\r\n\x00 \t"):
        return True
    if len(data) >= 20 and data[4:8] == _STUN_COOKIE and data[0] < 2:
        return True
    first = data.lstrip(b"\r\n")[:1]
    return first not in _TOKEN_START


def parse_datagram(data: bytes) -> Message | None:
    """Parse one UDP datagram (RFC 3261 §18.3); ``None`` when it is not SIP."""
    if is_non_sip(data):
        return None
    if len(data) > MAX_DATAGRAM:
        raise SipParseError("datagram too large", 513)
    data = data.lstrip(b"\r\n")
    m = _HEAD_END.search(data)
    if m is None:
        # A bodiless message may end right after the last header's CRLF.
        head_bytes, rest = data.rstrip(b"\r\n"), b""
    else:
        head_bytes, rest = data[: m.start()], data[m.end() :]
    msg = parse_head(head_bytes)
    lengths = msg.headers.get_all("Content-Length")
    if not lengths:
        msg.body = rest  # UDP may omit Content-Length: the body is the rest (§18.3)
        return msg
    if len({v.strip() for v in lengths}) > 1:
        # Conflicting lengths (TC_MCL01): keep what arrived; the request is then
        # refused by validate_request as a duplicated Content-Length.
        msg.body = rest
        return msg
    length = _content_length(lengths[0], msg)
    if length > len(rest):
        raise SipParseError("Content-Length larger than the datagram", 400, msg)
    msg.body = rest[:length]  # extra octets are discarded (TC_DBLREQ)
    return msg


def _content_length(value: str, msg: Message) -> int:
    text = value.strip()  # eXosip pads the value with spaces
    if not is_ascii_digits(text):
        raise SipParseError(f"bad Content-Length: {value[:32]!r}", 400, msg)
    length = ascii_uint(text, 10)
    if length is None or length > MAX_BODY:
        raise SipParseError("body too large", 413, msg)
    return length


def parse_head(head: bytes) -> Message:
    """Parse a start line and headers (no body) into a Request or Response."""
    text = head.decode("utf-8", "surrogateescape")
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0]
    msg: Message
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        msg = _parse_status_line(start)
    else:
        try:
            msg = _parse_request_line(start)
        except SipParseError as e:
            # The error's message (if any) has no headers yet: answer from the salvage.
            raise SipParseError(e.reason, e.status_hint, _salvage_request(start, lines[1:])) from None
    msg.headers = _parse_headers(lines[1:], msg)
    cseq_value = msg.headers.get("CSeq")
    if cseq_value is not None:
        try:
            cseq = CSeq.parse(cseq_value)
        except SipParseError as e:
            raise SipParseError(e.reason, 400, msg if isinstance(msg, Request) else None) from None
        if isinstance(msg, Request) and cseq.method != msg.method:
            raise SipParseError("CSeq method does not match the request method", 400, msg)
    return msg


def _parse_request_line(line: str) -> Request:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"malformed request line: {line[:80]!r}")
    method, uri, version = parts
    if not is_token(method):
        raise SipParseError(f"bad method: {method[:40]!r}")
    req = Request(method=method, uri=uri, version=version)
    vm = _VERSION_RE.match(version)
    if vm is None:
        raise SipParseError(f"bad SIP version: {version[:40]!r}")
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {version}", 505, req)
    if not _SCHEME_RE.match(uri) or any(c in uri for c in "<>\"\t"):
        raise SipParseError(f"bad Request-URI: {uri[:80]!r}")
    if uri[:4].lower() in ("sip:", "sips"):
        parsed = SipUri.parse(uri)
        if parsed.headers is not None:
            # RFC 3261 §19.1.5: headers are not allowed in a Request-URI (TC_ESCRURI).
            raise SipParseError("headers in the Request-URI")
    return req


def _salvage_request(start: str, lines: list[str]) -> Request | None:
    """The headers of a request whose request line is broken, to answer it.

    RFC 4475 §3.1.2.7-§3.1.2.11 and §3.1.2.16 expect a 400 or 505 for these
    (``<>`` around the Request-URI, embedded or doubled spaces, SIP/7.0); that
    is only possible when the headers a response copies (RFC 3261 §8.2.6.2)
    are all there.
    """
    method = start.split(" ", 1)[0]
    if not is_token(method):
        return None
    req = Request(method=method, uri="", version="SIP/2.0")
    try:
        req.headers = _parse_headers(lines, req)
    except SipParseError:
        return None
    if not all(name in req.headers for name in ("Via", "From", "To", "Call-ID", "CSeq")):
        return None
    return req


def _parse_status_line(line: str) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 2:
        raise SipParseError(f"malformed status line: {line[:80]!r}")
    version, code = parts[0], parts[1]
    reason = parts[2] if len(parts) == 3 else ""
    if version.upper() != "SIP/2.0":
        raise SipParseError(f"unsupported SIP version {version[:20]}")
    if len(code) != 3 or not is_ascii_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(f"bad status code: {code[:20]!r}")  # TC_BIGCODE
    return Response(status=int(code), reason=reason, version="SIP/2.0")


_SEEN_NAMES: set[str] = set()  # header names already checked to be tokens


def _parse_headers(lines: list[str], msg: Message) -> Headers:
    unfolded: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not unfolded:
                raise SipParseError("continuation line before any header")
            unfolded[-1] += " " + line.strip()  # RFC 3261 §7.3.1 folding
        elif line:
            unfolded.append(line)
    headers = Headers()
    for line in unfolded:
        name, sep, value = line.partition(":")
        name = name.rstrip(" \t")
        if not sep or (name not in _SEEN_NAMES and not is_token(name)):
            raise SipParseError(
                f"malformed header line: {line[:60]!r}", 400, msg if isinstance(msg, Request) else None
            )
        headers.add(name, value.strip())
        if len(_SEEN_NAMES) < 1024:
            _SEEN_NAMES.add(name)
    return headers


class StreamParser:
    """Frames SIP messages out of a TCP byte stream (RFC 3261 §18.3).

    After a ``SipParseError`` the stream cannot be re-synchronised and the
    connection must be closed.
    """

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self._buf = bytearray()
        self._max_head = max_head
        self._max_body = max_body
        self._head: Message | None = None
        self._need = 0
        self._scan_from = 0
        self.keepalives = 0  # RFC 5626 double-CRLF pings seen

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """Messages completed by ``data``.

        On a framing error, ``SipParseError.framed`` carries the messages
        completed before it in this call, so none of them is lost.
        """
        self._buf += data
        out: list[Message] = []
        try:
            return self._frame(out)
        except SipParseError as e:
            e.framed = out
            raise

    def _frame(self, out: list[Message]) -> list[Message]:
        while True:
            if self._head is None:
                # Skip CRLF keep-alives between messages.
                stripped = 0
                while stripped < len(self._buf) and self._buf[stripped] in (13, 10):
                    stripped += 1
                if stripped:
                    if stripped >= 4:
                        self.keepalives += 1
                    del self._buf[:stripped]
                    self._scan_from = 0
                if not self._buf:
                    return out
                m = _HEAD_END.search(self._buf, max(0, self._scan_from - 3))
                if m is None:
                    if len(self._buf) > self._max_head:
                        raise SipParseError("message head too large", 513)
                    self._scan_from = len(self._buf)
                    return out
                head = bytes(self._buf[: m.start()])
                del self._buf[: m.end()]
                self._scan_from = 0
                if head[:1] not in _TOKEN_START:
                    raise SipParseError("not a SIP message on the stream")
                msg = parse_head(head)
                lengths = {v.strip() for v in msg.headers.get_all("Content-Length")}
                if len(lengths) > 1:
                    raise SipParseError("conflicting Content-Length values", 400, _req(msg))
                self._need = _content_length(lengths.pop(), msg) if lengths else 0
                if self._need > self._max_body:
                    raise SipParseError("body too large", 413, _req(msg))
                self._head = msg
            if len(self._buf) < self._need:
                return out
            msg = self._head
            msg.body = bytes(self._buf[: self._need])
            del self._buf[: self._need]
            self._head = None
            out.append(msg)


def _req(msg: Message) -> Request | None:
    return msg if isinstance(msg, Request) else None
