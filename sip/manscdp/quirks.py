"""Named vendor quirks, recorded in ``ManscdpMessage.quirks`` and logged.

HOUSE_STYLE: every quirk the decoder repairs is named, tested and counted per
device, so the platform can tell which devices need which repair.
"""

from __future__ import annotations

from typing import Final

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
QUIRK_LIST_CUT: Final = "list-cut-at-limit"
