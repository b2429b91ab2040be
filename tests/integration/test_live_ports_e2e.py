"""End to end: an RTP port of the range that another program holds (issue 8, item 13).

``gbplatform run`` gets a range of two RTP/RTCP pairs, and this test binds
the RTP port of one of them first, as an ephemeral port or another media
server would. Every play must still succeed, on the other pair, and the
platform's log must say which port was taken. Plays are stopped in between,
so whichever pair the pool starts with, the taken one comes first at least
once.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
PLAYS = 4


def _free_range() -> int:
    """The first port of four free UDP ports, starting on an even one."""
    for first in range(41000, 60000, 4):
        held: list[socket.socket] = []
        try:
            for port in range(first, first + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no four free UDP ports in a row")


def test_plays_skip_a_taken_rtp_port_and_log_it(tmp_path: Path) -> None:
    first = _free_range()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", first))  # the other program's socket
    platform = PlatformProcess(tmp_path / "data", env={
        "GBP_MEDIA_RTP_PORT_MIN": str(first), "GBP_MEDIA_RTP_PORT_MAX": str(first + 3),
        "GBP_MEDIA_SINGLE_PORT": "0",
    }).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        for _ in range(PLAYS):
            status, body = platform.api("POST", f"/channels/{channel_id}/play")
            assert status == 200, f"{body}\n{platform.log()}"
            assert body["stream"]["rtp_port"] == first + 2, body
            status, _ = platform.api("POST", f"/channels/{channel_id}/stop")
            assert status == 204
            wait_for(lambda: platform.api("GET", "/streams")[1] == {"items": []}, 15, "the stream to end")
        wait_for(lambda: f"RTP port {first} (or {first + 1})" in platform.log(), 10,
                 "the log line naming the taken port")
        assert "is taken by another program" in platform.log()
    finally:
        sim.kill()
        platform.stop()
        taken.close()
