"""The simulated device's GB/T 28181-2022 configuration: what ConfigDownload answers and DeviceConfig sets
(§A.2.3.2, §A.2.4.7, §A.2.6.8; the types of ``sip.manscdp.config2022``).

A simulated device starts with the settings a typical IPC/NVR ships with
(``defaults``): two streams (1080P main, D1 sub, H.264), recording all
week, alarm recording with 5 s before and 30 s after, no privacy mask, no
mirror, motion reports on, the time and the device's name on screen. A
DeviceConfig of a type replaces what it carries (``apply``), and the next
ConfigDownload of that type answers it (``download``): the round trip the
platform's e2e tests check.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from twisted.logger import Logger

from sip import manscdp

__all__ = ["ConfigState2022", "defaults"]

log = Logger()

_T = TypeVar("_T", manscdp.VideoStreamAttribute, manscdp.VideoAlarmRecord, manscdp.AlarmReport)


def _overlay(base: _T, update: _T) -> _T:
    """``base`` with the fields ``update`` sets (not None): a DeviceConfig changes only what it names."""
    return replace(base, **{f.name: getattr(update, f.name) for f in fields(update)
                            if getattr(update, f.name) is not None})


def _whole_week() -> tuple[manscdp.RecordSchedule, ...]:
    day = (manscdp.TimeSegment(start_hour=0, start_min=0, start_sec=0, stop_hour=23, stop_min=59, stop_sec=59),)
    return tuple(manscdp.RecordSchedule(week_day_num=d, time_segments=day) for d in range(1, 8))


def defaults(device_name: str) -> ConfigState2022:
    """The factory settings of a simulated device named ``device_name``."""
    return ConfigState2022(
        streams=[
            manscdp.VideoStreamAttribute(stream_number=0, video_format="2", resolution="6", frame_rate=25,
                                         bit_rate_type=1, video_bit_rate=4096),
            manscdp.VideoStreamAttribute(stream_number=1, video_format="2", resolution="4", frame_rate=15,
                                         bit_rate_type=2, video_bit_rate=512),
        ],
        record_plan=manscdp.VideoRecordPlan(record_enable=1, record_schedules=_whole_week(), stream_number=0),
        alarm_record=manscdp.VideoAlarmRecord(record_enable=1, record_time=30, pre_record_time=5, stream_number=0),
        picture_mask=manscdp.PictureMask(on=0),
        frame_mirror=0,
        alarm_report=manscdp.AlarmReport(motion_detection=1, field_detection=0),
        osd=manscdp.OsdConfig(length=1920, width=1080, time_x=16, time_y=16, time_enable=1, time_type=0,
                              text_enable=1, items=(manscdp.OsdText(text=device_name, x=16, y=1040),)),
    )


@dataclass
class ConfigState2022:
    """The 2022 configuration one simulated device keeps."""

    streams: list[manscdp.VideoStreamAttribute] = field(default_factory=list)
    record_plan: manscdp.VideoRecordPlan = field(default_factory=manscdp.VideoRecordPlan)
    alarm_record: manscdp.VideoAlarmRecord = field(default_factory=manscdp.VideoAlarmRecord)
    picture_mask: manscdp.PictureMask = field(default_factory=manscdp.PictureMask)
    frame_mirror: int = 0
    alarm_report: manscdp.AlarmReport = field(default_factory=manscdp.AlarmReport)
    osd: manscdp.OsdConfig = field(default_factory=manscdp.OsdConfig)

    def download(self, types: list[str]) -> dict[str, Any]:
        """The ConfigDownload parts (``encode_config_download_response`` keywords) of the 2022 ``types``
        asked (case-folded ConfigType names; §A.2.4.7 lets one query ask several)."""
        current: dict[str, Any] = {
            "video_param_attribute": tuple(self.streams), "video_record_plan": self.record_plan,
            "video_alarm_record": self.alarm_record, "picture_mask": self.picture_mask,
            "frame_mirror": self.frame_mirror, "alarm_report": self.alarm_report, "osd_config": self.osd,
        }
        return {attr: current[attr] for name, attr in manscdp.CONFIG_TYPES_2022.items() if name.lower() in types}

    def apply(self, msg: manscdp.Config2022) -> list[str]:
        """Keep what a DeviceConfig sets (§A.2.3.2); the ConfigTypes it set.

        Streams are changed one by one (by ``StreamNumber``, a new one added);
        VideoAlarmRecord and AlarmReport leaf by leaf; a record plan, a mask
        and an OSD as a whole (their lists are the new lists).
        """
        done: list[str] = []
        if msg.video_param_attribute is not None:
            for stream in msg.video_param_attribute:
                known = [n for n, s in enumerate(self.streams) if s.stream_number == stream.stream_number]
                if known:
                    self.streams[known[0]] = _overlay(self.streams[known[0]], stream)
                else:
                    self.streams.append(stream)
            done.append("VideoParamAttribute")
        if msg.video_record_plan is not None:
            plan = msg.video_record_plan
            # Counts recomputed: what the device answers agrees with the lists it keeps.
            self.record_plan = replace(plan, record_schedule_sum_num=None, record_schedules=tuple(
                replace(day, time_segment_sum_num=None) for day in plan.record_schedules))
            done.append("VideoRecordPlan")
        if msg.video_alarm_record is not None:
            self.alarm_record = _overlay(self.alarm_record, msg.video_alarm_record)
            done.append("VideoAlarmRecord")
        if msg.picture_mask is not None:
            self.picture_mask = replace(msg.picture_mask, sum_num=None)
            done.append("PictureMask")
        if msg.mirror is not None:
            if 0 <= msg.mirror <= 3:
                self.frame_mirror = msg.mirror
                done.append("FrameMirror")
            else:
                log.info("simulator: ignoring FrameMirror {mirror}, not 0-3", mirror=msg.mirror)
        if msg.alarm_report is not None:
            self.alarm_report = _overlay(self.alarm_report, msg.alarm_report)
            done.append("AlarmReport")
        if msg.osd_config is not None:
            self.osd = replace(msg.osd_config, sum_num=None)
            done.append("OSDConfig")
        return done
