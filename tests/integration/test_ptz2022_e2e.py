"""End to end: the GB/T 28181-2022 PTZ routes against ``gbplatform run`` and ``gbplatform simulate``.

A 2022 simulator (the default) keeps each channel's head, presets, cruise
tracks, home position and target tracking (``gbplatform/simulator/ptz_state.py``):
a precise move is what PTZPosition then reports; a preset stored through the
2016 preset route and called again restores the position; cruise tracks built
through the 2016 cruise route (A.3.5) are what CruiseTrackListQuery and
CruiseTrackQuery list; the 2016 HomePosition control is what HomePositionQuery
answers; TargetTrack reaches the device (its log names it). A 2016 simulator
(``--gb-version 2016``) is refused every 2022 route with 422 and a message
naming the command, before anything is sent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
DEVICE_2016 = "34020000001320000016"


def ok(platform: PlatformProcess, method: str, path: str, body: Any = None) -> Any:
    status, answer = platform.api(method, path, body)
    assert status == 200, f"{method} {path}: {status} {answer}\n{platform.log()}"
    return answer


def test_2022_ptz_routes_reflect_the_simulated_camera(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE)
    try:
        channel = platform.first_channel(DEVICE)
        ch = f"/channels/{channel}"

        answer = ok(platform, "POST", f"{ch}/ptz/precise", {"pan": 123.5, "tilt": -20.25, "zoom": 4})
        assert answer == {"device_id": DEVICE, "target_id": channel, "command": "PTZPreciseCtrl", "result": "OK"}
        where = ok(platform, "GET", f"{ch}/ptz/position")
        assert (where["device_id"], where["channel_id"], where["pan"], where["tilt"], where["zoom"]) == (
            DEVICE, channel, 123.5, -20.25, 4.0)
        assert where["horizontal_field_angle"] < 60 and where["vertical_field_angle"] < where["horizontal_field_angle"]
        assert where["max_view_distance"] > 0

        # A preset stored with the 2016 route, the camera moved away, the preset called back.
        assert ok(platform, "POST", f"{ch}/presets/3", {"action": "set"})["result"] == "OK"
        ok(platform, "POST", f"{ch}/ptz/precise", {"pan": 10, "tilt": 0, "zoom": 1})
        assert ok(platform, "GET", f"{ch}/ptz/position")["pan"] == 10.0
        ok(platform, "POST", f"{ch}/presets/3", {"action": "call"})
        back = ok(platform, "GET", f"{ch}/ptz/position")
        assert (back["pan"], back["tilt"], back["zoom"]) == (123.5, -20.25, 4.0)

        # Cruise tracks built with the 2016 cruise route (A.3.5), listed by the 2022 queries.
        assert ok(platform, "GET", f"{ch}/cruise-tracks")["items"] == []
        for body in ({"action": "add_point", "group": 1, "point": 3}, {"action": "add_point", "group": 1, "point": 5},
                     {"action": "set_dwell", "group": 1, "value": 15}, {"action": "set_speed", "group": 1, "value": 8},
                     {"action": "add_point", "group": 2, "point": 3}):
            assert ok(platform, "POST", f"{ch}/cruise", body)["result"] == "OK"
        tracks = ok(platform, "GET", f"{ch}/cruise-tracks")
        assert (tracks["sum_num"], tracks["items"]) == (2, [{"number": 1, "name": "Cruise 1"},
                                                            {"number": 2, "name": "Cruise 2"}])
        track = ok(platform, "GET", f"{ch}/cruise-tracks/1")
        assert (track["number"], track["result"], track["sum_num"]) == (1, "OK", 2)
        assert track["points"] == [{"preset_index": 3, "stay_time": 15, "speed": 8},
                                   {"preset_index": 5, "stay_time": 15, "speed": 8}]
        ok(platform, "POST", f"{ch}/cruise", {"action": "delete_point", "group": 2, "point": 0})
        assert [t["number"] for t in ok(platform, "GET", f"{ch}/cruise-tracks")["items"]] == [1]

        # The home position: off until the 2016 HomePosition control sets it.
        home = ok(platform, "GET", f"{ch}/home-position")
        assert (home["enabled"], home["channel_id"]) == (False, channel)
        ok(platform, "POST", f"{ch}/home-position", {"enabled": True, "reset_time": 45, "preset_index": 3})
        home = ok(platform, "GET", f"{ch}/home-position")
        assert (home["enabled"], home["reset_time"], home["preset_index"]) == (True, 45, 3)

        # Target tracking reaches the device.
        second = channel[:-1] + ("2" if channel[-1] != "2" else "1")
        for body in ({"mode": "manual", "linked_device_id": second, "target_area": {
                "length": 1920, "width": 1080, "mid_x": 960, "mid_y": 540, "length_x": 200, "length_y": 400}},
                {"mode": "stop"}):
            answer = ok(platform, "POST", f"{ch}/target-track", body)
            assert (answer["command"], answer["result"]) == ("TargetTrack", "OK")

        def logged() -> list[str]:
            return re.findall(rf"TargetTrack for {channel}: (\w+)", sim.log_path.read_text(errors="replace"))

        wait_for(lambda: len(logged()) >= 2, 10, "the simulator's TargetTrack log")
        assert logged() == ["Manual", "Stop"]

        status, body = platform.api("POST", f"{ch}/target-track", {"mode": "manual"})
        assert (status, body["error"]["field"]) == (400, "target_area")
        status, body = platform.api("GET", "/channels/34020000001310009999/ptz/position")
        assert (status, body["error"]["code"]) == (404, "not_found")
    finally:
        sim.kill()
        platform.stop()


def test_a_2016_device_is_refused_every_2022_ptz_route(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE_2016, "--gb-version", "2016")
    try:
        channel = platform.first_channel(DEVICE_2016)
        ch = f"/channels/{channel}"
        for method, path, body, command in (
                ("POST", f"{ch}/ptz/precise", {"pan": 10}, "PTZPreciseCtrl"),
                ("GET", f"{ch}/ptz/position", None, "PTZPosition"),
                ("GET", f"{ch}/home-position", None, "HomePositionQuery"),
                ("GET", f"{ch}/cruise-tracks", None, "CruiseTrackListQuery"),
                ("GET", f"{ch}/cruise-tracks/1", None, "CruiseTrackQuery"),
                ("POST", f"{ch}/target-track", {"mode": "auto"}, "TargetTrack")):
            status, answer = platform.api(method, path, body)
            assert status == 422, f"{method} {path}: {status} {answer}"
            assert answer["error"]["code"] == "unsupported_by_device_dialect"
            assert f"{command} is a GB/T 28181-2022 command" in answer["error"]["message"]
            assert "2016" in answer["error"]["message"]
        # The 2016 commands still work.
        assert ok(platform, "POST", f"{ch}/presets/2", {"action": "set"})["result"] == "OK"
        assert "PTZPreciseCtrl" not in sim.log_path.read_text(errors="replace")
    finally:
        sim.kill()
        platform.stop()
