"""The idle platform's memory: ``gbplatform run`` with no device, as issue 12 measures it.

Run by hand (not part of the test suite):

    python benchmarks/idle_memory.py                          # 3 runs
    python benchmarks/idle_memory.py --runs 2 --ab GBP_PYOPENSSL=1
    python benchmarks/idle_memory.py --ab PYTHONPATH=/tmp/other-tree   # a variant of the code, A/B

Each run starts ``gbplatform run`` in a fresh temporary directory (SQLite, the defaults, HTTP, SIP
and RTSP on free ports of 127.0.0.1), waits until ``GET /api/v1/health`` answers, then ``--settle``
seconds more (past the heap trim 5 s after start, ``gbplatform/app/memory.py``), reads VmRSS,
RssAnon and RssFile from ``/proc/<pid>/status`` and stops the process. With ``--ab NAME=VALUE``
the runs alternate without and with that environment variable, so a loaded machine affects both
alike. RSS does not depend on the load; the load average is printed anyway
(docs/performance.md, "Memory").
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

FIELDS = ("VmRSS", "RssAnon", "RssFile")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def status_mib(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in FIELDS:
            out[name] = int(value.split()[0]) / 1024
    return out


def one_run(extra_env: dict[str, str], settle: float, timeout: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gbp-idle-") as tmp:
        http = free_port(socket.SOCK_STREAM)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GBP_")}
        env.update({
            "GBP_STORAGE_DATA_DIR": f"{tmp}/data", "GBP_HTTP_HOST": "127.0.0.1", "GBP_HTTP_PORT": str(http),
            "GBP_SIP_HOST": "127.0.0.1", "GBP_SIP_PORT": str(free_port(socket.SOCK_DGRAM)),
            "GBP_MEDIA_RTSP_PORT": str(free_port(socket.SOCK_STREAM)),
        })
        env.update(extra_env)
        with open(f"{tmp}/log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "gbplatform", "run"], cwd=tmp, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/v1/health", timeout=1):
                        break
                except (urllib.error.URLError, OSError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"the platform did not answer; its log:\n{Path(tmp, 'log').read_text()}") from None
                    time.sleep(0.2)
            time.sleep(settle)
            return status_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (of each variant with --ab)")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds after the first health answer")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the health answer")
    parser.add_argument("--ab", metavar="NAME=VALUE", default="",
                        help="alternate runs without and with this environment variable")
    args = parser.parse_args()
    variants: list[tuple[str, dict[str, str]]] = [("default", {})]
    if args.ab:
        name, sep, value = args.ab.partition("=")
        if not sep or not name:
            parser.error("--ab: expected NAME=VALUE")
        variants.append((args.ab, {name: value}))
    print(f"{'variant':<40} {'VmRSS':>8} {'RssAnon':>8} {'RssFile':>8}  (MiB)  load average")
    for _ in range(args.runs):
        for label, extra in variants:
            mib = one_run(extra, args.settle, args.timeout)
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"{label:<40} " + " ".join(f"{mib.get(f, 0.0):8.1f}" for f in FIELDS) + f"         {load}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
