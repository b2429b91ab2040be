"""End to end: the platform subscribes to a simulated device's catalog (RFC 6665, GB/T 28181-2016 §9.11).

``gbplatform run`` (catalog subscriptions on, 10 s expiry) and ``gbplatform
simulate`` (one NVR, two channels) run as processes. The subscription shows
``active`` in the API; it is refreshed before it expires (the simulator logs
each refresh); a catalog change sent on SIGHUP (a channel OFF, as a NOTIFY in
the subscription) takes the channel offline in the API; turned off through
the API, the subscription is ended with ``Expires: 0`` (the simulator logs
it). A MobilePosition subscription with a short Interval fills the device's
track with the simulator's NOTIFYs, and stopping the platform ends it.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"


def catalog_state(platform: PlatformProcess) -> dict[str, Any]:
    status, body = platform.api("GET", f"/devices/{DEVICE}/subscriptions")
    assert status == 200, body
    state: dict[str, Any] = body["catalog"]
    return state


def channel_status(platform: PlatformProcess, channel_id: str) -> str | None:
    status, body = platform.api("GET", f"/devices/{DEVICE}/channels")
    assert status == 200, body
    return next((c["status"] for c in body["items"] if c["channel_id"] == channel_id), None)


def test_catalog_subscription_refresh_notify_and_unsubscribe(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data", env={"GBP_SUBSCRIPTIONS_CATALOG": "true",
                                                        "GBP_SUBSCRIPTIONS_EXPIRES": "10"}).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        wait_for(lambda: catalog_state(platform)["state"] == "active", 20, "an active catalog subscription")
        state = catalog_state(platform)
        assert state["wanted"] is True and state["event"] == "Catalog" and state["status"] == 200, state
        assert state["expires_at"] is not None

        # Refreshed at 80 % of the 10 s granted, in the same dialog.
        wait_for(lambda: "Catalog refreshed for 10 s" in sim.log_path.read_text(errors="replace"), 20,
                 f"a refresh of the subscription\n{sim.log()}")
        assert catalog_state(platform)["state"] == "active"

        assert channel_status(platform, channel_id) == "ON"
        sim.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: channel_status(platform, channel_id) == "OFF", 15,
                 f"channel {channel_id} offline after the catalog NOTIFY\n{sim.log()}")
        text = sim.log_path.read_text(errors="replace")
        assert re.search(rf"catalog OFF of {channel_id}", text), text[-3000:]
        assert "Catalog report sent as NOTIFY" in text, text[-3000:]
        wait_for(lambda: catalog_state(platform)["last_notify_at"] is not None, 5, "the NOTIFY's time in the API")

        sim.proc.send_signal(signal.SIGHUP)  # the next change: the channel is back
        wait_for(lambda: channel_status(platform, channel_id) == "ON", 15, "the channel back ON")

        status, body = platform.api("PUT", f"/devices/{DEVICE}/subscriptions", {"catalog": False})
        assert status == 200, body
        assert body["catalog"]["state"] == "off" and body["catalog"]["wanted"] is False
        wait_for(lambda: "Catalog unsubscribed" in sim.log_path.read_text(errors="replace"), 15,
                 f"the unsubscribe at the simulator\n{sim.log()}")
        assert catalog_state(platform)["state"] == "off"
    finally:
        sim.kill()
        platform.stop()


def test_mobile_position_subscription_interval_track_and_unsubscribe_on_stop(tmp_path: Path) -> None:
    """A MobilePosition subscription with a 1 s Interval (the simulator has no schedule of its own): its
    positions come as NOTIFYs and form the device's track; a new interval through the API reaches the
    simulator in a refresh; stopping the platform ends the subscription with ``Expires: 0``."""
    platform = PlatformProcess(tmp_path / "data", env={"GBP_SUBSCRIPTIONS_MOBILE_POSITION": "true",
                                                        "GBP_SUBSCRIPTIONS_POSITION_INTERVAL": "1"}).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    stopped = False
    try:
        def position_state() -> dict[str, Any]:
            status, body = platform.api("GET", f"/devices/{DEVICE}/subscriptions")
            assert status == 200, body
            state: dict[str, Any] = body["mobile_position"]
            return state

        platform.first_channel(DEVICE)  # registered and its catalog read
        wait_for(lambda: position_state()["state"] == "active", 30,
                 f"an active MobilePosition subscription\n{platform.log()}")
        now = dt.datetime.now(dt.UTC)
        span = (f"start={(now - dt.timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}"
                f"&end={(now + dt.timedelta(hours=1)).isoformat().replace('+00:00', 'Z')}")

        def track() -> dict[str, Any] | None:
            status, body = platform.api("GET", f"/devices/{DEVICE}/track?{span}")
            assert status == 200, body
            lines = [f for f in body["features"] if f["geometry"]["type"] == "LineString"]
            return lines[0] if lines and len(lines[0]["geometry"]["coordinates"]) >= 3 else None

        line = wait_for(track, 30, f"three subscribed positions in the track\n{sim.log()}")
        assert line["properties"]["device_id"] == DEVICE
        assert len({tuple(c) for c in line["geometry"]["coordinates"]}) >= 2  # it moves
        text = sim.log_path.read_text(errors="replace")
        assert "position every 1 s in the MobilePosition subscription" in text, text[-3000:]
        assert "MobilePosition report sent as NOTIFY" in text, text[-3000:]
        assert "MobilePosition report sent as MESSAGE" not in text, text[-3000:]

        status, body = platform.api("PUT", f"/devices/{DEVICE}/subscriptions", {"position_interval": 2})
        assert status == 200 and body["position_interval"] == 2, body
        wait_for(lambda: "position every 2 s" in sim.log_path.read_text(errors="replace"), 15,
                 f"the new Interval at the simulator\n{sim.log()}")

        assert platform.stop() == 0
        stopped = True
        wait_for(lambda: "MobilePosition unsubscribed" in sim.log_path.read_text(errors="replace"), 10,
                 f"the unsubscribe sent as the platform stopped\n{sim.log()}")
    finally:
        sim.kill()
        if not stopped:
            platform.stop()
