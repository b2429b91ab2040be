"""Signalling at scale (issue 12): 50,000 devices registering, onboarding and keeping alive.

Run by hand (not part of the test suite):

    python benchmarks/scale.py --devices 50000 --procs 4 --steady 180
    python benchmarks/scale.py --devices 50000 --database postgresql://127.0.0.1/test
    python benchmarks/scale.py --devices 5000 --steady 60 --py-spy /tmp/scale-spy.txt

What it does:
1. starts ``gbplatform run`` in a subprocess (SQLite in a temporary directory unless
   ``--database``; log level ``warn``; the file-descriptor limit raised for it and for the
   simulators);
2. starts ``--procs`` simulator processes, each holding its share of the devices on ONE UDP
   socket (``local_port_base == 0``), all at once: REGISTER with MD5 digest, keepalive every
   ``--keepalive-interval`` s, one channel each;
3. ``--silent 0.1``: every tenth device (spread evenly over the ID range) answers every
   MESSAGE ``200`` but never answers ONE of the onboarding queries, in turn DeviceInfo,
   ConfigDownload, Catalog, so the platform gives up on it after ``sip.query_timeout`` (10 s)
   or ``sip.catalog_timeout`` (30 s);
4. an API prober thread, every 100 ms, asks ``GET /devices?limit=50``, ``GET /devices/{random id}``,
   ``GET /health`` and ``GET /devices/{random id}/channels``, recording each latency under the
   phase it falls in: ``registration`` (until health reports every device online),
   ``onboarding`` (until ``sip.onboarding_backlog`` and ``sip.onboarding_in_flight`` are both 0:
   every device's three queries answered or given up), ``steady`` (a ``--steady`` s window of
   keepalives only);
5. samples the platform's and the simulators' CPU time (``/proc/<pid>/stat``: utime + stime) and
   the platform's RSS (``VmRSS``) per phase, and the host's load average.

Prints one table: per phase its duration, the platform's and the simulators' CPU in % of one
core, the platform's peak RSS, and the prober's p50/p95/max per endpoint and overall. Then what
the registry holds (DeviceInfo stored, catalogs ``done`` and ``timeout``).

``--py-spy FILE``: a ``py-spy record`` of the platform over the steady window (or the phase named
by ``--py-spy-phase``), written as a flat top-functions text file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import TOKEN, PlatformProcess  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PHASES = ("registration", "onboarding", "steady", "quiet")
FIRST_SEQ = 1  # device IDs 34020000001320000001 onwards
QUERIES = ("DeviceInfo", "ConfigDownload", "Catalog")

# One simulator process: its share of the devices on one UDP socket. The silent devices are
# chosen by their index in the whole fleet, so the share and the spread do not depend on --procs.
SIM_SCRIPT = """
import random, sys
from gbplatform.simulator.device import SimConfig, raise_fd_limit, run
from gbplatform.app.reactor import install_reactor
install_reactor()
from twisted.internet import reactor
from gbplatform.simulator import device as simulator

server, first, count, keepalive, silent, ramp = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                                                 float(sys.argv[5]), float(sys.argv[6]))
QUERIES = (b"DeviceInfo", b"ConfigDownload", b"Catalog")
drops = {}
for i in range(count):
    g = first - 1 + i
    if int((g + 1) * silent) > int(g * silent):
        cmd = QUERIES[int(g * silent) % 3]
        drops[f"3402000000132{first + i:07d}"] = b"<CmdType>" + cmd + b"</CmdType>"
handle = simulator.SimDevice._handle_message

def _handle_message(self, req, tx):
    # 200 the MESSAGE (GB/T 28181-2016 9.5.1) but never send the answer: a camera that ignores one query.
    marker = drops.get(self.device_id)
    if marker is not None and marker in req.body:
        self._reply(req, tx, 200)
        return
    handle(self, req, tx)

simulator.SimDevice._handle_message = _handle_message
raise_fd_limit()
cfg = SimConfig(server=server, devices=count, channels=1, first_id=f"3402000000132{first:07d}",
                keepalive_interval=keepalive, status_interval=30.0, transport="udp", ramp=ramp)
sys.exit(run(cfg, reactor, random.Random(first), sys.stdout))
"""


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Prober(threading.Thread):
    """Every 100 ms: a device page, a device, health and a channel list; latency by phase."""

    ENDPOINTS = ("devices?limit=50", "devices/{id}", "health", "devices/{id}/channels")

    def __init__(self, port: int, device_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.base = f"http://127.0.0.1:{port}/api/v1/"
        self.device_ids = device_ids
        self.phase = PHASES[0]
        self.samples: dict[tuple[str, str], list[float]] = {}
        self.errors: dict[str, int] = {}
        self.health: dict[str, Any] = {}
        self.stop_flag = threading.Event()
        self.rng = random.Random(12)

    def _get(self, endpoint: str) -> None:
        path = endpoint.format(id=self.rng.choice(self.device_ids))
        req = urllib.request.Request(self.base + path)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        phase = self.phase
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
            if endpoint == "health":
                self.health = json.loads(body)
        except urllib.error.HTTPError as e:
            # 404 for a device not yet registered is an answer like any other.
            if e.code != 404:
                self.errors[f"{endpoint} {e.code}"] = self.errors.get(f"{endpoint} {e.code}", 0) + 1
        except OSError as e:
            self.errors[f"{endpoint} {type(e).__name__}"] = self.errors.get(f"{endpoint} {type(e).__name__}", 0) + 1
        self.samples.setdefault((phase, endpoint), []).append(time.perf_counter() - started)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            tick = time.monotonic()
            for endpoint in self.ENDPOINTS:
                self._get(endpoint)
            self.stop_flag.wait(max(0.0, 0.1 - (time.monotonic() - tick)))


class Meter:
    """CPU seconds of the platform and the simulators, and the platform's peak RSS, per phase."""

    def __init__(self, platform_pid: int, sim_pids: list[int]) -> None:
        self.platform_pid = platform_pid
        self.sim_pids = sim_pids
        self.rows: dict[str, dict[str, float | str]] = {}
        self._start()

    def _start(self) -> None:
        self.t0 = time.monotonic()
        self.p0 = cpu_seconds(self.platform_pid)
        self.s0 = sum(cpu_seconds(p) for p in self.sim_pids)
        self.peak = rss_mib(self.platform_pid)

    def restart(self) -> None:
        self._start()

    def sample(self) -> None:
        self.peak = max(self.peak, rss_mib(self.platform_pid))

    def close(self, phase: str) -> float:
        wall = time.monotonic() - self.t0
        self.rows[phase] = {
            "wall": wall,
            "platform": 100 * (cpu_seconds(self.platform_pid) - self.p0) / wall,
            "sims": 100 * (sum(cpu_seconds(p) for p in self.sim_pids) - self.s0) / wall,
            "rss": max(self.peak, rss_mib(self.platform_pid)),
            "rss_end": rss_mib(self.platform_pid),
            "load": loadavg(),
        }
        self._start()
        return wall


def registry_tally(platform: PlatformProcess, devices: int) -> dict[str, int]:
    """What the registry holds after onboarding: DeviceInfo stored, catalog states."""
    tally: dict[str, int] = {}
    for offset in range(0, devices, 500):
        status, page = platform.api("GET", f"/devices?limit=500&offset={offset}")
        if status != 200:
            tally[f"HTTP {status}"] = tally.get(f"HTTP {status}", 0) + 1
            continue
        for device in page["items"]:
            key = f"catalog {device['catalog']['status']}"
            tally[key] = tally.get(key, 0) + 1
            if device["manufacturer"]:
                tally["DeviceInfo stored"] = tally.get("DeviceInfo stored", 0) + 1
    return tally


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=50_000)
    ap.add_argument("--procs", type=int, default=4, help="simulator processes (devices split evenly)")
    ap.add_argument("--keepalive-interval", type=float, default=60.0)
    ap.add_argument("--silent", type=float, default=0.1,
                    help="share of devices that never answer one onboarding query (0.1: every tenth)")
    ap.add_argument("--ramp", type=float, default=0.0,
                    help="seconds over which the devices start, evenly (0: all at once, the worst case)")
    ap.add_argument("--steady", type=float, default=180.0, help="seconds of the steady keepalive window")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up on a phase after this many seconds")
    ap.add_argument("--database", default="", help="database URL (default: SQLite in the temporary directory); a scratch database: "
                         "the devices are left in it")
    ap.add_argument("--env", action="append", default=[], help="extra platform setting, e.g. GBP_SIP_ONBOARDING_QUERIES=900")
    ap.add_argument("--py-spy", default="", help="write a py-spy profile of the platform to this file")
    ap.add_argument("--logs", default="", help="copy the platform's and the simulators' logs to this directory")
    ap.add_argument("--py-spy-phase", default="steady", choices=PHASES)
    ap.add_argument("--quiet", type=float, default=60.0,
                    help="seconds of keepalives alone after the steady window, the prober stopped (0: none)")
    args = ap.parse_args()

    raise_nofile()  # inherited by the platform and the simulators
    # Run as a background job SIGINT is ignored: let SIGTERM and SIGINT both stop the simulators
    # and the platform through the ``finally`` below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env = {"GBP_LOG_LEVEL": "warn", **dict(e.split("=", 1) for e in args.env)}
    if args.database:
        env["GBP_DATABASE_URL"] = args.database
    device_ids = [f"3402000000132{FIRST_SEQ + i:07d}" for i in range(args.devices)]
    shares = [args.devices // args.procs + (1 if n < args.devices % args.procs else 0) for n in range(args.procs)]
    print(f"load before the start: {loadavg()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="gbp-scale-") as tmp:
        platform = PlatformProcess(Path(tmp) / "data", env=env).start()
        assert platform.proc is not None
        pid = platform.proc.pid
        prober = Prober(platform.http_port, device_ids)
        sims: list[subprocess.Popen[bytes]] = []
        spy: subprocess.Popen[bytes] | None = None
        meter = Meter(pid, [])
        prober.start()
        first = FIRST_SEQ
        for n, share in enumerate(shares):
            log = open(Path(tmp) / f"sim{n}.log", "wb")  # noqa: SIM115 - owned by the child
            sims.append(subprocess.Popen(
                [sys.executable, "-c", SIM_SCRIPT, f"127.0.0.1:{platform.sip_port}", str(first), str(share),
                 str(args.keepalive_interval), str(args.silent), str(args.ramp)],
                stdout=log, stderr=subprocess.STDOUT,
            ))
            first += share
        meter.sim_pids = [s.pid for s in sims]

        def start_spy(phase: str) -> None:
            nonlocal spy
            if args.py_spy and args.py_spy_phase == phase:
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "50",
                                        "--output", args.py_spy + ".raw", "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def wait_until(done: Any, what: str) -> bool:
            started = last_line = time.monotonic()
            while not done():
                meter.sample()
                if time.monotonic() - last_line >= 10:
                    last_line = time.monotonic()
                    sip = prober.health.get("sip", {})
                    print(f"  {prober.phase} +{last_line - started:.0f} s: {prober.health.get('devices_online')} online, "
                          f"backlog {sip.get('onboarding_backlog')}, in flight {sip.get('onboarding_in_flight')}, "
                          f"limit {sip.get('onboarding_limit')}, "
                          f"registrar {sip.get('registrar')}, load {loadavg()}", flush=True)
                if platform.proc is not None and platform.proc.poll() is not None:
                    print(f"platform exited: {platform.log()}")
                    return False
                if time.monotonic() - started > args.timeout:
                    print(f"timeout waiting for {what}: health {prober.health.get('devices_online')} online, "
                          f"sip {prober.health.get('sip', {}).get('onboarding_backlog')} backlog")
                    return False
                time.sleep(0.2)
            return True

        health: dict[str, Any] = {}
        tally: dict[str, int] = {}
        ok = False
        try:
            start_spy("registration")

            def all_online() -> bool:
                return int(prober.health.get("devices_online", 0)) >= args.devices

            if wait_until(all_online, "registration"):
                t = meter.close("registration")
                print(f"all {args.devices} online after {t:.1f} s (load {loadavg()})", flush=True)
                prober.phase = "onboarding"
                start_spy("onboarding")

                asked_at: list[float] = []  # when the last queued device got its queries
                onboarding_started = time.monotonic()

                def onboarded() -> bool:
                    _, body = platform.api("GET", "/health", auth=False)
                    sip = body["sip"]
                    if not asked_at and int(sip["onboarding_backlog"]) == 0:
                        asked_at.append(time.monotonic())
                        print(f"  every device asked its queries {asked_at[0] - onboarding_started:.1f} s after the "
                              f"last registration (limit {sip.get('onboarding_limit')})", flush=True)
                    return int(sip["onboarding_backlog"]) == 0 and int(sip.get("onboarding_in_flight", 0)) == 0

                if wait_until(onboarded, "onboarding"):
                    t = meter.close("onboarding")
                    total = meter.rows["registration"]["wall"] + t  # type: ignore[operator]
                    print(f"onboarding ended {t:.1f} s after the last registration, {total:.1f} s after the start: "
                          f"{args.devices / total:.1f} devices/s onboarded (load {loadavg()})", flush=True)
                    prober.phase = "steady"
                    start_spy("steady")
                    deadline = time.monotonic() + args.steady
                    while time.monotonic() < deadline:
                        meter.sample()
                        time.sleep(1.0)
                    meter.close("steady")
                    ok = True
                    print("steady window done", flush=True)
                    if args.quiet > 0:
                        # The keepalive load alone: the prober's 40 requests a second cost CPU too.
                        prober.stop_flag.set()
                        prober.join()
                        prober.phase = "quiet"
                        start_spy("quiet")
                        meter.restart()
                        deadline = time.monotonic() + args.quiet
                        while time.monotonic() < deadline:
                            meter.sample()
                            time.sleep(1.0)
                        meter.close("quiet")
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            prober.stop_flag.set()
            prober.join()
            _, health = platform.api("GET", "/health", auth=False)
            tally = registry_tally(platform, args.devices) if ok else {}
        finally:
            prober.stop_flag.set()
            for sim in sims:
                sim.send_signal(signal.SIGTERM)
            for sim in sims:
                try:
                    sim.wait(60)
                except subprocess.TimeoutExpired:
                    sim.kill()
            platform.stop()
            if args.logs:
                Path(args.logs).mkdir(parents=True, exist_ok=True)
                for log_file in [Path(tmp) / "data" / "platform.log", *Path(tmp).glob("sim*.log")]:
                    if log_file.exists():
                        shutil.copy(log_file, Path(args.logs) / log_file.name)
            if not ok:
                print(platform.log()[-3000:])
                print(Path(tmp, "sim0.log").read_text(errors="replace")[-2000:])

    print()
    print(f"{args.devices} devices, {args.procs} simulator processes (one UDP socket each), ramp {args.ramp:g} s, "
          f"keepalive every {args.keepalive_interval:g} s, {int(args.devices * args.silent)} silent on one query, "
          f"database {args.database or 'SQLite'}")
    print(f"{'phase':<13} {'wall s':>7} {'platform %':>10} {'sims %':>7} {'RSS peak':>8}  {'load':<15} "
          + "  ".join(f"{e[:22]:>22}" for e in (*Prober.ENDPOINTS, "all")))
    for phase in PHASES:
        row = meter.rows.get(phase)
        if row is None:
            continue
        cells = []
        every: list[float] = []
        for endpoint in Prober.ENDPOINTS:
            lat = prober.samples.get((phase, endpoint), [])
            every += lat
            cells.append(f"{1000 * pct(lat, 0.5):.0f}/{1000 * pct(lat, 0.95):.0f}/{1000 * max(lat or [0]):.0f}")
        cells.append(f"{1000 * pct(every, 0.5):.0f}/{1000 * pct(every, 0.95):.0f}/{1000 * max(every or [0]):.0f}")
        print(f"{phase:<13} {row['wall']:>7.1f} {row['platform']:>10.1f} {row['sims']:>7.1f} "
              f"{row['rss']:>6.0f} M  {row['load']:<15} " + "  ".join(f"{c:>22}" for c in cells))
    print("(latency cells: p50/p95/max ms; CPU in % of one core; load: 1/5/15-min load average at the phase end)")
    if prober.errors:
        print(f"prober errors: {prober.errors}")
    print(f"registry: {tally}")
    if health:
        print(f"registrar stats: {health['sip']['registrar']}")
        print(f"sip stats: {health['sip']['stats']}")
    if args.py_spy and Path(args.py_spy + ".raw").exists():
        summarise_spy(Path(args.py_spy + ".raw"), Path(args.py_spy))
        print(f"py-spy: {args.py_spy} (raw stacks: {args.py_spy}.raw)")
    return 0 if ok else 1


def summarise_spy(raw: Path, out: Path) -> None:
    """Collapse py-spy's raw stacks into self and inclusive sample counts per function."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    with out.open("w") as f:
        f.write(f"{total} samples\n\n-- self --\n")
        for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:60]:
            f.write(f"{100 * n / total:5.1f}%  {frame}\n")
        f.write("\n-- inclusive --\n")
        for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:80]:
            f.write(f"{100 * n / total:5.1f}%  {frame}\n")


if __name__ == "__main__":
    sys.exit(main())
