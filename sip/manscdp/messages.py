"""The message classes every MANSCDP command shares (GB/T 28181-2016 §A.2.1).

A command without a declaration (see ``registry``) decodes to one of the four
generic classes here, chosen by the root element, with its leaf children in
``fields``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final


class ManscdpError(Exception):
    """A MANSCDP body that cannot be used even after vendor-quirk recovery.

    The message names the reason (size, not XML, wrong root, missing
    CmdType/SN/DeviceID, non-integer SN or SumNum); the SIP layer answers 400
    or drops the body.
    """


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


# The four root elements of GB/T 28181-2016 §A.2.1, by case-folded name.
GENERIC: Final[dict[str, type[ManscdpMessage]]] = {
    "Query": Query,
    "Control": Control,
    "Notify": Notify,
    "Response": Response,
}
ROOTS: Final = {name.lower(): name for name in GENERIC}
