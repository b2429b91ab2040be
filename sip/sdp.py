"""SDP (RFC 4566) with the GB/T 28181 ``y=`` and ``f=`` extensions.

Theory of operation
-------------------
``parse(body)`` turns an SDP body into a ``SessionDescription`` and
``SessionDescription.serialize()`` writes it back with CRLF line ends. Lines
the model has no field for (``i=``, ``b=``, ``k=``, vendor lines...) are kept,
in order, in ``extra`` and written back in their RFC 4566 §5 position, so a
body in canonical order survives ``serialize(parse(body)) == body``.

GB/T 28181-2016 Annex F adds two line types:

* ``y=`` the 10-digit SSRC the media will carry (§F.1; the first digit is 0 for
  live and 1 for history, then five SIP-domain digits and a 4-digit sequence);
* ``f=`` the media format line ``v/codec/resolution/fps/rate type/kbps
  a/codec/kbps/sample rate``.

Devices write both after the ``m=`` line (so, for an RFC 4566 reader, inside
the media section); some stacks put them before it. Both positions parse: a
``y=``/``f=`` met before any ``m=`` lands in ``SessionDescription.ssrc`` /
``.format``, one met after an ``m=`` in that ``MediaDescription``. The writer
puts them at the end of their section, as WVP does, and
``SessionDescription.effective_ssrc`` finds the SSRC wherever it was.

Bodies are decoded as UTF-8 with ``surrogateescape`` so a GB2312 session name
survives the round trip byte for byte (RFC 4566 §5 allows ``a=charset``).
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from sip.errors import RemoteSipError

log = logging.getLogger(__name__)

__all__ = [
    "parse_stream_choice",
    "Connection",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "build_gb_answer",
    "build_gb_offer",
    "parse",
    "serialize",
]

# Beyond this an SDP body is not a GB offer/answer but an attack or a bug.
MAX_SDP_BYTES = 64 * 1024

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
SETUP_ROLES = ("active", "passive", "actpass", "holdconn")
GB_SESSIONS = ("Play", "Playback", "Download", "Talk")

# WVP's offer: PS first, then the raw ES payloads a device may prefer.
DEFAULT_VIDEO_PAYLOADS = ("96 PS/90000", "98 H264/90000", "97 MPEG4/90000", "99 H265/90000")
# GB/T 28181-2016 §9.12 voice: G.711A 8 kHz.
DEFAULT_TALK_PAYLOADS = ("8 PCMA/8000",)

# RFC 4566 §5: the order of session-level and media-level lines.
_SESSION_ORDER = "vosiuepcbtrzka"
_MEDIA_ORDER = "micbka"
_KNOWN_SESSION_EXTRA = frozenset("iepbtrzk")
_KNOWN_MEDIA_EXTRA = frozenset("ibk")

_SSRC_RE = re.compile(r"[0-9]{1,10}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+")

# Sub-stream selection attributes (GB/T 28181-2022 ``streamnumber``;
# ``stream`` from 2016-era firmware, ``streamprofile`` Dahua, ``streamMode``
# TP-Link/Mercury). ``streamMode`` takes main/sub rather than a number.
_STREAM_INDEX_ATTRS = ("stream", "streamnumber", "streamprofile", "streammode")
_STREAM_MODE_NAMES = {"main": 0, "sub": 1}
_STREAM_ATTR_SPELLING = {"stream": "stream", "streamnumber": "streamnumber",
                         "streamprofile": "streamprofile", "streammode": "streamMode"}


def parse_stream_choice(text: str) -> tuple[str, int]:
    """A device's stream choice as the ``(attribute, index)`` to offer.

    ``"1"`` is GB/T 28181-2022's ``a=streamnumber:1``; the vendor spellings
    are written out: ``"stream:1"`` (2016-era firmware, Hikvision),
    ``"streamprofile:1"`` (Dahua), ``"streamMode:sub"`` (TP-Link/Mercury).
    Index 0 is the main stream, 1 the sub stream, 2 a third stream.
    """
    name, sep, value = text.strip().partition(":")
    if not sep:
        name, value = "streamnumber", name
    spelling = _STREAM_ATTR_SPELLING.get(name.strip().lower())
    if spelling is None:
        raise SdpError(f"unknown stream attribute {name!r}: use stream, streamnumber, streamprofile or streamMode")
    value = value.strip().lower()
    if value in _STREAM_MODE_NAMES:
        return spelling, _STREAM_MODE_NAMES[value]
    if value.isdigit() and int(value) <= 9:
        return spelling, int(value)
    raise SdpError(f"stream index {value!r} must be 0-9, main or sub")


class SdpError(RemoteSipError, ValueError):
    """An SDP body is malformed or unusable (RFC 4566 §5, GB/T 28181-2016 Annex F).

    ``status_hint`` is 400 for a syntax error and 488 (RFC 3261 §21.4.26)
    when the body parses but offers nothing usable.
    """

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason, status_hint)


@dataclass(frozen=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`` (RFC 4566 §5.2).

    GB/T 28181-2016 §F.1 puts the 20-digit ID of the side that wrote the body in
    ``username``. Session id and version stay strings: they may exceed 64 bits.
    """

    username: str
    session_id: str
    session_version: str
    net_type: str
    addr_type: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(frozen=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 4566 §5.7)."""

    net_type: str
    addr_type: str
    address: str

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl[/count]`` suffix."""
        return self.address.split("/", 1)[0]

    def __str__(self) -> str:
        return f"{self.net_type} {self.addr_type} {self.address}"


Attribute = tuple[str, str | None]


def _attribute(attributes: Iterable[Attribute], name: str) -> str | None:
    """The value of the first ``a=name[:value]``; ``""`` for a flag attribute."""
    lname = name.lower()
    for key, value in attributes:
        if key.lower() == lname:
            return "" if value is None else value
    return None


def _direction(attributes: Iterable[Attribute]) -> str | None:
    for key, value in attributes:
        if value is None and key.lower() in DIRECTIONS:
            return key.lower()
    return None


@dataclass(frozen=True)
class MediaDescription:
    """One ``m=`` section (RFC 4566 §5.14) with its GB ``y=``/``f=`` lines.

    ``port_count`` is the ``/<number of ports>`` suffix, ``None`` when absent.
    ``extra`` keeps ``(type, value)`` of lines with no field here, in order.
    """

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: list[str]
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    ssrc: str | None = None
    format: str | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """First value of ``a=<name>`` (case-insensitive name); ``""`` for a flag."""
        return _attribute(self.attributes, name)

    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """``a=rtpmap:<pt> <encoding>/<clock>[/<params>]`` as ``{pt: (encoding, clock)}``.

        RFC 4566 §6. A malformed rtpmap is logged and skipped: one bad line for
        a payload nobody uses must not fail the whole INVITE.
        """
        result: dict[int, tuple[str, int]] = {}
        for key, value in self.attributes:
            if key.lower() != "rtpmap" or value is None:
                continue
            try:
                pt_text, encoding_text = value.strip().split(None, 1)
                parts = encoding_text.strip().split("/")
                result[int(pt_text)] = (parts[0], int(parts[1]))
            except (ValueError, IndexError):
                log.warning("ignoring malformed a=rtpmap:%r", value)
        return result

    @property
    def direction(self) -> str | None:
        """``sendrecv``/``sendonly``/``recvonly``/``inactive`` if set on this media (RFC 4566 §6)."""
        return _direction(self.attributes)

    @property
    def setup(self) -> str | None:
        """The RFC 4145 §4 ``a=setup`` role: active, passive, actpass or holdconn."""
        value = self.attribute("setup")
        if value is None:
            return None
        role = value.strip().lower()
        return role if role in SETUP_ROLES else None

    @property
    def is_tcp(self) -> bool:
        """True for ``TCP/RTP/AVP`` (RFC 4571) and the ``RTP/AVP/TCP`` some devices write."""
        return "TCP" in self.proto.upper().split("/")

    @property
    def stream_index(self) -> tuple[str, int] | None:
        """Sub-stream selection as ``(attribute, index)``, e.g. ``("streamnumber", 1)``.

        GB/T 28181-2022 ``a=streamnumber``, and the vendor spellings
        ``a=stream`` / ``a=streamprofile`` / ``a=streamMode:main|sub``; main = 0.
        """
        for key, value in self.attributes:
            if key.lower() not in _STREAM_INDEX_ATTRS or value is None:
                continue
            text = value.strip()
            if text.isdigit():
                return key, int(text)
            if text.lower() in _STREAM_MODE_NAMES:
                return key, _STREAM_MODE_NAMES[text.lower()]
            log.warning("ignoring a=%s:%r: not a stream index", key, value)
        return None

    @property
    def download_speed(self) -> int | None:
        """``a=downloadspeed`` multiple for a Download session (GB/T 28181-2016 §F.1)."""
        return self._int_attribute("downloadspeed")

    @property
    def file_size(self) -> int | None:
        """``a=filesize`` in bytes from a Download answer (GB/T 28181-2016 §F.1)."""
        return self._int_attribute("filesize")

    @property
    def ssrc_int(self) -> int | None:
        """``y=`` as an integer (GB/T 28181-2016 §F.1)."""
        return None if self.ssrc is None else int(self.ssrc)

    def _int_attribute(self, name: str) -> int | None:
        value = self.attribute(name)
        if value is None:
            return None
        try:
            return int(value.strip())
        except ValueError:
            log.warning("ignoring non-numeric a=%s:%r", name, value)
            return None

    def lines(self) -> list[str]:
        """The section's lines without line ends, in RFC 4566 §5 order, y=/f= last."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [" ".join([f"m={self.media}", port, self.proto, *self.formats])]
        out.extend(_ordered_lines(self._fields(), self.extra, _MEDIA_ORDER, _KNOWN_MEDIA_EXTRA))
        if self.ssrc is not None:
            out.append(f"y={self.ssrc}")
        if self.format is not None:
            out.append(f"f={self.format}")
        return out

    def _fields(self) -> dict[str, list[str]]:
        return {
            "c": [] if self.connection is None else [f"c={self.connection}"],
            "a": [_attribute_line(a) for a in self.attributes],
        }


@dataclass(frozen=True)
class SessionDescription:
    """A parsed SDP body (RFC 4566 §5) with the GB/T 28181-2016 Annex F lines.

    ``ssrc``/``format`` are a ``y=``/``f=`` written before the first ``m=``;
    the usual place is after it, in ``MediaDescription``; ``effective_ssrc``
    looks in both. ``extra`` keeps lines with no field here, in order.
    """

    version: int
    origin: Origin
    session_name: str
    uri: str | None = None
    connection: Connection | None = None
    timing: tuple[int, int] = (0, 0)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    ssrc: str | None = None
    format: str | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """First value of a session-level ``a=<name>``; ``""`` for a flag."""
        return _attribute(self.attributes, name)

    def first_media(self, kind: str | None = None) -> MediaDescription | None:
        """The first ``m=`` section, or the first of ``kind`` (video, audio)."""
        for media in self.media:
            if kind is None or media.media.lower() == kind.lower():
                return media
        return None

    def media_ip(self, media: MediaDescription | None = None) -> str | None:
        """Where the media goes: the media ``c=`` else the session ``c=`` (RFC 4566 §5.7).

        ``media`` defaults to the first ``m=`` section. M7S and WVP connect to
        this address for TCP-active (GB/T 28181-2016 §F.1).
        """
        if media is None:
            media = self.first_media()
        if media is not None and media.connection is not None:
            return media.connection.host
        return None if self.connection is None else self.connection.host

    def media_direction(self, media: MediaDescription) -> str:
        """The media's direction, else the session's, else ``sendrecv`` (RFC 4566 §6)."""
        return media.direction or _direction(self.attributes) or "sendrecv"

    @property
    def effective_ssrc(self) -> str | None:
        """The ``y=`` SSRC wherever it was written: session level or first media that has one."""
        if self.ssrc is not None:
            return self.ssrc
        for media in self.media:
            if media.ssrc is not None:
                return media.ssrc
        return None

    @property
    def ssrc_int(self) -> int | None:
        """``effective_ssrc`` as an integer, the value RTP packets carry (GB/T 28181-2016 §F.1)."""
        ssrc = self.effective_ssrc
        return None if ssrc is None else int(ssrc)

    @property
    def effective_format(self) -> str | None:
        """The ``f=`` line wherever it was written."""
        if self.format is not None:
            return self.format
        for media in self.media:
            if media.format is not None:
                return media.format
        return None

    def serialize(self) -> bytes:
        """The body with CRLF line ends (RFC 4566 §5), y=/f= at the end as WVP writes them."""
        session_fields = {
            "v": [f"v={self.version}"],
            "o": [f"o={self.origin}"],
            # RFC 4566 §5.3: "s= " when the session has no name.
            "s": [f"s={self.session_name or ' '}"],
            "u": [] if self.uri is None else [f"u={self.uri}"],
            "c": [] if self.connection is None else [f"c={self.connection}"],
            "t": [f"t={self.timing[0]} {self.timing[1]}"],
            "a": [_attribute_line(a) for a in self.attributes],
        }
        out = _ordered_lines(session_fields, self.extra, _SESSION_ORDER, _KNOWN_SESSION_EXTRA)
        # After the last m= a session y=/f= reads back as that section's own; when a
        # section has its own, the session one stays before the first m= instead.
        tail: list[str] = []
        for kind, value, media_has in (("y", self.ssrc, any(m.ssrc is not None for m in self.media)),
                                       ("f", self.format, any(m.format is not None for m in self.media))):
            if value is not None:
                (out if media_has else tail).append(f"{kind}={value}")
        for media in self.media:
            out.extend(media.lines())
        out.extend(tail)
        return "".join(line + "\r\n" for line in out).encode("utf-8", "surrogateescape")


def serialize(sdp: SessionDescription) -> bytes:
    """Module-level spelling of ``SessionDescription.serialize``."""
    return sdp.serialize()


def _attribute_line(attribute: Attribute) -> str:
    name, value = attribute
    return f"a={name}" if value is None else f"a={name}:{value}"


def _ordered_lines(
    fields: dict[str, list[str]],
    extra: list[tuple[str, str]],
    order: str,
    known_extra: frozenset[str],
) -> list[str]:
    """Modelled lines and ``extra`` lines merged in RFC 4566 §5 order.

    A known-but-unmodelled type (``i=``, ``b=``...) goes to its RFC slot, an
    unknown type after the ``a=`` lines; each group keeps its received order.
    """
    out: list[str] = []
    for kind in order:
        out.extend(fields.get(kind, ()))
        out.extend(f"{k}={v}" for k, v in extra if k == kind)
    out.extend(f"{k}={v}" for k, v in extra if k not in known_extra)
    return out


# -- parser -------------------------------------------------------------------


def parse(body: bytes) -> SessionDescription:
    """Parse an SDP body (RFC 4566 §5) with GB ``y=``/``f=`` lines (GB/T 28181-2016 Annex F).

    Tolerates LF-only line ends, trailing whitespace, blank lines, trailing NUL
    padding (some embedded stacks count the C terminator in Content-Length) and
    unknown line types (kept in ``extra``). Raises ``SdpError`` naming the line
    for anything it cannot model: no ``v=`` first, a bad ``o=``/``c=``/``t=``/
    ``m=`` line, a non-numeric port, a ``y=`` that is not 1-10 digits.
    """
    if len(body) > MAX_SDP_BYTES:
        raise SdpError(f"SDP body too large ({len(body)} bytes > {MAX_SDP_BYTES})")
    text = body.rstrip(b"\x00").decode("utf-8", "surrogateescape")
    lines = [(n, line.rstrip()) for n, line in enumerate(text.split("\n"), 1)]
    lines = [(n, line) for n, line in lines if line]
    if not lines:
        raise SdpError("empty SDP body")
    first_no, first = lines[0]
    if not first.startswith("v="):
        raise SdpError(f"line {first_no}: SDP must start with v=, got {first[:40]!r}")
    try:
        version = int(first[2:].strip())
    except ValueError:
        raise SdpError(f"line {first_no}: bad v= {first[2:]!r}") from None

    session = _SessionBuilder(version)
    current: _MediaBuilder | None = None
    for number, line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or line[0] not in string.ascii_letters:
            raise SdpError(f"line {number}: expected <type>=<value>, got {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            current = _MediaBuilder.from_line(value, number)
            session.media.append(current)
        elif current is not None:
            current.add(kind, value, number)
        else:
            session.add(kind, value, number)
    return session.build()


def _duplicate(kind: str, number: int) -> SdpError:
    return SdpError(f"line {number}: duplicate {kind}= line")


def _parse_ssrc(value: str, number: int) -> str:
    ssrc = value.strip()
    if not _SSRC_RE.fullmatch(ssrc):
        raise SdpError(f"line {number}: bad y= {value!r}: SSRC must be 1-10 decimal digits")
    return ssrc


def _parse_connection(value: str, number: int) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"line {number}: bad c= {value!r}: expected <nettype> <addrtype> <address>")
    return Connection(parts[0], parts[1], parts[2])


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return (name, rest) if sep else (name, None)


class _SessionBuilder:
    def __init__(self, version: int) -> None:
        self.version = version
        self.origin: Origin | None = None
        self.session_name: str | None = None
        self.uri: str | None = None
        self.connection: Connection | None = None
        self.timing: tuple[int, int] | None = None
        self.attributes: list[Attribute] = []
        self.media: list[_MediaBuilder] = []
        self.ssrc: str | None = None
        self.format: str | None = None
        self.extra: list[tuple[str, str]] = []

    def add(self, kind: str, value: str, number: int) -> None:
        if kind == "v":
            raise _duplicate("v", number)
        if kind == "o":
            if self.origin is not None:
                raise _duplicate("o", number)
            parts = value.split()
            if len(parts) != 6:
                raise SdpError(f"line {number}: bad o= {value!r}: expected 6 fields")
            self.origin = Origin(*parts)
        elif kind == "s":
            if self.session_name is not None:
                raise _duplicate("s", number)
            self.session_name = value.strip()
        elif kind == "u":
            if self.uri is not None:
                raise _duplicate("u", number)
            self.uri = value
        elif kind == "c":
            if self.connection is not None:
                raise _duplicate("c", number)
            self.connection = _parse_connection(value, number)
        elif kind == "t" and self.timing is None:
            parts = value.split()
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                raise SdpError(f"line {number}: bad t= {value!r}: expected <start> <stop>")
            self.timing = (int(parts[0]), int(parts[1]))
        elif kind == "a":
            self.attributes.append(_parse_attribute(value))
        elif kind == "y":
            if self.ssrc is not None:
                raise _duplicate("y", number)
            self.ssrc = _parse_ssrc(value, number)
        elif kind == "f":
            if self.format is not None:
                raise _duplicate("f", number)
            self.format = value.strip()
        else:
            # Repeated t= (RFC 4566 §5.9 allows several), r=, z=, i=, vendor lines.
            self.extra.append((kind, value))

    def build(self) -> SessionDescription:
        if self.origin is None:
            raise SdpError("missing o= line")
        if self.session_name is None:
            log.warning("SDP without s= line; treating the session name as empty")
        return SessionDescription(
            version=self.version,
            origin=self.origin,
            session_name=self.session_name or "",
            uri=self.uri,
            connection=self.connection,
            timing=self.timing or (0, 0),
            attributes=self.attributes,
            media=[m.build() for m in self.media],
            ssrc=self.ssrc,
            format=self.format,
            extra=self.extra,
        )


class _MediaBuilder:
    def __init__(
        self, media: str, port: int, port_count: int | None, proto: str, formats: list[str]
    ) -> None:
        self.media = media
        self.port = port
        self.port_count = port_count
        self.proto = proto
        self.formats = formats
        self.connection: Connection | None = None
        self.attributes: list[Attribute] = []
        self.ssrc: str | None = None
        self.format: str | None = None
        self.extra: list[tuple[str, str]] = []

    @classmethod
    def from_line(cls, value: str, number: int) -> _MediaBuilder:
        """``m=<media> <port>[/<count>] <proto> <fmt> ...`` (RFC 4566 §5.14)."""
        parts = value.split()
        if len(parts) < 4:
            raise SdpError(
                f"line {number}: bad m= {value!r}: expected <media> <port> <proto> <fmt>..."
            )
        port_text, _, count_text = parts[1].partition("/")
        if not port_text.isdigit() or int(port_text) > 65535:
            raise SdpError(f"line {number}: bad m= port {parts[1]!r}: not a port number")
        count: int | None = None
        if count_text:
            if not count_text.isdigit():
                raise SdpError(f"line {number}: bad m= port count {parts[1]!r}")
            count = int(count_text)
        return cls(parts[0], int(port_text), count, parts[2], parts[3:])

    def add(self, kind: str, value: str, number: int) -> None:
        if kind == "c":
            if self.connection is not None:
                raise _duplicate("c", number)
            self.connection = _parse_connection(value, number)
        elif kind == "a":
            self.attributes.append(_parse_attribute(value))
        elif kind == "y":
            if self.ssrc is not None:
                raise _duplicate("y", number)
            self.ssrc = _parse_ssrc(value, number)
        elif kind == "f":
            if self.format is not None:
                raise _duplicate("f", number)
            self.format = value.strip()
        elif kind in "vostu":
            # RFC 4566 §5: these belong before the first m=; a body that puts
            # them after is not one we can answer sensibly.
            raise SdpError(f"line {number}: {kind}= line inside a media section")
        else:
            self.extra.append((kind, value))

    def build(self) -> MediaDescription:
        return MediaDescription(
            media=self.media,
            port=self.port,
            port_count=self.port_count,
            proto=self.proto,
            formats=self.formats,
            connection=self.connection,
            attributes=self.attributes,
            ssrc=self.ssrc,
            format=self.format,
            extra=self.extra,
        )


# -- GB/T 28181 builders --------------------------------------------------------


def _check_ssrc(ssrc: str) -> None:
    if not _SSRC_RE.fullmatch(ssrc):
        raise ValueError(f"SSRC {ssrc!r} must be 1-10 decimal digits (GB/T 28181-2016 §F.1)")


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")


def _tcp_attributes(tcp: str | None) -> list[Attribute]:
    """RFC 4145 §4 ``a=setup`` and §5 ``a=connection:new`` for RTP over TCP (RFC 4571)."""
    if tcp is None:
        return []
    if tcp not in ("active", "passive"):
        raise ValueError(f"tcp must be 'active' or 'passive', not {tcp!r}")
    return [("setup", tcp), ("connection", "new")]


def build_gb_offer(
    *,
    device_id: str,
    channel_id: str,
    ip: str,
    port: int,
    ssrc: str,
    session: str = "Play",
    tcp: str | None = None,
    start: int = 0,
    end: int = 0,
    download_speed: int | None = None,
    stream_index: tuple[str, int] | None = None,
    payloads: Iterable[str] = DEFAULT_VIDEO_PAYLOADS,
    media_format: str | None = None,
) -> SessionDescription:
    """The SDP offer of a platform INVITE (GB/T 28181-2016 Annex F; WVP ``SIPCommander``).

    Sessions: Play (§9.2), Playback (§9.8), Download (§9.9), Talk (§9.12).

    ``device_id`` is the offerer's ID written in ``o=``; ``channel_id`` goes in
    ``u=<channel>:0`` for Playback and Download (§F.1 "简捷方式"). ``ip``/``port``
    are where this side receives media. ``tcp`` selects ``TCP/RTP/AVP`` with
    ``a=setup`` from the offerer's view (``passive``: we listen). ``start``/``end``
    are the epoch seconds of ``t=`` for Playback/Download. ``payloads`` are
    ``"<pt> <encoding>/<clock>"`` strings; a Talk session (§9.12) with the
    default video payloads offers G.711A audio, sendrecv, instead.
    """
    if session not in GB_SESSIONS:
        raise ValueError(f"session must be one of {GB_SESSIONS}, not {session!r}")
    _check_ssrc(ssrc)
    _check_port(port)
    payload_list = list(payloads)
    kind, direction = "video", "recvonly"
    if session == "Talk":
        kind, direction = "audio", "sendrecv"
        if tuple(payload_list) == DEFAULT_VIDEO_PAYLOADS:
            payload_list = list(DEFAULT_TALK_PAYLOADS)
    attributes: list[Attribute] = [(direction, None)]
    formats: list[str] = []
    for payload in payload_list:
        pt, _, encoding = payload.partition(" ")
        if not pt.isdigit() or "/" not in encoding:
            raise ValueError(f"payload {payload!r} must look like '96 PS/90000'")
        formats.append(pt)
        attributes.append(("rtpmap", f"{pt} {encoding}"))
    attributes.extend(_tcp_attributes(tcp))
    if download_speed is not None:
        attributes.append(("downloadspeed", str(download_speed)))
    if stream_index is not None:
        name, index = stream_index
        if name.lower() == "streammode":
            attributes.append((name, "main" if index == 0 else "sub"))
        else:
            attributes.append((name, str(index)))
    history = session in ("Playback", "Download")
    return SessionDescription(
        version=0,
        origin=Origin(device_id, "0", "0", "IN", "IP4", ip),
        session_name=session,
        uri=f"{channel_id}:0" if history else None,
        connection=Connection("IN", "IP4", ip),
        timing=(start, end) if history else (0, 0),
        media=[
            MediaDescription(
                media=kind,
                port=port,
                port_count=None,
                proto="TCP/RTP/AVP" if tcp else "RTP/AVP",
                formats=formats,
                attributes=attributes,
                ssrc=ssrc,
                format=media_format,
            )
        ],
    )


_ANSWER_DIRECTION = {
    "recvonly": "sendonly",
    "sendonly": "recvonly",
    "sendrecv": "sendrecv",
    "inactive": "inactive",
}
_INVERTED_SETUP = {"active": "passive", "passive": "active", "actpass": "active"}
_ANSWER_ENCODINGS = ("PS", "PCMA", "PCMU")


def build_gb_answer(
    offer: SessionDescription,
    *,
    device_id: str,
    ip: str,
    port: int,
    ssrc: str | None = None,
    media_format: str | None = None,
    encodings: Iterable[str] = _ANSWER_ENCODINGS,
) -> SessionDescription:
    """A device's (or lower platform's) answer to a GB INVITE offer (GB/T 28181-2016 §9.2).

    Shape of eXosip devices and WVP ``InviteRequestProcessor``: ``s=``/``t=``
    echoed, one ``m=`` with the offered PS payload (PCMA/PCMU for Talk), the
    inverse direction (recvonly -> sendonly, RFC 3264 §6.1), the same transport,
    ``a=setup`` inverted for TCP (RFC 4145 §4; actpass -> active) and ``y=``
    echoed unless ``ssrc`` overrides it. ``encodings`` are the rtpmap names the
    answerer can send (a camera sending raw H.264 answers ``("H264",)``). Raises
    ``SdpError`` (488) when the offer has none of them or no SSRC.
    """
    _check_port(port)
    wanted = {e.upper() for e in encodings}
    chosen: tuple[MediaDescription, int, str, int] | None = None
    for media in offer.media:
        for pt, (encoding, clock) in media.rtpmap().items():
            if encoding.upper() in wanted and str(pt) in media.formats:
                chosen = (media, pt, encoding, clock)
                break
        if chosen is not None:
            break
    if chosen is None:
        raise SdpError(f"offer has no {'/'.join(sorted(wanted))} payload to answer", 488)
    media, pt, encoding, clock = chosen
    answer_ssrc = ssrc if ssrc is not None else offer.effective_ssrc
    if answer_ssrc is None:
        raise SdpError("offer carries no y= SSRC", 488)
    _check_ssrc(answer_ssrc)
    attributes: list[Attribute] = [
        (_ANSWER_DIRECTION[offer.media_direction(media)], None),
        ("rtpmap", f"{pt} {encoding}/{clock}"),
    ]
    if media.is_tcp:
        offered = media.setup or "actpass"
        attributes += [("setup", _INVERTED_SETUP.get(offered, "active")), ("connection", "new")]
    return SessionDescription(
        version=0,
        origin=Origin(device_id, "0", "0", "IN", "IP4", ip),
        session_name=offer.session_name,
        connection=Connection("IN", "IP4", ip),
        timing=offer.timing,
        media=[
            MediaDescription(
                media=media.media,
                port=port,
                port_count=None,
                proto=media.proto,
                formats=[str(pt)],
                attributes=attributes,
                ssrc=answer_ssrc,
                format=media_format,
            )
        ],
    )
