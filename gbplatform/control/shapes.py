"""API shapes of device control: PTZ, lens, presets, cruise, scan, aux (GB/T 28181-2016 Annex A.3), and
the other DeviceControl commands (§A.2.3.1): reboot, device recording, guard, alarm reset, I-frame,
drag zoom, home position.

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import NO_CONTROL, OptStr, Shape
from gbplatform.control import config_shapes as cs

__all__ = [
    "AlarmResetBody",
    "AuxBody",
    "BasicConfigBody",
    "BasicParamConfig",
    "CommandResult",
    "ControlResult",
    "CruiseBody",
    "DeviceConfigResult",
    "DeviceRecordBody",
    "DragZoomBody",
    "GuardBody",
    "HomePositionBody",
    "LensBody",
    "PresetBody",
    "PresetItem",
    "PresetList",
    "PtzBody",
    "ScanBody",
    "VideoConfigBody",
    "VideoParamOptConfig",
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


class DeviceRecordBody(Shape, forbid_unknown_fields=True):
    """Start (`true`) or stop (`false`) the device's own recording of the channel (RecordCmd, §A.2.3.1.3)."""

    record: bool


class GuardBody(Shape, forbid_unknown_fields=True):
    """Arm (`true`, SetGuard) or disarm (`false`, ResetGuard) the device's alarm guard (GuardCmd, §A.2.3.1.4)."""

    armed: bool


AlarmCode = Annotated[int, Meta(ge=0, le=99, description="Omitted: every one.")]


class AlarmResetBody(Shape, forbid_unknown_fields=True):
    """Reset the device's alarms (AlarmCmd ResetAlarm, §A.2.3.1.5), only those of the alarm `method`
    (§A.2.5.1: 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other) and `type` if given."""

    method: AlarmCode | UnsetType = UNSET
    type: AlarmCode | UnsetType = UNSET


Pixels = Annotated[int, Meta(ge=0, le=65535)]


class DragZoomBody(Shape, forbid_unknown_fields=True):
    """Zoom into (`in`) or out of (`out`) a box of the picture (DragZoomIn/DragZoomOut, §A.2.3.1.8-9):
    `length` x `width` is the size of the picture played, the box is centred on (`mid_x`, `mid_y`)
    and `length_x` x `length_y` big, all in pixels of that picture."""

    direction: Literal["in", "out"]
    length: Annotated[int, Meta(ge=1, le=65535, description="Width of the picture played, pixels.")]
    width: Annotated[int, Meta(ge=1, le=65535, description="Height of the picture played, pixels.")]
    mid_x: Pixels
    mid_y: Pixels
    length_x: Pixels
    length_y: Pixels


class HomePositionBody(Shape, forbid_unknown_fields=True):
    """Turn the home (watch) position on or off (HomePosition, §A.2.3.1.10): after `reset_time` idle
    seconds the camera returns to preset `preset_index`."""

    enabled: bool
    reset_time: Annotated[int, Meta(ge=0, le=86400, description="Idle seconds before returning.")] = 0
    preset_index: Annotated[int, Meta(ge=1, le=255, description="The preset to return to.")] = 1


class CommandResult(Shape):
    """The device's answer to a DeviceControl other than PTZCmd (Response with Result, §A.2.6.2)."""

    device_id: Annotated[str, Meta(description="The device the command went to (the channel's owner).")]
    target_id: Annotated[str, Meta(description="The `DeviceID` of the command: the device or the channel.")]
    command: Annotated[str, Meta(examples=["TeleBoot"], description="The DeviceControl element sent.")]
    result: Annotated[OptStr, Meta(examples=["OK"], description="The device's Result: OK or ERROR.")]


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


class BasicParamConfig(Shape):
    """``BasicParam`` the device answered (ConfigDownload, GB/T 28181-2016 §A.2.6.8)."""

    name: OptStr
    device_id: OptStr
    sip_server_id: OptStr
    sip_server_ip: OptStr
    sip_server_port: int | None
    domain_name: OptStr
    expiration: Annotated[int | None, Meta(description="Registration expiry, seconds.")]
    heartbeat_interval: Annotated[int | None, Meta(description="Keepalive interval, seconds.")]
    heartbeat_count: Annotated[int | None, Meta(description="Keepalives missed before the device is offline.")]
    position_capability: int | None
    longitude: OptStr
    latitude: OptStr


class VideoParamOptConfig(Shape):
    """``VideoParamOpt`` the device answered (ConfigDownload, §A.2.6.8)."""

    download_speed: Annotated[OptStr, Meta(examples=["1/2/4"], description="Download speeds offered, `/`-separated.")]
    resolution: Annotated[OptStr, Meta(examples=["5/6"], description="Resolutions (Annex F codes), `/`-separated.")]


class DeviceConfigResult(Shape):
    """One ``ConfigType`` of the device's configuration (ConfigDownload, §A.2.4.7, §A.2.6.8); the member
    of the type asked for is set, the others null."""

    device_id: str
    config_type: Annotated[str, Meta(examples=["BasicParam"])]
    result: Annotated[OptStr, Meta(examples=["OK"], description="The device's Result.")]
    basic_param: BasicParamConfig | None
    video_param_opt: VideoParamOptConfig | None
    svac: Annotated[dict[str, str] | None, Meta(
        examples=[{"SVCParam/SVCSpaceDomainMode": "1", "ROIParam/Item[1]/ROISeq": "1"}],
        description="For SVACEncodeConfig and SVACDecodeConfig: every leaf by its path below the element, "
                    "siblings of one tag numbered from 1.")]
    # The GB/T 28181-2022 types (§A.2.6.8), their shapes in config_shapes.py.
    video_param_attribute: Annotated[list[cs.VideoStreamConfig] | None, Meta(
        description="For VideoParamAttribute: one entry per stream.")] = None
    video_record_plan: cs.VideoRecordPlanConfig | None = None
    video_alarm_record: cs.VideoAlarmRecordConfig | None = None
    picture_mask: cs.PictureMaskConfig | None = None
    frame_mirror: Annotated[int | None, Meta(
        description="For FrameMirror: 0 none, 1 horizontal, 2 vertical, 3 both.")] = None
    alarm_report: cs.AlarmReportConfig | None = None
    osd_config: cs.OsdConfigResult | None = None


class BasicConfigBody(Shape, forbid_unknown_fields=True):
    """The basic parameters to set (DeviceConfig BasicParam, GB/T 28181-2016 §A.2.3.2); at least one."""

    name: Annotated[str, Meta(min_length=1, max_length=128, pattern=NO_CONTROL,
                              description="The device's name.")] | UnsetType = UNSET
    expiration: Annotated[int, Meta(ge=60, le=86400, description="Registration expiry, seconds.")] | UnsetType = UNSET
    heartbeat_interval: Annotated[int, Meta(ge=1, le=3600, description="Keepalive interval, seconds.")] | UnsetType = (
        UNSET)
    heartbeat_count: Annotated[int, Meta(ge=1, le=100, description="Keepalives missed before offline.")] | UnsetType = (
        UNSET)


class VideoConfigBody(Shape, forbid_unknown_fields=True):
    """The video parameter options to set (DeviceConfig VideoParamOpt, §A.2.3.2); at least one."""

    download_speed: Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[0-9]+(/[0-9]+)*$", examples=["1/2/4"],
                                        description="Download speeds, `/`-separated.")] | UnsetType = UNSET
    resolution: Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[0-9]+(/[0-9]+)*$", examples=["5/6"],
                                    description="Resolutions (Annex F codes), `/`-separated.")] | UnsetType = UNSET
