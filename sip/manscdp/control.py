"""Control commands and their answers: DeviceControl (PTZCmd), DeviceConfig, PresetQuery
(GB/T 28181-2016 §A.2.3.1, §A.2.4.9, §A.2.6.2, §A.2.6.3, §A.2.6.11)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sip.manscdp.messages import Control, Query, Response
from sip.manscdp.registry import Command, Leaf, Nested, Repeated, Struct, declare, encode


@dataclass(frozen=True, kw_only=True)
class ControlInfo:
    """``Info`` of a DeviceControl: the priority of the command (GB/T 28181-2016 §A.2.3.1.1)."""

    control_priority: int | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceControl(Control):
    """DeviceControl (GB/T 28181-2016 §A.2.3.1); ``ptz_cmd`` is the A.3 command as 16 hex digits."""

    ptz_cmd: str | None = None
    info: ControlInfo | None = None


DEVICE_CONTROL: Final = declare(Command(
    kind="Control", cmd_type="DeviceControl", cls=DeviceControl,
    fields=(
        Leaf("PTZCmd", "ptz_cmd"),
        Nested("Info", "info", Struct(ControlInfo, (Leaf("ControlPriority", "control_priority", int),))),
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


def encode_control_response(sn: int, device_id: str, *, result: str = "OK", charset: str = "GB2312") -> bytes:
    """The Response to a DeviceControl (§A.2.6.2)."""
    return encode(DEVICE_CONTROL_RESPONSE.build(sn, device_id, charset=charset, result=result))


def encode_preset_query_response(
    sn: int, device_id: str, presets: Iterable[Preset], *, result: str = "OK", charset: str = "GB2312",
) -> bytes:
    """The PresetQuery answer (§A.2.6.11) listing ``presets``."""
    return encode(PRESET_QUERY_RESPONSE.build(
        sn, device_id, charset=charset, result=result, presets=tuple(presets)))
