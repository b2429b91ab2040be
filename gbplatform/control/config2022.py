"""The GB/T 28181-2022 configuration types between the API and MANSCDP (DeviceConfig §A.2.3.2,
ConfigDownload §A.2.6.8).

``KINDS`` names each type once: the URL segment of its ``PUT`` route, its
``ConfigType``, the DeviceConfig attribute carrying it, its body shape, the
builder turning a checked body into the MANSCDP value, and an example for
the OpenAPI document. A builder checks what the shape alone cannot (start
before stop, one schedule per weekday, positions within the OSD picture)
and raises a 400 naming the top-level field, the place below it in the
message, as the shape's own errors do. ``results`` turns a ConfigDownload
answer's 2022 parts into their result shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from msgspec import UNSET
from twisted.logger import Logger

from gbplatform.api import schemas
from gbplatform.api.shapes import Shape
from gbplatform.control import config_shapes as cs
from sip import manscdp
from sip.manscdp.config2022 import format_point

__all__ = ["KINDS", "ConfigKind", "canonical_type", "results"]

log = Logger()


@dataclass(frozen=True)
class ConfigKind:
    """One 2022 configuration type as the API sets it."""

    kind: str  # the URL segment: PUT /api/v1/devices/{id}/config/<kind>
    config_type: str  # its ConfigType and element name (§A.2.4.7)
    attr: str  # the DeviceConfig attribute (``sip.manscdp.Config2022``)
    body: type[Shape]
    build: Callable[[Any], object]
    summary: str
    examples: dict[str, dict[str, Any]]


def _flag(on: bool) -> int:
    """The standard's 0/1 switch."""
    return 1 if on else 0


def _unset(value: Any) -> Any:
    return None if value is UNSET else value


def video_attribute(body: cs.VideoAttributeBody) -> tuple[manscdp.VideoStreamAttribute, ...]:
    """VideoParamAttribute (§A.2.1.13): one ``Item`` per stream, each stream number once."""
    seen: set[int] = set()
    for n, stream in enumerate(body.streams):
        if stream.stream_number in seen:
            raise schemas.ValidationError("streams", f"[{n}].stream_number: stream {stream.stream_number} is "
                                                     "given twice")
        seen.add(stream.stream_number)
    return tuple(manscdp.VideoStreamAttribute(
        stream_number=s.stream_number, video_format=_unset(s.video_format), resolution=_unset(s.resolution),
        frame_rate=_unset(s.frame_rate), bit_rate_type=_unset(s.bit_rate_type),
        video_bit_rate=_unset(s.video_bit_rate)) for s in body.streams)


def record_plan(body: cs.DeviceRecordPlanBody) -> manscdp.VideoRecordPlan:
    """VideoRecordPlan (§A.2.1.15): one RecordSchedule per weekday, each segment starting before it stops."""
    days: set[int] = set()
    schedules = []
    for n, day in enumerate(body.schedules):
        if day.week_day in days:
            raise schemas.ValidationError("schedules", f"[{n}].week_day: day {day.week_day} is given twice")
        days.add(day.week_day)
        segments = []
        for m, seg in enumerate(day.segments):
            if (seg.start_hour, seg.start_min, seg.start_sec) >= (seg.stop_hour, seg.stop_min, seg.stop_sec):
                raise schemas.ValidationError("schedules", f"[{n}].segments[{m}]: the start must be before the stop")
            segments.append(manscdp.TimeSegment(
                start_hour=seg.start_hour, start_min=seg.start_min, start_sec=seg.start_sec,
                stop_hour=seg.stop_hour, stop_min=seg.stop_min, stop_sec=seg.stop_sec))
        schedules.append(manscdp.RecordSchedule(week_day_num=day.week_day, time_segments=tuple(segments)))
    return manscdp.VideoRecordPlan(record_enable=_flag(body.record_enable), record_schedules=tuple(schedules),
                                   stream_number=body.stream_number)


def alarm_record(body: cs.AlarmRecordBody) -> manscdp.VideoAlarmRecord:
    """VideoAlarmRecord (§A.2.1.16)."""
    return manscdp.VideoAlarmRecord(record_enable=_flag(body.record_enable), stream_number=body.stream_number,
                                    record_time=_unset(body.record_time),
                                    pre_record_time=_unset(body.pre_record_time))


def picture_mask(body: cs.PictureMaskBody) -> manscdp.PictureMask:
    """PictureMask (§A.2.1.17): regions with distinct ``Seq`` (default: their place), corners ordered."""
    seqs: set[int] = set()
    regions = []
    for n, region in enumerate(body.regions):
        seq = n + 1 if region.seq is UNSET else region.seq
        if seq in seqs:
            raise schemas.ValidationError("regions", f"[{n}].seq: region {seq} is given twice")
        seqs.add(seq)
        if region.x1 >= region.x2 or region.y1 >= region.y2:
            raise schemas.ValidationError("regions", f"[{n}]: (x1, y1) must be above and left of (x2, y2)")
        regions.append(manscdp.MaskRegion(seq=seq, point=format_point(region.x1, region.y1, region.x2, region.y2)))
    return manscdp.PictureMask(on=_flag(body.on), regions=tuple(regions))


def frame_mirror(body: cs.FrameMirrorBody) -> int:
    """FrameMirror (§A.2.1.23): the mirror type."""
    return body.mirror


def alarm_report(body: cs.AlarmReportBody) -> manscdp.AlarmReport:
    """AlarmReport (§A.2.1.18); at least one switch, the other left out."""
    if body.motion_detection is UNSET and body.field_detection is UNSET:
        raise schemas.ValidationError("motion_detection", "give at least one of motion_detection, field_detection")
    return manscdp.AlarmReport(
        motion_detection=None if body.motion_detection is UNSET else _flag(body.motion_detection),
        field_detection=None if body.field_detection is UNSET else _flag(body.field_detection))


def osd(body: cs.OsdBody) -> manscdp.OsdConfig:
    """OSDConfig (§A.2.1.12): the time and every text positioned within ``length`` x ``width``."""
    if body.time_x > body.length:
        raise schemas.ValidationError("time_x", f"lies outside the picture (at most length, {body.length})")
    if body.time_y > body.width:
        raise schemas.ValidationError("time_y", f"lies outside the picture (at most width, {body.width})")
    for n, item in enumerate(body.items):
        if item.x > body.length or item.y > body.width:
            raise schemas.ValidationError("items", f"[{n}]: ({item.x}, {item.y}) lies outside the picture "
                                                   f"({body.length} x {body.width})")
    return manscdp.OsdConfig(
        length=body.length, width=body.width, time_x=body.time_x, time_y=body.time_y,
        time_enable=_flag(body.time_enable), time_type=body.time_type, text_enable=_flag(body.text_enable),
        items=tuple(manscdp.OsdText(text=i.text, x=i.x, y=i.y) for i in body.items))


KINDS: Final[dict[str, ConfigKind]] = {k.kind: k for k in (
    ConfigKind("video-attribute", "VideoParamAttribute", "video_param_attribute", cs.VideoAttributeBody,
               video_attribute, "Set the video attributes of the device's streams (VideoParamAttribute)",
               {"mainStream": {"streams": [{"stream_number": 0, "video_format": "2", "resolution": "6",
                                            "frame_rate": 25, "bit_rate_type": 1, "video_bit_rate": 4096}]}}),
    ConfigKind("record-plan", "VideoRecordPlan", "video_record_plan", cs.DeviceRecordPlanBody, record_plan,
               "Set the device's own weekly recording plan (VideoRecordPlan)",
               {"workdays": {"record_enable": True, "stream_number": 0, "schedules": [
                   {"week_day": d, "segments": [{"start_hour": 8, "stop_hour": 18, "stop_min": 0, "stop_sec": 0}]}
                   for d in range(1, 6)]}}),
    ConfigKind("alarm-record", "VideoAlarmRecord", "video_alarm_record", cs.AlarmRecordBody, alarm_record,
               "Set the device's recording on alarm (VideoAlarmRecord)",
               {"on": {"record_enable": True, "stream_number": 0, "record_time": 30, "pre_record_time": 5}}),
    ConfigKind("picture-mask", "PictureMask", "picture_mask", cs.PictureMaskBody, picture_mask,
               "Set the device's privacy masks (PictureMask)",
               {"oneRegion": {"on": True, "regions": [{"seq": 1, "x1": 100, "y1": 100, "x2": 400, "y2": 300}]},
                "off": {"on": False}}),
    ConfigKind("frame-mirror", "FrameMirror", "frame_mirror", cs.FrameMirrorBody, frame_mirror,
               "Mirror the device's picture (FrameMirror)", {"horizontal": {"mirror": 1}, "none": {"mirror": 0}}),
    ConfigKind("alarm-report", "AlarmReport", "alarm_report", cs.AlarmReportBody, alarm_report,
               "Switch the device's motion detection and area intrusion reports (AlarmReport)",
               {"both": {"motion_detection": True, "field_detection": True}}),
    ConfigKind("osd", "OSDConfig", "osd_config", cs.OsdBody, osd,
               "Set the device's on-screen display: time and texts (OSDConfig)",
               {"timeAndName": {"length": 1920, "width": 1080, "time_enable": True, "time_type": 0,
                                "time_x": 16, "time_y": 16, "text_enable": True,
                                "items": [{"text": "Gate 1", "x": 16, "y": 1040}]}}),
)}
"""The 2022 types by URL segment (GB/T 28181-2022 §A.2.3.2)."""


def canonical_type(name: str) -> str | None:
    """The ConfigType spelled as the standard does (``osdconfig`` → ``OSDConfig``), or None if unknown."""
    for known in (*manscdp.CONFIG_TYPES, *manscdp.CONFIG_TYPES_2022):
        if known.lower() == name.lower():
            return known
    return None


def _switch(value: int | None) -> bool | None:
    return None if value is None else value != 0


def _region(region: manscdp.MaskRegion) -> cs.MaskRegionConfig:
    box = region.box()
    if box is None and region.point is not None:
        log.info("PictureMask region {seq}: Point {point!r} is not x1,y1,x2,y2", seq=region.seq,
                 point=region.point[:40])
    x1, y1, x2, y2 = box if box is not None else (None, None, None, None)
    return cs.MaskRegionConfig(seq=region.seq, x1=x1, y1=y1, x2=x2, y2=y2)


def results(answer: manscdp.Config2022 | None) -> dict[str, Any]:
    """The 2022 members of ``DeviceConfigResult`` from a ConfigDownload answer; None for those it lacks."""
    if answer is None:
        return {}
    streams, plan, alarm = answer.video_param_attribute, answer.video_record_plan, answer.video_alarm_record
    mask, report, osd_config = answer.picture_mask, answer.alarm_report, answer.osd_config
    return {
        "video_param_attribute": None if streams is None else [cs.VideoStreamConfig(
            stream_number=s.stream_number, stream_name=s.stream_name, video_format=s.video_format,
            resolution=s.resolution, frame_rate=s.frame_rate, bit_rate_type=s.bit_rate_type,
            video_bit_rate=s.video_bit_rate) for s in streams],
        "video_record_plan": None if plan is None else cs.VideoRecordPlanConfig(
            record_enable=_switch(plan.record_enable), stream_number=plan.stream_number,
            schedules=[cs.RecordScheduleConfig(week_day=day.week_day_num, segments=[cs.TimeSegmentConfig(
                start_hour=t.start_hour, start_min=t.start_min, start_sec=t.start_sec, stop_hour=t.stop_hour,
                stop_min=t.stop_min, stop_sec=t.stop_sec) for t in day.time_segments])
                for day in plan.record_schedules]),
        "video_alarm_record": None if alarm is None else cs.VideoAlarmRecordConfig(
            record_enable=_switch(alarm.record_enable), stream_number=alarm.stream_number,
            record_time=alarm.record_time, pre_record_time=alarm.pre_record_time),
        "picture_mask": None if mask is None else cs.PictureMaskConfig(
            on=_switch(mask.on), regions=[_region(r) for r in mask.regions]),
        "frame_mirror": answer.mirror,
        "alarm_report": None if report is None else cs.AlarmReportConfig(
            motion_detection=_switch(report.motion_detection), field_detection=_switch(report.field_detection)),
        "osd_config": None if osd_config is None else cs.OsdConfigResult(
            length=osd_config.length, width=osd_config.width, time_enable=_switch(osd_config.time_enable),
            time_type=osd_config.time_type, time_x=osd_config.time_x, time_y=osd_config.time_y,
            text_enable=_switch(osd_config.text_enable),
            items=[cs.OsdTextConfig(text=i.text, x=i.x, y=i.y) for i in osd_config.items]),
    }
