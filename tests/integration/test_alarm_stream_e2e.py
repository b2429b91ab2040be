"""End to end: an alarm reaches an independent SSE client and is listed with its snapshot.

``gbplatform run`` (snapshot on alarm on) and ``gbplatform simulate`` (one
NVR, two channels, video answered to INVITE, a mobile position every second)
run as processes; ``curl -N`` (an HTTP client that is not ours) holds
``GET /api/v1/events?types=alarm,channel`` open with a bearer token.

- SIGUSR2 makes the simulator report an alarm (§9.4): its ``alarm`` event
  reaches curl (the time from the signal to its arrival is printed, not
  asserted); ``GET /api/v1/alarms`` lists it with its snapshot, a JPEG PyAV
  decodes.
- SIGHUP makes it report its first channel OFF (a Notify/Catalog, §A.2.5.4):
  a ``channel`` event reaches curl, and the channel list already shows the
  channel OFF when it does.
- Its positions (§9.10) form a track for a time range; a range before the run
  has none.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
CURL = shutil.which("curl")


class CurlSse:
    """``curl -N`` on the event stream; each SSE frame parsed with the monotonic time its last line arrived."""

    def __init__(self, port: int, query: str) -> None:
        assert CURL is not None
        self.proc = subprocess.Popen(
            [CURL, "-sS", "-N", "-H", f"Authorization: Bearer {TOKEN}",
             f"http://127.0.0.1:{port}/api/v1/events{query}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.frames: list[tuple[float, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fields: dict[str, str] = {}
        for raw in self.proc.stdout:  # text/event-stream: "name: value" lines, a blank line ends a frame
            line = raw.decode().rstrip("\r\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            with self.lock:
                self.frames.append((time.monotonic(), fields))
            fields = {}

    def connected(self) -> bool:
        """The stream's first frame (``retry:``) arrived: the server holds the connection."""
        with self.lock:
            return any("retry" in f for _, f in self.frames)

    def find(self, **match: Any) -> tuple[float, dict[str, Any]] | None:
        """The first event whose data has all of ``match``, with its arrival time."""
        with self.lock:
            frames = list(self.frames)
        for arrived, fields in frames:
            if "data" in fields:
                event = {"sse_event": fields.get("event"), **json.loads(fields["data"])}
                if all(event.get(k) == v for k, v in match.items()):
                    return arrived, event
        return None

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)
        self.thread.join(10)
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def iso(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def channel_status(platform: PlatformProcess, channel_id: str) -> str | None:
    status, body = platform.api("GET", f"/devices/{DEVICE}/channels")
    assert status == 200, body
    return next((c["status"] for c in body["items"] if c["channel_id"] == channel_id), None)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_alarm_and_channel_events_reach_curl_and_positions_form_a_track(tmp_path: Path) -> None:
    import av

    began = dt.datetime.now(dt.UTC)
    platform = PlatformProcess(tmp_path / "data", env={"GBP_ALARMS_SNAPSHOT": "true"}).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE, "--position-interval", "1")
    curl = None
    try:
        channel_id = platform.first_channel(DEVICE)
        curl = CurlSse(platform.http_port, "?types=alarm,channel")
        wait_for(curl.connected, 15, "curl connected to the event stream")

        # (a) An alarm: the event at curl, then the alarm listed with its snapshot.
        signalled = time.monotonic()
        sim.proc.send_signal(signal.SIGUSR2)
        arrived, event = wait_for(lambda: curl.find(type="alarm"), 30, f"the alarm event at curl\n{sim.log()}")
        print(f"SIGUSR2 -> alarm event at curl: {(arrived - signalled) * 1000:.1f} ms")
        assert event["sse_event"] == "alarm"
        assert (event["device_id"], event["channel_id"], event["source"]) == (DEVICE, channel_id, "notify")
        assert event["snapshot_pending"] is True

        def alarm_with_snapshot() -> dict[str, Any] | None:
            status, body = platform.api("GET", f"/alarms?device_id={DEVICE}")
            assert status == 200, body
            item = next((a for a in body["items"] if a["id"] == event["alarm_id"]), None)
            if item is not None and item["snapshot_error"]:
                raise AssertionError(f"snapshot failed: {item}\n{platform.log()}")
            return item if item is not None and item["snapshot_url"] else None

        alarm = wait_for(alarm_with_snapshot, 45, f"the alarm listed with its snapshot\n{platform.log()}")
        assert alarm["snapshot_url"] == f"/api/v1/alarms/{alarm['id']}/snapshot.jpg"
        assert (alarm["channel_id"], alarm["type"], alarm["method"]) == (channel_id, event["alarm_type"],
                                                                         event["method"])
        jpeg = platform.get_bytes(alarm["snapshot_url"])
        with av.open(io.BytesIO(jpeg)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "mjpeg"
            picture = next(container.decode(stream))
            assert picture.width > 0 and picture.height > 0

        # (b) The device reports its first channel OFF: the channel event at curl, the list already OFF.
        assert channel_status(platform, channel_id) == "ON"
        signalled = time.monotonic()
        sim.proc.send_signal(signal.SIGHUP)
        arrived, event = wait_for(lambda: curl.find(type="channel", channel_id=channel_id, event="OFF"), 15,
                                  f"the channel OFF event at curl\n{sim.log()}")
        print(f"SIGHUP -> channel event at curl: {(arrived - signalled) * 1000:.1f} ms")
        assert (event["sse_event"], event["device_id"], event["status"]) == ("channel", DEVICE, "OFF")
        assert channel_status(platform, channel_id) == "OFF"  # at once: the event follows the write

        # (c) The positions of this run form a track for its time range; a range before the run has none.
        span = f"start={iso(began - dt.timedelta(seconds=60))}&end={iso(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60))}"

        def track() -> dict[str, Any] | None:
            status, body = platform.api("GET", f"/devices/{DEVICE}/track?{span}")
            assert status == 200, body
            lines = [f for f in body["features"] if f["geometry"]["type"] == "LineString"]
            return lines[0] if lines and len(lines[0]["geometry"]["coordinates"]) >= 3 else None

        line = wait_for(track, 30, "three positions in the track")
        props = line["properties"]
        assert props["device_id"] == DEVICE
        assert len(props["times"]) == len(line["geometry"]["coordinates"])
        assert props["times"] == sorted(props["times"])
        assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in line["geometry"]["coordinates"])
        before = f"start={iso(began - dt.timedelta(days=2))}&end={iso(began - dt.timedelta(days=1))}"
        status, body = platform.api("GET", f"/devices/{DEVICE}/track?{before}")
        assert (status, body["features"], body["total"]) == (200, [], 0), body
    finally:
        if curl is not None:
            curl.close()
        sim.kill()
        platform.stop()
