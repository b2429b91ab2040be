"""End to end: PTZ commands reach a simulated device as the exact A.3 bytes; presets round-trip.

``gbplatform run`` and ``gbplatform simulate`` (one NVR, two channels) run as
processes. Each of the eight directions, zoom in/out and stop goes through
``POST /channels/{id}/ptz``; the simulator answers Result OK and logs every
PTZCmd it received (``PTZCmd <hex> for <channel>``), which the test reads
back: the device received exactly the bytes derived in tests/unit/test_ptz.py.
A preset set through the API is listed by ``GET .../presets`` (PresetQuery
answered from the simulator's state), then deleted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"

# Speed 0x20 on pan and tilt; zoom speed is its high nibble (2), in byte 7. Byte 8 = sum(bytes 1-7) % 256.
EXPECTED = {
    "right": "A50F0001200000D5",
    "left": "A50F0002200000D6",
    "down": "A50F0004002000D8",
    "up": "A50F0008002000DC",
    "upleft": "A50F000A202000FE",
    "upright": "A50F0009202000FD",
    "downleft": "A50F0006202000FA",
    "downright": "A50F0005202000F9",
    "zoomin": "A50F0010000020E4",
    "zoomout": "A50F0020000020F4",
    "stop": "A50F0000000000B4",
}


def received(sim: SimulatorProcess, channel_id: str) -> list[str]:
    text = sim.log_path.read_text(errors="replace")
    return re.findall(rf"PTZCmd ([0-9A-F]{{16}}) for {channel_id}", text)


def test_ptz_bytes_and_presets_through_the_simulator(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        for action, wire in EXPECTED.items():
            status, body = platform.api("POST", f"/channels/{channel_id}/ptz", {"action": action, "speed": 0x20})
            assert (status, body) == (200, {"device_id": DEVICE, "channel_id": channel_id, "result": "OK",
                                            "ptz_cmd": wire}), f"{action}: {body}\n{platform.log()}"
        wait_for(lambda: len(received(sim, channel_id)) >= len(EXPECTED), 10, "the simulator's PTZCmd log")
        assert received(sim, channel_id) == list(EXPECTED.values())

        status, body = platform.api("POST", f"/channels/{channel_id}/presets/7", {"action": "set"})
        assert (status, body["result"]) == (200, "OK"), body
        status, body = platform.api("GET", f"/channels/{channel_id}/presets")
        assert status == 200, body
        assert body["items"] == [{"preset_id": "7", "name": "Preset 7"}]
        status, body = platform.api("POST", f"/channels/{channel_id}/presets/7", {"action": "delete"})
        assert (status, body["result"]) == (200, "OK"), body
        status, body = platform.api("GET", f"/channels/{channel_id}/presets")
        assert (status, body["items"]) == (200, [])

        status, body = platform.api("POST", "/channels/34020000001310009999/ptz", {"action": "stop"})
        assert (status, body["error"]["code"]) == (404, "not_found")
    finally:
        sim.kill()
        platform.stop()


def test_device_commands_reach_the_simulator_and_its_status_shows_them(tmp_path: Path) -> None:
    """Guard, device recording, alarm reset, I-frame, drag zoom and home position (§A.2.3.1) each reach
    the simulator (logged as ``DeviceControl <command> for <target>``); its DeviceStatus shows the guard
    and recording they set. TeleBoot is covered by the unit tests: it would restart nothing here."""
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        box = {"length": 1920, "width": 1080, "mid_x": 960, "mid_y": 540, "length_x": 480, "length_y": 270}
        sent = [
            (f"/devices/{DEVICE}/guard", {"armed": True}, DEVICE, "SetGuard"),
            (f"/channels/{channel_id}/device-record", {"record": True}, channel_id, "Record"),
            (f"/devices/{DEVICE}/alarm/reset", {"method": 5}, DEVICE, "ResetAlarm"),
            (f"/channels/{channel_id}/iframe", None, channel_id, "IFameCmd"),
            (f"/channels/{channel_id}/dragzoom", {"direction": "out", **box}, channel_id, "DragZoomOut"),
            (f"/channels/{channel_id}/home-position", {"enabled": True, "reset_time": 30}, channel_id,
             "HomePosition"),
        ]
        for path, body, target, command in sent:
            status, answer = platform.api("POST", path, body)
            assert (status, answer) == (200, {"device_id": DEVICE, "target_id": target, "command": command,
                                              "result": "OK"}), f"{path}: {answer}\n{platform.log()}"

        def logged() -> list[tuple[str, str]]:
            return re.findall(r"DeviceControl (\w+) for (\d{20})", sim.log_path.read_text(errors="replace"))

        wait_for(lambda: len(logged()) >= len(sent), 10, "the simulator's DeviceControl log")
        assert logged() == [(command, target) for _, _, target, command in sent]

        status, body = platform.api("GET", f"/devices/{DEVICE}/status")
        assert status == 200, body
        assert body["record"] == "ON"
        assert {"device_id": DEVICE, "duty_status": "ONDUTY"} in body["alarm_status"]
    finally:
        sim.kill()
        platform.stop()


def test_device_config_set_through_the_api_is_downloaded_back(tmp_path: Path) -> None:
    """DeviceConfig (§A.2.3.2) sets the simulator's name and video options; ConfigDownload (§A.2.4.7)
    answers them back from its state, the other BasicParam values as configured."""
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        platform.first_channel(DEVICE)
        status, body = platform.api("PUT", f"/devices/{DEVICE}/config/basic", {"name": "Gate NVR"})
        assert (status, body) == (200, {"device_id": DEVICE, "target_id": DEVICE, "command": "BasicParam",
                                        "result": "OK"}), f"{body}\n{platform.log()}"
        status, body = platform.api("PUT", f"/devices/{DEVICE}/config/video", {"resolution": "6"})
        assert (status, body["result"]) == (200, "OK"), body

        status, body = platform.api("GET", f"/devices/{DEVICE}/config?type=BasicParam")
        assert status == 200, body
        assert body["basic_param"]["name"] == "Gate NVR" and body["basic_param"]["device_id"] == DEVICE
        assert body["basic_param"]["heartbeat_interval"] is not None
        status, body = platform.api("GET", f"/devices/{DEVICE}/config?type=VideoParamOpt")
        assert status == 200, body
        assert body["video_param_opt"] == {"download_speed": "1/2/4", "resolution": "6"}
    finally:
        sim.kill()
        platform.stop()
