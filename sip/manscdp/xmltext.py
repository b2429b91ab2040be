"""MANSCDP XML text in both directions: quirk repair and safe parsing, tree reading, writing.

Decoding (GB/T 28181-2016 Annex A bodies as devices really send them):

1. *Quirk repair* on the decoded text: BOM, XML declaration (lxml refuses a
   ``str`` carrying one), trailing NULs and garbage after the root element,
   stray control characters, and Hikvision's bare ``&`` in names.
2. *Parse* with lxml configured not to load DTDs, resolve entities or touch
   the network; if strict parsing fails the recovering parser is tried.  When
   the body was cut short, whatever the cut left unfinished (a leaf whose
   value may be partial, a half-sent catalog ``Item``) is dropped, so a
   truncated ``<SN>3154`` never turns into SN 31.

Element and attribute names are matched case-insensitively when read: devices
send ``Alarmstatus``, ``DeviceId``, ``Sumnum``, ``num``.

Encoding builds the text by hand (one element per line, LF line ends like
eXosip devices) and encodes it in the requested charset, falling back to
GB18030 (and declaring it) when a character does not fit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from lxml import etree

from sip.manscdp.charset import GB_CODECS, encode_charset, python_codec
from sip.manscdp.messages import ManscdpError
from sip.manscdp.quirks import (
    QUIRK_BARE_AMPERSAND,
    QUIRK_CONTROL_CHARS,
    QUIRK_RECOVERED_XML,
    QUIRK_TRAILING_GARBAGE,
    QUIRK_TRUNCATED,
)

# One logger for the whole codec, so quirk logs keep the name operators filter on.
logger = logging.getLogger("sip.manscdp")

_MAX_INT_DIGITS: Final = 20
_DECL_TEXT_RE: Final = re.compile(r"<\?xml\b[^>]{0,200}?>", re.IGNORECASE)


# Characters XML 1.0 §2.2 forbids; lxml refuses a str containing them.
INVALID_XML_CHARS_RE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_BARE_AMP_RE: Final = re.compile(r"&(?!(?:#[0-9]{1,8}|#x[0-9A-Fa-f]{1,8}|[A-Za-z_][\w.-]{0,63});)")
_FIRST_ELEMENT_RE: Final = re.compile(r"<([A-Za-z_][\w.:-]*)")
_SKIP_PROLOG_RE: Final = re.compile(
    r"(?:\s+|<!--.*?-->|<\?.*?\?>|<!DOCTYPE[^\[>]*(?:\[[^\]]*\])?\s*>)*", re.DOTALL | re.IGNORECASE
)


def _parser(recover: bool) -> etree.XMLParser:
    # No DTD loading, no entity expansion, no network, no huge trees: a
    # device body is hostile input (billion laughs, XXE).
    from lxml import etree

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


# Made with the first body parsed: lxml (about 4 MiB) is imported on first use,
# not when the platform starts (docs/performance.md "Memory"); canonical
# keepalives never need it (sip/manscdp/keepalive.py).
_PARSERS: list[etree.XMLParser] = []  # strict, recovering


def _parsers() -> list[etree.XMLParser]:
    if not _PARSERS:
        _PARSERS.extend((_parser(recover=False), _parser(recover=True)))
    return _PARSERS


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


def repair(text: str, quirks: list[str]) -> tuple[str, bool]:
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

    text, n = INVALID_XML_CHARS_RE.subn("", text)
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
    while children := [c for _, c in child_elements(node)]:
        node = children[-1]
        chain.append(node)
    chain.reverse()
    closed = _closed_at_end(text, len(chain))
    for i, name in enumerate(closed):
        if i >= len(chain) or (local_name(chain[i].tag) or "").lower() != name:
            closed = closed[:i]
            break
    dropped = 0
    for el in chain[len(closed):]:
        name = (local_name(el.tag) or "").lower()
        if (name == "item" or is_leaf(el)) and (parent := el.getparent()) is not None:
            parent.remove(el)
            dropped += 1
    return dropped


def parse_xml(text: str, truncated: bool, quirks: list[str]) -> etree._Element:
    """Parse strictly, else with lxml's recovering parser (logged as a quirk)."""
    if not text.strip():
        raise ManscdpError("empty body")
    from lxml import etree

    strict, recovering = _parsers()
    try:
        return etree.fromstring(text, strict)
    except etree.XMLSyntaxError as exc:
        strict_error = str(exc)
    except ValueError as exc:
        raise ManscdpError(f"not XML: {exc}") from exc
    try:
        root = etree.fromstring(text, recovering)
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


def local_name(tag: object) -> str | None:
    """Local name of an element tag; None for comments, PIs and entity nodes."""
    if not isinstance(tag, str):
        return None
    return tag.rsplit("}", 1)[-1]


def child_elements(el: etree._Element) -> list[tuple[str, etree._Element]]:
    out = []
    for child in el:
        name = local_name(child.tag)
        if name is not None:
            out.append((name, child))
    return out


def child_index(el: etree._Element) -> dict[str, etree._Element]:
    """First child per case-folded name: devices send ``Alarmstatus``, ``DeviceId``, ``Sumnum``."""
    index: dict[str, etree._Element] = {}
    for name, child in child_elements(el):
        index.setdefault(name.lower(), child)
    return index


def is_leaf(el: etree._Element) -> bool:
    return not any(local_name(child.tag) is not None for child in el)


def text_of(el: etree._Element | None) -> str | None:
    """Stripped text of an element; unexpanded entity references contribute nothing."""
    if el is None:
        return None
    parts = [el.text or ""]
    parts.extend(child.tail or "" for child in el if local_name(child.tag) is None)
    return "".join(parts).strip()


def leaf_fields(el: etree._Element, skip: frozenset[str] = frozenset()) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, child in child_elements(el):
        if name.lower() in skip or not is_leaf(child):
            continue
        out.setdefault(name, text_of(child) or "")
    return out


def leaf_paths(el: etree._Element, prefix: str = "") -> dict[str, str]:
    """Every leaf below ``el`` keyed by its ``/``-joined path (``SVCParam/SVCSpaceDomainMode``); a tag
    repeated among siblings is numbered from 1 (``ROIParam/Item[2]/ROISeq``)."""
    out: dict[str, str] = {}
    children = child_elements(el)
    seen: dict[str, int] = {}
    total: dict[str, int] = {}
    for name, _ in children:
        total[name] = total.get(name, 0) + 1
    for name, child in children:
        seen[name] = seen.get(name, 0) + 1
        key = f"{prefix}{name}[{seen[name]}]" if total[name] > 1 else f"{prefix}{name}"
        if is_leaf(child):
            out.setdefault(key, text_of(child) or "")
        else:
            out.update(leaf_paths(child, f"{key}/"))
    return out


def emit_paths(lines: list[str], tag: str, paths: Mapping[str, str]) -> None:
    """Append ``<tag>`` holding the leaves ``leaf_paths`` read, numbered siblings written under their
    own tag; nothing when ``paths`` is empty."""
    if not paths:
        return
    tree: dict[str, _PathTree] = {}
    for path, value in paths.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a leaf and an element of one path: the leaf wins
                break
            node = child
        else:
            node.setdefault(leaf, value)
    _emit_tree(lines, tag, tree)


_PathTree: TypeAlias = "dict[str, _PathTree] | str"


def _emit_tree(lines: list[str], tag: str, node: _PathTree) -> None:
    name = tag.split("[", 1)[0]
    if isinstance(node, str):
        emit(lines, name, node)
        return
    check_tag(name)
    lines.append(f"<{name}>")
    for key, child in node.items():
        _emit_tree(lines, key, child)
    lines.append(f"</{name}>")


def attr_ci(el: etree._Element, name: str) -> str | None:
    """Attribute by case-folded name: ``Num``, ``num`` and ``NUM`` are all seen."""
    for key, value in el.attrib.items():
        if str(local_name(key)).lower() == name:
            return str(value).strip()
    return None


_UINT_RE: Final = re.compile(rf"[0-9]{{1,{_MAX_INT_DIGITS}}}")


def strict_uint(value: str | None, what: str) -> int:
    if value is None:
        raise ManscdpError(f"missing {what}")
    if _UINT_RE.fullmatch(value) is None:
        raise ManscdpError(f"{what} is not an integer: {value[:40]!r}")
    return int(value)


def lenient_int(value: str | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    if _UINT_RE.fullmatch(value) is None:
        logger.info("manscdp: ignoring non-integer %s %r", what, value[:40])
        return None
    return int(value)



# --------------------------------------------------------------------------- encode


XmlValue: TypeAlias = "str | int | Mapping[str, XmlValue] | None"
"""Element content for encoders: text, a number, or a mapping of child elements (None = omit)."""

_TAG_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# Lone surrogates and XML 1.0 §2.2 forbidden characters cannot be sent; U+FFFD marks them.
_UNSENDABLE_RE: Final = INVALID_XML_CHARS_RE


def escape(value: str) -> str:
    """Element text for ``value``: markup escaped, unsendable characters as U+FFFD."""
    value = _UNSENDABLE_RE.sub("\ufffd", value)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A literal CR would be normalised to LF by the receiver (XML 1.0 §2.11).
    return value.replace("\r", "&#13;")


def check_tag(tag: str) -> str:
    """``tag`` if it is an XML element name (XML 1.0 §2.3, ASCII subset), else ValueError."""
    if _TAG_RE.fullmatch(tag) is None:
        raise ValueError(f"not an XML element name: {tag!r}")
    return tag


def emit(lines: list[str], tag: str, value: XmlValue) -> None:
    """Append one element; a mapping becomes nested children, None is omitted."""
    if value is None:
        return
    check_tag(tag)
    if isinstance(value, Mapping):
        lines.append(f"<{tag}>")
        for key, child in value.items():
            emit(lines, key, child)
        lines.append(f"</{tag}>")
    else:
        lines.append(f"<{tag}>{escape(str(value))}</{tag}>")


def finish(root: str, lines: list[str], charset: str) -> bytes:
    """Wrap ``lines`` in ``root`` with the declaration and encode (GB/T 28181-2016 §A.1).

    Falls back to GB18030 (declared as such) when the text does not fit the
    requested charset, e.g. rare characters in GB2312 (WVP issues #1341/#1344).
    """
    label = encode_charset(charset)
    inner = "\n".join([f"<{root}>", *lines, f"</{root}>"]) + "\n"
    codec = GB_CODECS.get(label, python_codec(label))
    try:
        return (f'<?xml version="1.0" encoding="{label}"?>\n' + inner).encode(codec)
    except UnicodeEncodeError:
        logger.debug("manscdp: text does not fit %s, sending GB18030", label)
        return ('<?xml version="1.0" encoding="GB18030"?>\n' + inner).encode("gb18030")


def header_lines(cmd_type: str, sn: int, device_id: str) -> list[str]:
    """CmdType, SN and DeviceID, the first children of every root (GB/T 28181-2016 §A.2.1)."""
    lines: list[str] = []
    emit(lines, "CmdType", cmd_type)
    emit(lines, "SN", int(sn))
    emit(lines, "DeviceID", device_id)
    return lines

