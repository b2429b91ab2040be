"""End to end: the ingest benchmark's C sender fed by ``gbplatform simulate --external-sender``.

``gbplatform run``, the simulator (three devices, one channel each) and
``benchmarks/ps_sender.c`` (compiled here with gcc) run as processes. The
simulator answers the INVITEs; the C sender sends the capture's RTP, one device
over UDP, one over TCP as the connecting side (``TCP-PASSIVE``), one over TCP
as the listening side (``TCP-ACTIVE``). Every stream must reach the platform
whole: frames counted, no RTP loss, and the sender's own counters agree.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.ingest import build_sender, write_clip
from gbplatform.simulator.media import PsClip
from tests.conftest import skip_or_fail
from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

FIRST = "34020000001320000001"
TRANSPORTS = {FIRST: "UDP", "34020000001320000002": "TCP-PASSIVE", "34020000001320000003": "TCP-ACTIVE"}
FRAMES = 50


def test_c_sender_streams_every_transport(tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        skip_or_fail("gcc not installed")
    if not PsClip.default_path().exists():
        skip_or_fail(f"{PsClip.default_path()} not present")
    exe = build_sender(tmp_path)
    clip = tmp_path / "clip.bin"
    write_clip(clip)
    control = tmp_path / "sender.sock"
    sender = subprocess.Popen([str(exe), str(clip), str(control)], stdout=subprocess.PIPE,
                              stderr=open(tmp_path / "sender.log", "wb"))  # noqa: SIM115 - owned by the child
    platform = PlatformProcess(tmp_path / "data").start()
    sim: SimulatorProcess | None = None
    try:
        wait_for(control.exists, 10, "the sender's control socket", interval=0.05)
        sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "3", "--channels", "1",
                               "--first-id", FIRST, "--external-sender", str(control))

        def channels() -> dict[str, str] | None:
            found = {}
            for device in TRANSPORTS:
                status, body = platform.api("GET", f"/devices/{device}/channels")
                if status != 200 or not body["items"]:
                    return None
                found[device] = body["items"][0]["channel_id"]
            return found

        by_device = wait_for(channels, 30, "three devices with a channel")
        for device, transport in TRANSPORTS.items():
            status, body = platform.api("PATCH", f"/devices/{device}", {"media_transport": transport})
            assert status == 200, body
            status, body = platform.api("POST", f"/channels/{by_device[device]}/play")
            assert status == 200, body

        def streamed() -> list[dict[str, Any]] | None:
            status, body = platform.api("GET", "/streams")
            items = body["items"] if status == 200 else []
            whole = [s for s in items if s["frames"] >= FRAMES]
            return items if len(whole) == len(TRANSPORTS) else None

        streams = wait_for(streamed, 30, f"{FRAMES} frames on each stream", interval=0.5)
        assert {s["rtp_lost"] for s in streams} == {0}
        sender.send_signal(signal.SIGUSR1)
        assert sender.stdout is not None
        counts = json.loads(sender.stdout.readline())
        assert counts["streams"] == len(TRANSPORTS) and counts["errors"] == 0 and counts["dropped"] == 0
        assert counts["frames"] >= sum(s["frames"] for s in streams)
    except Exception:
        print(platform.log())
        print((tmp_path / "sender.log").read_text(errors="replace"))
        if sim is not None:
            print(sim.log())
        raise
    finally:
        try:
            if sim is not None:
                sim.kill()
            platform.stop()
        finally:
            sender.send_signal(signal.SIGTERM)
            sender.wait(10)
