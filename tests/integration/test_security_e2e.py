"""End to end: password guessing against ``gbplatform run`` (issue 8 item 2).

A guesser sends many wrong digests from one source: it is banned, the right
password from that address and for that device ID is refused while the ban
lasts, the bans show in the API, and lifting them lets the right password in.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from sip.auth import authorization_for
from sip.message import Response
from sip.parser import parse_datagram
from tests.integration.harness import PlatformProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000077"
PLATFORM_ID = "34020000002000000001"
PASSWORD = "12345678"  # the default sip.password


class SipClient:
    """REGISTERs over UDP from one socket on 127.0.0.1, each with a fresh branch."""

    def __init__(self, platform: PlatformProcess) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.dest = ("127.0.0.1", platform.sip_port)
        self.uri = f"sip:{PLATFORM_ID}@127.0.0.1:{platform.sip_port}"
        self.rng = random.Random(7)
        self.cseq = 0

    def send(self, authorization: str | None = None) -> None:
        self.cseq += 1
        lines = [
            f"REGISTER {self.uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{self.rng.getrandbits(48):x}",
            f"From: <sip:{DEVICE}@3402000000>;tag={self.rng.getrandbits(32):x}",
            f"To: <sip:{DEVICE}@3402000000>",
            f"Call-ID: {self.rng.getrandbits(64):x}@127.0.0.1",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{DEVICE}@127.0.0.1:{self.port}>",
            "Max-Forwards: 70",
            "Expires: 3600",
        ]
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        self.sock.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), self.dest)

    def final(self) -> Response:
        while True:
            msg = parse_datagram(self.sock.recv(65535))
            if isinstance(msg, Response) and msg.status >= 200:
                return msg

    def register(self, authorization: str | None = None) -> Response:
        self.send(authorization)
        return self.final()

    def answer(self, challenge: Response, password: str) -> str:
        return authorization_for(challenge.headers.get("WWW-Authenticate") or "", method="REGISTER",
                                 uri=self.uri, username=DEVICE, password=password, rng=self.rng)


def test_brute_force_is_banned_and_the_ban_is_visible_and_clearable(tmp_path: Path) -> None:
    platform = PlatformProcess(
        tmp_path / "data", env={"GBP_SIP_AUTH_MAX_FAILURES": "5", "GBP_SIP_AUTH_BAN_SECONDS": "600"}
    ).start()
    client = SipClient(platform)
    try:
        challenge = client.register()
        assert challenge.status == 401
        right = client.answer(challenge, PASSWORD)  # the nonce stays good for sip.nonce_ttl

        # 200 wrong digests, 20 at a time: a burst larger than the kernel's
        # default UDP receive buffer would lose datagrams on a busy machine.
        guesses, burst = 200, 20
        statuses = []
        for start in range(0, guesses, burst):
            for i in range(start, start + burst):
                client.send(client.answer(challenge, f"guess-{i}"))
            statuses += [client.final().status for _ in range(burst)]
        assert set(statuses) == {403}

        # The right password, straight after: refused, unverified.
        refused = client.register(right)
        assert (refused.status, refused.reason) == (403, "Too Many Failures")

        status, body = platform.api("GET", "/security/bans")
        assert status == 200, body
        keys = {ban["key"] for ban in body["items"]}
        assert keys == {"address:127.0.0.1", f"device:{DEVICE}"}, body
        assert body["stats"]["bans"] == 2
        assert body["stats"]["refused_banned"] + body["stats"]["refused_backoff"] >= guesses - 5

        for key in sorted(keys):
            assert platform.api("DELETE", f"/security/bans/{key}")[0] == 204
        assert platform.api("GET", "/security/bans")[1]["items"] == []
        assert platform.api("DELETE", "/security/bans/address:127.0.0.1")[0] == 404

        ok = client.register(right)
        assert ok.status == 200, ok
        wait_for(lambda: platform.api("GET", f"/devices/{DEVICE}")[1].get("online"), 10, "the device online")

        # The flood is in the log as a few lines with counts, not one per request.
        log = (platform.data_dir / "platform.log").read_text(errors="replace")
        refusals = [line for line in log.splitlines() if "refused" in line and DEVICE in line]
        assert 1 <= len(refusals) <= 6, refusals
    finally:
        client.sock.close()
        assert platform.stop() == 0, platform.log()
