"""End to end: ``media.workers = 1`` (issue 12, "Both cores"): RTP received in a child process.

``gbplatform run`` with one media worker and ``gbplatform simulate`` (two
devices replaying the 1080p H.264 PS capture): UDP, TCP-passive and
TCP-active channels play, the frames reach the main process's dispatcher
(the API reads the codec and picture size from the cached keyframe) and the
stream's stats show packets and the first RTP time that only the worker saw.
Stopping a stream closes the worker's sockets (the port binds again);
killing the worker ends its stream with the reason and a new worker takes
its place; stopping the platform leaves no child process.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

FIRST = "34020000001320000001"
SECOND = "34020000001320000002"


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def stream(platform: PlatformProcess, channel_id: str) -> dict[str, Any] | None:
    status, body = platform.api("GET", "/streams")
    items = body["items"] if status == 200 else []
    return next((s for s in items if s["channel_id"] == channel_id), None)


def playing_with_video(platform: PlatformProcess, channel_id: str) -> dict[str, Any] | None:
    s = stream(platform, channel_id)
    if s and s["packets"] > 0 and s["frames"] > 0 and s["video_codec"] and s["timeline"]["first_rtp_ms"]:
        return s
    return None


def port_free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_streams_received_by_a_media_worker(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data", env={"GBP_MEDIA_WORKERS": "1", "GBP_MEDIA_SINGLE_PORT": "0"})
    platform.start()
    assert platform.proc is not None
    pid = platform.proc.pid
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "2", "--channels", "1", "--first-id", FIRST)
    workers: list[int] = []
    try:
        workers = wait_for(lambda: children(pid), 10, "the media worker process")
        assert len(workers) == 1
        first = platform.first_channel(FIRST)
        second = platform.first_channel(SECOND)

        # UDP: frames assembled in the worker reach the main process's dispatcher.
        status, body = platform.api("POST", f"/channels/{first}/play")
        assert status == 200, f"{body}\n{platform.log()}"
        s = wait_for(lambda: playing_with_video(platform, first), 20, "UDP video through the worker")
        assert (s["transport"], s["video_codec"], s["width"], s["height"]) == ("udp", "h264", 1920, 1080), s
        assert s["rtp_lost"] == 0 and s["foreign_ssrc"] == 0
        udp_port = s["rtp_port"]
        assert not port_free(udp_port, socket.SOCK_DGRAM)
        status, _ = platform.api("POST", f"/channels/{first}/stop")
        assert status == 204
        wait_for(lambda: port_free(udp_port, socket.SOCK_DGRAM) and port_free(udp_port + 1, socket.SOCK_DGRAM),
                 10, "the worker to close the stream's UDP sockets")

        # TCP passive: the device connects to the listener the worker adopted.
        status, body = platform.api("PATCH", f"/devices/{SECOND}", {"media_transport": "TCP-PASSIVE"})
        assert status == 200, body
        status, body = platform.api("POST", f"/channels/{second}/play")
        assert status == 200, f"{body}\n{platform.log()}"
        s = wait_for(lambda: playing_with_video(platform, second), 20, "TCP-passive video through the worker")
        assert (s["transport"], s["video_codec"]) == ("tcp-passive", "h264"), s

        # A worker that dies ends its streams with the reason, and a new one is spawned.
        os.kill(workers[0], signal.SIGKILL)
        wait_for(lambda: stream(platform, second) is None, 10, "the stream of the killed worker to end")
        wait_for(lambda: "media worker exited" in platform.log(), 10, "the stream's end reason in the log")
        respawned = wait_for(lambda: [p for p in children(pid) if p != workers[0]], 10, "a new media worker")
        workers += respawned
        status, body = platform.api("POST", f"/channels/{first}/play")
        assert status == 200, f"{body}\n{platform.log()}"
        wait_for(lambda: playing_with_video(platform, first), 20, "video through the new worker")

        # TCP active: the worker connects out to the device's answered address.
        assert platform.api("POST", f"/channels/{first}/stop")[0] == 204
        status, body = platform.api("PATCH", f"/devices/{FIRST}", {"media_transport": "TCP-ACTIVE"})
        assert status == 200, body
        status, body = platform.api("POST", f"/channels/{first}/play")
        assert status == 200, f"{body}\n{platform.log()}"
        s = wait_for(lambda: playing_with_video(platform, first), 20, "TCP-active video through the worker")
        assert (s["transport"], s["video_codec"]) == ("tcp-active", "h264"), s
    finally:
        sim.kill()
        code = platform.stop()
    assert code == 0, platform.log()
    assert not [p for p in workers if alive(p)], f"media workers left behind\n{platform.log()}"
