"""In-process replay of the 1080p PS capture through the receive path: cost per RTP packet.

Run by hand (not part of the test suite); repeatable under callgrind, whose instruction
counts do not depend on what else the machine runs:

    python benchmarks/ingest_replay.py --part ingest --reps 20          # compiled path
    GBP_PUREPYTHON=1 python benchmarks/ingest_replay.py --part ingest   # pure Python
    python benchmarks/ingest_replay.py --part ingest --per-datagram     # the old per-datagram calls
    python benchmarks/ingest_replay.py --part tcp                       # RFC 4571 + ingest
    python benchmarks/ingest_replay.py --part recv                      # UDP reads on 127.0.0.1
    valgrind --tool=callgrind python benchmarks/ingest_replay.py --part ingest --reps 1
    valgrind --tool=callgrind python benchmarks/ingest_replay.py --part ingest --reps 3
        # (instructions of reps 3 - reps 1) / (2 x 3757) = instructions per packet

Parts:
- ``ingest``: the capture's 3,757 RTP packets, renumbered to continue over ``--reps``
  repetitions, through ``RtpIngest.datagrams`` in read passes of one frame (15 packets,
  one ``now`` each, 40 ms apart), with a ``FrameDispatcher`` behind as on the platform;
  ``--per-datagram`` calls ``RtpIngest.datagram`` per packet, 2.5 ms apart, as the receive
  path did before read passes.
- ``tcp``: the same packets framed as RFC 4571 (two-byte length) and fed in 64 KiB reads
  (Twisted's TCP read size) through ``RtpIngest.stream_bytes``.
- ``recv``: datagrams of 1,400 bytes sent to a socket on 127.0.0.1 in bursts of 15 and read
  back as ``RtpUdpPort`` reads them (``recvmmsg`` on the compiled path, ``recvfrom`` then
  ``recv`` on the Python one); CPU time of the reads only.

``--none`` builds the input and stops: callgrind's count of it is the part to subtract.
Prints the microseconds per packet (wall clock, noisy on a shared machine) and the path.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media import accel  # noqa: E402
from media.ingest import RtpIngest  # noqa: E402
from media.pipeline import FrameDispatcher  # noqa: E402
from tests.conftest import locate_shared_dir  # noqa: E402
from tests.media_captures import udp_payloads  # noqa: E402

CAPTURE = "zlm_ps_rtp_udp_1080p.pcap"
FRAME_PACKETS = 15


def packets(reps: int) -> list[bytes]:
    """The capture's RTP packets, sequence numbers and timestamps continued over ``reps``."""
    shared = locate_shared_dir()
    if shared is None:
        raise SystemExit("shared/ folder not found: set GBP_SHARED_DIR")
    base = [p for _, p in udp_payloads(shared / "captures" / CAPTURE)]
    out = []
    for r in range(reps):
        for p in base:
            b = bytearray(p)
            seq, ts = struct.unpack_from("!HI", b, 2)
            struct.pack_into("!HI", b, 2, (seq + r * len(base)) & 0xFFFF,
                             (ts + r * 251 * 3600) & 0xFFFFFFFF)
            out.append(bytes(b))
    return out


def ingest_part(data: list[bytes], per_datagram: bool) -> RtpIngest:
    ingest = RtpIngest(FrameDispatcher())
    now = 0.0
    if per_datagram:
        for p in data:
            ingest.datagram(p, now)
            now += 0.0025
    else:
        for i in range(0, len(data), FRAME_PACKETS):
            ingest.datagrams(data[i : i + FRAME_PACKETS], now)
            now += 0.04
    ingest.close(now)
    return ingest


def framed(data: list[bytes]) -> bytes:
    """The packets as an RFC 4571 byte stream (two-byte length before each)."""
    return b"".join(struct.pack("!H", len(p)) + p for p in data)


def tcp_part(stream: bytes) -> RtpIngest:
    ingest = RtpIngest(FrameDispatcher())
    now = 0.0
    for i in range(0, len(stream), 65536):
        ingest.stream_bytes(stream[i : i + 65536], now)
        now += 0.04
    ingest.close(now)
    return ingest


def recv_part(count: int) -> float:
    """CPU seconds spent reading ``count`` datagrams, in bursts of FRAME_PACKETS."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = bytes(1400)
    spent = 0.0
    ext = accel.ext
    for _ in range(count // FRAME_PACKETS):
        for _ in range(FRAME_PACKETS):
            tx.sendto(payload, rx.getsockname())
        t = time.process_time()
        if ext is not None:
            got, _addr = ext.recv_batch(rx.fileno(), 256, 8192, False)
            n = len(got)
        else:
            _data, _addr = rx.recvfrom(8192)
            n = 1
            while True:
                try:
                    rx.recv(8192)
                except BlockingIOError:
                    break
                n += 1
        spent += time.process_time() - t
        assert n == FRAME_PACKETS
    rx.close()
    tx.close()
    return spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("ingest", "tcp", "recv"), default="ingest")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the capture")
    ap.add_argument("--per-datagram", action="store_true", help="ingest: one call per datagram")
    ap.add_argument("--none", action="store_true", help="build the input only")
    args = ap.parse_args()
    path = "compiled" if accel.ext is not None else "python"
    if args.part == "recv":
        count = 3757 * args.reps
        if args.none:
            return 0
        spent = recv_part(count)
        print(f"recv: {count} datagrams, {spent / count * 1e6:.2f} us CPU per datagram ({path})")
        return 0
    data = packets(args.reps)
    stream = framed(data) if args.part == "tcp" else b""
    if args.none:
        return 0
    t = time.perf_counter()
    ingest = tcp_part(stream) if args.part == "tcp" else ingest_part(data, args.per_datagram)
    took = time.perf_counter() - t
    print(f"{args.part}: {len(data)} packets, {took / len(data) * 1e6:.2f} us per packet, "
          f"{ingest.stats.frames} frames, {ingest.reorder.stats.lost} lost ({path}"
          f"{', per datagram' if args.per_datagram else ''})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
