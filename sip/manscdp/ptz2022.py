"""The PTZ commands GB/T 28181-2022 adds: PTZPreciseCtrl and TargetTrack (DeviceControl, §A.2.3.1),
the PTZPosition, HomePositionQuery, CruiseTrackListQuery and CruiseTrackQuery queries (§A.2.4.10-13)
and their answers (§A.2.6.12-15).

The two DeviceControl elements are parts of the one ``DeviceControl`` declaration
(``sip.manscdp.control`` names ``PTZ_PRECISE`` and ``TARGET_AREA`` here); the
queries and answers are declared here.

Element names, and the variants read
------------------------------------
``PTZPreciseCtrl`` holds ``Pan`` (0-360 degrees), ``Tilt`` (-90 to 90
degrees) and ``Zoom`` (the zoom ratio, 1 and up), decimals. ``TargetTrack``
is ``Auto``, ``Manual`` or ``Stop``, with ``DeviceID2`` (the linked camera)
and ``TargetArea`` (the box to follow, given as DragZoom's ``Length``,
``Width``, ``MidPointX``... in pixels of the picture) for a manual track.

The PTZPosition answer carries ``Pan``, ``Tilt``, ``Zoom``,
``HorizontalFieldAngle``, ``VerticalFieldAngle`` and ``MaxViewDistance``
directly under ``Response``; some stacks wrap them in ``PTZPosInfo``, which
is read too. HomePositionQuery answers ``HomePosition`` (``Enabled``,
``ResetTime``, ``PresetIndex``); the three leaves sent without the wrapper
are read too, and ``Enabled`` as ``1``/``0`` or ``true``/``false``.
CruiseTrackListQuery answers ``SumNum`` and ``CruiseTrackList Num=`` of
``CruiseTrack`` (``Number``, ``Name``); CruiseTrackQuery, asked with the
track's ``Number``, answers its ``Number``, ``Name``, ``SumNum`` and
``CruisePointList Num=`` of ``CruisePoint`` (``PresetIndex``, ``StayTime``,
``Speed``). Items named ``Item`` and a point's ``DwellTime`` are read as
their standard names. Numbers that do not parse are logged and read as
None (``registry``); CmdType is matched in any case.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from sip.manscdp.messages import Query, Response
from sip.manscdp.registry import Command, Leaf, Nested, Repeated, Struct, Total, declare, encode

__all__ = [
    "CRUISE_TRACK_LIST_QUERY",
    "CRUISE_TRACK_LIST_RESPONSE",
    "CRUISE_TRACK_QUERY",
    "CRUISE_TRACK_RESPONSE",
    "HOME_POSITION_QUERY",
    "HOME_POSITION_RESPONSE",
    "PTZ_POSITION_QUERY",
    "PTZ_POSITION_RESPONSE",
    "PTZ_PRECISE",
    "TARGET_AREA",
    "CruisePoint",
    "CruiseTrack",
    "CruiseTrackListQuery",
    "CruiseTrackListResponse",
    "CruiseTrackQuery",
    "CruiseTrackResponse",
    "HomePositionInfo",
    "HomePositionQuery",
    "HomePositionResponse",
    "PtzPosition",
    "PtzPositionQuery",
    "PtzPositionResponse",
    "PtzPrecise",
    "TargetArea",
    "TargetTrackMode",
    "encode_cruise_track_list_response",
    "encode_cruise_track_response",
    "encode_home_position_response",
    "encode_ptz_position_response",
]

_TRUE: Final = frozenset({"1", "true", "on", "yes"})
_FALSE: Final = frozenset({"0", "false", "off", "no"})


class TargetTrackMode(Enum):
    """``TargetTrack`` (GB/T 28181-2022 §A.2.3.1): automatic or manual tracking, or stop."""

    AUTO = "Auto"
    MANUAL = "Manual"
    STOP = "Stop"


@dataclass(frozen=True, kw_only=True)
class PtzPrecise:
    """``PTZPreciseCtrl`` (GB/T 28181-2022 §A.2.3.1): pan and tilt in degrees, the zoom ratio."""

    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None


PTZ_PRECISE: Final = Struct(PtzPrecise, (
    Leaf("Pan", "pan", float), Leaf("Tilt", "tilt", float), Leaf("Zoom", "zoom", float),
))


@dataclass(frozen=True, kw_only=True)
class TargetArea:
    """``TargetArea`` of a manual TargetTrack (GB/T 28181-2022 §A.2.3.1): the box to follow, as
    DragZoom gives one (§A.2.3.1.8): the picture's ``Length`` x ``Width``, the box's midpoint and size."""

    length: int | None = None
    width: int | None = None
    mid_x: int | None = None
    mid_y: int | None = None
    length_x: int | None = None
    length_y: int | None = None


TARGET_AREA: Final = Struct(TargetArea, (
    Leaf("Length", "length", int), Leaf("Width", "width", int),
    Leaf("MidPointX", "mid_x", int), Leaf("MidPointY", "mid_y", int),
    Leaf("LengthX", "length_x", int), Leaf("LengthY", "length_y", int),
))


# -- PTZPosition (§A.2.4.13, §A.2.6.15) ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PtzPositionQuery(Query):
    """PTZPosition query (GB/T 28181-2022 §A.2.4.13): the camera's precise position."""


PTZ_POSITION_QUERY: Final = declare(Command(kind="Query", cmd_type="PTZPosition", cls=PtzPositionQuery))


@dataclass(frozen=True, kw_only=True)
class PtzPosition:
    """Where the camera looks (GB/T 28181-2022 §A.2.6.15): pan, tilt (degrees), zoom ratio, the
    horizontal and vertical field of view (degrees) and the farthest distance it sees (metres)."""

    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None
    horizontal_field_angle: float | None = None
    vertical_field_angle: float | None = None
    max_view_distance: float | None = None


@dataclass(frozen=True, kw_only=True)
class PtzPositionResponse(Response):
    """PTZPosition answer (GB/T 28181-2022 §A.2.6.15)."""

    pan: float | None = None
    tilt: float | None = None
    zoom: float | None = None
    horizontal_field_angle: float | None = None
    vertical_field_angle: float | None = None
    max_view_distance: float | None = None

    @property
    def position(self) -> PtzPosition:
        return PtzPosition(pan=self.pan, tilt=self.tilt, zoom=self.zoom,
                           horizontal_field_angle=self.horizontal_field_angle,
                           vertical_field_angle=self.vertical_field_angle, max_view_distance=self.max_view_distance)


# Written directly under Response; read from a PTZPosInfo wrapper too (a stack's variant).
PTZ_POSITION_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="PTZPosition", cls=PtzPositionResponse,
    fields=(
        Leaf("Result", "result"),
        Leaf("Pan", "pan", float, fallback="PTZPosInfo"),
        Leaf("Tilt", "tilt", float, fallback="PTZPosInfo"),
        Leaf("Zoom", "zoom", float, fallback="PTZPosInfo"),
        Leaf("HorizontalFieldAngle", "horizontal_field_angle", float, fallback="PTZPosInfo"),
        Leaf("VerticalFieldAngle", "vertical_field_angle", float, fallback="PTZPosInfo"),
        Leaf("MaxViewDistance", "max_view_distance", float, fallback="PTZPosInfo"),
    ),
))


# -- HomePositionQuery (§A.2.4.10, §A.2.6.12) ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HomePositionQuery(Query):
    """HomePositionQuery (GB/T 28181-2022 §A.2.4.10): the home (watch) position of the camera."""


HOME_POSITION_QUERY: Final = declare(Command(kind="Query", cmd_type="HomePositionQuery", cls=HomePositionQuery))


def _flag(raw: str | None) -> bool | None:
    if raw is None:
        return None
    text = raw.strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


@dataclass(frozen=True, kw_only=True)
class HomePositionInfo:
    """``HomePosition`` of the answer (GB/T 28181-2022 §A.2.6.12): ``Enabled`` as sent (1/0; some
    stacks write true/false), the idle seconds before returning, the preset returned to."""

    enabled: str | None = None
    reset_time: int | None = None
    preset_index: int | None = None

    @property
    def is_enabled(self) -> bool | None:
        """``Enabled`` read as 1/0, true/false, on/off or yes/no; None when absent or anything else."""
        return _flag(self.enabled)


_HOME_POSITION: Final = Struct(HomePositionInfo, (
    Leaf("Enabled", "enabled"), Leaf("ResetTime", "reset_time", int), Leaf("PresetIndex", "preset_index", int),
))


@dataclass(frozen=True, kw_only=True)
class HomePositionResponse(Response):
    """HomePositionQuery answer (GB/T 28181-2022 §A.2.6.12); ``home`` is the wrapped element or, from
    a device that sends its leaves without ``HomePosition``, those leaves."""

    home_position: HomePositionInfo | None = None
    enabled: str | None = None
    reset_time: int | None = None
    preset_index: int | None = None

    @property
    def home(self) -> HomePositionInfo | None:
        if self.home_position is not None:
            return self.home_position
        if self.enabled is None and self.reset_time is None and self.preset_index is None:
            return None
        return HomePositionInfo(enabled=self.enabled, reset_time=self.reset_time, preset_index=self.preset_index)


HOME_POSITION_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="HomePositionQuery", cls=HomePositionResponse,
    fields=(
        Leaf("Result", "result"),
        Nested("HomePosition", "home_position", _HOME_POSITION),
        Leaf("Enabled", "enabled"), Leaf("ResetTime", "reset_time", int), Leaf("PresetIndex", "preset_index", int),
    ),
))


# -- CruiseTrackListQuery and CruiseTrackQuery (§A.2.4.11-12, §A.2.6.13-14) -----------------------


@dataclass(frozen=True, kw_only=True)
class CruiseTrackListQuery(Query):
    """CruiseTrackListQuery (GB/T 28181-2022 §A.2.4.11): the camera's cruise tracks."""


CRUISE_TRACK_LIST_QUERY: Final = declare(Command(
    kind="Query", cmd_type="CruiseTrackListQuery", cls=CruiseTrackListQuery))


@dataclass(frozen=True, kw_only=True)
class CruiseTrack:
    """One ``CruiseTrackList/CruiseTrack`` (GB/T 28181-2022 §A.2.6.13): the track's number and name."""

    number: int | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class CruiseTrackListResponse(Response):
    """CruiseTrackListQuery answer (GB/T 28181-2022 §A.2.6.13)."""

    sum_num: int = 0
    tracks: tuple[CruiseTrack, ...] = ()
    num: int | None = None


CRUISE_TRACK_LIST_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="CruiseTrackListQuery", cls=CruiseTrackListResponse,
    fields=(
        Leaf("Result", "result"),
        Total("SumNum", "sum_num", of="tracks"),
        Repeated("CruiseTrackList", "tracks", Struct(CruiseTrack, (
            Leaf("Number", "number", int), Leaf("Name", "name"),
        )), item_tag="CruiseTrack", item_aliases=("Item",), num_attr="num"),
    ),
))


@dataclass(frozen=True, kw_only=True)
class CruiseTrackQuery(Query):
    """CruiseTrackQuery (GB/T 28181-2022 §A.2.4.12): the points of track ``Number``."""

    number: int | None = None


CRUISE_TRACK_QUERY: Final = declare(Command(
    kind="Query", cmd_type="CruiseTrackQuery", cls=CruiseTrackQuery,
    fields=(Leaf("Number", "number", int),),
))


@dataclass(frozen=True, kw_only=True)
class CruisePoint:
    """One ``CruisePointList/CruisePoint`` (GB/T 28181-2022 §A.2.6.14): the preset visited, the
    seconds stayed there and the speed to it; ``dwell_time`` is a stack's name for the stay."""

    preset_index: int | None = None
    stay_time: int | None = None
    speed: int | None = None
    dwell_time: int | None = None

    @property
    def stay(self) -> int | None:
        """``StayTime``, else the ``DwellTime`` some stacks send."""
        return self.stay_time if self.stay_time is not None else self.dwell_time


@dataclass(frozen=True, kw_only=True)
class CruiseTrackResponse(Response):
    """CruiseTrackQuery answer (GB/T 28181-2022 §A.2.6.14)."""

    number: int | None = None
    name: str | None = None
    sum_num: int = 0
    points: tuple[CruisePoint, ...] = ()
    num: int | None = None


CRUISE_TRACK_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="CruiseTrackQuery", cls=CruiseTrackResponse,
    fields=(
        Leaf("Result", "result"),
        Leaf("Number", "number", int),
        Leaf("Name", "name"),
        Total("SumNum", "sum_num", of="points"),
        Repeated("CruisePointList", "points", Struct(CruisePoint, (
            Leaf("PresetIndex", "preset_index", int), Leaf("StayTime", "stay_time", int),
            Leaf("Speed", "speed", int), Leaf("DwellTime", "dwell_time", int),
        )), item_tag="CruisePoint", item_aliases=("Item",), num_attr="num"),
    ),
))


# -- encoders of the answers (a device's side: the simulator) -------------------------------------


def encode_ptz_position_response(
    sn: int, device_id: str, position: PtzPosition, *, result: str | None = "OK", charset: str = "GB2312",
) -> bytes:
    """The PTZPosition answer (GB/T 28181-2022 §A.2.6.15) giving ``position``."""
    return encode(PTZ_POSITION_RESPONSE.build(
        sn, device_id, charset=charset, result=result, pan=position.pan, tilt=position.tilt, zoom=position.zoom,
        horizontal_field_angle=position.horizontal_field_angle, vertical_field_angle=position.vertical_field_angle,
        max_view_distance=position.max_view_distance))


def encode_home_position_response(
    sn: int, device_id: str, home: HomePositionInfo, *, result: str | None = "OK", charset: str = "GB2312",
) -> bytes:
    """The HomePositionQuery answer (GB/T 28181-2022 §A.2.6.12), ``home`` wrapped in ``HomePosition``."""
    return encode(HOME_POSITION_RESPONSE.build(sn, device_id, charset=charset, result=result, home_position=home))


def encode_cruise_track_list_response(
    sn: int, device_id: str, tracks: tuple[CruiseTrack, ...], *, result: str | None = "OK",
    charset: str = "GB2312",
) -> bytes:
    """The CruiseTrackListQuery answer (GB/T 28181-2022 §A.2.6.13) listing ``tracks`` in one message."""
    return encode(CRUISE_TRACK_LIST_RESPONSE.build(
        sn, device_id, charset=charset, result=result, sum_num=len(tracks), tracks=tracks))


def encode_cruise_track_response(
    sn: int, device_id: str, number: int, name: str | None, points: tuple[CruisePoint, ...], *,
    result: str | None = "OK", charset: str = "GB2312",
) -> bytes:
    """The CruiseTrackQuery answer (GB/T 28181-2022 §A.2.6.14): track ``number`` and its ``points``."""
    return encode(CRUISE_TRACK_RESPONSE.build(
        sn, device_id, charset=charset, result=result, number=number, name=name, sum_num=len(points),
        points=points))
