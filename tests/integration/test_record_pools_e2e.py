"""End to end, issue 8 items 20 and 23, against ``gbplatform run`` and a simulated camera.

Item 20: recording joins a stream a viewer already plays, so it starts with
the stream's cached GOP; the index must date the first segment from that
keyframe, so that consecutive segments do not overlap.

Item 23: ten MP4 downloads whose clients read nothing (a 4 KiB receive
buffer, never drained) must not hold the platform's threads: every one is
muxed to its end regardless, and snapshots still answer meanwhile.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    RECORDING_ENV,
    TOKEN,
    PlatformProcess,
    SimulatorProcess,
    wait_for,
)

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
ENV = RECORDING_ENV


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _closed(platform: PlatformProcess, channel_id: str) -> list[dict[str, Any]]:
    today = dt.datetime.now(dt.UTC).date()
    segs: list[dict[str, Any]] = []
    for day in sorted({today - dt.timedelta(days=1), today}):
        status, body = platform.api("GET", f"/channels/{channel_id}/recordings?date={day.isoformat()}")
        assert status == 200, body
        segs += body["segments"]
    unique = {s["id"]: s for s in segs if s["state"] == "closed"}
    return sorted(unique.values(), key=lambda s: _epoch(s["start"]))


def test_replayed_gop_index_and_slow_downloads(tmp_path: Path) -> None:
    pytest.importorskip("av")
    platform = PlatformProcess(tmp_path / "data", env=dict(ENV)).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1", "--first-id", DEVICE)
    stalled: list[socket.socket] = []
    try:
        channel_id = platform.first_channel(DEVICE)
        snapshot = f"/api/v1/channels/{channel_id}/snapshot"
        # A viewer first (the snapshot starts the stream): its GOP cache is full when recording joins.
        assert platform.get_bytes(snapshot)[:2] == b"\xff\xd8"
        status, body = platform.api("PUT", f"/channels/{channel_id}/record", {"mode": "continuous"})
        assert status == 200, body
        segs = wait_for(lambda: (s := _closed(platform, channel_id)) and len(s) >= 5 and s, 90,
                        "five closed segments", interval=0.5)

        # Item 20: the index holds what the files hold; no interval overlaps the next.
        for a, b in zip(segs, segs[1:], strict=False):
            assert _epoch(a["end"]) <= _epoch(b["start"]) + 0.002, (a, b)

        # Item 23: ten clients that never read.
        start, end = _epoch(segs[0]["start"]), _epoch(segs[-1]["end"])
        request = (f"GET /vod/{channel_id}.mp4?start={start}&end={end}&token={TOKEN} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1\r\n\r\n").encode()
        size = sum(s["size"] for s in segs)
        for _ in range(10):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", platform.http_port))
            s.sendall(request)
            stalled.append(s)

        def muxed() -> list[dict[str, Any]] | None:
            jobs = platform.api("GET", "/record/downloads")[1]["items"]
            return jobs if len(jobs) >= 10 and all(j["percent"] == 100.0 for j in jobs[-10:]) else None

        # Every MP4 is built to its end although no client reads: none holds a thread.
        jobs = wait_for(muxed, 60, f"ten MP4 downloads of {size} recorded bytes muxed", interval=0.5)
        assert all(j["state"] == "running" for j in jobs[-10:]), jobs  # ... and still being sent
        # Snapshots (and the API) answer meanwhile.
        assert platform.get_bytes(snapshot)[:2] == b"\xff\xd8"
        # The clients go away: every download ends, cancelled.
        for s in stalled:
            s.close()
        stalled.clear()
        wait_for(lambda: all(j["state"] == "cancelled"
                             for j in platform.api("GET", "/record/downloads")[1]["items"][-10:]),
                 30, "the downloads cancelled")
    finally:
        for s in stalled:
            s.close()
        sim.kill()
        platform.stop()
