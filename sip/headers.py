"""Structured views of the headers the stack acts on (RFC 3261 §20, §25.1).

Values are parsed on demand from the text kept in ``sip.message.Headers``.
Each parser raises ``SipParseError`` with the reason, so a request whose
essential headers are malformed is answered 400 rather than half-understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import cast

from sip.errors import SipParseError
from sip.message import Message, Request, split_outside
from sip.numbers import ascii_uint, is_ascii_digits
from sip.uri import SipUri

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WS_RE = re.compile(r"\s+")
_VIA_RE = re.compile(
    r"^\s*([A-Za-z0-9.!%*_+`'~-]+)\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s*/\s*"
    r"([A-Za-z0-9.!%*_+`'~-]+)\s+(\[[0-9A-Fa-f:.]+\](?::\d+)?|[A-Za-z0-9.\-_]+(?::\d+)?)\s*(;.*)?$",
    re.S,
)
_GB_DATE_RE = re.compile(r"^\s*\d{4}-\d{1,2}-\d{1,2}T\d{1,2}:\d{1,2}:\d{1,2}")
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: CSeq sequence numbers fit in 32 bits, below 2**31


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    """RFC 3261 §25.1 ``token``."""
    return _TOKEN_RE.fullmatch(text) is not None


def _parse_params(text: str, where: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` into a dict; an empty parameter is an error (TC_BADINV01)."""
    params: dict[str, str | None] = {}
    if not text.strip():
        return params
    # Quotes are rare in parameters; the character walk is only needed with them.
    parts = _split_outside_quotes(text, ";") if '"' in text or "<" in text else text.split(";")
    for raw in parts[1:] if parts and not parts[0].strip() else parts:
        item = raw.strip()
        if not item:
            raise SipParseError(f"empty parameter in {where}")
        k, eq, v = item.partition("=")
        k = k.strip()
        if not is_token(k):
            raise SipParseError(f"bad parameter name {k!r} in {where}")
        if eq:
            v = v.strip()
            if not v:
                raise SipParseError(f"empty value for parameter {k!r} in {where}")
            params[k.lower()] = v
        else:
            params[k.lower()] = None
    return params


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, unterminated = split_outside(text, sep)
    if unterminated:
        raise SipParseError(f"unterminated quoted string in {text!r}")
    return parts


@dataclass
class Via:
    """One Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @classmethod
    def parse(cls, value: str) -> Via:
        # Free whitespace around '/' and ';' is legal (RFC 3261 §25.1, TC_WSINV).
        m = _VIA_RE.match(value)
        if m is None:
            raise SipParseError(f"malformed Via: {value!r}")
        name, version, transport, hostport, params = m.groups()
        if name.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"unsupported Via protocol in {value!r}")
        if hostport.startswith("["):
            host, _, port_text = hostport.partition("]")
            host += "]"
            port_text = port_text[1:] if port_text.startswith(":") else port_text
        else:
            host, _, port_text = hostport.partition(":")
        port: int | None = None
        if port_text:
            port = ascii_uint(port_text, 5)
            if port is None or not 0 < port < 65536:
                raise SipParseError(f"bad port in Via {value[:100]!r}")
        if not host:
            raise SipParseError(f"Via without host: {value!r}")
        return cls(transport.upper(), host, port, _parse_params(params or "", "Via"))

    def __str__(self) -> str:
        out = f"SIP/2.0/{self.transport} {self.host}"
        if self.port is not None:
            out += f":{self.port}"
        for k, v in self.params.items():
            out += f";{k}" if v is None else f";{k}={v}"
        return out


@dataclass
class NameAddr:
    """A From/To/Contact value: display name, URI and header parameters (RFC 3261 §20.10)."""

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    @property
    def user(self) -> str:
        """The URI's user part, or "" (the GB ID of a device, §9.1)."""
        uri = self.uri
        # Fast path for the usual "sip:<20 digits>@host" (no escapes, no password).
        if uri[:4].lower() == "sip:" and "@" in uri:
            user = uri[4 : uri.index("@")]
            if user.isalnum():
                return user
        try:
            return self.sip_uri.user or ""
        except SipParseError:
            return ""

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        text = value.strip()
        if text == "*":
            return cls("*", bracketed=False)
        display: str | None = None
        if text.startswith('"'):
            end = _closing_quote(text)
            display = text[1:end]
            text = text[end + 1 :].lstrip()
            if not text.startswith("<"):
                raise SipParseError(f"quoted display name without <URI> in {value!r}")
        lt = text.find("<")
        if lt >= 0:
            before = text[:lt].strip()
            if before:
                if display is not None:
                    raise SipParseError(f"bad display name in {value!r}")
                # RFC 3261 §25.1: an unquoted display name is a sequence of tokens (TC_BADDN).
                if not all(is_token(word) for word in before.split()):
                    raise SipParseError(f"display name must be quoted in {value!r}")
                display = before
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(f"unterminated <URI> in {value!r}")
            uri = text[lt + 1 : gt]
            if uri != uri.strip() or any(c in uri for c in " \t"):
                raise SipParseError(f"whitespace inside <URI> in {value!r}")  # TC_BADASPEC
            params = _parse_params(text[gt + 1 :], "name-addr")
            return cls(uri, display, params, True)
        # addr-spec without <>: parameters after ';' belong to the header, and
        # the URI may not carry '?' headers or ',' (RFC 3261 §20.10, TC_REGBADCT).
        uri, _, rest = text.partition(";")
        uri = uri.strip()
        if not uri or any(c in uri for c in " \t?,\""):
            raise SipParseError(f"malformed addr-spec in {value!r}")
        params = _parse_params(";" + rest if rest else "", "addr-spec")
        return cls(uri, None, params, False)

    def __str__(self) -> str:
        out = ""
        if self.display is not None:
            out += f'"{self.display}" '
        out += f"<{self.uri}>" if self.bracketed or self.display is not None else self.uri
        for k, v in self.params.items():
            out += f";{k}" if v is None else f";{k}={v}"
        return out


def _closing_quote(text: str) -> int:
    escaped = False
    for i in range(1, len(text)):
        ch = text[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i
    raise SipParseError(f"unterminated quoted string in {text!r}")  # TC_QUOTBAL


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        parts = value.split()
        if len(parts) != 2 or not is_ascii_digits(parts[0]) or not is_token(parts[1]):
            raise SipParseError(f"malformed CSeq: {value[:64]!r}")
        number = ascii_uint(parts[0], 10)
        if number is None or number > MAX_CSEQ:
            raise SipParseError(f"CSeq number too large: {parts[0][:32]}")
        return cls(number, parts[1])


def _via(msg: Message, value: str) -> Via:
    key = ("Via", value)
    hit = msg.memo.get(key)
    if hit is None:
        hit = msg.memo[key] = Via.parse(value)
    return cast(Via, hit)


def _name_addr(msg: Message, value: str) -> NameAddr:
    key = ("NameAddr", value)
    hit = msg.memo.get(key)
    if hit is None:
        hit = msg.memo[key] = NameAddr.parse(value)
    return cast(NameAddr, hit)


def vias(msg: Message) -> list[Via]:
    return [_via(msg, v) for v in msg.headers.get_all("Via")]


def top_via(msg: Message) -> Via:
    values = msg.headers.get_all("Via")
    if not values:
        raise SipParseError("missing Via")
    return _via(msg, values[0])


def from_header(msg: Message) -> NameAddr:
    value = msg.headers.get("From")
    if value is None:
        raise SipParseError("missing From")
    return _name_addr(msg, value)


def to_header(msg: Message) -> NameAddr:
    value = msg.headers.get("To")
    if value is None:
        raise SipParseError("missing To")
    return _name_addr(msg, value)


def contacts(msg: Message) -> list[NameAddr]:
    return [NameAddr.parse(v) for v in msg.headers.get_all("Contact")]


def expires_value(value: str | None) -> int | None:
    """Parse an Expires value (RFC 3261 §20.19); large values are capped, not refused."""
    if value is None:
        return None
    value = value.strip()
    if not is_ascii_digits(value):  # sip.numbers: "²" passes str.isdigit(), not int()
        raise SipParseError(f"malformed Expires: {value[:32]!r}")
    seconds = ascii_uint(value, 10)  # past 10 digits the value is over the cap anyway
    return 2**32 - 1 if seconds is None else min(seconds, 2**32 - 1)


_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type", "Expires")


def validate_request(req: Request) -> None:
    """Check what RFC 3261 §8.2 and §16.3 require before a request is acted upon.

    Raises SipParseError with the status to answer: 400 for missing or
    duplicated mandatory headers, malformed From/To/Via/CSeq, CSeq method
    mismatch, out-of-range scalars; 483 for Max-Forwards 0 is left to proxies.
    The error always carries ``req`` so that the 400 can be sent (RFC 4475 §3.1.2).
    """
    try:
        _validate_request(req)
    except SipParseError as e:
        if e.message is req:
            raise
        raise SipParseError(e.reason, e.status_hint, req) from None


def _validate_request(req: Request) -> None:
    counts: dict[str, int] = {}
    for name, _ in req.headers:  # one pass: names are canonical already
        counts[name] = counts.get(name, 0) + 1
    for name in _REQUIRED:
        if name not in counts:
            raise SipParseError(f"missing {name} header", 400, req)
    for name in _SINGLE:
        if counts.get(name, 0) > 1:
            raise SipParseError(f"duplicated {name} header", 400, req)
    cseq = CSeq.parse(req.headers.get("CSeq") or "")
    if cseq.method != req.method:
        raise SipParseError("CSeq method does not match the request method", 400, req)
    from_header(req)
    to_header(req)
    vias(req)
    mf = req.headers.get("Max-Forwards")
    max_forwards = None if mf is None else ascii_uint(mf.strip(), 3)
    if mf is not None and (max_forwards is None or max_forwards > 255):
        raise SipParseError(f"bad Max-Forwards: {mf!r}", 400, req)
    expires_text = req.headers.get("Expires") if "Expires" in counts else None
    if expires_text is not None:
        value = expires_text.strip()
        if not is_ascii_digits(value) or len(value) > 10:
            raise SipParseError(f"bad Expires: {expires_text!r}", 400, req)
    for c in contacts(req) if "Contact" in counts else ():
        exp = c.params.get("expires")
        if exp is not None and (not is_ascii_digits(exp) or len(exp) > 10):
            raise SipParseError(f"bad Contact expires: {exp!r}", 400, req)
    date = req.headers.get("Date") if "Date" in counts else None
    if date is not None and not date.rstrip().endswith("GMT") and not _GB_DATE_RE.match(date):
        # RFC 3261 §20.17 requires GMT (TC_BADDATE); GB devices send the
        # GB/T 28181 "2026-01-02T03:04:05" form, which we accept.
        raise SipParseError(f"bad Date: {date!r}", 400, req)
