"""API shapes of the GB/T 28181-2022 configuration types (DeviceConfig §A.2.3.2, ConfigDownload §A.2.6.8):
video stream attributes, the device's record plan and alarm recording, privacy masks, frame mirror, alarm
report switches and OSD (``sip.manscdp.config2022`` holds their XML).

Each type has a body (``PUT /api/v1/devices/{id}/config/<kind>``, every bound checked, 400 naming the
field) and a result (its member of ``DeviceConfigResult``, nullable: a device may leave a leaf out). The
two use the same names, so what ``GET .../config?type=...`` returns can be edited and sent back. The
standard's 0/1 switches are booleans here.

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import NO_CONTROL, OptStr, Shape

__all__ = [
    "MAX_MASK_REGIONS",
    "MAX_OSD_TEXTS",
    "MAX_SCHEDULES",
    "MAX_SEGMENTS",
    "MAX_STREAMS",
    "AlarmRecordBody",
    "AlarmReportBody",
    "AlarmReportConfig",
    "FrameMirrorBody",
    "MaskRegionBody",
    "MaskRegionConfig",
    "OsdBody",
    "OsdConfigResult",
    "OsdTextBody",
    "OsdTextConfig",
    "PictureMaskBody",
    "PictureMaskConfig",
    "DeviceRecordPlanBody",
    "RecordScheduleBody",
    "RecordScheduleConfig",
    "TimeSegmentBody",
    "TimeSegmentConfig",
    "VideoAlarmRecordConfig",
    "VideoAttributeBody",
    "VideoRecordPlanConfig",
    "VideoStreamBody",
    "VideoStreamConfig",
]

MAX_STREAMS: Final = 8
"""Streams of one VideoParamAttribute: the main stream and sub-streams (§A.2.1.13 numbers them from 0)."""
MAX_SCHEDULES: Final = 7
"""RecordSchedule elements of a VideoRecordPlan: one per weekday (§A.2.1.15, WeekDayNum 1-7)."""
MAX_SEGMENTS: Final = 8
"""TimeSegment elements of one RecordSchedule (§A.2.1.15: at most 8 a day)."""
MAX_MASK_REGIONS: Final = 4
"""PictureMask regions (§A.2.1.17: Seq 1-4)."""
MAX_OSD_TEXTS: Final = 8
"""OSD text items the API sends in one OSDConfig; devices commonly overlay at most 8 lines."""

Switch = Annotated[bool, Meta(description="The standard's 0/1 switch: true is 1.")]
OptSwitch = Annotated[bool | None, Meta(description="The standard's 0/1 switch: true is 1.")]
StreamNumber = Annotated[int, Meta(ge=0, le=MAX_STREAMS - 1, description="0 the main stream, 1 the first sub-stream, ...")]
Pixel = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[int, Meta(ge=0, le=3600)]
Code = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z._*/-]+$")]
Hour = Annotated[int, Meta(ge=0, le=23)]
Minute = Annotated[int, Meta(ge=0, le=59)]


# --- VideoParamAttribute (§A.2.1.13) ------------------------------------------------------------

class VideoStreamConfig(Shape):
    """One stream's attributes as the device answered them (VideoParamAttribute ``Item``)."""

    stream_number: int | None
    stream_name: Annotated[OptStr, Meta(description="The stream's name, when the device sends one.")]
    video_format: Annotated[OptStr, Meta(examples=["2"], description="1 MPEG-4, 2 H.264, 3 SVAC, 4 3GP, 5 H.265.")]
    resolution: Annotated[OptStr, Meta(examples=["6"], description="Annex F code (5 720P, 6 1080P, ...).")]
    frame_rate: Annotated[int | None, Meta(description="Frames per second.")]
    bit_rate_type: Annotated[int | None, Meta(description="1 constant (CBR), 2 variable (VBR).")]
    video_bit_rate: Annotated[int | None, Meta(description="kbit/s.")]


class VideoStreamBody(Shape, forbid_unknown_fields=True):
    """One stream to set; the attributes left out are not sent."""

    stream_number: StreamNumber
    video_format: Annotated[Code, Meta(examples=["2"],
                                       description="1 MPEG-4, 2 H.264, 3 SVAC, 4 3GP, 5 H.265.")] | UnsetType = UNSET
    resolution: Annotated[Code, Meta(examples=["6"], description="Annex F code.")] | UnsetType = UNSET
    frame_rate: Annotated[int, Meta(ge=1, le=240, description="Frames per second.")] | UnsetType = UNSET
    bit_rate_type: Annotated[int, Meta(ge=1, le=2, description="1 CBR, 2 VBR.")] | UnsetType = UNSET
    video_bit_rate: Annotated[int, Meta(ge=1, le=1_000_000, description="kbit/s.")] | UnsetType = UNSET


class VideoAttributeBody(Shape, forbid_unknown_fields=True):
    """The streams' video attributes to set (DeviceConfig VideoParamAttribute, GB/T 28181-2022 §A.2.1.13);
    each stream number at most once."""

    streams: Annotated[list[VideoStreamBody], Meta(min_length=1, max_length=MAX_STREAMS)]


# --- VideoRecordPlan (§A.2.1.15) ---------------------------------------------------------------

class TimeSegmentConfig(Shape):
    """One recording time segment of a day, as the device answered it."""

    start_hour: int | None
    start_min: int | None
    start_sec: int | None
    stop_hour: int | None
    stop_min: int | None
    stop_sec: int | None


class RecordScheduleConfig(Shape):
    """One day of the device's record plan."""

    week_day: Annotated[int | None, Meta(description="1 Monday ... 7 Sunday.")]
    segments: list[TimeSegmentConfig]


class VideoRecordPlanConfig(Shape):
    """The device's own weekly recording schedule (VideoRecordPlan)."""

    record_enable: OptSwitch
    stream_number: int | None
    schedules: list[RecordScheduleConfig]


class TimeSegmentBody(Shape, forbid_unknown_fields=True):
    """A time segment of a day, start before stop."""

    start_hour: Hour
    start_min: Minute = 0
    start_sec: Minute = 0
    stop_hour: Hour = 23
    stop_min: Minute = 59
    stop_sec: Minute = 59


class RecordScheduleBody(Shape, forbid_unknown_fields=True):
    """A day and its recording segments."""

    week_day: Annotated[int, Meta(ge=1, le=7, description="1 Monday ... 7 Sunday.")]
    segments: Annotated[list[TimeSegmentBody], Meta(max_length=MAX_SEGMENTS)]


class DeviceRecordPlanBody(Shape, forbid_unknown_fields=True):
    """The device's own recording plan to set (DeviceConfig VideoRecordPlan, GB/T 28181-2022 §A.2.1.15):
    at most one schedule per weekday, at most 8 segments a day. (The platform's own recording plans are
    ``/api/v1/record/plans``.)"""

    record_enable: Switch
    schedules: Annotated[list[RecordScheduleBody], Meta(max_length=MAX_SCHEDULES)] = []
    stream_number: StreamNumber = 0


# --- VideoAlarmRecord (§A.2.1.16) --------------------------------------------------------------

class VideoAlarmRecordConfig(Shape):
    """The device's recording on alarm (VideoAlarmRecord)."""

    record_enable: OptSwitch
    stream_number: int | None
    record_time: Annotated[int | None, Meta(description="Seconds recorded after the alarm ends.")]
    pre_record_time: Annotated[int | None, Meta(description="Seconds recorded before the alarm.")]


class AlarmRecordBody(Shape, forbid_unknown_fields=True):
    """Recording on alarm to set (DeviceConfig VideoAlarmRecord, GB/T 28181-2022 §A.2.1.16)."""

    record_enable: Switch
    stream_number: StreamNumber = 0
    record_time: Annotated[Seconds, Meta(description="Seconds recorded after the alarm ends.")] | UnsetType = UNSET
    pre_record_time: Annotated[Seconds, Meta(description="Seconds recorded before the alarm.")] | UnsetType = UNSET


# --- PictureMask (§A.2.1.17) -------------------------------------------------------------------

class MaskRegionConfig(Shape):
    """One privacy-mask region as the device answered it; corners null when its Point does not parse."""

    seq: int | None
    x1: int | None
    y1: int | None
    x2: int | None
    y2: int | None


class PictureMaskConfig(Shape):
    """The device's privacy masks (PictureMask)."""

    on: OptSwitch
    regions: list[MaskRegionConfig]


class MaskRegionBody(Shape, forbid_unknown_fields=True):
    """A region, top-left (x1, y1) to bottom-right (x2, y2); ``seq`` defaults to its place in the list."""

    x1: Pixel
    y1: Pixel
    x2: Pixel
    y2: Pixel
    seq: Annotated[int, Meta(ge=1, le=MAX_MASK_REGIONS)] | UnsetType = UNSET


class PictureMaskBody(Shape, forbid_unknown_fields=True):
    """Privacy masks to set (DeviceConfig PictureMask, GB/T 28181-2022 §A.2.1.17): on or off, and the
    regions (at most 4, each seq once)."""

    on: Switch
    regions: Annotated[list[MaskRegionBody], Meta(max_length=MAX_MASK_REGIONS)] = []


# --- FrameMirror (§A.2.1.23) -------------------------------------------------------------------

class FrameMirrorBody(Shape, forbid_unknown_fields=True):
    """The picture's mirroring to set (DeviceConfig FrameMirror, GB/T 28181-2022 §A.2.1.23)."""

    mirror: Annotated[int, Meta(ge=0, le=3, description="0 none, 1 horizontal, 2 vertical, 3 both.")]


# --- AlarmReport (§A.2.1.18) -------------------------------------------------------------------

class AlarmReportConfig(Shape):
    """Which alarms the device reports (AlarmReport)."""

    motion_detection: OptSwitch
    field_detection: Annotated[bool | None, Meta(description="Area intrusion.")]


class AlarmReportBody(Shape, forbid_unknown_fields=True):
    """Which alarms the device reports (DeviceConfig AlarmReport, GB/T 28181-2022 §A.2.1.18); at least one."""

    motion_detection: Switch | UnsetType = UNSET
    field_detection: Annotated[bool, Meta(description="Area intrusion.")] | UnsetType = UNSET


# --- OSDConfig (§A.2.1.12) ---------------------------------------------------------------------

class OsdTextConfig(Shape):
    """One overlaid text as the device answered it."""

    text: OptStr
    x: int | None
    y: int | None


class OsdConfigResult(Shape):
    """The device's on-screen display (OSDConfig): coordinates in a ``length`` x ``width`` picture."""

    length: int | None
    width: int | None
    time_enable: OptSwitch
    time_type: Annotated[int | None, Meta(description="0 `YYYY-MM-DD HH:MM:SS`, 1 `YYYY年MM月DD日 HH:MM:SS`.")]
    time_x: int | None
    time_y: int | None
    text_enable: OptSwitch
    items: list[OsdTextConfig]


class OsdTextBody(Shape, forbid_unknown_fields=True):
    """A text overlaid at (x, y), within length x width."""

    text: Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_CONTROL)]
    x: Pixel
    y: Pixel


class OsdBody(Shape, forbid_unknown_fields=True):
    """The on-screen display to set (DeviceConfig OSDConfig, GB/T 28181-2022 §A.2.1.12): every position
    lies within `length` x `width`, the picture size the coordinates refer to."""

    length: Annotated[int, Meta(ge=1, le=65535, description="Width of the coordinate space, pixels.")]
    width: Annotated[int, Meta(ge=1, le=65535, description="Height of the coordinate space, pixels.")]
    time_enable: Switch = True
    time_type: Annotated[int, Meta(ge=0, le=1, description=(
        "0 `YYYY-MM-DD HH:MM:SS`, 1 `YYYY年MM月DD日 HH:MM:SS`."))] = 0
    time_x: Pixel = 0
    time_y: Pixel = 0
    text_enable: Switch = False
    items: Annotated[list[OsdTextBody], Meta(max_length=MAX_OSD_TEXTS)] = []
