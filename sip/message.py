"""SIP message model: requests, responses, headers and serialisation.

Header values are kept as the (unfolded) text received, and parsed lazily by
``sip.headers`` when a caller needs their structure, so relaying or tracing a
message never changes it. Bodies stay bytes: a MANSCDP body's charset is the
business of ``sip.manscdp``, not of the SIP layer (GB/T 28181-2016 §A.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sip.errors import SipParseError
from sip.numbers import ascii_uint

# RFC 3261 §7.3.3 compact forms, plus those of later RFCs devices use.
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
    "x": "Session-Expires",
}

_SPECIAL_CASE = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    # GB/T 28181-2022 §9.1 spells it so; firmware comparing header names case-sensitively exists.
    "x-gb-ver": "X-GB-Ver",
}

# Headers whose value is a comma-separated list that may be split over
# several header lines (RFC 3261 §7.3.1).
LIST_HEADERS = frozenset(
    {
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Allow-Events",
    }
)

_canonical_cache: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Return the canonical spelling of a header name (names are case-insensitive, RFC 3261 §7.3.1)."""
    cached = _canonical_cache.get(name)
    if cached is not None:
        return cached
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        result = COMPACT_FORMS[lower]
    elif lower in _SPECIAL_CASE:
        result = _SPECIAL_CASE[lower]
    else:
        result = "-".join(part[:1].upper() + part[1:] for part in lower.split("-"))
    if len(_canonical_cache) < 4096:
        _canonical_cache[name] = result
    return result


def split_outside(text: str, sep: str) -> tuple[list[str], bool]:
    """Split ``text`` on ``sep`` outside quoted strings and <angle brackets>.

    Returns the parts and whether a quoted string was left open (RFC 3261
    §25.1 quoted-string; callers decide whether that is an error).
    """
    parts: list[str] = []
    depth = 0
    quoted = escaped = False
    start = 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts, quoted


def split_list(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and angle brackets (RFC 3261 §7.3.1)."""
    if '"' not in value and "<" not in value:
        if "," not in value:
            value = value.strip()
            return [value] if value else []
        parts = value.split(",")
    else:
        parts, _ = split_outside(value, ",")
    return [item for item in (part.strip() for part in parts) if item]


class Headers:
    """An ordered, case-insensitive multi-map of header fields."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        for n, _ in self._items:
            if n == key:
                return True
        return False

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = canonical_name(name)
        for n, v in self._items:
            if n == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers are split into their elements."""
        key = canonical_name(name)
        values = [v for n, v in self._items if n == key]
        if key in LIST_HEADERS:
            return [item for v in values for item in split_list(v)]
        return values

    def count(self, name: str) -> int:
        """How many header lines carry ``name`` (used to refuse duplicated single headers)."""
        key = canonical_name(name)
        return sum(1 for n, _ in self._items if n == key)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line by one, kept at the first one's place."""
        key = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n == key:
                if not placed:
                    out.append((key, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((key, value))
        self._items = out

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._items = [(n, v) for n, v in self._items if n != key]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h


@dataclass(eq=False)
class Message:
    """Fields common to requests and responses."""

    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    # Parsed header values keyed by (kind, raw text): a request's Via and From
    # are needed by validation, transaction matching and the application.
    memo: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    # -- frequently used header values ---------------------------------
    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) of the CSeq header; (0, "") when absent or bad."""
        value = self.headers.get("CSeq")
        if value is None:
            return (0, "")
        parts = value.split()
        number = ascii_uint(parts[0], 10) if len(parts) == 2 else None
        if number is None:
            return (0, "")
        return (number, parts[1])

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def serialize(self) -> bytes:
        raise NotImplementedError

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


@dataclass(eq=False)
class Request(Message):
    """A SIP request (RFC 3261 §7.1)."""

    method: str = ""
    uri: str = ""
    version: str = "SIP/2.0"

    def serialize(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {self.version}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.call_id!r}>"


@dataclass(eq=False)
class Response(Message):
    """A SIP response (RFC 3261 §7.2)."""

    status: int = 200
    reason: str = "OK"
    version: str = "SIP/2.0"

    def serialize(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.call_id!r}>"


REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    423: "Interval Too Brief",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}

# Headers a response copies from its request (RFC 3261 §8.2.6.2).
_COPIED = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    The To tag is added only if the request's To has none, so in-dialog
    requests and retransmitted answers keep the dialog's tag.
    """
    h = Headers()
    items = h._items
    # Headers of a parsed request are canonical already: copy the tuples.
    for name, value in request.headers:
        if name == "Via":
            items.append((name, value))
    for wanted in _COPIED[1:]:
        for name, value in request.headers:
            if name == wanted:
                if name == "To" and to_tag and ";tag=" not in value.replace(" ", "").lower():
                    value = f"{value};tag={to_tag}"
                items.append((name, value))
                break
    for name, value in headers:
        h.add(name, value)
    return Response(
        headers=h,
        body=body,
        status=status,
        reason=reason if reason is not None else REASON_PHRASES.get(status, ""),
    )


def ensure_parse_error_message(err: SipParseError) -> Request | None:
    """The request part of a parse error, if answering it is possible."""
    msg = err.message
    return msg if isinstance(msg, Request) else None
