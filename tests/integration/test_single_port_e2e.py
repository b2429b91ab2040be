"""End to end: single-port mode, two cameras' live video on one RTP port, told apart by SSRC.

``gbplatform run`` with ``GBP_MEDIA_SINGLE_PORT`` and ``gbplatform simulate``
(two devices, one channel each, replaying the real 1080p H.264 PS capture)
run as processes. One device sends RTP over UDP, the other over TCP
(``TCP-PASSIVE``: it connects to the platform's port); both streams are
started through the API, both offer the same port, and a player (PyAV) must
decode each one's HTTP-FLV to real pictures.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, free_port, wait_for
from tests.integration.test_live_e2e import _decode

pytestmark = pytest.mark.integration

FIRST = "34020000001320000001"
SECOND = "34020000001320000002"
FRAMES = 25


def test_two_cameras_play_through_one_port(tmp_path: Path) -> None:
    pytest.importorskip("av")
    port = free_port()
    platform = PlatformProcess(tmp_path / "data", env={"GBP_MEDIA_SINGLE_PORT": str(port)}).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "2", "--channels", "1",
                           "--first-id", FIRST)
    try:
        def channels() -> dict[str, str] | None:
            found = {}
            for device in (FIRST, SECOND):
                status, body = platform.api("GET", f"/devices/{device}/channels")
                items = body["items"] if status == 200 else []
                if not items:
                    return None
                found[device] = items[0]["channel_id"]
            return found

        by_device = wait_for(channels, 60, "both simulated devices' channels in the catalog")
        status, body = platform.api("PATCH", f"/devices/{SECOND}", {"media_transport": "TCP-PASSIVE"})
        assert status == 200, body

        streams = {}
        for device, channel_id in by_device.items():
            status, body = platform.api("POST", f"/channels/{channel_id}/play")
            assert status == 200, f"{body}\n{platform.log()}"
            streams[device] = body["stream"]
        assert streams[FIRST]["transport"] == "udp" and streams[SECOND]["transport"] == "tcp-passive"
        assert {s["rtp_port"] for s in streams.values()} == {port}
        assert streams[FIRST]["ssrc"] != streams[SECOND]["ssrc"]

        results: dict[str, dict[str, Any]] = {d: {} for d in by_device}
        workers = [
            threading.Thread(
                target=_decode,
                args=(f"http://127.0.0.1:{platform.http_port}/live/{channel_id}.flv?token={TOKEN}",
                      results[device], time.monotonic() + 45, FRAMES),
                daemon=True,
            )
            for device, channel_id in by_device.items()
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert not worker.is_alive(), f"a player hung\n{platform.log()}"
        for device, result in results.items():
            assert "error" not in result, f"{device}: {result['error']!r}\n{platform.log()}\n{sim.log()}"
            assert result["codec"] == "h264" and result["size"] == (1920, 1080), result
            assert result["frames"] >= FRAMES, result

        status, body = platform.api("GET", "/streams")
        assert status == 200
        for item in body["items"]:
            assert item["state"] == "playing" and item["foreign_ssrc"] == 0, item
            assert item["frames"] >= FRAMES and item["rtp_lost"] == 0, item

        for channel_id in by_device.values():
            assert platform.api("POST", f"/channels/{channel_id}/stop")[0] == 204
        assert platform.api("GET", "/streams") == (200, {"items": []})
    finally:
        sim.kill()
        assert platform.stop() == 0, platform.log()
