"""End to end (issue 8 item 1): a stranger who knows a device ID cannot take it over.

``gbplatform run`` in a subprocess, one device from ``gbplatform simulate``
registered with digest. From another UDP socket, a forged Notify/Keepalive
with the device's ID is refused and leaves the device where it registered:
its address in the API stays the simulator's and the next queries are
answered by the simulator. A forged Catalog answer to the next sync is
refused and the channels stay the device's own.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sip import manscdp
from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000042"
PLATFORM = "34020000002000000001"


def _message(platform: PlatformProcess, sock: socket.socket, body: bytes, call_id: str) -> bytes:
    host, port = sock.getsockname()
    return (
        f"MESSAGE sip:{PLATFORM}@127.0.0.1:{platform.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:{DEVICE}@3402000000>;tag={call_id}\r\n"
        f"To: <sip:{PLATFORM}@3402000000>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n"
        f"Content-Type: Application/MANSCDP+xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _answer(sock: socket.socket, call_id: str) -> bytes:
    """The platform's final answer to our request ``call_id``."""
    while True:
        data = sock.recv(65535)
        if f"Call-ID: {call_id}".encode() in data and data.startswith(b"SIP/2.0 "):
            return data


def _requests_to(sock: socket.socket) -> list[bytes]:
    """Requests the platform sent to ``sock`` (none expected: it is not the device)."""
    sock.settimeout(0.5)
    found = []
    try:
        while True:
            data = sock.recv(65535)
            if not data.startswith(b"SIP/2.0 "):
                found.append(data)
    except TimeoutError:
        pass
    return found


def test_a_forged_keepalive_and_catalog_do_not_take_over_a_device(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(
        platform, tmp_path / "sim.log", "--devices", "1", "--channels", "3",
        "--keepalive-interval", "1", "--first-id", DEVICE,
    )
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stranger.settimeout(10)
    try:
        def synced() -> dict | None:
            status, body = platform.api("GET", f"/devices/{DEVICE}")
            ok = status == 200 and body["online"] and body["channel_count"] == 3 and body["catalog"]["status"] == "done"
            return body if ok else None

        before = wait_for(synced, 60, "the device online with its 3 channels")
        real = (before["transport"], before["host"], before["port"])
        assert real[2] != stranger.getsockname()[1]

        keepalive = manscdp.encode_keepalive(9001, DEVICE)
        stranger.sendto(_message(platform, stranger, keepalive, "forged-keepalive"), ("127.0.0.1", platform.sip_port))
        reply = _answer(stranger, "forged-keepalive")
        assert reply.startswith(b"SIP/2.0 404"), reply[:80]

        status, after = platform.api("GET", f"/devices/{DEVICE}")
        assert status == 200 and after["online"]
        assert (after["transport"], after["host"], after["port"]) == real

        # The next query still reaches the real device, which answers it.
        status, body = platform.api("GET", f"/devices/{DEVICE}/status")
        assert status == 200, body

        # A catalog sync: the query goes to the device; a stranger's answer is refused.
        status, body = platform.api("POST", f"/devices/{DEVICE}/catalog/sync")
        assert status == 202, body
        sn = body["sn"]  # known to the stranger at worst
        attacker_cam = manscdp.CatalogItem(
            device_id="34020000001310009999", name="ATTACKER-CAM", status="ON", parent_id=DEVICE,
        )
        forged = manscdp.encode_catalog_response(int(sn), DEVICE, 1, [attacker_cam])
        stranger.sendto(_message(platform, stranger, forged, "forged-catalog"), ("127.0.0.1", platform.sip_port))
        reply = _answer(stranger, "forged-catalog")
        assert reply.startswith(b"SIP/2.0 403"), reply[:80]

        wait_for(synced, 30, "the catalog sync answered by the real device")
        status, channels = platform.api("GET", f"/devices/{DEVICE}/channels")
        assert status == 200
        names = [c["name"] for c in channels["items"]]
        assert len(names) == 3 and "ATTACKER-CAM" not in names
        assert _requests_to(stranger) == []
    finally:
        stranger.close()
        sim.kill()
        assert platform.stop() == 0, platform.log()
