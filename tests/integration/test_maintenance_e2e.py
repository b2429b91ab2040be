"""End to end: SD cards and firmware upgrade (GB/T 28181-2022) through ``gbplatform run`` and the simulator.

``gbplatform run``, ``gbplatform simulate`` (one NVR, a 2022 device: two SD
cards) and a static HTTP server (``twisted web`` serving a firmware file on
127.0.0.1) run as processes. The SD cards are listed; a format of the
unformatted one shows ``formatting`` and then ``formatted`` with all its
space free. An upgrade pointing at the served file makes the simulator really
download it and report DeviceUpgradeResult OK: the upgrade ends ``done`` and
the device's firmware in ``GET /devices/{id}`` is the new version (DeviceInfo
asked again). An upgrade pointing at a file the server does not have (404) and
one at a port nobody listens on end ``failed`` with the device's reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, free_port, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"


class FileServer:
    """``python -m twisted web`` serving ``root`` on 127.0.0.1 (twisted.web.static)."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.port = free_port()
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "twisted", "web", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
             "--path", str(root)], stdout=log, stderr=subprocess.STDOUT)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _serving(server: FileServer) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(server.url("ipc-v9.9.9.bin"), timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _upgrade_ends(platform: PlatformProcess, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = platform.api("POST", f"/devices/{DEVICE}/upgrade", body)
    assert status == 202 and answer["state"] == "upgrading", f"{answer}\n{platform.log()}"
    session_id = answer["session_id"]

    def ended() -> dict[str, Any] | None:
        status, state = platform.api("GET", f"/devices/{DEVICE}/upgrade")
        assert status == 200 and state["session_id"] == session_id, state
        return state if state["state"] in ("done", "failed") else None

    state: dict[str, Any] = wait_for(ended, 30, "the upgrade's result")
    return state


def test_sd_cards_format_and_firmware_upgrade(tmp_path: Path) -> None:
    firmware_dir = tmp_path / "www"
    firmware_dir.mkdir()
    (firmware_dir / "ipc-v9.9.9.bin").write_bytes(b"\x7fGBFW" + bytes(range(256)) * 64)
    server = FileServer(firmware_dir, tmp_path / "www.log")
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE)
    try:
        platform.first_channel(DEVICE)
        wait_for(lambda: _serving(server), 20, "the firmware server")

        # -- SD cards: listed, formatted with progress.
        status, body = platform.api("GET", f"/devices/{DEVICE}/sdcards")
        assert status == 200, f"{body}\n{platform.log()}"
        assert body["sum_num"] == 2
        cards = {c["id"]: c for c in body["items"]}
        assert (cards["1"]["status"], cards["2"]["status"]) == ("formatted", "unformatted")
        assert cards["2"]["capacity"] > 0 and cards["2"]["free_space"] == 0

        status, body = platform.api("POST", f"/devices/{DEVICE}/sdcards/2/format")
        assert (status, body) == (200, {"device_id": DEVICE, "target_id": DEVICE, "command": "FormatSDCard",
                                        "result": "OK"}), body
        status, body = platform.api("GET", f"/devices/{DEVICE}/sdcards")
        card = next(c for c in body["items"] if c["id"] == "2")
        assert card["status"] == "formatting" and 0 <= card["format_progress"] < 100, card

        def formatted() -> dict[str, Any] | None:
            status, body = platform.api("GET", f"/devices/{DEVICE}/sdcards")
            card = next(c for c in body["items"] if c["id"] == "2")
            return card if card["status"] == "formatted" else None

        card = wait_for(formatted, 30, "the format to finish")
        assert card["format_progress"] == 100 and card["free_space"] == card["capacity"]

        # -- Firmware upgrade: the simulator downloads the served file and reports OK.
        status, body = platform.api("GET", f"/devices/{DEVICE}")
        assert status == 200 and body["firmware"] != "V9.9.9", body
        state = _upgrade_ends(platform, {"firmware": "V9.9.9", "file_url": server.url("ipc-v9.9.9.bin"),
                                         "manufacturer": "gbplatform-sim"})
        assert (state["state"], state["device_firmware"], state["reason"]) == ("done", "V9.9.9", None), state

        def upgraded() -> bool:
            status, body = platform.api("GET", f"/devices/{DEVICE}")
            return status == 200 and body["firmware"] == "V9.9.9"

        wait_for(upgraded, 15, "the device's firmware in the registry")

        # -- A file the server does not have, and a server that is not there: failed with the reason.
        state = _upgrade_ends(platform, {"firmware": "V10", "file_url": server.url("missing.bin")})
        assert state["state"] == "failed" and "404" in state["reason"], state
        state = _upgrade_ends(platform, {"firmware": "V10", "file_url": f"http://127.0.0.1:{free_port()}/fw.bin"})
        assert state["state"] == "failed" and "download failed" in state["reason"], state
        status, body = platform.api("GET", f"/devices/{DEVICE}")
        assert body["firmware"] == "V9.9.9"
    finally:
        sim.kill()
        server.kill()
        platform.stop()
