"""MANSCDP XML codec: bodies of SIP MESSAGE/NOTIFY ``Application/MANSCDP+xml``.

GB/T 28181-2016 Annex A defines four root elements (``Query``, ``Control``,
``Notify``, ``Response``, §A.2.1), each starting with ``CmdType``, ``SN`` and
``DeviceID`` and followed by command-specific children.

Theory of operation
-------------------
Decoding is a pipeline over one bounded body::

    bytes --charset--> str --quirk repair--> lxml (strict, then recover) --> typed message

1. *Charset.*  The standard's default is GB2312 (§A.1), but devices label
   UTF-8 bytes as GB2312, send GBK/GB18030-only characters under a GB2312
   label, or omit the declaration.  GB-family labels are decoded as GB18030
   (a strict superset).  Because GB18030 also accepts about half of all
   UTF-8 Chinese strings (as mojibake) while GB text is rarely valid UTF-8,
   a body that is valid UTF-8 wins unless its UTF-8 reading looks like
   mojibake (see ``_prefer_utf8``).  The charset actually used is returned
   in ``ManscdpMessage.charset`` so the platform can remember it per device.
2. *Quirk repair* on the decoded text: BOM, XML declaration (lxml refuses a
   ``str`` carrying one), trailing NULs and garbage after the root element,
   stray control characters, and Hikvision's bare ``&`` in names.
3. *Parse* with lxml configured not to load DTDs, resolve entities or touch
   the network; if strict parsing fails the recovering parser is tried.  When
   the body was cut short, whatever the cut left unfinished (a leaf whose
   value may be partial, a half-sent catalog ``Item``) is dropped, so a
   truncated ``<SN>3154`` never turns into SN 31.
4. *Build* a frozen dataclass chosen by ``(root, CmdType)``; unknown commands
   become the generic ``Query``/``Control``/``Notify``/``Response`` with every
   simple child in ``fields``.

Every repair appends a named quirk to ``ManscdpMessage.quirks`` and is
logged, so devices that need them can be counted.

Encoding builds the text by hand (CmdType, SN, DeviceID first, one element
per line, LF line ends like eXosip devices) and encodes it in the requested
charset, falling back to GB18030 (and declaring it) when a character does
not fit.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Final, TypeAlias, TypedDict

from lxml import etree

__all__ = [
    "QUIRK_BARE_AMPERSAND",
    "QUIRK_BOM",
    "QUIRK_CONTROL_CHARS",
    "QUIRK_GB_BODY_UTF8_LABEL",
    "QUIRK_GB_SUPERSET_CHARS",
    "QUIRK_ITEMS_UNDER_ROOT",
    "QUIRK_RECOVERED_XML",
    "QUIRK_TRAILING_GARBAGE",
    "QUIRK_TRUNCATED",
    "QUIRK_UNDECODABLE_BYTES",
    "QUIRK_UNKNOWN_CHARSET",
    "QUIRK_UTF8_BODY_GB_LABEL",
    "AlarmStatus",
    "BasicParam",
    "CatalogItem",
    "CatalogNotify",
    "CatalogResponse",
    "ConfigDownloadResponse",
    "Control",
    "ControlResponse",
    "DeviceInfoResponse",
    "DeviceStatusResponse",
    "Keepalive",
    "ManscdpError",
    "ManscdpMessage",
    "Notify",
    "Query",
    "Response",
    "XmlValue",
    "decode",
    "encode_catalog_response",
    "encode_config_download_response",
    "encode_control",
    "encode_device_info_response",
    "encode_device_status_response",
    "encode_keepalive",
    "encode_notify",
    "encode_query",
    "encode_response",
    "format_gb_time",
    "parse_gb_time",
]

logger = logging.getLogger(__name__)

# Named vendor quirks, recorded in ManscdpMessage.quirks (HOUSE_STYLE: each one named and tested).
QUIRK_BOM: Final = "leading-bom"
QUIRK_UTF8_BODY_GB_LABEL: Final = "utf8-body-gb-label"
QUIRK_GB_BODY_UTF8_LABEL: Final = "gb-body-utf8-label"
QUIRK_GB_SUPERSET_CHARS: Final = "gb-superset-chars"
QUIRK_UNKNOWN_CHARSET: Final = "unknown-charset-label"
QUIRK_UNDECODABLE_BYTES: Final = "undecodable-bytes-replaced"
QUIRK_TRAILING_GARBAGE: Final = "trailing-garbage"
QUIRK_CONTROL_CHARS: Final = "control-characters"
QUIRK_BARE_AMPERSAND: Final = "bare-ampersand"
QUIRK_RECOVERED_XML: Final = "recovered-xml"
QUIRK_TRUNCATED: Final = "truncated-body"
QUIRK_ITEMS_UNDER_ROOT: Final = "items-under-root"

_ROOTS: Final = {"query": "Query", "control": "Control", "notify": "Notify", "response": "Response"}
_HEADER_TAGS: Final = frozenset({"cmdtype", "sn", "deviceid"})
_MAX_INT_DIGITS: Final = 20


class ManscdpError(Exception):
    """A MANSCDP body that cannot be used even after vendor-quirk recovery.

    The message names the reason (size, not XML, wrong root, missing
    CmdType/SN/DeviceID, non-integer SN or SumNum); the SIP layer answers 400
    or drops the body.
    """


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, kw_only=True)
class ManscdpMessage:
    """Common header of every MANSCDP body (GB/T 28181-2016 §A.2.1).

    ``fields`` holds every simple (leaf) child of the root other than
    CmdType/SN/DeviceID, typed or not, so unknown commands stay readable.
    ``charset`` is the charset the body was actually decoded with.
    """

    kind: str
    cmd_type: str
    sn: int
    device_id: str
    charset: str
    fields: dict[str, str] = field(default_factory=dict)
    quirks: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Query(ManscdpMessage):
    """A ``<Query>`` body (GB/T 28181-2016 §A.2.4)."""


@dataclass(frozen=True, kw_only=True)
class Control(ManscdpMessage):
    """A ``<Control>`` body (GB/T 28181-2016 §A.2.3)."""


@dataclass(frozen=True, kw_only=True)
class Notify(ManscdpMessage):
    """A ``<Notify>`` body (GB/T 28181-2016 §A.2.5)."""


@dataclass(frozen=True, kw_only=True)
class Response(ManscdpMessage):
    """A ``<Response>`` body (GB/T 28181-2016 §A.2.6); ``result`` is OK/ERROR when sent."""

    result: str | None = None


@dataclass(frozen=True, kw_only=True)
class ControlResponse(Response):
    """Answer to DeviceControl/DeviceConfig (GB/T 28181-2016 §A.2.6.2, §A.2.6.3)."""


@dataclass(frozen=True, kw_only=True)
class Keepalive(Notify):
    """Keepalive notification (GB/T 28181-2016 §A.2.5.2, §9.6)."""

    status: str | None = None


@dataclass(frozen=True, kw_only=True)
class CatalogItem:
    """One catalog entry (GB/T 28181-2016 §A.2.6.4 ``itemType``); every field is optional.

    ``business_group_id`` is read from the item or, failing that, from
    ``<Info>``; ``info`` holds the ``<Info>`` children (PTZType, PositionType,
    Resolution...); ``event`` is set in catalog NOTIFYs (§A.2.5.4: ON, OFF,
    VLOST, DEFECT, ADD, DEL, UPDATE); ``extra`` keeps unknown simple children.
    """

    device_id: str | None = None
    event: str | None = None
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    block: str | None = None
    address: str | None = None
    parental: str | None = None
    parent_id: str | None = None
    business_group_id: str | None = None
    safety_way: str | None = None
    register_way: str | None = None
    cert_num: str | None = None
    certifiable: str | None = None
    err_code: str | None = None
    end_time: str | None = None
    secrecy: str | None = None
    ip_address: str | None = None
    port: str | None = None
    password: str | None = None
    status: str | None = None
    longitude: str | None = None
    latitude: str | None = None
    info: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


# (attribute, element) in the element order of GB/T 28181-2016 §A.2.6.4.
_CATALOG_ITEM_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("device_id", "DeviceID"),
    ("event", "Event"),
    ("name", "Name"),
    ("manufacturer", "Manufacturer"),
    ("model", "Model"),
    ("owner", "Owner"),
    ("civil_code", "CivilCode"),
    ("block", "Block"),
    ("address", "Address"),
    ("parental", "Parental"),
    ("parent_id", "ParentID"),
    ("business_group_id", "BusinessGroupID"),
    ("safety_way", "SafetyWay"),
    ("register_way", "RegisterWay"),
    ("cert_num", "CertNum"),
    ("certifiable", "Certifiable"),
    ("err_code", "ErrCode"),
    ("end_time", "EndTime"),
    ("secrecy", "Secrecy"),
    ("ip_address", "IPAddress"),
    ("port", "Port"),
    ("password", "Password"),
    ("status", "Status"),
    ("longitude", "Longitude"),
    ("latitude", "Latitude"),
)


@dataclass(frozen=True, kw_only=True)
class CatalogResponse(Response):
    """Catalog answer (GB/T 28181-2016 §A.2.6.4), one of possibly many MESSAGEs.

    ``sum_num`` is the total over all MESSAGEs for this SN, ``num`` the
    ``DeviceList Num`` declared for this one (None when absent/garbled),
    ``items`` the entries actually present.
    """

    sum_num: int = 0
    num: int | None = None
    items: tuple[CatalogItem, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CatalogNotify(Notify):
    """Catalog change notification in a subscription NOTIFY (GB/T 28181-2016 §A.2.5.4)."""

    sum_num: int = 0
    num: int | None = None
    items: tuple[CatalogItem, ...] = ()


@dataclass(frozen=True, kw_only=True)
class DeviceInfoResponse(Response):
    """DeviceInfo answer (GB/T 28181-2016 §A.2.6.5)."""

    device_name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None
    channel: int | None = None


@dataclass(frozen=True, kw_only=True)
class AlarmStatus:
    """One ``Alarmstatus/Item`` of a DeviceStatus answer (GB/T 28181-2016 §A.2.6.6)."""

    device_id: str | None = None
    duty_status: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceStatusResponse(Response):
    """DeviceStatus answer (GB/T 28181-2016 §A.2.6.6).

    ``device_time`` is parsed leniently; the raw text stays in ``fields``.
    """

    online: str | None = None
    status: str | None = None
    reason: str | None = None
    encode: str | None = None
    record: str | None = None
    device_time: datetime | None = None
    alarm_status: tuple[AlarmStatus, ...] = ()


@dataclass(frozen=True, kw_only=True)
class BasicParam:
    """``BasicParam`` of ConfigDownload/DeviceConfig (GB/T 28181-2016 §A.2.6.8, §A.2.3.2).

    Numeric values that do not parse are logged and become None.
    """

    name: str | None = None
    device_id: str | None = None
    sip_server_id: str | None = None
    sip_server_ip: str | None = None
    sip_server_port: int | None = None
    domain_name: str | None = None
    expiration: int | None = None
    password: str | None = None
    heart_beat_interval: int | None = None
    heart_beat_count: int | None = None
    position_capability: int | None = None
    longitude: str | None = None
    latitude: str | None = None


# (attribute, element) in the element order of GB/T 28181-2016 §A.2.6.8.
_BASIC_PARAM_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("name", "Name"),
    ("device_id", "DeviceID"),
    ("sip_server_id", "SIPServerID"),
    ("sip_server_ip", "SIPServerIP"),
    ("sip_server_port", "SIPServerPort"),
    ("domain_name", "DomainName"),
    ("expiration", "Expiration"),
    ("password", "Password"),
    ("heart_beat_interval", "HeartBeatInterval"),
    ("heart_beat_count", "HeartBeatCount"),
    ("position_capability", "PositionCapability"),
    ("longitude", "Longitude"),
    ("latitude", "Latitude"),
)


@dataclass(frozen=True, kw_only=True)
class ConfigDownloadResponse(Response):
    """ConfigDownload answer (GB/T 28181-2016 §A.2.6.8); only BasicParam is typed."""

    basic_param: BasicParam | None = None


# --------------------------------------------------------------------------- time


_GB_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d{1,9}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)


def parse_gb_time(s: str | None) -> datetime | None:
    """Parse a GB/T 28181-2016 §A.2.1 ``dateTime`` leniently, or return None.

    Accepts ``2006-01-02T15:04:05``, unpadded ``2006-1-2T15:4:5``, a space
    instead of ``T``, fractions, and a date alone.  A trailing ``Z`` is
    ignored and the result is naive: devices append it to local time
    (Monibuca gb28181 pitfalls §13.2).  An explicit ``+08:00`` offset gives
    an aware datetime.
    """
    if s is None:
        return None
    m = _GB_TIME_RE.fullmatch(s.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        value = datetime(
            int(year), int(month), int(day),
            int(hour or 0), int(minute or 0), int(second or 0), micro,
        )
    except ValueError:
        return None
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        if offset >= timedelta(hours=24):
            return None
        value = value.replace(tzinfo=timezone(sign * offset))
    return value


def format_gb_time(value: datetime) -> str:
    """Format a datetime as GB/T 28181-2016 §A.2.1 ``dateTime`` (``YYYY-MM-DDThh:mm:ss``)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S")


# --------------------------------------------------------------------------- charset


_DECL_BYTES_RE: Final = re.compile(rb"<\?xml\b[^>]{0,200}?>", re.IGNORECASE)
_ENCODING_ATTR_RE: Final = re.compile(rb"""encoding\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE)
_DECL_TEXT_RE: Final = re.compile(r"<\?xml\b[^>]{0,200}?>", re.IGNORECASE)

_GB_FAMILY: Final = ("GB2312", "GBK", "GB18030")
_GB_CODECS: Final = {"GB2312": "gb2312", "GBK": "gbk", "GB18030": "gb18030"}
_CHARSET_ALIASES: Final = {
    "gb2312": "GB2312",
    "gb231280": "GB2312",
    "gb23121980": "GB2312",
    "euccn": "GB2312",
    "gbk": "GBK",
    "cp936": "GBK",
    "ms936": "GBK",
    "windows936": "GBK",
    "gb18030": "GB18030",
    "gb180302000": "GB18030",
    "gb180302005": "GB18030",
    "utf8": "UTF-8",
}


def _canonical_charset(label: str) -> str | None:
    """Canonical name of an ASCII-compatible charset label, or None if unusable.

    UTF-16/32 and transform "codecs" are refused: the declaration itself was
    read as ASCII, so a label naming a non-ASCII-compatible charset is a lie.
    """
    key = re.sub(r"[\s_-]", "", label).lower()
    if key in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[key]
    try:
        info = codecs.lookup(label.strip())
        probe = "<?xml version".encode(info.name)
    except (LookupError, UnicodeError):
        return None
    if probe != b"<?xml version":
        return None
    return label.strip().upper()


def _python_codec(charset: str) -> str:
    """Codec used to decode a canonical charset; GB2312/GBK labels decode as GB18030, their superset."""
    if charset in _GB_FAMILY:
        return "gb18030"
    if charset == "UTF-8":
        return "utf-8"
    return charset.lower()


def _try_decode(raw: bytes, codec: str) -> str | None:
    try:
        return raw.decode(codec)
    except UnicodeDecodeError:
        return None


def _plausible_utf8(text: str) -> bool:
    """Whether a UTF-8 reading could be what a Chinese device meant.

    Misreading GB2312 bytes as UTF-8 yields mostly U+0100-U+07FF (Latin
    Extended, Greek, Cyrillic, Hebrew, Arabic...), C1 controls or private-use
    characters; none of those appear in real device names.
    """
    for ch in text:
        code = ord(ch)
        if 0x80 <= code < 0xA0 or 0x100 <= code < 0x800 or 0xE000 <= code < 0xF900:
            return False
    return True


def _fits_gb2312(text: str) -> bool:
    try:
        text.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def _prefer_utf8(utf8: str, gb: str) -> bool:
    """Choose between two strict readings of the same non-ASCII bytes.

    GB18030 accepts about half of all UTF-8 Chinese strings (as mojibake of
    rare GBK characters), GB2312 text is valid UTF-8 only by accident, so
    UTF-8 wins unless its reading is implausible, or it needs characters
    outside GB2312 while the GB reading needs none.  On random names of 2+
    hanzi this misreads under 1 % of GB2312 names and 2 % of UTF-8 names
    mixing in GBK-only hanzi; single-character names are the weak spot
    (GB2312 "陇" is also UTF-8 "¤"), longer bodies disambiguate themselves.
    """
    if not _plausible_utf8(utf8):
        return False
    return _fits_gb2312(utf8) or not _fits_gb2312(gb)


def _narrowest_gb(text: str, declared: str) -> str:
    """Smallest GB charset at or above ``declared`` that can encode ``text``."""
    start = _GB_FAMILY.index(declared) if declared in _GB_FAMILY else 0
    for name in _GB_FAMILY[start:]:
        try:
            text.encode(_GB_CODECS[name])
        except UnicodeEncodeError:
            continue
        return name
    return "GB18030"


def _decode_text(body: bytes, default_charset: str, quirks: list[str]) -> tuple[str, str]:
    """Bytes -> (text, charset used), per GB/T 28181-2016 §A.1 (GB2312 default) plus vendor reality."""
    raw = body.lstrip(b" \t\r\n\x00")
    has_bom = raw.startswith(codecs.BOM_UTF8)
    if has_bom:
        raw = raw[len(codecs.BOM_UTF8):]
        quirks.append(QUIRK_BOM)

    declared_label: str | None = None
    decl = _DECL_BYTES_RE.match(raw.lstrip(b" \t\r\n\x00"))
    if decl is not None:
        enc = _ENCODING_ATTR_RE.search(decl.group(0))
        if enc is not None:
            declared_label = enc.group(1).decode("ascii")

    charset: str | None = None
    if declared_label is not None:
        charset = _canonical_charset(declared_label)
        if charset is None:
            quirks.append(QUIRK_UNKNOWN_CHARSET)
            logger.info("manscdp: unusable charset label %r, using %s", declared_label, default_charset)
    if charset is None:
        charset = _canonical_charset(default_charset) or "GB2312"

    if raw.isascii():
        return raw.decode("ascii"), charset

    utf8 = _try_decode(raw, "utf-8")
    if charset in _GB_FAMILY:
        gb = _try_decode(raw, "gb18030")
        if utf8 is not None and (gb is None or has_bom or _prefer_utf8(utf8, gb)):
            if declared_label is not None:
                quirks.append(QUIRK_UTF8_BODY_GB_LABEL)
                logger.debug("manscdp: %s label on a UTF-8 body", charset)
            return utf8, "UTF-8"
        if gb is not None:
            used = _narrowest_gb(gb, charset)
            if used != charset:
                quirks.append(QUIRK_GB_SUPERSET_CHARS)
                logger.debug("manscdp: %s label on a %s body", charset, used)
            return gb, used
    else:
        first = utf8 if charset == "UTF-8" else _try_decode(raw, _python_codec(charset))
        if first is not None:
            return first, charset
        if utf8 is not None:
            return utf8, "UTF-8"
        gb = _try_decode(raw, "gb18030")
        if gb is not None:
            quirks.append(QUIRK_GB_BODY_UTF8_LABEL)
            logger.debug("manscdp: %s label on a GB body", charset)
            return gb, _narrowest_gb(gb, "GB2312")

    quirks.append(QUIRK_UNDECODABLE_BYTES)
    logger.warning("manscdp: body is not valid %s, UTF-8 or GB18030; replacing bad bytes", charset)
    return raw.decode(_python_codec(charset), errors="replace"), charset


# --------------------------------------------------------------------------- XML repair and parse


# Characters XML 1.0 §2.2 forbids; lxml refuses a str containing them.
_INVALID_XML_CHARS_RE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_BARE_AMP_RE: Final = re.compile(r"&(?!(?:#[0-9]{1,8}|#x[0-9A-Fa-f]{1,8}|[A-Za-z_][\w.-]{0,63});)")
_FIRST_ELEMENT_RE: Final = re.compile(r"<([A-Za-z_][\w.:-]*)")
_SKIP_PROLOG_RE: Final = re.compile(
    r"(?:\s+|<!--.*?-->|<\?.*?\?>|<!DOCTYPE[^\[>]*(?:\[[^\]]*\])?\s*>)*", re.DOTALL | re.IGNORECASE
)


def _parser(recover: bool) -> etree.XMLParser:
    # No DTD loading, no entity expansion, no network, no huge trees: a
    # device body is hostile input (billion laughs, XXE).
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        recover=recover,
    )


_STRICT_PARSER: Final = _parser(recover=False)
_RECOVER_PARSER: Final = _parser(recover=True)


def _escape_bare_ampersands(text: str) -> tuple[str, int]:
    """Escape ``&`` that does not start a reference (Hikvision device names, WVP ``getRootElement``).

    CDATA sections are copied untouched; the scan is linear even for a body
    full of unterminated ``<![CDATA[``.
    """
    out: list[str] = []
    total = 0
    pos = 0
    while pos < len(text):
        start = text.find("<![CDATA[", pos)
        if start < 0:
            start = len(text)
        escaped, n = _BARE_AMP_RE.subn("&amp;", text[pos:start])
        out.append(escaped)
        total += n
        if start == len(text):
            break
        end = text.find("]]>", start)
        end = len(text) if end < 0 else end + 3
        out.append(text[start:end])
        pos = end
    return "".join(out), total


def _cut_after_root(text: str) -> str | None:
    """Text up to the end of the root element, or None if its end tag is absent."""
    prolog = _SKIP_PROLOG_RE.match(text)
    start = prolog.end() if prolog else 0
    first = _FIRST_ELEMENT_RE.match(text, start)
    if first is None:
        return None
    name = first.group(1)
    close = text.rfind("</" + name)
    if close < 0:
        return None
    end = text.find(">", close)
    if end < 0:
        return None
    return text[: end + 1]


def _repair(text: str, quirks: list[str]) -> tuple[str, bool]:
    """Apply the text-level vendor-quirk repairs before lxml sees the body.

    Also reports whether the root element's end tag is missing, i.e. the
    body was cut short (a UDP datagram over the MTU, a TCP frame with a short
    Content-Length).
    """
    text = text.lstrip("\ufeff \t\r\n\x00")
    decl = _DECL_TEXT_RE.match(text)
    if decl is not None:
        text = text[decl.end():]

    body = text.rstrip(" \t\r\n")
    trimmed = body.rstrip("\x00 \t\r\n")
    cut = _cut_after_root(trimmed)
    truncated = cut is None
    trimmed = cut or trimmed
    if trimmed != body:
        quirks.append(QUIRK_TRAILING_GARBAGE)
        logger.info("manscdp: dropped %d trailing characters after the root element",
                    len(body) - len(trimmed))
    text = trimmed

    text, n = _INVALID_XML_CHARS_RE.subn("", text)
    if n:
        quirks.append(QUIRK_CONTROL_CHARS)
        logger.info("manscdp: removed %d control characters", n)

    text, n = _escape_bare_ampersands(text)
    if n:
        quirks.append(QUIRK_BARE_AMPERSAND)
        logger.info("manscdp: escaped %d bare '&'", n)
    return text, truncated


_TRAILING_CLOSE_RE: Final = re.compile(r"(?:</([\w.:-]+)\s*>|<([\w.:-]+)[^<>]*/>)\s*$")


def _closed_at_end(text: str, limit: int) -> list[str]:
    """Names of up to ``limit`` elements closed by the end tags ending ``text``, innermost first."""
    names: list[str] = []
    end = len(text)
    while len(names) < limit:
        # A bounded window keeps this linear; a tag longer than it counts as open.
        m = _TRAILING_CLOSE_RE.search(text, max(0, end - 256), end)
        if m is None or m.end() != end:
            break
        names.append((m.group(1) or m.group(2)).rsplit(":", 1)[-1].lower())
        end = m.start()
    names.reverse()
    return names


def _drop_unfinished(root: etree._Element, text: str) -> int:
    """Remove what a truncated body left unfinished; returns how many elements went.

    In a body cut short, the elements still open are the rightmost chain
    below the root, minus those closed by the end tags the text ends with.
    An open leaf may hold a cut value (``<SN>31`` of ``<SN>3154``) and an
    open ``Item`` is an incomplete record; both go.  Open containers
    (DeviceList, BasicParam) keep their finished children.
    """
    chain: list[etree._Element] = []
    node = root
    while children := [c for _, c in _elements(node)]:
        node = children[-1]
        chain.append(node)
    chain.reverse()
    closed = _closed_at_end(text, len(chain))
    for i, name in enumerate(closed):
        if i >= len(chain) or (_local(chain[i].tag) or "").lower() != name:
            closed = closed[:i]
            break
    dropped = 0
    for el in chain[len(closed):]:
        name = (_local(el.tag) or "").lower()
        if (name == "item" or _is_leaf(el)) and (parent := el.getparent()) is not None:
            parent.remove(el)
            dropped += 1
    return dropped


def _parse_xml(text: str, truncated: bool, quirks: list[str]) -> etree._Element:
    """Parse strictly, else with lxml's recovering parser (logged as a quirk)."""
    if not text.strip():
        raise ManscdpError("empty body")
    try:
        return etree.fromstring(text, _STRICT_PARSER)
    except etree.XMLSyntaxError as exc:
        strict_error = str(exc)
    except ValueError as exc:
        raise ManscdpError(f"not XML: {exc}") from exc
    try:
        root = etree.fromstring(text, _RECOVER_PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ManscdpError(f"not XML: {strict_error}") from exc
    if root is None:
        raise ManscdpError(f"not XML: {strict_error}")
    quirks.append(QUIRK_RECOVERED_XML)
    logger.warning("manscdp: malformed XML recovered (%s)", strict_error)
    if truncated:
        quirks.append(QUIRK_TRUNCATED)
        logger.warning("manscdp: body truncated, dropped %d unfinished elements", _drop_unfinished(root, text))
    return root


# --------------------------------------------------------------------------- tree helpers


def _local(tag: object) -> str | None:
    """Local name of an element tag; None for comments, PIs and entity nodes."""
    if not isinstance(tag, str):
        return None
    return tag.rsplit("}", 1)[-1]


def _elements(el: etree._Element) -> list[tuple[str, etree._Element]]:
    out = []
    for child in el:
        name = _local(child.tag)
        if name is not None:
            out.append((name, child))
    return out


def _index(el: etree._Element) -> dict[str, etree._Element]:
    """First child per case-folded name: devices send ``Alarmstatus``, ``DeviceId``, ``Sumnum``."""
    index: dict[str, etree._Element] = {}
    for name, child in _elements(el):
        index.setdefault(name.lower(), child)
    return index


def _is_leaf(el: etree._Element) -> bool:
    return not any(_local(child.tag) is not None for child in el)


def _text(el: etree._Element | None) -> str | None:
    """Stripped text of an element; unexpanded entity references contribute nothing."""
    if el is None:
        return None
    parts = [el.text or ""]
    parts.extend(child.tail or "" for child in el if _local(child.tag) is None)
    return "".join(parts).strip()


def _leaf_fields(el: etree._Element, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, child in _elements(el):
        if name.lower() in skip or not _is_leaf(child):
            continue
        out.setdefault(name, _text(child) or "")
    return out


def _attr_ci(el: etree._Element, name: str) -> str | None:
    """Attribute by case-folded name: ``Num``, ``num`` and ``NUM`` are all seen."""
    for key, value in el.attrib.items():
        if str(_local(key)).lower() == name:
            return str(value).strip()
    return None


_UINT_RE: Final = re.compile(rf"[0-9]{{1,{_MAX_INT_DIGITS}}}")


def _strict_uint(value: str | None, what: str) -> int:
    if value is None:
        raise ManscdpError(f"missing {what}")
    if _UINT_RE.fullmatch(value) is None:
        raise ManscdpError(f"{what} is not an integer: {value[:40]!r}")
    return int(value)


def _lenient_int(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    if _UINT_RE.fullmatch(value) is None:
        logger.info("manscdp: ignoring non-integer %s %r", what, value[:40])
        return None
    return int(value)


# --------------------------------------------------------------------------- decode


class _HeaderKw(TypedDict):
    """Keyword arguments shared by every message class."""

    kind: str
    cmd_type: str
    sn: int
    device_id: str
    charset: str
    fields: dict[str, str]
    quirks: tuple[str, ...]


def _catalog_item(el: etree._Element) -> CatalogItem:
    index = _index(el)
    values: dict[str, str | None] = {
        attr: _text(index.get(tag.lower())) for attr, tag in _CATALOG_ITEM_FIELDS
    }
    info_el = index.get("info")
    info = _leaf_fields(info_el) if info_el is not None else {}
    if values["business_group_id"] is None:
        for key, value in info.items():
            if key.lower() == "businessgroupid":
                values["business_group_id"] = value
    known = frozenset(tag.lower() for _, tag in _CATALOG_ITEM_FIELDS) | {"info"}
    return CatalogItem(**values, info=info, extra=_leaf_fields(el, known))


def _catalog_parts(
    root: etree._Element, index: dict[str, etree._Element], quirks: list[str]
) -> tuple[int, int | None, tuple[CatalogItem, ...]]:
    """SumNum, DeviceList Num and items (GB/T 28181-2016 §A.2.6.4, §A.2.5.4)."""
    item_els: list[etree._Element] = []
    num: int | None = None
    device_list = index.get("devicelist")
    if device_list is not None:
        item_els.extend(c for n, c in _elements(device_list) if n.lower() == "item")
        num = _lenient_int(_attr_ci(device_list, "num"), "DeviceList Num")
    stray = [c for n, c in _elements(root) if n.lower() == "item"]
    if stray:
        # Some stacks drop the DeviceList wrapper (Monibuca pitfalls §4.1).
        quirks.append(QUIRK_ITEMS_UNDER_ROOT)
        logger.info("manscdp: %d catalog items directly under the root", len(stray))
        item_els.extend(stray)
    items = tuple(_catalog_item(el) for el in item_els)
    sum_text = _text(index.get("sumnum"))
    if sum_text is None:
        sum_num = num if num is not None else len(items)
    else:
        sum_num = _strict_uint(sum_text, "SumNum")
    return sum_num, num, items


def _basic_param(el: etree._Element) -> BasicParam:
    index = _index(el)

    def text(tag: str) -> str | None:
        return _text(index.get(tag.lower()))

    def number(tag: str) -> int | None:
        return _lenient_int(text(tag), tag)

    return BasicParam(
        name=text("Name"),
        device_id=text("DeviceID"),
        sip_server_id=text("SIPServerID"),
        sip_server_ip=text("SIPServerIP"),
        sip_server_port=number("SIPServerPort"),
        domain_name=text("DomainName"),
        expiration=number("Expiration"),
        password=text("Password"),
        heart_beat_interval=number("HeartBeatInterval"),
        heart_beat_count=number("HeartBeatCount"),
        position_capability=number("PositionCapability"),
        longitude=text("Longitude"),
        latitude=text("Latitude"),
    )


def _alarm_status(index: dict[str, etree._Element]) -> tuple[AlarmStatus, ...]:
    status_el = index.get("alarmstatus")
    if status_el is None:
        return ()
    out = []
    for name, item in _elements(status_el):
        if name.lower() != "item":
            continue
        item_index = _index(item)
        out.append(
            AlarmStatus(
                device_id=_text(item_index.get("deviceid")),
                duty_status=_text(item_index.get("dutystatus")),
            )
        )
    return tuple(out)


def _build(root: etree._Element, charset: str, quirks: list[str]) -> ManscdpMessage:
    root_name = _local(root.tag)
    kind = _ROOTS.get((root_name or "").lower())
    if kind is None:
        raise ManscdpError(f"unexpected root element <{root_name}>")
    index = _index(root)
    cmd_type = _text(index.get("cmdtype"))
    if not cmd_type:
        raise ManscdpError("missing CmdType")
    sn = _strict_uint(_text(index.get("sn")), "SN")
    device_id = _text(index.get("deviceid"))
    if not device_id:
        raise ManscdpError("missing DeviceID")
    fields = _leaf_fields(root, _HEADER_TAGS)
    cmd = cmd_type.lower()

    def header() -> _HeaderKw:
        # Built late so quirks found while reading catalog items are included.
        return _HeaderKw(
            kind=kind, cmd_type=cmd_type, sn=sn, device_id=device_id,
            charset=charset, fields=fields, quirks=tuple(quirks),
        )

    result = _text(index.get("result"))
    if kind == "Response":
        if cmd == "catalog":
            sum_num, num, items = _catalog_parts(root, index, quirks)
            return CatalogResponse(**header(), result=result, sum_num=sum_num, num=num, items=items)
        if cmd == "deviceinfo":
            return DeviceInfoResponse(
                **header(),
                result=result,
                device_name=_text(index.get("devicename")),
                manufacturer=_text(index.get("manufacturer")),
                model=_text(index.get("model")),
                firmware=_text(index.get("firmware")),
                channel=_lenient_int(_text(index.get("channel")), "Channel"),
            )
        if cmd == "devicestatus":
            return DeviceStatusResponse(
                **header(),
                result=result,
                online=_text(index.get("online")),
                status=_text(index.get("status")),
                reason=_text(index.get("reason")),
                encode=_text(index.get("encode")),
                record=_text(index.get("record")),
                device_time=parse_gb_time(_text(index.get("devicetime"))),
                alarm_status=_alarm_status(index),
            )
        if cmd == "configdownload":
            bp_el = index.get("basicparam")
            return ConfigDownloadResponse(
                **header(),
                result=result,
                basic_param=_basic_param(bp_el) if bp_el is not None else None,
            )
        if cmd in ("devicecontrol", "deviceconfig"):
            return ControlResponse(**header(), result=result)
        return Response(**header(), result=result)
    if kind == "Notify":
        if cmd == "keepalive":
            return Keepalive(**header(), status=_text(index.get("status")))
        if cmd == "catalog":
            sum_num, num, items = _catalog_parts(root, index, quirks)
            return CatalogNotify(**header(), sum_num=sum_num, num=num, items=items)
        return Notify(**header())
    if kind == "Query":
        return Query(**header())
    return Control(**header())


# The canonical Keepalive (GB/T 28181-2016 §A.2.5.2) is most of a platform's
# MESSAGE traffic: 10,000 devices send 167 a second. Its usual form is pure
# ASCII with no room for quirks, so it is matched directly; anything else (an
# <Info> element, odd spacing inside tags, other charsets) takes the full path.
_KEEPALIVE_RE: Final = re.compile(
    rb'\A\s*(?:<\?xml[^>]{0,80}?encoding\s*=\s*["\']([A-Za-z0-9_-]{1,20})["\'][^>]{0,40}\?>)?\s*'
    rb"<Notify>\s*<CmdType>Keepalive</CmdType>\s*<SN>\s*(\d{1,10})\s*</SN>\s*"
    rb"<DeviceID>\s*([0-9A-Za-z_.-]{1,64})\s*</DeviceID>\s*<Status>\s*([A-Za-z]{1,16})\s*</Status>\s*"
    rb"</Notify>\s*\Z"
)


def _fast_keepalive(body: bytes, default_charset: str) -> Keepalive | None:
    m = _KEEPALIVE_RE.match(body)
    if m is None:
        return None
    label, sn, device_id, status = (g.decode("ascii") if g is not None else None for g in m.groups())
    assert sn is not None and device_id is not None and status is not None
    charset = (_canonical_charset(label) if label else None) or _canonical_charset(default_charset)
    return Keepalive(
        kind="Notify", cmd_type="Keepalive", sn=int(sn), device_id=device_id,
        charset=charset or default_charset.upper(), fields={"Status": status}, status=status,
    )


def decode(
    body: bytes | bytearray | memoryview,
    *,
    default_charset: str = "gb2312",
    max_size: int = 1_048_576,
) -> ManscdpMessage:
    """Decode a MANSCDP body (GB/T 28181-2016 Annex A) into a typed message.

    ``default_charset`` applies when the body has no usable XML declaration
    (the per-device charset the platform remembered, else GB2312 per §A.1).
    Raises ManscdpError, and nothing else, for unusable bodies.
    """
    if len(body) > max_size:
        raise ManscdpError(f"body of {len(body)} bytes exceeds the {max_size}-byte limit")
    if len(body) <= 512:
        fast = _fast_keepalive(bytes(body), default_charset)
        if fast is not None:
            return fast
    quirks: list[str] = []
    text, charset = _decode_text(bytes(body), default_charset, quirks)
    repaired, truncated = _repair(text, quirks)
    root = _parse_xml(repaired, truncated, quirks)
    return _build(root, charset, quirks)


# --------------------------------------------------------------------------- encode


XmlValue: TypeAlias = "str | int | Mapping[str, XmlValue] | None"
"""Element content for encoders: text, a number, or a mapping of child elements (None = omit)."""

_TAG_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Lone surrogates and XML 1.0 §2.2 forbidden characters cannot be sent; U+FFFD marks them.
_UNSENDABLE_RE: Final = _INVALID_XML_CHARS_RE


def _escape(value: str) -> str:
    value = _UNSENDABLE_RE.sub("\ufffd", value)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A literal CR would be normalised to LF by the receiver (XML 1.0 §2.11).
    return value.replace("\r", "&#13;")


def _check_tag(tag: str) -> str:
    if _TAG_RE.fullmatch(tag) is None:
        raise ValueError(f"not an XML element name: {tag!r}")
    return tag


def _emit(lines: list[str], tag: str, value: XmlValue) -> None:
    """Append one element; a mapping becomes nested children, None is omitted."""
    if value is None:
        return
    _check_tag(tag)
    if isinstance(value, Mapping):
        lines.append(f"<{tag}>")
        for key, child in value.items():
            _emit(lines, key, child)
        lines.append(f"</{tag}>")
    else:
        lines.append(f"<{tag}>{_escape(str(value))}</{tag}>")


def _encode_charset(charset: str) -> str:
    canonical = _canonical_charset(charset)
    if canonical is None:
        logger.warning("manscdp: cannot encode in %r, using GB2312", charset)
        return "GB2312"
    return canonical


def _finish(root: str, lines: list[str], charset: str) -> bytes:
    """Wrap ``lines`` in ``root`` with the declaration and encode (GB/T 28181-2016 §A.1).

    Falls back to GB18030 (declared as such) when the text does not fit the
    requested charset, e.g. rare characters in GB2312 (WVP issues #1341/#1344).
    """
    label = _encode_charset(charset)
    inner = "\n".join([f"<{root}>", *lines, f"</{root}>"]) + "\n"
    codec = _GB_CODECS.get(label, _python_codec(label))
    try:
        return (f'<?xml version="1.0" encoding="{label}"?>\n' + inner).encode(codec)
    except UnicodeEncodeError:
        logger.debug("manscdp: text does not fit %s, sending GB18030", label)
        return ('<?xml version="1.0" encoding="GB18030"?>\n' + inner).encode("gb18030")


def _header_lines(cmd_type: str, sn: int, device_id: str) -> list[str]:
    lines: list[str] = []
    _emit(lines, "CmdType", cmd_type)
    _emit(lines, "SN", int(sn))
    _emit(lines, "DeviceID", device_id)
    return lines


def _extra_lines(lines: list[str], extra: Mapping[str, XmlValue] | None) -> None:
    for key, value in (extra or {}).items():
        _emit(lines, key, value)


def _simple(
    root: str, cmd_type: str, sn: int, device_id: str, charset: str,
    extra: Mapping[str, XmlValue] | None,
) -> bytes:
    lines = _header_lines(cmd_type, sn, device_id)
    _extra_lines(lines, extra)
    return _finish(root, lines, charset)


def encode_query(
    cmd_type: str, sn: int, device_id: str, *,
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Query>`` (GB/T 28181-2016 §A.2.4), e.g. Catalog, DeviceInfo, DeviceStatus,
    or ConfigDownload with ``extra={"ConfigType": "BasicParam"}``."""
    return _simple("Query", cmd_type, sn, device_id, charset, extra)


def encode_control(
    cmd_type: str, sn: int, device_id: str, *,
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Control>`` (GB/T 28181-2016 §A.2.3), e.g. DeviceControl with
    ``extra={"PTZCmd": "A50F01...", "Info": {"ControlPriority": "5"}}``."""
    return _simple("Control", cmd_type, sn, device_id, charset, extra)


def encode_notify(
    cmd_type: str, sn: int, device_id: str, *,
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Notify>`` (GB/T 28181-2016 §A.2.5), e.g. Alarm, MediaStatus, Broadcast."""
    return _simple("Notify", cmd_type, sn, device_id, charset, extra)


def encode_response(
    cmd_type: str, sn: int, device_id: str, *,
    result: str | None = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Response>`` (GB/T 28181-2016 §A.2.6); ``result=None`` omits ``<Result>``."""
    lines = _header_lines(cmd_type, sn, device_id)
    _emit(lines, "Result", result)
    _extra_lines(lines, extra)
    return _finish("Response", lines, charset)


def encode_keepalive(
    sn: int, device_id: str, *, status: str = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a Keepalive ``<Notify>`` (GB/T 28181-2016 §A.2.5.2)."""
    lines = _header_lines("Keepalive", sn, device_id)
    _emit(lines, "Status", status)
    _extra_lines(lines, extra)
    return _finish("Notify", lines, charset)


def _catalog_item_lines(lines: list[str], item: CatalogItem) -> None:
    lines.append("<Item>")
    for attr, tag in _CATALOG_ITEM_FIELDS:
        _emit(lines, tag, getattr(item, attr))
    if item.info:
        _emit(lines, "Info", item.info)
    _extra_lines(lines, item.extra)
    lines.append("</Item>")


def encode_catalog_response(
    sn: int, device_id: str, sum_num: int, items: Sequence[CatalogItem], *,
    charset: str = "GB2312", kind: str = "Response",
) -> bytes:
    """Build one Catalog MESSAGE (GB/T 28181-2016 §A.2.6.4) carrying ``items``.

    ``sum_num`` is the total over all MESSAGEs for this SN; ``DeviceList Num``
    is ``len(items)``.  ``kind="Notify"`` builds the subscription NOTIFY body
    (§A.2.5.4), whose items carry ``event``.
    """
    if kind not in ("Response", "Notify"):
        raise ValueError(f"catalog kind must be Response or Notify, not {kind!r}")
    lines = _header_lines("Catalog", sn, device_id)
    _emit(lines, "SumNum", int(sum_num))
    lines.append(f'<DeviceList Num="{len(items)}">')
    for item in items:
        _catalog_item_lines(lines, item)
    lines.append("</DeviceList>")
    return _finish(kind, lines, charset)


def encode_device_info_response(
    sn: int, device_id: str, *,
    device_name: str | None = None, manufacturer: str | None = None,
    model: str | None = None, firmware: str | None = None, channel: int | None = None,
    result: str | None = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a DeviceInfo answer (GB/T 28181-2016 §A.2.6.5)."""
    lines = _header_lines("DeviceInfo", sn, device_id)
    _emit(lines, "DeviceName", device_name)
    _emit(lines, "Result", result)
    _emit(lines, "Manufacturer", manufacturer)
    _emit(lines, "Model", model)
    _emit(lines, "Firmware", firmware)
    _emit(lines, "Channel", channel)
    _extra_lines(lines, extra)
    return _finish("Response", lines, charset)


def encode_device_status_response(
    sn: int, device_id: str, *,
    result: str | None = "OK", online: str | None = "ONLINE", status: str | None = "OK",
    reason: str | None = None, encode: str | None = None, record: str | None = None,
    device_time: datetime | str | None = None, alarm_status: Iterable[AlarmStatus] = (),
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a DeviceStatus answer (GB/T 28181-2016 §A.2.6.6); ``Alarmstatus`` is always sent."""
    lines = _header_lines("DeviceStatus", sn, device_id)
    _emit(lines, "Result", result)
    _emit(lines, "Online", online)
    _emit(lines, "Status", status)
    _emit(lines, "Reason", reason)
    _emit(lines, "Encode", encode)
    _emit(lines, "Record", record)
    if isinstance(device_time, datetime):
        device_time = format_gb_time(device_time)
    _emit(lines, "DeviceTime", device_time)
    alarms = list(alarm_status)
    lines.append(f'<Alarmstatus Num="{len(alarms)}">')
    for alarm in alarms:
        lines.append("<Item>")
        _emit(lines, "DeviceID", alarm.device_id)
        _emit(lines, "DutyStatus", alarm.duty_status)
        lines.append("</Item>")
    lines.append("</Alarmstatus>")
    _extra_lines(lines, extra)
    return _finish("Response", lines, charset)


def encode_config_download_response(
    sn: int, device_id: str, basic_param: BasicParam | None, *,
    result: str | None = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ConfigDownload answer (GB/T 28181-2016 §A.2.6.8) with its BasicParam."""
    lines = _header_lines("ConfigDownload", sn, device_id)
    _emit(lines, "Result", result)
    if basic_param is not None:
        params: dict[str, XmlValue] = {
            tag: getattr(basic_param, attr) for attr, tag in _BASIC_PARAM_FIELDS
        }
        _emit(lines, "BasicParam", params)
    _extra_lines(lines, extra)
    return _finish("Response", lines, charset)
