"""GB/T 28181 identifiers: the one place their rules live.

Theory of operation
-------------------
Every device, channel, platform and user is named by a 20-digit code
(GB/T 28181-2016 Annex D; 2022 Annex E, same layout)::

    34 02 00 00 | 00 | 132 | 0 | 000001
    centre code  industry type  net serial
    (province 2, city 2, district 2, grassroots 2)

Digits 1-8 are the centre (civil) code, 9-10 the industry, 11-13 the type
(Table D.1), 14 the network and 15-20 a serial number.  A catalog also holds
civil-code nodes: the first 2, 4, 6 or 8 digits alone (Annex D.1, one level
per pair), so ``3402`` is the parent of ``340200``.

Table D.1 groups the type codes in ranges: 111-130 front-end main devices
(DVR, NVR, encoders: things with channels), 131-199 front-end peripherals
(cameras, alarm inputs: the channels themselves), 200-299 platform devices
(the SIP server of a platform is 200; 215 and 216 are the business-group and
virtual-organisation nodes of a catalog), 300-399 centre users, 400-499
terminal users.  Codes marked 2022 below were added by GB/T 28181-2022 and
are unassigned extensions of the same range in 2016.

Two classifications are derived from this one table: :func:`id_kind`, the
type of a single ID, and :func:`catalog_kind`, the coarse node kind a catalog
tree is built from (and that the registry stores per channel).

Only ASCII digits count: ``str.isdigit()`` would also accept "²" or
full-width digits, which no device sends and no URI can carry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "CATALOG_KINDS",
    "TYPE_KINDS",
    "catalog_kind",
    "civil_code_ancestors",
    "domain_of",
    "gb_id_type",
    "id_kind",
    "is_civil_code",
    "is_domain",
    "is_gb_id",
]

_GB_ID: Final = re.compile(r"[0-9]{20}")
_CIVIL_CODE: Final = re.compile(r"(?:[0-9]{2}){1,4}")
_DOMAIN: Final = re.compile(r"[0-9]{10}")

#: GB/T 28181-2016 Table D.1 (2022 Table E.1): type code (digits 11-13) -> kind.
TYPE_KINDS: Final[Mapping[int, str]] = MappingProxyType(
    {
        # 111-130 front-end main devices
        111: "dvr",
        112: "video_server",
        113: "encoder",
        114: "decoder",
        115: "video_matrix",
        116: "audio_matrix",
        117: "alarm_controller",
        118: "nvr",
        120: "capture_system",  # 2022: online video image capture system
        121: "checkpoint",  # 2022: video checkpoint (卡口)
        122: "multi_camera",  # 2022
        123: "parking_gate",  # 2022: car park entrance control
        124: "door_control",  # 2022: pedestrian entrance control
        125: "security_inspection",  # 2022
        130: "hvr",  # 2022: hybrid recorder
        # 131-199 front-end peripherals; an IPC (132) is a camera to everyone using the ID
        131: "camera",
        132: "camera",
        133: "display",
        134: "alarm_input",
        135: "alarm_output",
        136: "voice_input",
        137: "voice_output",
        138: "mobile_transmission",
        139: "peripheral",  # "other peripheral"
        # 200-299 platform devices
        200: "platform",  # centre signalling control server: the platform's SIP identity
        201: "web_server",
        202: "media_server",
        203: "proxy_server",
        204: "security_server",
        205: "alarm_server",
        206: "database_server",
        207: "gis_server",
        208: "management_server",
        209: "access_gateway",
        210: "storage_server",
        211: "signalling_gateway",  # signalling security routing gateway
        215: "business_group",
        216: "virtual_org",
        # 300-399 centre users, 400-499 terminal users
        300: "centre_user",
        400: "terminal_user",
    }
)

# Table D.1 ranges: a code in a range but not in TYPE_KINDS is an extension
# of that range and classifies as the range's generic kind.
_RANGES: Final = (
    (111, 130, "device"),
    (131, 199, "peripheral"),
    (200, 299, "server"),
    (300, 399, "centre_user"),
    (400, 499, "terminal_user"),
)

#: Catalog node kinds, in the order siblings are listed in a tree (groups first).
CATALOG_KINDS: Final = ("civil_code", "business_group", "virtual_org", "device", "channel")


#: The longest device ID the registry stores, in either form.
MAX_ID_LENGTH: Final = 32
#: A device ID outside the 20-digit form (``sip.strict_id`` off): letters, digits,
#: ``_ . -``, so that the ID stays usable as it is in API paths, URLs and the
#: recording store's file names.
LOOSE_ID_PATTERN: Final = rf"[A-Za-z0-9_.\-]{{1,{MAX_ID_LENGTH}}}"
_LOOSE_ID: Final = re.compile(LOOSE_ID_PATTERN, re.ASCII)


def is_loose_id(value: str) -> bool:
    """True for an ID that ``sip.strict_id = false`` admits (see ``LOOSE_ID_PATTERN``)."""
    return _LOOSE_ID.fullmatch(value) is not None


def is_gb_id(value: str) -> bool:
    """True for a 20-digit code (GB/T 28181-2016 Annex D)."""
    return _GB_ID.fullmatch(value) is not None


def is_civil_code(value: str) -> bool:
    """True for a 2, 4, 6 or 8-digit civil-code node (GB/T 28181-2016 Annex D.1)."""
    return _CIVIL_CODE.fullmatch(value) is not None


def civil_code_ancestors(code: str) -> tuple[str, ...]:
    """The civil codes above ``code``, nearest first: ``340200`` -> ``(3402, 34)``.

    GB/T 28181-2016 Annex D.1: each level of the centre code adds two digits.
    """
    if not is_civil_code(code):
        return ()
    return tuple(code[:n] for n in range(len(code) - 2, 0, -2))


def gb_id_type(value: str) -> int | None:
    """The type code (digits 11-13) of a 20-digit ID, or None if ``value`` is not one.

    GB/T 28181-2016 Annex D, Table D.1.
    """
    if not is_gb_id(value):
        return None
    return int(value[10:13])


def id_kind(value: str) -> str:
    """Classify one ID by GB/T 28181-2016 Annex D.

    ``civil_code`` for a 2/4/6/8-digit node; for a 20-digit ID the kind of its
    type code in :data:`TYPE_KINDS`, else the generic kind of its Table D.1
    range (``device``, ``peripheral``, ``server``, ``centre_user``,
    ``terminal_user``); ``unknown`` for anything else.
    """
    if is_civil_code(value):
        return "civil_code"
    type_code = gb_id_type(value)
    if type_code is None:
        return "unknown"
    return TYPE_KINDS.get(type_code) or _range_kind(type_code)


def catalog_kind(value: str) -> str:
    """The kind of a catalog node (one of :data:`CATALOG_KINDS`) from its ID.

    GB/T 28181-2016 Annex D and §A.2.6 (catalog items): a civil code is an
    administrative-division node, 215 a business group, 216 a virtual
    organisation, a front-end main device (111-130, e.g. an NVR under a
    platform) a device; everything else, including IDs that are not GB
    codes at all, is a channel, because a catalog item is a channel unless
    its ID says otherwise.
    """
    if is_civil_code(value):
        return "civil_code"
    type_code = gb_id_type(value)
    if type_code == 215:
        return "business_group"
    if type_code == 216:
        return "virtual_org"
    if type_code is not None and _range_kind(type_code) == "device":
        return "device"
    return "channel"


def _range_kind(type_code: int) -> str:
    for low, high, kind in _RANGES:
        if low <= type_code <= high:
            return kind
    return "unknown"


def is_domain(value: str) -> bool:
    """True for a 10-digit SIP domain: a centre code and an industry code
    (GB/T 28181-2016 Annex D), the realm of digest authentication."""
    return _DOMAIN.fullmatch(value) is not None


def domain_of(platform_id: str) -> str:
    """The SIP domain (realm) of a platform: its first 10 digits.

    GB/T 28181-2016 §4.3 / Annex D: the domain is the centre code plus the
    industry code of the platform ID.
    """
    if not is_gb_id(platform_id):
        raise ValueError(f"not a 20-digit GB/T 28181 ID: {platform_id!r}")
    return platform_id[:10]
