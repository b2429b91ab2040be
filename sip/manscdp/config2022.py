"""The configuration types GB/T 28181-2022 adds to ConfigDownload and DeviceConfig (§A.2.3.2, §A.2.4.7,
§A.2.6.8; the types of §A.2.1.13 and §A.2.1.15-A.2.1.23).

Each type is one child of the ``DeviceConfig`` control and of the
ConfigDownload answer, named as its ``ConfigType``:

``VideoParamAttribute`` (§A.2.1.13)
    ``<VideoParamAttribute Num="n"><Item>`` per stream: ``StreamNumber``
    (some devices send ``StreamName``), ``VideoFormat``, ``Resolution``,
    ``FrameRate``, ``BitRateType`` (1 CBR, 2 VBR), ``VideoBitRate`` (kbit/s).
``VideoRecordPlan`` (§A.2.1.15)
    ``RecordEnable`` (0/1), ``RecordScheduleSumNum``, one ``RecordSchedule``
    per day (``WeekDayNum`` 1-7 Monday to Sunday, ``TimeSegmentSumNum``,
    ``TimeSegment`` with ``StartHour/Min/Sec`` and ``StopHour/Min/Sec``), and
    ``StreamNumber`` (0 the main stream). The schedules and segments are
    written without a list wrapper, one element each (``registry.Each``).
``VideoAlarmRecord`` (§A.2.1.16)
    ``RecordEnable``, ``RecordTime`` (seconds recorded after the alarm),
    ``PreRecordTime`` (seconds before it), ``StreamNumber``.
``PictureMask`` (§A.2.1.17)
    ``On`` (0/1), ``SumNum``, ``RegionList`` of ``Item`` with ``Seq`` and
    ``Point`` ``"x1,y1,x2,y2"`` (the top-left and bottom-right corners).
``FrameMirror`` (§A.2.1.23)
    the mirror type as the element's text: 0 none, 1 horizontal, 2 vertical,
    3 both (centre). Written so; ``<FrameMirror><FrameMirrorType>n</...>``,
    which some stacks send, is read too (``Config2022.mirror``).
``AlarmReport`` (§A.2.1.18)
    ``MotionDetection`` and ``FieldDetection`` (area intrusion) report
    switches, 0/1.
``OSDConfig`` (§A.2.1.12)
    ``Length`` x ``Width`` (the picture the coordinates refer to),
    ``TimeX``/``TimeY``, ``TimeEnable``, ``TimeType`` (0
    ``YYYY-MM-DD HH:MM:SS``, 1 ``YYYY年MM月DD日 HH:MM:SS``), ``TextEnable``,
    ``SumNum`` and one ``Item`` per text (``Text``, ``X``, ``Y``), without a
    list wrapper.

Element names are matched case-insensitively (``registry``); numbers that
do not parse are logged and become None, so one bad leaf does not cost the
rest of a device's answer. A count (``...SumNum``) left unset is written as
the number of items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sip.manscdp.registry import Each, FieldSpec, Leaf, Nested, Repeated, Struct

__all__ = [
    "CONFIG_2022_FIELDS",
    "CONFIG_TYPES_2022",
    "AlarmReport",
    "Config2022",
    "MaskRegion",
    "OsdConfig",
    "OsdText",
    "PictureMask",
    "RecordSchedule",
    "TimeSegment",
    "VideoAlarmRecord",
    "VideoRecordPlan",
    "VideoStreamAttribute",
    "format_point",
    "parse_point",
]

CONFIG_TYPES_2022: Final = {
    "VideoParamAttribute": "video_param_attribute",
    "VideoRecordPlan": "video_record_plan",
    "VideoAlarmRecord": "video_alarm_record",
    "PictureMask": "picture_mask",
    "FrameMirror": "frame_mirror",
    "AlarmReport": "alarm_report",
    "OSDConfig": "osd_config",
}
"""The ``ConfigType`` values GB/T 28181-2022 adds (§A.2.4.7), each with the attribute holding it."""


def _count(obj: object, count: str, items: str) -> None:
    """Fill an unset ``...SumNum`` with the number of items, so an encoded count always matches."""
    if getattr(obj, count) is None:
        # Frozen dataclass: set once, at construction.
        object.__setattr__(obj, count, len(getattr(obj, items)))


@dataclass(frozen=True, kw_only=True)
class VideoStreamAttribute:
    """One stream's ``Item`` of ``VideoParamAttribute`` (GB/T 28181-2022 §A.2.1.13)."""

    stream_number: int | None = None
    stream_name: str | None = None
    video_format: str | None = None
    resolution: str | None = None
    frame_rate: int | None = None
    bit_rate_type: int | None = None
    video_bit_rate: int | None = None


VIDEO_STREAM_ATTRIBUTE: Final = Struct(VideoStreamAttribute, (
    Leaf("StreamNumber", "stream_number", int),
    Leaf("StreamName", "stream_name"),
    Leaf("VideoFormat", "video_format"),
    Leaf("Resolution", "resolution"),
    Leaf("FrameRate", "frame_rate", int),
    Leaf("BitRateType", "bit_rate_type", int),
    Leaf("VideoBitRate", "video_bit_rate", int),
))


@dataclass(frozen=True, kw_only=True)
class TimeSegment:
    """One ``TimeSegment`` of a day's ``RecordSchedule`` (§A.2.1.15): start and stop, hour/min/sec."""

    start_hour: int | None = None
    start_min: int | None = None
    start_sec: int | None = None
    stop_hour: int | None = None
    stop_min: int | None = None
    stop_sec: int | None = None


TIME_SEGMENT: Final = Struct(TimeSegment, (
    Leaf("StartHour", "start_hour", int),
    Leaf("StartMin", "start_min", int),
    Leaf("StartSec", "start_sec", int),
    Leaf("StopHour", "stop_hour", int),
    Leaf("StopMin", "stop_min", int),
    Leaf("StopSec", "stop_sec", int),
))


@dataclass(frozen=True, kw_only=True)
class RecordSchedule:
    """One day of a ``VideoRecordPlan`` (§A.2.1.15): ``WeekDayNum`` 1 (Monday) to 7 and its segments."""

    week_day_num: int | None = None
    time_segment_sum_num: int | None = None
    time_segments: tuple[TimeSegment, ...] = ()

    def __post_init__(self) -> None:
        _count(self, "time_segment_sum_num", "time_segments")


RECORD_SCHEDULE: Final = Struct(RecordSchedule, (
    Leaf("WeekDayNum", "week_day_num", int),
    Leaf("TimeSegmentSumNum", "time_segment_sum_num", int),
    Each("TimeSegment", "time_segments", TIME_SEGMENT),
))


@dataclass(frozen=True, kw_only=True)
class VideoRecordPlan:
    """``VideoRecordPlan`` (§A.2.1.15): the device's own weekly recording schedule."""

    record_enable: int | None = None
    record_schedule_sum_num: int | None = None
    record_schedules: tuple[RecordSchedule, ...] = ()
    stream_number: int | None = None

    def __post_init__(self) -> None:
        _count(self, "record_schedule_sum_num", "record_schedules")


VIDEO_RECORD_PLAN: Final = Struct(VideoRecordPlan, (
    Leaf("RecordEnable", "record_enable", int),
    Leaf("RecordScheduleSumNum", "record_schedule_sum_num", int),
    Each("RecordSchedule", "record_schedules", RECORD_SCHEDULE),
    Leaf("StreamNumber", "stream_number", int),
))


@dataclass(frozen=True, kw_only=True)
class VideoAlarmRecord:
    """``VideoAlarmRecord`` (§A.2.1.16): recording on alarm, seconds after (``RecordTime``) and before."""

    record_enable: int | None = None
    record_time: int | None = None
    pre_record_time: int | None = None
    stream_number: int | None = None


VIDEO_ALARM_RECORD: Final = Struct(VideoAlarmRecord, (
    Leaf("RecordEnable", "record_enable", int),
    Leaf("RecordTime", "record_time", int),
    Leaf("PreRecordTime", "pre_record_time", int),
    Leaf("StreamNumber", "stream_number", int),
))


def parse_point(point: str | None) -> tuple[int, int, int, int] | None:
    """``"x1,y1,x2,y2"`` (§A.2.1.17) as four integers; None when absent or not four non-negative numbers."""
    if point is None:
        return None
    parts = [p.strip() for p in point.replace("，", ",").split(",")]  # a full-width comma from GB18030 stacks
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3])


def format_point(x1: int, y1: int, x2: int, y2: int) -> str:
    """The ``Point`` of a mask region (§A.2.1.17)."""
    return f"{x1},{y1},{x2},{y2}"


@dataclass(frozen=True, kw_only=True)
class MaskRegion:
    """One ``RegionList/Item`` of ``PictureMask`` (§A.2.1.17): ``Seq`` and ``Point`` ``"x1,y1,x2,y2"``."""

    seq: int | None = None
    point: str | None = None

    def box(self) -> tuple[int, int, int, int] | None:
        """The corners (x1, y1, x2, y2), or None when ``point`` does not parse."""
        return parse_point(self.point)


@dataclass(frozen=True, kw_only=True)
class PictureMask:
    """``PictureMask`` (§A.2.1.17): privacy masks on (``On`` 1) or off, and their regions."""

    on: int | None = None
    sum_num: int | None = None
    regions: tuple[MaskRegion, ...] = ()

    def __post_init__(self) -> None:
        _count(self, "sum_num", "regions")


PICTURE_MASK: Final = Struct(PictureMask, (
    Leaf("On", "on", int),
    Leaf("SumNum", "sum_num", int),
    Repeated("RegionList", "regions", Struct(MaskRegion, (
        Leaf("Seq", "seq", int),
        Leaf("Point", "point"),
    ))),
))


@dataclass(frozen=True, kw_only=True)
class AlarmReport:
    """``AlarmReport`` (§A.2.1.18): whether motion detection and area intrusion are reported (0/1)."""

    motion_detection: int | None = None
    field_detection: int | None = None


ALARM_REPORT: Final = Struct(AlarmReport, (
    Leaf("MotionDetection", "motion_detection", int),
    Leaf("FieldDetection", "field_detection", int),
))


@dataclass(frozen=True, kw_only=True)
class OsdText:
    """One text ``Item`` of ``OSDConfig`` (§A.2.1.12) at (``X``, ``Y``)."""

    text: str | None = None
    x: int | None = None
    y: int | None = None


@dataclass(frozen=True, kw_only=True)
class OsdConfig:
    """``OSDConfig`` (§A.2.1.12): the time and text overlays, positioned in ``Length`` x ``Width``."""

    length: int | None = None
    width: int | None = None
    time_x: int | None = None
    time_y: int | None = None
    time_enable: int | None = None
    time_type: int | None = None
    text_enable: int | None = None
    sum_num: int | None = None
    items: tuple[OsdText, ...] = ()

    def __post_init__(self) -> None:
        _count(self, "sum_num", "items")


OSD_CONFIG: Final = Struct(OsdConfig, (
    Leaf("Length", "length", int),
    Leaf("Width", "width", int),
    Leaf("TimeX", "time_x", int),
    Leaf("TimeY", "time_y", int),
    Leaf("TimeEnable", "time_enable", int),
    Leaf("TimeType", "time_type", int),
    Leaf("TextEnable", "text_enable", int),
    Leaf("SumNum", "sum_num", int),
    Each("Item", "items", Struct(OsdText, (
        Leaf("Text", "text"),
        Leaf("X", "x", int),
        Leaf("Y", "y", int),
    ))),
))


@dataclass(frozen=True, kw_only=True)
class Config2022:
    """The 2022 parts shared by ``DeviceConfig`` and the ConfigDownload answer; each None when absent.

    ``frame_mirror_type`` only receives the nested spelling of FrameMirror
    that some stacks send (and a stray ``FrameMirrorType``); read ``mirror``.
    """

    video_param_attribute: tuple[VideoStreamAttribute, ...] | None = None
    video_record_plan: VideoRecordPlan | None = None
    video_alarm_record: VideoAlarmRecord | None = None
    picture_mask: PictureMask | None = None
    frame_mirror: int | None = None
    frame_mirror_type: int | None = None
    alarm_report: AlarmReport | None = None
    osd_config: OsdConfig | None = None

    @property
    def mirror(self) -> int | None:
        """The FrameMirror type (0 none, 1 horizontal, 2 vertical, 3 both), in whichever spelling came."""
        return self.frame_mirror if self.frame_mirror is not None else self.frame_mirror_type


CONFIG_2022_FIELDS: Final[tuple[FieldSpec, ...]] = (
    Repeated("VideoParamAttribute", "video_param_attribute", VIDEO_STREAM_ATTRIBUTE, optional=True),
    Nested("VideoRecordPlan", "video_record_plan", VIDEO_RECORD_PLAN),
    Nested("VideoAlarmRecord", "video_alarm_record", VIDEO_ALARM_RECORD),
    Nested("PictureMask", "picture_mask", PICTURE_MASK),
    Leaf("FrameMirror", "frame_mirror", int),
    # <FrameMirror><FrameMirrorType>n</FrameMirrorType></FrameMirror>: read through the fallback, never written
    # (the attribute stays None when encoding what the platform builds).
    Leaf("FrameMirrorType", "frame_mirror_type", int, fallback="FrameMirror"),
    Nested("AlarmReport", "alarm_report", ALARM_REPORT),
    Nested("OSDConfig", "osd_config", OSD_CONFIG),
)
"""The specs of ``Config2022``, in the element order of §A.2.3.2, for both commands' shapes."""
