"""Registration storm benchmark: N simulated devices register with digest, then keep alive.

Run by hand (not part of the test suite):

    python benchmarks/register.py --devices 10000

What it does:
1. starts ``gbplatform run`` in a subprocess (SQLite registry in a temporary directory);
2. starts the device simulator in another process: N devices on one UDP socket, digest
   auth, keepalive every ``--keepalive-interval`` s, one channel each (so every device
   is also asked DeviceInfo, BasicParam and Catalog, as in real life);
3. polls the API's health endpoint every 50 ms for the online count and its latency;
4. samples the platform's CPU time and RSS from /proc;
5. once everyone is online, measures the platform's CPU over one full keepalive interval.

Prints: registrations per second, time until all online, platform CPU and RSS during the
storm, health latency (p50/p99/max) during the storm, onboarding throughput (when every
answering device's catalog was done, and when every sync had ended), and the keepalive load
in % of a core.

``--silent 0.1``: every tenth device answers each MESSAGE 200 but never answers a query, so
onboarding is measured with devices that ignore ConfigDownload or Catalog (issue 8).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import TOKEN, PlatformProcess, wait_for  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

SIM_SCRIPT = """
import random, sys
from gbplatform.simulator.device import SimConfig, run
from gbplatform.app.reactor import install_reactor
install_reactor()
from twisted.internet import reactor
from gbplatform.simulator import device as simulator
silent = float(sys.argv[7])
handle = simulator.SimDevice._handle_message
first = int(simulator.SimConfig().first_id[13:])

def _handle_message(self, req, tx):
    # A share of the devices, spread evenly, 200 every MESSAGE but never answer
    # a query, like cameras that ignore ConfigDownload or Catalog. (It patched
    # SimDevice._answer_query, which the simulator no longer has: no device was silent.)
    index = int(self.device_id[13:]) - first
    if int((index + 1) * silent) > int(index * silent) and b"<Query>" in req.body:
        self._reply(req, tx, 200)
        return
    handle(self, req, tx)

simulator.SimDevice._handle_message = _handle_message
cfg = SimConfig(server=sys.argv[1], devices=int(sys.argv[2]), channels=int(sys.argv[3]),
                keepalive_interval=float(sys.argv[4]), ramp=float(sys.argv[5]), status_interval=2.0,
                transport=sys.argv[6])
sys.exit(run(cfg, reactor, random.Random(7), sys.stdout))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class HealthProbe(threading.Thread):
    """Polls /health every 50 ms, recording latency and the online count."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/api/v1/health"
        self.latencies: list[float] = []
        self.online = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    body = json.loads(resp.read())
                self.latencies.append(time.perf_counter() - started)
                self.online = int(body["devices_online"])
            except OSError:
                self.latencies.append(time.perf_counter() - started)
            self.stop_flag.wait(0.05)


def catalog_states(platform: PlatformProcess, devices: int) -> dict[str, int]:
    """How many devices' catalog syncs are in each state (idle, running, done, timeout...)."""
    counts: dict[str, int] = {}
    for offset in range(0, devices, 500):
        _, page = platform.api("GET", f"/devices?limit=500&offset={offset}")
        for device in page["items"]:
            state = device["catalog"]["status"]
            counts[state] = counts.get(state, 0) + 1
    return counts


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--keepalive-interval", type=float, default=60.0)
    ap.add_argument("--ramp", type=float, default=0.0, help="seconds over which devices start (0: all at once)")
    ap.add_argument("--transport", default="udp")
    ap.add_argument("--silent", type=float, default=0.0,
                    help="share of devices that never answer a query (0.1: every tenth)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--env", action="append", default=[], help="extra platform setting, e.g. GBP_SIP_TRACE_SIZE=0")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="gbp-bench-") as tmp:
        platform = PlatformProcess(Path(tmp) / "data", env={"GBP_LOG_LEVEL": "warn", **dict(e.split("=", 1) for e in args.env)}).start()
        assert platform.proc is not None
        pid = platform.proc.pid
        probe = HealthProbe(platform.http_port)
        probe.start()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        sim_log = open(Path(tmp) / "sim.log", "w")  # noqa: SIM115
        sim = subprocess.Popen(
            [sys.executable, "-c", SIM_SCRIPT, f"127.0.0.1:{platform.sip_port}", str(args.devices),
             str(args.channels), str(args.keepalive_interval), str(args.ramp), args.transport,
             str(args.silent)],
            stdout=sim_log, stderr=subprocess.STDOUT,
        )
        peak_rss = 0.0
        try:
            while probe.online < args.devices:
                peak_rss = max(peak_rss, rss_mib(pid))
                if time.monotonic() - t0 > args.timeout:
                    print(f"timeout: {probe.online}/{args.devices} online after {args.timeout} s")
                    print(Path(tmp, "sim.log").read_text()[-2000:])
                    return 1
                time.sleep(0.05)
            t_online = time.monotonic() - t0
            storm_cpu = cpu_seconds(pid) - cpu0
            storm_latencies = list(probe.latencies)
            print(f"all {args.devices} online after {t_online:.2f} s; health max "
                  f"{1000 * max(storm_latencies):.0f} ms; CPU {storm_cpu:.1f} s", flush=True)
            # Let the onboarding queries (DeviceInfo, BasicParam, Catalog) finish before
            # measuring the steady keepalive load.
            silent = int(args.devices * args.silent)
            answering = args.devices - silent
            marks: dict[str, float] = {}

            def onboarded() -> bool:
                # A device is onboarded when its catalog sync has ended: "done" for
                # the devices that answer, "timeout" for the silent ones.
                states = catalog_states(platform, args.devices)
                now = time.monotonic() - t0
                if states.get("done", 0) >= answering:
                    marks.setdefault("answering", now)
                settled = sum(n for state, n in states.items() if state not in ("idle", "running"))
                _, body = platform.api("GET", "/health", auth=False)
                return settled >= args.devices and int(body["sip"].get("onboarding_backlog", 0)) == 0

            wait_for(onboarded, 10 * args.timeout, "onboarding to finish", interval=0.5)
            t_onboarded = time.monotonic() - t0
            t_answering = marks.get("answering", t_onboarded)
            onboard_latencies = list(probe.latencies)[len(storm_latencies):]
            settle_cpu, settle_t = cpu_seconds(pid), time.monotonic()
            time.sleep(3)  # the last catalog writes
            probe.stop_flag.set()  # health probes are not keepalive load
            probe.join()
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            print("steady state: measuring the keepalive load", flush=True)
            time.sleep(args.keepalive_interval)
            ka_cpu = cpu_seconds(pid) - cpu1
            ka_wall = time.monotonic() - t1
            rss_end = rss_mib(pid)
            peak_rss = max(peak_rss, rss_end)
            _, health = platform.api("GET", "/health", auth=False)
            _, page = platform.api("GET", "/devices?limit=1")
        finally:
            probe.stop_flag.set()
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(30)
            except subprocess.TimeoutExpired:
                sim.kill()
            platform.stop()
        del settle_cpu, settle_t
        print(f"devices                       {args.devices} ({args.transport}, {args.channels} channel(s) each, "
              f"ramp {args.ramp:g} s)")
        print(f"all online after              {t_online:.2f} s")
        print(f"registrations per second      {args.devices / t_online:.0f}")
        print(f"platform CPU during the storm {storm_cpu:.2f} s ({100 * storm_cpu / t_online:.0f} % of a core)")
        print(f"platform RSS peak / at end    {peak_rss:.0f} MiB / {rss_end:.0f} MiB")
        print(f"health latency in the storm   p50 {1000 * pct(storm_latencies, 0.5):.1f} ms, "
              f"p99 {1000 * pct(storm_latencies, 0.99):.1f} ms, max {1000 * max(storm_latencies):.1f} ms "
              f"({len(storm_latencies)} probes)")
        print(f"onboarding done after         {t_onboarded:.1f} s (DeviceInfo, BasicParam, Catalog for all, "
              f"{silent} silent); health max meanwhile {1000 * max(onboard_latencies or [0]):.0f} ms")
        print(f"answering devices' catalogs   all {answering} done {t_answering:.1f} s after the start, "
              f"{answering / t_answering:.1f} devices/s")
        print(f"keepalive load                {100 * ka_cpu / ka_wall:.1f} % of a core over {ka_wall:.0f} s "
              f"({args.devices / args.keepalive_interval:.0f} keepalives/s)")
        print(f"registry                      {page['total']} devices; sip stats {health['sip']}")
        print(f"token                         {TOKEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
