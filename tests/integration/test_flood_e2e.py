"""End to end (issue 8 item 10): a flood of refused requests keeps nothing in ``gbplatform run``.

Forged REGISTERs (no credentials, a wrong digest, a bad ID), forged keepalives
from IDs that never registered, OPTIONS scans, strangers' INVITEs and CANCELs
matching nothing are answered statelessly
(RFC 3261 §8.2.7): the platform's transaction table, reported by
``GET /api/v1/health``, is empty as soon as they are answered, not 32 s later
(timer J), and a retransmission of a refused request gets the same bytes back.
``benchmarks/sip_flood.py`` measures what a real flood costs.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from sip import manscdp
from sip.auth import authorization_for
from tests.integration.harness import PlatformProcess, wait_for

pytestmark = pytest.mark.integration

PLATFORM_ID = "34020000002000000001"


def _request(kind: str, i: int, port: int, sip_port: int, rng: random.Random, challenge: str) -> bytes:
    device = f"forged-{i}" if kind == "bad-id" else f"3402000000132{rng.randrange(10 ** 7):07d}"
    uri = f"sip:{PLATFORM_ID}@127.0.0.1:{sip_port}"
    method = {"keepalive": "MESSAGE", "options": "OPTIONS", "invite": "INVITE", "cancel": "CANCEL"}.get(kind, "REGISTER")
    body = manscdp.encode_keepalive(i, device) if kind == "keepalive" else b""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{kind}{i}x{rng.getrandbits(32):x}",
        f"From: <sip:{device}@3402000000>;tag={rng.getrandbits(32):08x}",
        f"To: <sip:{PLATFORM_ID if method != 'REGISTER' else device}@3402000000>",
        f"Call-ID: {kind}{i}.{rng.getrandbits(32):x}@127.0.0.1",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
    ]
    if method == "REGISTER":
        lines += [f"Contact: <sip:{device}@127.0.0.1:{port}>", "Expires: 3600"]
    if kind == "digest":
        lines.append("Authorization: " + authorization_for(
            challenge, method="REGISTER", uri=uri, username=device, password=f"guess{i}", rng=rng))
    if body:
        lines.append("Content-Type: Application/MANSCDP+xml")
    return ("\r\n".join(lines) + f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _answers(sock: socket.socket, n: int) -> list[bytes]:
    out = []
    while len(out) < n:
        data = sock.recv(65535)
        if data.startswith(b"SIP/2.0 "):
            out.append(data)
    return out


def _transactions(platform: PlatformProcess) -> int:
    status, health = platform.api("GET", "/health", auth=False)
    assert status == 200
    return int(health["sip"]["transactions"])


def test_refused_requests_leave_no_transaction(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        rng = random.Random(3)
        dest = ("127.0.0.1", platform.sip_port)
        # Start-up preloads the registry; until then unknown IDs are looked up.
        wait_for(lambda: "device records loaded" in platform.log(), 30, "the registry preload")
        sock.sendto(_request("challenge", 0, port, platform.sip_port, rng, ""), dest)
        [first] = _answers(sock, 1)
        challenge = next(line.split(":", 1)[1].strip() for line in first.decode().split("\r\n")
                         if line.lower().startswith("www-authenticate:"))
        expected = {"challenge": b"401", "digest": b"403", "bad-id": b"403", "keepalive": b"404",
                    "options": b"200", "invite": b"603", "cancel": b"481"}
        for kind, status in expected.items():
            for start in range(0, 200, 50):  # paced: a burst the kernel would drop proves nothing
                for i in range(start, start + 50):
                    sock.sendto(_request(kind, i, port, platform.sip_port, rng, challenge), dest)
                statuses = {a[8:11] for a in _answers(sock, 50)}
                assert statuses == {status}, (kind, statuses)
        assert _transactions(platform) == 0
        # A retransmitted refusal is answered again, byte for byte.
        again = _request("bad-id", 999, port, platform.sip_port, rng, challenge)
        sock.sendto(again, dest)
        [one] = _answers(sock, 1)
        sock.sendto(again, dest)
        [two] = _answers(sock, 1)
        assert one == two and one.startswith(b"SIP/2.0 403")
        assert _transactions(platform) == 0
        assert "Traceback" not in platform.log()
    finally:
        sock.close()
        platform.stop()
