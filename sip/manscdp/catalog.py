"""Catalog (GB/T 28181-2016 §A.2.4.3 query, §A.2.6.4 response, §A.2.5.4 subscription NOTIFY).

A device answers one Catalog query with as many MESSAGEs as it needs, each
``<Response>`` carrying ``SumNum`` (the total for the SN) and a
``DeviceList Num="n"`` of ``Item``\\ s; the subscription NOTIFY has the same
shape under ``<Notify>`` with an ``Event`` per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sip.channel_fields import ITEM_FIELDS
from sip.manscdp.messages import Notify, Response
from sip.manscdp.registry import (
    Command,
    Extra,
    Leaf,
    LeafMap,
    Repeated,
    Struct,
    Total,
    declare,
    encode,
)


@dataclass(frozen=True, kw_only=True)
class CatalogItem:
    """One catalog entry (GB/T 28181-2016 §A.2.6.4 ``itemType``); every field is optional.

    ``business_group_id`` is read from the item or, failing that, from
    ``<Info>``; ``info`` holds the ``<Info>`` children (PTZType, PositionType,
    Resolution...); ``event`` is set in catalog NOTIFYs (§A.2.5.4: ON, OFF,
    VLOST, DEFECT, ADD, DEL, UPDATE); ``extra`` keeps unknown simple children.
    The other attributes are those of ``sip.channel_fields.ITEM_FIELDS``, in
    its order, as text as sent (a unit test keeps the two in step).
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


# (attribute, element) in the element order of GB/T 28181-2016 §A.2.6.4, from the
# channel field table (the ``<Info>`` rows stay in ``CatalogItem.info``).
CATALOG_ITEM_FIELDS: Final[tuple[tuple[str, str], ...]] = tuple((f.attr, f.tag) for f in ITEM_FIELDS)

# Platforms put BusinessGroupID under <Info> as often as in the item itself.
_FALLBACK_TO_INFO: Final = frozenset({"BusinessGroupID"})

CATALOG_ITEM: Final = Struct(CatalogItem, (
    *(Leaf(tag, attr, fallback="Info" if tag in _FALLBACK_TO_INFO else None)
      for attr, tag in CATALOG_ITEM_FIELDS),
    LeafMap("Info", "info"),
    Extra("extra"),
))

# Some stacks drop the DeviceList wrapper (Monibuca pitfalls §4.1): bare_items.
_CATALOG_SHAPE: Final = (
    Total("SumNum", "sum_num", of="items"),
    Repeated("DeviceList", "items", CATALOG_ITEM, num_attr="num", bare_items=True),
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


CATALOG_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="Catalog", cls=CatalogResponse, fields=_CATALOG_SHAPE,
))
CATALOG_NOTIFY: Final = declare(Command(
    kind="Notify", cmd_type="Catalog", cls=CatalogNotify, fields=_CATALOG_SHAPE,
))


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
    command = CATALOG_RESPONSE if kind == "Response" else CATALOG_NOTIFY
    return encode(command.build(sn, device_id, charset=charset, sum_num=int(sum_num), items=tuple(items)))
