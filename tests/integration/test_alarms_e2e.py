"""End to end: alarms and mobile positions from a simulated device (GB/T 28181-2016 §9.4, §9.10).

``gbplatform run`` (snapshot on alarm on) and ``gbplatform simulate`` (one device, one channel, a
position every second) run as processes. SIGUSR2 makes the simulator report an alarm from its
channel: ``GET /api/v1/alarms`` lists it, and its snapshot (a JPEG of the channel's live video, the
stream started for it) is served. The positions form a GeoJSON track for a time range. The Alarm
Query gets the simulator's history.
"""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"


def test_alarm_with_snapshot_and_a_position_track(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data", env={"GBP_ALARMS_SNAPSHOT": "true"}).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE, "--position-interval", "1")
    try:
        channel_id = platform.first_channel(DEVICE)
        sim.proc.send_signal(signal.SIGUSR2)

        def alarm_with_snapshot() -> dict[str, Any] | None:
            status, body = platform.api("GET", f"/alarms?device_id={DEVICE}")
            assert status == 200, body
            items = body["items"]
            if items and items[0]["snapshot_error"]:
                raise AssertionError(f"snapshot failed: {items[0]}\n{platform.log()}")
            return items[0] if items and items[0]["snapshot_url"] else None

        alarm = wait_for(alarm_with_snapshot, 45, f"the alarm and its snapshot\n{sim.log()}")
        assert (alarm["channel_id"], alarm["method"], alarm["type"], alarm["source"]) == (channel_id, 5, 2, "notify")
        jpeg = platform.get_bytes(alarm["snapshot_url"])
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        # The platform answered the alarm (§9.4.2): the simulator's MESSAGE got its 200 and its Response.
        status, body = platform.api("GET", f"/alarms/{alarm['id']}")
        assert (status, body["id"]) == (200, alarm["id"])

        now = dt.datetime.now(dt.UTC)
        span = (f"start={(now - dt.timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}"
                f"&end={(now + dt.timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}")

        def track() -> dict[str, Any] | None:
            status, body = platform.api("GET", f"/devices/{DEVICE}/track?{span}")
            assert status == 200, body
            lines = [f for f in body["features"] if f["geometry"]["type"] == "LineString"]
            return body if lines and len(lines[0]["geometry"]["coordinates"]) >= 3 else None

        geo = wait_for(track, 30, "three positions in the track")
        line = next(f for f in geo["features"] if f["geometry"]["type"] == "LineString")
        assert line["properties"]["device_id"] == DEVICE
        assert len(line["properties"]["times"]) == len(line["geometry"]["coordinates"])
        assert len({tuple(c) for c in line["geometry"]["coordinates"]}) >= 2  # it moves
        status, latest = platform.api("GET", f"/devices/{DEVICE}/position")
        assert status == 200 and [p["channel_id"] for p in latest["items"]] == [DEVICE]

        status, answer = platform.api("POST", f"/devices/{DEVICE}/alarms/query", {})
        assert status == 200, answer
        assert answer["complete"] and answer["sum_num"] >= 4 and len(answer["items"]) == answer["sum_num"]
    finally:
        sim.kill()
        platform.stop()
