"""API shapes of the GB/T 28181-2022 PTZ commands: precise PTZ, PTZ position, home position query,
cruise tracks, target tracking (§A.2.3.1, §A.2.4.10-13, §A.2.6.12-15).

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import OptStr, Shape
from sip.gbid import LOOSE_ID_PATTERN

__all__ = [
    "CruisePointItem",
    "CruiseTrackDetail",
    "CruiseTrackItem",
    "CruiseTrackList",
    "HomePositionState",
    "PrecisePtzBody",
    "PtzPositionResult",
    "TargetAreaBody",
    "TargetTrackBody",
]

Pan = Annotated[float, Meta(ge=0, le=360, description="Horizontal angle, degrees (0-360).")]
Tilt = Annotated[float, Meta(ge=-90, le=90, description="Vertical angle, degrees (-90 to 90).")]
Zoom = Annotated[float, Meta(ge=1, le=1000, description="Zoom ratio (1 is the widest).")]
OptFloat = float | None
Pixels = Annotated[int, Meta(ge=0, le=65535)]


class PrecisePtzBody(Shape, forbid_unknown_fields=True):
    """Move to an absolute position (PTZPreciseCtrl, GB/T 28181-2022 §A.2.3.1); at least one of
    `pan`, `tilt`, `zoom`, only those given are sent."""

    pan: Pan | UnsetType = UNSET
    tilt: Tilt | UnsetType = UNSET
    zoom: Zoom | UnsetType = UNSET


class PtzPositionResult(Shape):
    """The camera's precise position as the device answered it (PTZPosition, GB/T 28181-2022 §A.2.6.15);
    a value the device left out (or sent as no number) is null."""

    device_id: Annotated[str, Meta(description="The device asked (the channel's owner).")]
    channel_id: str
    result: Annotated[OptStr, Meta(examples=["OK"], description="The device's Result, if it sent one.")]
    pan: Annotated[OptFloat, Meta(examples=[90.0], description="Horizontal angle, degrees.")]
    tilt: Annotated[OptFloat, Meta(examples=[-15.5], description="Vertical angle, degrees.")]
    zoom: Annotated[OptFloat, Meta(examples=[4.0], description="Zoom ratio.")]
    horizontal_field_angle: Annotated[OptFloat, Meta(examples=[15.2], description="Horizontal field of view, "
                                                                                 "degrees.")]
    vertical_field_angle: Annotated[OptFloat, Meta(examples=[8.6], description="Vertical field of view, degrees.")]
    max_view_distance: Annotated[OptFloat, Meta(examples=[200.0], description="Farthest distance seen, metres.")]


class HomePositionState(Shape):
    """The home (watch) position as the device answered it (HomePositionQuery, GB/T 28181-2022 §A.2.6.12);
    all null when the answer carried none."""

    device_id: str
    channel_id: str
    result: Annotated[OptStr, Meta(examples=["OK"])]
    enabled: Annotated[bool | None, Meta(description="Whether the camera returns to its home position.")]
    reset_time: Annotated[int | None, Meta(examples=[60], description="Idle seconds before it returns.")]
    preset_index: Annotated[int | None, Meta(examples=[1], description="The preset it returns to.")]


class CruiseTrackItem(Shape):
    number: Annotated[int | None, Meta(examples=[1], description="The track's number (the A.3.5 cruise group).")]
    name: Annotated[OptStr, Meta(examples=["Cruise 1"])]


class CruiseTrackList(Shape):
    """The camera's cruise tracks (CruiseTrackListQuery, GB/T 28181-2022 §A.2.6.13)."""

    device_id: str
    channel_id: str
    result: Annotated[OptStr, Meta(examples=["OK"])]
    sum_num: Annotated[int, Meta(ge=0, description="The device's count (SumNum).")]
    items: list[CruiseTrackItem]


class CruisePointItem(Shape):
    preset_index: Annotated[int | None, Meta(examples=[3], description="The preset visited.")]
    stay_time: Annotated[int | None, Meta(examples=[10], description="Seconds stayed there.")]
    speed: Annotated[int | None, Meta(examples=[5], description="Speed to it.")]


class CruiseTrackDetail(Shape):
    """One cruise track's points (CruiseTrackQuery, GB/T 28181-2022 §A.2.6.14)."""

    device_id: str
    channel_id: str
    result: Annotated[OptStr, Meta(examples=["OK"])]
    number: Annotated[int | None, Meta(examples=[1])]
    name: Annotated[OptStr, Meta(examples=["Cruise 1"])]
    sum_num: Annotated[int, Meta(ge=0, description="The device's count of points (SumNum).")]
    points: list[CruisePointItem]


class TargetAreaBody(Shape, forbid_unknown_fields=True):
    """The box to track (TargetArea): `length` x `width` is the picture played, the box is centred on
    (`mid_x`, `mid_y`) and `length_x` x `length_y` big, in pixels of that picture (as DragZoom)."""

    length: Annotated[int, Meta(ge=1, le=65535, description="Width of the picture played, pixels.")]
    width: Annotated[int, Meta(ge=1, le=65535, description="Height of the picture played, pixels.")]
    mid_x: Pixels
    mid_y: Pixels
    length_x: Pixels
    length_y: Pixels


class TargetTrackBody(Shape, forbid_unknown_fields=True):
    """Start automatic (`auto`) or manual (`manual`, on `target_area`) target tracking, or stop it
    (TargetTrack, GB/T 28181-2022 §A.2.3.1); `linked_device_id` is the camera linked to the tracking
    (DeviceID2)."""

    mode: Literal["auto", "manual", "stop"]
    linked_device_id: Annotated[str, Meta(pattern=f"^{LOOSE_ID_PATTERN}$", examples=["34020000001310000002"],
                                          description="DeviceID2: the camera linked to the tracking.")] | (
        UnsetType) = UNSET
    target_area: TargetAreaBody | UnsetType = UNSET
