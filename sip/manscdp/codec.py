"""The codec's entry points: ``decode`` a body, and encoders for undeclared commands.

Decoding is a pipeline over one bounded body::

    bytes --charset--> str --quirk repair--> lxml (strict, then recover) --> declared message

(``charset.decode_text``, ``xmltext.repair`` and ``xmltext.parse_xml``, then
``registry.decode_tree``).  Every repair appends a named quirk to
``ManscdpMessage.quirks`` and is logged, so devices that need them can be
counted.  The canonical Keepalive skips the pipeline (``keepalive.fast_keepalive``).
"""

from __future__ import annotations

from collections.abc import Mapping

from sip.manscdp.charset import decode_text
from sip.manscdp.keepalive import fast_keepalive
from sip.manscdp.messages import GENERIC, ManscdpError, ManscdpMessage, Response
from sip.manscdp.registry import REGISTRY, Registry, decode_tree, encode
from sip.manscdp.xmltext import XmlValue, parse_xml, repair


def decode(
    body: bytes | bytearray | memoryview,
    *,
    default_charset: str = "gb2312",
    max_size: int = 1_048_576,
    registry: Registry = REGISTRY,
) -> ManscdpMessage:
    """Decode a MANSCDP body (GB/T 28181-2016 Annex A) into a typed message.

    ``default_charset`` applies when the body has no usable XML declaration
    (the per-device charset the platform remembered, else GB2312 per §A.1).
    Raises ManscdpError, and nothing else, for unusable bodies.
    """
    if len(body) > max_size:
        raise ManscdpError(f"body of {len(body)} bytes exceeds the {max_size}-byte limit")
    if len(body) <= 512 and registry is REGISTRY:
        fast = fast_keepalive(bytes(body), default_charset)
        if fast is not None:
            return fast
    quirks: list[str] = []
    text, charset = decode_text(bytes(body), default_charset, quirks)
    repaired, truncated = repair(text, quirks)
    root = parse_xml(repaired, truncated, quirks)
    return decode_tree(root, charset, quirks, registry)


def _generic(  # an undeclared command, written as its root's generic message
    kind: str, cmd_type: str, sn: int, device_id: str, charset: str,
    extra: Mapping[str, XmlValue] | None, result: str | None = None,
) -> bytes:
    msg: ManscdpMessage
    if kind == "Response":
        msg = Response(kind=kind, cmd_type=cmd_type, sn=sn, device_id=device_id, charset=charset,
                       result=result)
    else:
        msg = GENERIC[kind](kind=kind, cmd_type=cmd_type, sn=sn, device_id=device_id, charset=charset)
    return encode(msg, extra=extra)


def encode_query(
    cmd_type: str, sn: int, device_id: str, *,
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Query>`` (GB/T 28181-2016 §A.2.4), e.g. Catalog, DeviceInfo, DeviceStatus,
    or ConfigDownload with ``extra={"ConfigType": "BasicParam"}``."""
    return _generic("Query", cmd_type, sn, device_id, charset, extra)


def encode_control(
    cmd_type: str, sn: int, device_id: str, *,
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Control>`` (GB/T 28181-2016 §A.2.3), e.g. DeviceControl with
    ``extra={"PTZCmd": "A50F01...", "Info": {"ControlPriority": "5"}}``."""
    return _generic("Control", cmd_type, sn, device_id, charset, extra)


def encode_notify(
    cmd_type: str, sn: int, device_id: str, *,
    charset: str = "GB2312", extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Notify>`` (GB/T 28181-2016 §A.2.5), e.g. Alarm, MediaStatus, Broadcast."""
    return _generic("Notify", cmd_type, sn, device_id, charset, extra)


def encode_response(
    cmd_type: str, sn: int, device_id: str, *,
    result: str | None = "OK", charset: str = "GB2312",
    extra: Mapping[str, XmlValue] | None = None,
) -> bytes:
    """Build a ``<Response>`` (GB/T 28181-2016 §A.2.6); ``result=None`` omits ``<Result>``."""
    return _generic("Response", cmd_type, sn, device_id, charset, extra, result)
