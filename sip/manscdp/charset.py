"""Body bytes to text: the charset rules of GB/T 28181-2016 §A.1 and what devices really send.

The standard's default is GB2312 (§A.1), but devices label UTF-8 bytes as
GB2312, send GBK/GB18030-only characters under a GB2312 label, or omit the
declaration.  GB-family labels are decoded as GB18030 (a strict superset).
Because GB18030 also accepts about half of all UTF-8 Chinese strings (as
mojibake) while GB text is rarely valid UTF-8, a body that is valid UTF-8
wins unless its UTF-8 reading looks like mojibake (see ``_prefer_utf8``).
The charset actually used is returned so the platform can remember it per
device.
"""

from __future__ import annotations

import codecs
import logging
import re
from typing import Final

from sip.manscdp.quirks import (
    QUIRK_BOM,
    QUIRK_GB_BODY_UTF8_LABEL,
    QUIRK_GB_SUPERSET_CHARS,
    QUIRK_UNDECODABLE_BYTES,
    QUIRK_UNKNOWN_CHARSET,
    QUIRK_UTF8_BODY_GB_LABEL,
)

# One logger for the whole codec, so quirk logs keep the name operators filter on.
logger = logging.getLogger("sip.manscdp")

_DECL_BYTES_RE: Final = re.compile(rb"<\?xml\b[^>]{0,200}?>", re.IGNORECASE)
_ENCODING_ATTR_RE: Final = re.compile(rb"""encoding\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE)

_GB_FAMILY: Final = ("GB2312", "GBK", "GB18030")
GB_CODECS: Final = {"GB2312": "gb2312", "GBK": "gbk", "GB18030": "gb18030"}
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


def canonical_charset(label: str) -> str | None:
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


def python_codec(charset: str) -> str:
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
            text.encode(GB_CODECS[name])
        except UnicodeEncodeError:
            continue
        return name
    return "GB18030"


def decode_text(body: bytes, default_charset: str, quirks: list[str]) -> tuple[str, str]:
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
        charset = canonical_charset(declared_label)
        if charset is None:
            quirks.append(QUIRK_UNKNOWN_CHARSET)
            logger.info("manscdp: unusable charset label %r, using %s", declared_label, default_charset)
    if charset is None:
        charset = canonical_charset(default_charset) or "GB2312"

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
        first = utf8 if charset == "UTF-8" else _try_decode(raw, python_codec(charset))
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
    return raw.decode(python_codec(charset), errors="replace"), charset



def encode_charset(charset: str) -> str:
    """Canonical label to encode with; GB2312 (the §A.1 default) when ``charset`` is unusable."""
    canonical = canonical_charset(charset)
    if canonical is None:
        logger.warning("manscdp: cannot encode in %r, using GB2312", charset)
        return "GB2312"
    return canonical
