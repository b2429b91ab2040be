"""The catalog item field table: one row per field of a channel, declared once.

GB/T 28181-2016 §A.2.6.4 (``itemType``, the ``Item`` of a Catalog answer) and
§A.2.5.4 (catalog NOTIFY, which adds ``Event``) list the fields a device sends
for each of its channels.  The same field appears in four forms:

* the MANSCDP element (``tag``) read and written by :mod:`sip.manscdp`;
* the attribute of ``CatalogItem`` (``attr``), where every value is the text
  as sent (``str | None``);
* the registry column and the API's JSON member (``name``), where numeric
  fields are typed (``value``) and text that does not parse is ``None``;
* the OpenAPI schema property (``description``, ``example``).

Each consumer derives its form from :data:`CHANNEL_FIELDS`, so adding a field
is one row here (plus, for a stored field, the model column and a migration:
a unit test checks that ``gbplatform.db.models.Channel`` matches the table).

Rows with ``name=None`` are carried on the wire but never stored nor shown:
``Event`` is a per-notification verb, ``Password`` a secret (§A.2.6.4 lets a
device report the password of a subordinate; the platform has no use for it).
``PTZType`` is not a child of ``Item`` but of its ``<Info>`` (§A.2.6.4
``Info``), hence ``in_info``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CHANNEL_FIELDS",
    "ITEM_FIELDS",
    "STORED_FIELDS",
    "ChannelField",
    "ChannelValue",
    "field_by_name",
    "parse_value",
]

ChannelValue = str | int | float


@dataclass(frozen=True, slots=True)
class ChannelField:
    """One field of a catalog ``Item`` (GB/T 28181-2016 §A.2.6.4).

    ``tag``: the XML element; ``attr``: the ``CatalogItem`` attribute;
    ``name``: the registry column and JSON member, or ``None`` when the field
    is not stored; ``value``: its type once stored (the wire form is always
    text); ``length``: the column's maximum length (``None``: unbounded text or
    a number); ``in_info``: read from the item's ``<Info>`` rather than the item;
    ``nullable``: whether a stored item may lack it (only the id may not).
    """

    tag: str
    attr: str
    name: str | None
    value: type[str] | type[int] | type[float]
    description: str
    example: str
    length: int | None = None
    in_info: bool = False
    nullable: bool = True


# Element order of GB/T 28181-2016 §A.2.6.4 (encoders emit items in this order).
CHANNEL_FIELDS: Final[tuple[ChannelField, ...]] = (
    ChannelField("DeviceID", "device_id", "channel_id", str,
                 "Channel id (GB/T 28181-2016 Appendix D code), unique within its device.",
                 "34020000001320000001", length=32, nullable=False),
    ChannelField("Event", "event", None, str,
                 "Catalog NOTIFY event: ON, OFF, VLOST, DEFECT, ADD, DEL, UPDATE (§A.2.5.4).",
                 "ADD"),
    ChannelField("Name", "name", "name", str, "Channel name as the device reports it.", "Camera 1"),
    ChannelField("Manufacturer", "manufacturer", "manufacturer", str, "Manufacturer.", "Hikvision"),
    ChannelField("Model", "model", "model", str, "Model.", "DS-2CD2T47G2"),
    ChannelField("Owner", "owner", "owner", str, "Owner.", "Owner"),
    ChannelField("CivilCode", "civil_code", "civil_code", str,
                 "Administrative region code (GB/T 2260).", "340200"),
    ChannelField("Block", "block", "block", str, "Police block.", "Block A"),
    ChannelField("Address", "address", "address", str, "Installation address.", "Gate 1"),
    ChannelField("Parental", "parental", "parental", int,
                 "1 when the item has children, 0 when it does not.", "0"),
    ChannelField("ParentID", "parent_id", "parent_id", str,
                 "Parent node id(s) in the device's tree.", "34020000001110000001"),
    ChannelField("BusinessGroupID", "business_group_id", "business_group_id", str,
                 "Business group (virtual organisation tree); read from `<Info>` when absent from the item.",
                 "34020000002150000001"),
    ChannelField("SafetyWay", "safety_way", "safety_way", str,
                 "Signalling security mode: 0 none, 2 S/MIME signature, 3 S/MIME encryption, 4 digest.", "0"),
    ChannelField("RegisterWay", "register_way", "register_way", str,
                 "Registration mode: 1 RFC 3261, 2 password-based, 3 certificate-based.", "1"),
    ChannelField("CertNum", "cert_num", "cert_num", str, "Certificate serial number.", "0"),
    ChannelField("Certifiable", "certifiable", "certifiable", str,
                 "Certificate validity: 0 invalid, 1 valid.", "0"),
    ChannelField("ErrCode", "err_code", "err_code", str,
                 "Why the certificate is invalid (400-499 reason code).", "400"),
    ChannelField("EndTime", "end_time", "end_time", str,
                 "Certificate end of validity.", "2030-01-01T00:00:00"),
    ChannelField("Secrecy", "secrecy", "secrecy", str, "Secrecy: 0 not classified, 1 classified.", "0"),
    ChannelField("IPAddress", "ip_address", "ip_address", str, "Device/area IP address.", "192.0.2.10"),
    ChannelField("Port", "port", "port", int, "Device/area port.", "5060"),
    ChannelField("Password", "password", None, str,
                 "Password of the subordinate device (never stored).", "12345678"),
    ChannelField("Status", "status", "status", str, "ON / OFF as the device reports it.", "ON"),
    ChannelField("Longitude", "longitude", "longitude", float, "Longitude (WGS 84).", "117.2"),
    ChannelField("Latitude", "latitude", "latitude", float, "Latitude (WGS 84).", "31.8"),
    ChannelField("PTZType", "ptz_type", "ptz_type", int,
                 "Camera type from `<Info>`: 1 dome, 2 half-dome, 3 fixed box, 4 remote-controlled box.",
                 "1", in_info=True),
)

# The direct children of ``Item`` (everything but the ``<Info>`` ones).
ITEM_FIELDS: Final[tuple[ChannelField, ...]] = tuple(f for f in CHANNEL_FIELDS if not f.in_info)

# The fields kept in the registry and shown by the API, in table order.
STORED_FIELDS: Final[tuple[ChannelField, ...]] = tuple(f for f in CHANNEL_FIELDS if f.name is not None)

_BY_NAME: Final[dict[str, ChannelField]] = {f.name: f for f in STORED_FIELDS if f.name is not None}


def field_by_name(name: str) -> ChannelField:
    """The stored field called ``name`` (registry column / JSON member); KeyError if none."""
    return _BY_NAME[name]


def parse_value(row: ChannelField, text: str | None) -> ChannelValue | None:
    """The stored value of ``text`` as sent: numbers parsed, blank or garbled ones ``None``.

    Devices send empty elements and free text where §A.2.6.4 expects numbers
    (``<Port></Port>``, ``<Longitude>unknown</Longitude>``): a bad value loses
    that one field, never the item.  Text fields are kept as sent.
    """
    if row.value is str or text is None:
        return text
    if not text.strip():
        return None
    try:
        return row.value(text.strip())
    except ValueError:
        return None
