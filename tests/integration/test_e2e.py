"""End to end: ``gbplatform run`` in a subprocess, devices from ``gbplatform simulate``.

Twenty simulated devices with four channels each register with digest, stay
online through keepalives and have their catalogs synced; the registry keeps
them over a platform restart; a device that stops sending keepalives goes
offline after the configured number of misses; the RFC 4475 torture messages
leave the platform running and answering.
"""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for
from tests.unit.test_sip_rfc4475 import APPLICATION_REJECTS, UNANSWERABLE, Vector

pytestmark = pytest.mark.integration


def _all_synced(platform: PlatformProcess, count: int, channels: int) -> list | None:
    devices = platform.devices()
    online = [d for d in devices if d["online"]]
    total = sum(d["channel_count"] for d in devices)
    done = all(d["catalog"]["status"] == "done" and d["manufacturer"] == "gbplatform-sim" for d in devices)
    return devices if len(online) == count and total == channels and done else None


def test_twenty_devices_register_sync_survive_restart_and_go_offline(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    many = SimulatorProcess(
        platform, tmp_path / "sim-many.log", "--devices", "19", "--channels", "4",
        "--keepalive-interval", "1", "--first-id", "34020000001320000001",
    )
    lone = SimulatorProcess(
        platform, tmp_path / "sim-lone.log", "--devices", "1", "--channels", "4",
        "--keepalive-interval", "1", "--first-id", "34020000001320000100", "--vendor", "exosip",
    )
    try:
        devices = wait_for(lambda: _all_synced(platform, 20, 80), 60, "20 devices online with 80 channels synced")
        assert {d["model"] for d in devices} and all(d["firmware"] for d in devices)
        status, tree = platform.api("GET", "/devices/34020000001320000001/channels/tree")
        assert status == 200 and tree

        # The lone device dies without unregistering: offline after 3 missed 1 s keepalives.
        lone.kill()

        def lone_offline() -> bool:
            status, body = platform.api("GET", "/devices/34020000001320000100")
            return status == 200 and not body["online"]

        wait_for(lone_offline, 20, "the silent device to go offline")
        assert len([d for d in platform.devices() if d["online"]]) == 19

        # Restart: the registry keeps all 20 devices and their channels; the
        # 19 live ones come back online with their next keepalive.
        assert platform.stop() == 0, platform.log()
        platform.start()
        after = platform.devices()
        assert len(after) == 20
        assert sum(d["channel_count"] for d in after) == 80
        wait_for(lambda: len([d for d in platform.devices() if d["online"]]) == 19, 30, "19 devices back online")
    finally:
        many.kill()
        lone.kill()
        platform.stop()


def _expected_answer(vector: Vector) -> int | None:
    """The status a rejected UDP request gets (RFC 3261 §8.2.6.1; 505, §21.5.7, for TC_BADVERS_V), or None."""
    if not vector.is_request or vector.file in UNANSWERABLE:
        return None
    if vector.expected == "reject" or vector.file in APPLICATION_REJECTS:
        return 505 if vector.file == "TC_BADVERS_V.dat" else 400
    return None


def _status(raw: bytes) -> int | None:
    parts = raw.split(b" ", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == b"SIP/2.0" and parts[1].isdigit() else None


def test_rfc4475_torture_messages_leave_the_platform_answering(tmp_path: Path, shared_dir: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    vectors = shared_dir / "vectors" / "rfc4475"
    try:
        rows = list(csv.DictReader((vectors / "INDEX.tsv").open(), delimiter="\t"))
        expected = {
            row["file"]: code
            for row in rows
            if (code := _expected_answer(Vector(row["file"], row["rfc4475_section"], row["title"], row["expected"])))
        }
        assert len(expected) >= 18, expected
        # Every rejected request that can be answered is answered, each with its own
        # status: one socket per message, so an answer cannot be credited to another.
        answered: dict[str, int | None] = {}
        for name in expected:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as one:
                one.settimeout(5)  # the deadline for this message's answer
                one.sendto((vectors / name).read_bytes(), ("127.0.0.1", platform.sip_port))
                try:
                    answered[name] = _status(one.recv(65535))
                except TimeoutError:
                    answered[name] = None
        assert answered == expected, platform.log()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(5)
        for row in rows:
            udp.sendto((vectors / row["file"]).read_bytes(), ("127.0.0.1", platform.sip_port))
        for row in rows:
            with socket.create_connection(("127.0.0.1", platform.sip_port), timeout=5) as tcp:
                tcp.sendall((vectors / row["file"]).read_bytes())
        # Still alive and answering both HTTP and SIP.
        assert platform.api("GET", "/health", auth=False)[0] == 200
        options = (
            b"OPTIONS sip:34020000002000000001@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5999;rport;branch=z9hG4bK-e2e-options\r\n"
            b"From: <sip:34020000001320000009@3402000000>;tag=1\r\nTo: <sip:34020000002000000001@3402000000>\r\n"
            b"Call-ID: e2e-options\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        udp.sendto(options, ("127.0.0.1", platform.sip_port))
        reply = b""
        while b"e2e-options" not in reply:
            reply = udp.recv(65535)
        assert reply.startswith(b"SIP/2.0 200")
        udp.close()
    finally:
        assert platform.stop() == 0, platform.log()
