"""Control commands and their answers: DeviceControl (PTZCmd, TeleBoot, RecordCmd, GuardCmd, AlarmCmd,
IFameCmd, DragZoomIn/Out, HomePosition), DeviceConfig, PresetQuery
(GB/T 28181-2016 §A.2.3.1, §A.2.4.9, §A.2.6.2, §A.2.6.3, §A.2.6.11)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sip.manscdp.maintenance import DEVICE_UPGRADE, DeviceUpgrade
from sip.manscdp.messages import Control, Query, Response
from sip.manscdp.ptz2022 import PTZ_PRECISE, TARGET_AREA, PtzPrecise, TargetArea, TargetTrackMode
from sip.manscdp.registry import Command, Leaf, Nested, Repeated, Struct, declare, encode


@dataclass(frozen=True, kw_only=True)
class ControlInfo:
    """``Info`` of a DeviceControl: the priority of a PTZCmd (GB/T 28181-2016 §A.2.3.1.1), the alarm
    method and type an AlarmCmd ResetAlarm resets (§A.2.3.1.5)."""

    control_priority: int | None = None
    alarm_method: int | None = None
    alarm_type: int | None = None


@dataclass(frozen=True, kw_only=True)
class DragZoom:
    """``DragZoomIn``/``DragZoomOut`` (GB/T 28181-2016 §A.2.3.1.8, §A.2.3.1.9): the frame played
    (``Length`` x ``Width``), the box's midpoint and size in it."""

    length: int | None = None
    width: int | None = None
    mid_x: int | None = None
    mid_y: int | None = None
    length_x: int | None = None
    length_y: int | None = None


@dataclass(frozen=True, kw_only=True)
class HomePosition:
    """``HomePosition`` (GB/T 28181-2016 §A.2.3.1.10): watch position on (1) or off (0), the idle
    seconds before the device returns to it, and its preset (1-255)."""

    enabled: int | None = None
    reset_time: int | None = None
    preset_index: int | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceControl(Control):
    """DeviceControl (GB/T 28181-2016 §A.2.3.1); one command per message: ``ptz_cmd`` is the A.3
    command as 16 hex digits, the others the text or element of their tag."""

    ptz_cmd: str | None = None
    tele_boot: str | None = None
    record_cmd: str | None = None
    guard_cmd: str | None = None
    alarm_cmd: str | None = None
    iframe_cmd: str | None = None
    iframe_cmd_variant: str | None = None
    drag_zoom_in: DragZoom | None = None
    drag_zoom_out: DragZoom | None = None
    home_position: HomePosition | None = None
    ptz_precise_ctrl: PtzPrecise | None = None  # GB/T 28181-2022 precise PTZ (sip.manscdp.ptz2022)
    target_track: TargetTrackMode | None = None  # GB/T 28181-2022 target tracking, with the two below
    device_id2: str | None = None
    target_area: TargetArea | None = None
    format_sd_card: int | None = None  # GB/T 28181-2022: the SD card to format (sip.manscdp.maintenance)
    device_upgrade: DeviceUpgrade | None = None  # GB/T 28181-2022 firmware upgrade (sip.manscdp.maintenance)
    info: ControlInfo | None = None

    @property
    def iframe(self) -> str | None:
        """The I-frame request under either spelling: the standard's ``IFameCmd`` or ``IFrameCmd``."""
        return self.iframe_cmd if self.iframe_cmd is not None else self.iframe_cmd_variant


_DRAG_ZOOM: Final = Struct(DragZoom, (
    Leaf("Length", "length", int), Leaf("Width", "width", int),
    Leaf("MidPointX", "mid_x", int), Leaf("MidPointY", "mid_y", int),
    Leaf("LengthX", "length_x", int), Leaf("LengthY", "length_y", int),
))


DEVICE_CONTROL: Final = declare(Command(
    kind="Control", cmd_type="DeviceControl", cls=DeviceControl,
    fields=(
        Leaf("PTZCmd", "ptz_cmd"),
        Leaf("TeleBoot", "tele_boot"),
        Leaf("RecordCmd", "record_cmd"),
        Leaf("GuardCmd", "guard_cmd"),
        Leaf("AlarmCmd", "alarm_cmd"),
        # §A.2.3.1.7 spells it IFameCmd; some devices send and expect IFrameCmd.
        Leaf("IFameCmd", "iframe_cmd"),
        Leaf("IFrameCmd", "iframe_cmd_variant"),
        Nested("DragZoomIn", "drag_zoom_in", _DRAG_ZOOM),
        Nested("DragZoomOut", "drag_zoom_out", _DRAG_ZOOM),
        Nested("HomePosition", "home_position", Struct(HomePosition, (
            Leaf("Enabled", "enabled", int), Leaf("ResetTime", "reset_time", int),
            Leaf("PresetIndex", "preset_index", int),
        ))),
        Nested("PTZPreciseCtrl", "ptz_precise_ctrl", PTZ_PRECISE),
        Leaf("TargetTrack", "target_track", TargetTrackMode),
        Leaf("DeviceID2", "device_id2"),
        Nested("TargetArea", "target_area", TARGET_AREA),
        Leaf("FormatSDCard", "format_sd_card", int),
        Nested("DeviceUpgrade", "device_upgrade", DEVICE_UPGRADE),
        Nested("Info", "info", Struct(ControlInfo, (
            Leaf("ControlPriority", "control_priority", int),
            Leaf("AlarmMethod", "alarm_method", int),
            Leaf("AlarmType", "alarm_type", int),
        ))),
    ),
))


@dataclass(frozen=True, kw_only=True)
class ControlResponse(Response):
    """Answer to DeviceControl/DeviceConfig (GB/T 28181-2016 §A.2.6.2, §A.2.6.3)."""


DEVICE_CONTROL_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="DeviceControl", cls=ControlResponse,
    fields=(Leaf("Result", "result"),),
))
DEVICE_CONFIG_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="DeviceConfig", cls=ControlResponse,
    fields=(Leaf("Result", "result"),),
))


@dataclass(frozen=True, kw_only=True)
class PresetQuery(Query):
    """PresetQuery (GB/T 28181-2016 §A.2.4.9): the device's presets."""


PRESET_QUERY: Final = declare(Command(kind="Query", cmd_type="PresetQuery", cls=PresetQuery))


@dataclass(frozen=True, kw_only=True)
class Preset:
    """One ``PresetList/Item`` (GB/T 28181-2016 §A.2.6.11)."""

    preset_id: str | None = None
    preset_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class PresetQueryResponse(Response):
    """PresetQuery answer (GB/T 28181-2016 §A.2.6.11)."""

    presets: tuple[Preset, ...] = ()
    num: int | None = None


PRESET_QUERY_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="PresetQuery", cls=PresetQueryResponse,
    fields=(
        Leaf("Result", "result"),
        Repeated("PresetList", "presets", Struct(Preset, (
            Leaf("PresetID", "preset_id"),
            Leaf("PresetName", "preset_name"),
        )), num_attr="num"),
    ),
))


def encode_device_control(
    sn: int, device_id: str, ptz_cmd: str, *, priority: int | None = 5, charset: str = "GB2312",
) -> bytes:
    """A DeviceControl carrying ``ptz_cmd`` (§A.2.3.1); ``Info/ControlPriority`` unless ``priority`` is None."""
    msg = DEVICE_CONTROL.build(
        sn, device_id, charset=charset, ptz_cmd=ptz_cmd,
        info=None if priority is None else ControlInfo(control_priority=priority),
    )
    return encode(msg)


def encode_device_command(sn: int, device_id: str, *, charset: str = "GB2312", **values: object) -> bytes:
    """A DeviceControl of the declared ``values`` (``tele_boot="Boot"``, ``guard_cmd="SetGuard"``,
    ``drag_zoom_in=DragZoom(...)``...) to ``device_id`` (§A.2.3.1)."""
    return encode(DEVICE_CONTROL.build(sn, device_id, charset=charset, **values))


def encode_control_response(sn: int, device_id: str, *, result: str = "OK", charset: str = "GB2312") -> bytes:
    """The Response to a DeviceControl (§A.2.6.2)."""
    return encode(DEVICE_CONTROL_RESPONSE.build(sn, device_id, charset=charset, result=result))


def encode_config_response(sn: int, device_id: str, *, result: str = "OK", charset: str = "GB2312") -> bytes:
    """The Response to a DeviceConfig (§A.2.6.3)."""
    return encode(DEVICE_CONFIG_RESPONSE.build(sn, device_id, charset=charset, result=result))


def encode_preset_query_response(
    sn: int, device_id: str, presets: Iterable[Preset], *, result: str = "OK", charset: str = "GB2312",
) -> bytes:
    """The PresetQuery answer (§A.2.6.11) listing ``presets``."""
    return encode(PRESET_QUERY_RESPONSE.build(
        sn, device_id, charset=charset, result=result, presets=tuple(presets)))
