"""Keepalive (GB/T 28181-2016 §A.2.5.2, §9.6): the device's periodic ``<Notify>``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from sip.manscdp.charset import canonical_charset
from sip.manscdp.messages import Notify
from sip.manscdp.registry import Command, Leaf, declare, encode
from sip.manscdp.xmltext import XmlValue


@dataclass(frozen=True, kw_only=True)
class Keepalive(Notify):
    """Keepalive notification (GB/T 28181-2016 §A.2.5.2, §9.6)."""

    status: str | None = None


KEEPALIVE: Final = declare(Command(
    kind="Notify", cmd_type="Keepalive", cls=Keepalive,
    fields=(Leaf("Status", "status"),),
))


def encode_keepalive(
    sn: int, device_id: str, *, status: str = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a Keepalive ``<Notify>`` (GB/T 28181-2016 §A.2.5.2)."""
    return encode(KEEPALIVE.build(sn, device_id, charset=charset, status=status), extra=extra)


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


def fast_keepalive(body: bytes, default_charset: str) -> Keepalive | None:
    """The canonical Keepalive without the XML parser, or None to take the full path."""
    m = _KEEPALIVE_RE.match(body)
    if m is None:
        return None
    label, sn, device_id, status = (g.decode("ascii") if g is not None else None for g in m.groups())
    assert sn is not None and device_id is not None and status is not None
    charset = (canonical_charset(label) if label else None) or canonical_charset(default_charset)
    return Keepalive(
        kind="Notify", cmd_type="Keepalive", sn=int(sn), device_id=device_id,
        charset=charset or default_charset.upper(), fields={"Status": status}, status=status,
    )
