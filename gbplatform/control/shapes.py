"""API shapes of device control: PTZ, lens, presets, cruise, scan, aux (GB/T 28181-2016 Annex A.3).

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import OptStr, Shape

__all__ = [
    "AuxBody",
    "ControlResult",
    "CruiseBody",
    "LensBody",
    "PresetBody",
    "PresetItem",
    "PresetList",
    "PtzBody",
    "ScanBody",
]

MAX_DURATION_MS: Final = 600_000

PtzAction = Literal["left", "right", "up", "down", "upleft", "upright", "downleft", "downright",
                    "zoomin", "zoomout", "stop"]
LensAction = Literal["iris_open", "iris_close", "focus_near", "focus_far", "stop"]
Speed = Annotated[int, Meta(ge=0, le=255, description="0-255 (A.3 bytes 5-6; zoom uses its high 4 bits).")]
Group = Annotated[int, Meta(ge=0, le=255, description="Cruise or scan group number (A.3 byte 5).")]


class PtzBody(Shape, forbid_unknown_fields=True):
    """Pan, tilt, zoom or stop (A.3.2)."""

    action: PtzAction
    speed: Speed = 128
    duration_ms: Annotated[int, Meta(ge=1, le=MAX_DURATION_MS, description=(
        "Stop after this many milliseconds: the platform sends PTZ stop itself. A later `ptz` command "
        "to the channel cancels the pending stop."))] | UnsetType = UNSET


class LensBody(Shape, forbid_unknown_fields=True):
    """Iris open/close, focus near/far, or stop (A.3.3)."""

    action: LensAction
    speed: Speed = 128


class PresetBody(Shape, forbid_unknown_fields=True):
    """Set (store the current position), call (go to) or delete a preset (A.3.4)."""

    action: Literal["set", "call", "delete"]


class CruiseBody(Shape, forbid_unknown_fields=True):
    """A cruise (A.3.5): `point` for add_point/delete_point (0 deletes the group), `value` the speed or
    dwell time (seconds) for set_speed/set_dwell; stop sends PTZ stop."""

    action: Literal["add_point", "delete_point", "set_speed", "set_dwell", "start", "stop"]
    group: Group
    point: Annotated[int, Meta(ge=0, le=255, description="Preset index of the point.")] | UnsetType = UNSET
    value: Annotated[int, Meta(ge=0, le=4095, description="Speed or dwell time, 12 bits.")] | UnsetType = UNSET


class ScanBody(Shape, forbid_unknown_fields=True):
    """Auto-scan (A.3.6): start, set the left or right limit at the current position, set the speed
    (`value`); stop sends PTZ stop."""

    action: Literal["start", "stop", "set_left", "set_right", "set_speed"]
    group: Group = 0
    value: Annotated[int, Meta(ge=0, le=4095, description="Scan speed, 12 bits (set_speed).")] | UnsetType = UNSET


class AuxBody(Shape, forbid_unknown_fields=True):
    """Auxiliary switch on or off (A.3.7); switch 1 is the wiper."""

    switch: Annotated[int, Meta(ge=0, le=255, description="Switch number; 1 is the wiper.")]
    on: bool


class ControlResult(Shape):
    """The device's answer to one command (Response with Result, §A.2.6.2)."""

    device_id: Annotated[str, Meta(description="The device the command went to (the channel's owner).")]
    channel_id: str
    result: Annotated[OptStr, Meta(examples=["OK"], description="The device's Result: OK or ERROR.")]
    ptz_cmd: Annotated[str, Meta(examples=["A50F000280000036"],
                                 description="The 8-byte A.3 command sent, as 16 hex digits.")]


class PresetItem(Shape):
    preset_id: Annotated[OptStr, Meta(examples=["1"])]
    name: Annotated[OptStr, Meta(examples=["Gate"])]


class PresetList(Shape):
    """The device's presets of a channel (PresetQuery, §A.2.6.11)."""

    device_id: str
    channel_id: str
    result: OptStr
    items: list[PresetItem]
