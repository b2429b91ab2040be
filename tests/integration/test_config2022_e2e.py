"""End to end: the GB/T 28181-2022 configuration types through ``gbplatform run`` and ``gbplatform simulate``.

A simulated 2022 device answers ConfigDownload (§A.2.4.7) of every 2022
type with its factory settings (``gbplatform/simulator/config_state.py``);
for each type, ``PUT /devices/{id}/config/<kind>`` sends a DeviceConfig
(§A.2.3.2) the device keeps, and ``GET /devices/{id}/config?type=...`` then
answers what was set. A 2016 device (``--gb-version 2016``) is refused with
422 before anything is sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
DEVICE_2016 = "34020000001320000002"

# kind, ConfigType, the body PUT, the member of the GET answer and what it holds afterwards.
ROUND_TRIPS: list[tuple[str, str, dict[str, Any], str, Any]] = [
    ("video-attribute", "VideoParamAttribute", {"streams": [{"stream_number": 1, "frame_rate": 10}]},
     "video_param_attribute",
     [{"stream_number": 0, "stream_name": None, "video_format": "2", "resolution": "6", "frame_rate": 25,
       "bit_rate_type": 1, "video_bit_rate": 4096},
      {"stream_number": 1, "stream_name": None, "video_format": "2", "resolution": "4", "frame_rate": 10,
       "bit_rate_type": 2, "video_bit_rate": 512}]),
    ("record-plan", "VideoRecordPlan",
     {"record_enable": True, "stream_number": 1, "schedules": [
         {"week_day": 6, "segments": [{"start_hour": 9, "start_min": 30, "stop_hour": 17, "stop_min": 45}]}]},
     "video_record_plan",
     {"record_enable": True, "stream_number": 1, "schedules": [{"week_day": 6, "segments": [
         {"start_hour": 9, "start_min": 30, "start_sec": 0, "stop_hour": 17, "stop_min": 45, "stop_sec": 59}]}]}),
    ("alarm-record", "VideoAlarmRecord", {"record_enable": False, "record_time": 90},
     "video_alarm_record", {"record_enable": False, "stream_number": 0, "record_time": 90, "pre_record_time": 5}),
    ("picture-mask", "PictureMask", {"on": True, "regions": [{"x1": 10, "y1": 20, "x2": 300, "y2": 200}]},
     "picture_mask", {"on": True, "regions": [{"seq": 1, "x1": 10, "y1": 20, "x2": 300, "y2": 200}]}),
    ("frame-mirror", "FrameMirror", {"mirror": 3}, "frame_mirror", 3),
    ("alarm-report", "AlarmReport", {"field_detection": True}, "alarm_report",
     {"motion_detection": True, "field_detection": True}),
    ("osd", "OSDConfig", {"length": 1280, "width": 720, "time_x": 20, "time_y": 20, "time_type": 1,
                          "text_enable": True, "items": [{"text": "东门 Gate", "x": 20, "y": 680}]},
     "osd_config", {"length": 1280, "width": 720, "time_enable": True, "time_type": 1, "time_x": 20, "time_y": 20,
                    "text_enable": True, "items": [{"text": "东门 Gate", "x": 20, "y": 680}]}),
]


def test_every_2022_type_put_then_get_reflects_it(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    old = SimulatorProcess(platform, tmp_path / "sim2016.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE_2016, "--gb-version", "2016")
    try:
        platform.first_channel(DEVICE)
        platform.first_channel(DEVICE_2016)
        for kind, config_type, body, member, expected in ROUND_TRIPS:
            status, before = platform.api("GET", f"/devices/{DEVICE}/config?type={config_type}")
            assert status == 200 and before[member] is not None, f"{config_type}: {before}\n{platform.log()}"
            assert before[member] != expected, config_type  # the PUT changes something

            status, answer = platform.api("PUT", f"/devices/{DEVICE}/config/{kind}", body)
            assert (status, answer) == (200, {"device_id": DEVICE, "target_id": DEVICE, "command": config_type,
                                              "result": "OK"}), f"{kind}: {answer}\n{platform.log()}"

            status, after = platform.api("GET", f"/devices/{DEVICE}/config?type={config_type}")
            assert status == 200, after
            assert (after["config_type"], after["result"]) == (config_type, "OK")
            assert after[member] == expected, f"{config_type}: {after[member]}"
            others = [m for _, _, _, m, _ in ROUND_TRIPS if m != member]
            assert all(after[m] is None for m in others), after

        # The 2016 device: refused by the platform before anything is sent.
        status, answer = platform.api("PUT", f"/devices/{DEVICE_2016}/config/frame-mirror", {"mirror": 1})
        assert (status, answer["error"]["code"]) == (422, "unsupported_by_device_dialect"), answer
        status, answer = platform.api("GET", f"/devices/{DEVICE_2016}/config?type=OSDConfig")
        assert (status, answer["error"]["code"]) == (422, "unsupported_by_device_dialect"), answer
    finally:
        old.kill()
        sim.kill()
        platform.stop()
