"""What a SIP flood costs: forged REGISTERs against ``gbplatform run``, on 127.0.0.1 only.

Run by hand (not part of the test suite):

    python benchmarks/sip_flood.py --seconds 20 --rate 20000 --kind digest

What it does:
1. starts ``gbplatform run`` in a subprocess (SQLite registry in a temporary directory);
2. sends forged REGISTERs over UDP from one socket on 127.0.0.1 to the platform for
   ``--seconds`` (at most 120) at about ``--rate`` a second (at most 100,000), every one
   a new transaction (fresh Call-ID and branch), and never more than ``--max-requests``:
   ``digest``: random 20-digit device IDs with a wrong digest (the guesser, banned after
   ``sip.auth_max_failures``); ``bad-id``: device IDs that are not GB IDs; ``challenge``:
   random device IDs without credentials (each one answered 401); ``keepalive``: MESSAGE
   Keepalives (GB/T 28181-2016 §9.6.1) from random device IDs that never registered (404);
   ``invite``: INVITEs from strangers (603; an INVITE keeps its transaction until the ACK or
   timer H, 32 s, RFC 3261 §17.2.1, and the flooder sends no ACK);
3. reads the answers and counts them by status;
4. samples the platform's RSS from /proc every 100 ms and its transaction count
   from the health endpoint;
5. after the flood, waits ``--settle`` seconds (default 40: timer J, 32 s, must have
   ended every transaction) and samples again.

Prints: requests sent, answers by status, RSS before / peak / after the settle, the
transaction table's peak, and the bytes of log the flood wrote.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sip.auth import authorization_for  # noqa: E402
from tests.integration.harness import PlatformProcess  # noqa: E402

PLATFORM_ID = "34020000002000000001"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def transactions(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as resp:
            return int(json.loads(resp.read())["sip"]["transactions"])
    except (OSError, ValueError, KeyError):
        return -1


class Sampler(threading.Thread):
    """RSS every 100 ms, the transaction count every 500 ms."""

    def __init__(self, pid: int, http_port: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.http_port = pid, http_port
        self.peak_rss = 0.0
        self.peak_tx = 0
        self.stop = threading.Event()

    def run(self) -> None:
        last_tx = 0.0
        while not self.stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_mib(self.pid))
            if time.monotonic() - last_tx >= 0.5:
                last_tx = time.monotonic()
                self.peak_tx = max(self.peak_tx, transactions(self.http_port))
            time.sleep(0.1)


class Reader(threading.Thread):
    """Counts the platform's answers by status code."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.statuses: Counter[int] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, OSError):
                continue
            if data.startswith(b"SIP/2.0 "):
                self.statuses[int(data[8:11])] += 1


def challenge(sock: socket.socket, dest: tuple[str, int]) -> str:
    """A real nonce, as a guesser would fetch first: a forged one is only answered 401 stale."""
    rng = random.Random(0)
    sock.sendto(forged("challenge", 0, rng, sock.getsockname()[1], dest[1], ""), dest)
    sock.settimeout(5)
    while True:
        data = sock.recv(65535)
        for line in data.decode(errors="replace").split("\r\n"):
            if line.lower().startswith("www-authenticate:"):
                return line.split(":", 1)[1].strip()


def forged(kind: str, i: int, rng: random.Random, src_port: int, dest_port: int, nonce_challenge: str) -> bytes:
    device = f"3402000000132{rng.randrange(10 ** 7):07d}" if kind != "bad-id" else f"forged-{i}"
    if kind == "keepalive":
        return forged_keepalive(device, rng, src_port, dest_port)
    if kind == "invite":
        return forged_keepalive(device, rng, src_port, dest_port).replace(b"MESSAGE", b"INVITE")
    uri = f"sip:{PLATFORM_ID}@127.0.0.1:{dest_port}"
    lines = [
        f"REGISTER {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{src_port};rport;branch=z9hG4bK{rng.getrandbits(64):016x}",
        f"From: <sip:{device}@3402000000>;tag={rng.getrandbits(32):08x}",
        f"To: <sip:{device}@3402000000>",
        f"Call-ID: {rng.getrandbits(64):016x}@127.0.0.1",
        "CSeq: 1 REGISTER",
        f"Contact: <sip:{device}@127.0.0.1:{src_port}>",
        "Max-Forwards: 70",
        "Expires: 3600",
    ]
    if kind == "digest":
        lines.append("Authorization: " + authorization_for(
            nonce_challenge, method="REGISTER", uri=uri, username=device, password=f"guess{i}", rng=rng))
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def forged_keepalive(device: str, rng: random.Random, src_port: int, dest_port: int) -> bytes:
    body = (f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
            f"<SN>{rng.randrange(10 ** 6)}</SN>\r\n<DeviceID>{device}</DeviceID>\r\n<Status>OK</Status>\r\n"
            "</Notify>\r\n").encode()
    lines = [
        f"MESSAGE sip:{PLATFORM_ID}@3402000000 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{src_port};rport;branch=z9hG4bK{rng.getrandbits(64):016x}",
        f"From: <sip:{device}@3402000000>;tag={rng.getrandbits(32):08x}",
        f"To: <sip:{PLATFORM_ID}@3402000000>",
        f"Call-ID: {rng.getrandbits(64):016x}@127.0.0.1",
        "CSeq: 20 MESSAGE",
        "Content-Type: Application/MANSCDP+xml",
        "Max-Forwards: 70",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=20_000, help="REGISTERs per second to aim at")
    ap.add_argument("--max-requests", type=int, default=1_000_000)
    ap.add_argument("--kind", choices=("digest", "bad-id", "challenge", "keepalive", "invite"), default="digest")
    ap.add_argument("--settle", type=float, default=40.0)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the platform, e.g. "
                    "GBP_SIP_MAX_TRANSACTIONS=20000")
    args = ap.parse_args()
    seconds = min(max(args.seconds, 1.0), 120.0)
    rate = min(max(args.rate, 1), 100_000)
    settle = min(max(args.settle, 0.0), 120.0)
    env = dict(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory() as tmp:
        platform = PlatformProcess(Path(tmp) / "data", env=env).start()
        assert platform.proc is not None
        pid = platform.proc.pid
        try:
            time.sleep(2)  # let start-up settle before the baseline
            rss_before = rss_mib(pid)
            log_before = platform.log_path.stat().st_size
            sampler = Sampler(pid, platform.http_port)
            sampler.start()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            dest = ("127.0.0.1", platform.sip_port)
            nonce_challenge = challenge(sock, dest)
            reader = Reader(sock)
            reader.start()
            rng = random.Random(1)
            src_port = sock.getsockname()[1]
            # Pre-build a pool of distinct messages: the sender must not be the bottleneck.
            pool = [forged(args.kind, i, rng, src_port, platform.sip_port, nonce_challenge) for i in range(min(rate, 20_000))]
            sent = 0
            start = time.monotonic()
            batch = max(1, rate // 100)
            while sent < args.max_requests and (elapsed := time.monotonic() - start) < seconds:
                target = min(int(elapsed * rate) + batch, args.max_requests)
                while sent < target:
                    data = pool[sent % len(pool)]
                    if sent >= len(pool):
                        # A new branch and Call-ID for every request: each is a new transaction
                        # (RFC 3261 §17.2.3 matches on the branch).
                        data = data.replace(b"Call-ID: ", f"Call-ID: {sent:x}.".encode(), 1).replace(
                            b"branch=z9hG4bK", f"branch=z9hG4bK{sent:x}.".encode(), 1)
                    try:
                        sock.sendto(data, dest)
                    except BlockingIOError:
                        pass
                    sent += 1
                time.sleep(0.01)
            flood_time = time.monotonic() - start
            peak_during = sampler.peak_rss
            time.sleep(settle)
            sampler.stop.set()
            reader.stop.set()
            rss_after = rss_mib(pid)
            tx_after = transactions(platform.http_port)
            log_bytes = platform.log_path.stat().st_size - log_before
        finally:
            platform.stop()
    answers = dict(sorted(reader.statuses.items()))
    print(f"kind {args.kind}: {sent} requests in {flood_time:.1f} s ({sent / flood_time:.0f}/s)")
    print(f"answers: {answers} ({sum(answers.values())} of {sent})")
    print(f"RSS MiB: before {rss_before:.0f}, peak {max(peak_during, sampler.peak_rss):.0f}, "
          f"after {settle:.0f} s {rss_after:.0f}")
    print(f"transactions: peak {sampler.peak_tx}, after {tx_after}")
    print(f"log written: {log_bytes} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
