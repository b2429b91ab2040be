"""GB/T 28181 editions a device speaks (2011 / 2016 / 2022) and the commands only the 2022 edition has.

Detection (GB/T 28181-2022 §9.1): a 2022 device announces its edition in the
REGISTER header ``X-GB-Ver`` (1.0 = GB/T 28181-2011, 2.0 = 2016, 3.0 = 2022);
the header did not exist before 2022, so a device that sends none speaks an
earlier edition, in practice 2016. ``version_from_header`` reads the header
leniently (``3``, ``3.0``, `` 3.0 ``, ``V3.0``, even the year ``2022``): a
vendor's spelling must not turn a 2022 camera into a 2016 one.

The platform speaks one of two dialects (``DIALECTS``): a 2011 device is
spoken to in 2016 (``dialect_of``), whose commands are a superset of 2011's
for what the platform sends.

``COMMANDS_2022`` is the one list of what only the 2022 edition has: Query
CmdTypes, DeviceControl and DeviceConfig elements, ConfigDownload types. The
platform refuses them for a 2016 device (``ControlService.require_2022``,
422), the simulator in its 2016 dialect refuses them as 2016 firmware does,
and docs/devices.md lists them from here (a unit test keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sip.manscdp.messages import ManscdpMessage
from sip.manscdp.registry import REGISTRY, Leaf, LeafMap, Nested, Registry, Repeated

__all__ = [
    "COMMANDS_2022",
    "DIALECTS",
    "GB_VERSIONS",
    "IFRAME_ELEMENTS",
    "X_GB_VER",
    "Command2022",
    "config_types_2022",
    "dialect_of",
    "elements_present",
    "header_value",
    "is_2022_query",
    "refused_elements",
    "version_from_header",
]

X_GB_VER: Final = "X-GB-Ver"
"""The REGISTER header naming the device's edition (GB/T 28181-2022 §9.1)."""

GB_VERSIONS: Final = ("2011", "2016", "2022")
"""Editions a device may announce."""

DIALECTS: Final = ("2016", "2022")
"""Editions the platform speaks: a 2011 device is spoken to in 2016."""

IFRAME_ELEMENTS: Final = ("IFameCmd", "IFrameCmd")
"""The I-frame request's spellings: the standard's (§A.2.3.1.7, ``IFameCmd``) and the one some firmware
expects (``IFrameCmd``)."""

# X-GB-Ver major number -> edition (GB/T 28181-2022 §9.1).
_BY_MAJOR: Final = {1: "2011", 2: "2016", 3: "2022"}
_HEADER_OF: Final = {"2011": "1.0", "2016": "2.0", "2022": "3.0"}


def version_from_header(value: str | None) -> str | None:
    """The edition an ``X-GB-Ver`` value announces; ``"2016"`` when there is none; None when unreadable.

    Accepted: ``1.0``/``2.0``/``3.0`` with any minor part, surrounding spaces
    and a ``V`` prefix (``3``, `` 3.0 ``, ``v3.0``, ``3.1``), and the edition
    year itself (``2016``, ``2022``). A major number above 3 is a later
    edition, spoken to in 2022, the newest the platform knows.
    """
    if value is None:
        return "2016"
    text = value.strip().lower().removeprefix("v").strip()
    if text in GB_VERSIONS:
        return text
    major, _, minor = text.partition(".")
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses with a ValueError.
    if not text.isascii() or not major.isdigit() or (minor and not minor.isdigit()) or len(major) > 3:
        return None
    number = int(major)
    if number < 1:
        return None
    return _BY_MAJOR.get(number, "2022")


def header_value(version: str) -> str:
    """The ``X-GB-Ver`` value of ``version`` (``"2022"`` -> ``"3.0"``)."""
    return _HEADER_OF[version]


def dialect_of(detected: str | None, setting: str = "auto") -> Literal["2016", "2022"]:
    """The dialect the platform speaks: the operator's ``setting`` unless ``"auto"``, else the detected
    edition (2011, unknown and none are spoken to in 2016)."""
    chosen = detected if setting == "auto" else setting
    return "2022" if chosen == "2022" else "2016"


@dataclass(frozen=True)
class Command2022:
    """One command only GB/T 28181-2022 has.

    ``root``/``cmd_type`` are the MANSCDP root and CmdType; ``element`` the
    child naming the command inside a DeviceControl or DeviceConfig, or the
    ``ConfigType`` value of a ConfigDownload; None when the CmdType itself is
    the command (a Query).
    """

    root: Literal["Query", "Control"]
    cmd_type: str
    element: str | None
    description: str

    @property
    def name(self) -> str:
        """How docs and errors name it: the element, else the CmdType."""
        return self.element or self.cmd_type


def _queries(*entries: tuple[str, str]) -> tuple[Command2022, ...]:
    return tuple(Command2022("Query", cmd_type, None, text) for cmd_type, text in entries)


def _elements(root: Literal["Query", "Control"], cmd_type: str,
              *entries: tuple[str, str]) -> tuple[Command2022, ...]:
    return tuple(Command2022(root, cmd_type, element, text) for element, text in entries)


_CONFIG_2022: Final = (
    ("VideoParamAttribute", "video parameter attributes"),
    ("VideoRecordPlan", "recording plan"),
    ("VideoAlarmRecord", "alarm recording"),
    ("PictureMask", "privacy masks"),
    ("FrameMirror", "picture mirroring"),
    ("AlarmReport", "alarm reporting switches"),
    ("OSDConfig", "on-screen display"),
    ("SnapShotConfig", "snapshot upload"),
)

COMMANDS_2022: Final[tuple[Command2022, ...]] = (
    *_queries(
        ("PTZPosition", "precise PTZ position query"),
        ("HomePositionQuery", "home position query"),
        ("CruiseTrackListQuery", "cruise track list query"),
        ("CruiseTrackQuery", "cruise track query"),
        ("SDCardStatus", "SD card status query"),
    ),
    *_elements(
        "Control", "DeviceControl",
        ("PTZPreciseCtrl", "precise PTZ control"),
        ("TargetTrack", "target tracking"),
        ("FormatSDCard", "SD card formatting"),
        ("DeviceUpgrade", "firmware upgrade"),
    ),
    *_elements("Control", "DeviceConfig", *_CONFIG_2022),
    *_elements("Query", "ConfigDownload", *_CONFIG_2022),
)
"""Every command only GB/T 28181-2022 has (Annex A of the 2022 edition), one entry each."""

_QUERIES: Final = frozenset(c.cmd_type.lower() for c in COMMANDS_2022 if c.element is None)
# Case-folded CmdType -> the case-folded elements (ConfigDownload: ConfigType values) only 2022 has.
_ELEMENTS: Final = {
    cmd_type.lower(): frozenset(c.element.lower() for c in COMMANDS_2022 if c.cmd_type == cmd_type and c.element)
    for cmd_type in ("DeviceControl", "DeviceConfig", "ConfigDownload")
}


def is_2022_query(cmd_type: str) -> bool:
    """Whether a Query of ``cmd_type`` (any case) exists only in GB/T 28181-2022."""
    return cmd_type.lower() in _QUERIES


def config_types_2022(config_type: str) -> tuple[list[str], list[str]]:
    """A ConfigDownload ``ConfigType`` (several joined by ``/``, §A.2.4.7) split into its 2016 and its
    2022 types, as sent."""
    older: list[str] = []
    newer: list[str] = []
    for part in (p.strip() for p in config_type.split("/")):
        if part:
            (newer if part.lower() in _ELEMENTS["configdownload"] else older).append(part)
    return older, newer


def elements_present(msg: ManscdpMessage, registry: Registry = REGISTRY) -> frozenset[str]:
    """The child elements of ``msg``'s root it carried, case-folded: its leaves (``fields``) and its
    declared nested elements that were present. An element neither declared nor a leaf is not seen, and
    the platform never sends one."""
    found = {name.lower() for name in msg.fields}
    command = registry.lookup(msg.kind, msg.cmd_type)
    if command is not None:
        for spec in command.fields:
            value = getattr(msg, spec.attr, None)
            # 0 and False are sent values; an empty list or map decodes the same as an absent one.
            if isinstance(spec, Leaf | LeafMap | Nested | Repeated) and value is not None and value not in ((), {}):
                found.add(spec.tag.lower())
    return frozenset(found)


def refused_elements(msg: ManscdpMessage, registry: Registry = REGISTRY) -> list[str]:
    """The 2022-only elements a DeviceControl or DeviceConfig carries (case-folded), which a 2016 device
    does not know; empty for anything else."""
    known = _ELEMENTS.get(msg.cmd_type.lower()) if msg.kind == "Control" else None
    return [] if known is None else sorted(elements_present(msg, registry) & known)
