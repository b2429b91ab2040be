"""Interop with pjsua2, an independent SIP stack playing a GB/T 28181 device.

pjsua2 registers with digest (MD5), keeps alive with MANSCDP MESSAGEs and
answers DeviceInfo and Catalog; the API must show the device online with its
Chinese channel names intact. A second pjsua2 with a wrong password must be
refused, and its SIP trace must show why.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import PlatformProcess, free_port, wait_for

pytest.importorskip("pjsua2")
pytestmark = pytest.mark.integration

DEVICE = "34020000001320000020"
SCRIPT = Path(__file__).with_name("pjsua2_device.py")


def run_device(platform: PlatformProcess, device_id: str, password: str, seconds: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(platform.sip_port), str(free_port()), device_id, password, str(seconds)],
        stdout=open(log, "wb"),  # noqa: SIM115 - owned by the child
        stderr=subprocess.STDOUT,
    )


def test_pjsua2_registers_keeps_alive_and_syncs_catalog(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    device = run_device(platform, DEVICE, "12345678", 25, tmp_path / "pjsua2.log")
    intruder = run_device(platform, "34020000001320000021", "wrong-password", 8, tmp_path / "intruder.log")
    try:
        def online() -> dict | None:
            status, body = platform.api("GET", f"/devices/{DEVICE}")
            return body if status == 200 and body["online"] and body["last_keepalive_at"] else None

        dev = wait_for(online, 20, "the pjsua2 device online with a keepalive")
        assert dev["transport"] == "UDP"
        assert dev["host"] == "127.0.0.1"

        def fast() -> dict | None:  # pjsua2's keepalive MESSAGE is canonical: answered on sip.fastpath
            status, body = platform.api("GET", "/health")
            return body if status == 200 and body["sip"]["stats"].get("fast_keepalives", 0) >= 1 else None

        wait_for(fast, 10, "a pjsua2 keepalive answered on the fast path")

        def synced() -> dict | None:
            status, body = platform.api("GET", f"/devices/{DEVICE}/channels")
            return body if status == 200 and body["total"] == 2 else None

        channels = wait_for(synced, 20, "the pjsua2 catalog")
        names = {c["channel_id"]: c["name"] for c in channels["items"]}
        assert names == {"34020000001310000101": "前门摄像机", "34020000001310000102": "后门摄像机&车库"}

        status, dev = platform.api("GET", f"/devices/{DEVICE}")
        assert dev["manufacturer"] == "Teluu"
        assert dev["catalog"]["status"] == "done"

        def refused() -> list | None:
            status, body = platform.api("GET", "/devices/34020000001320000021/trace")
            items = body["items"] if status == 200 else []
            return items if any(i["summary"].startswith("SIP/2.0 403") for i in items) else None

        trace = wait_for(refused, 15, "a 403 in the wrong-password device's trace")
        assert any(i["summary"].startswith("SIP/2.0 401") for i in trace)
        status, body = platform.api("GET", "/devices/34020000001320000021")
        assert status == 404  # never registered, so never stored
    finally:
        for proc in (device, intruder):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        assert platform.stop() == 0, platform.log()
