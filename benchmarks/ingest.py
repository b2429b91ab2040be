"""Live ingest benchmark: N simulated 1080p PS/RTP cameras streaming into one platform.

Run by hand (not part of the test suite):

    python benchmarks/ingest.py --streams 10 50 100 200
    python benchmarks/ingest.py --streams 100 --single-port       # one RTP port for all
    python benchmarks/ingest.py --streams 100 --profile prof.out  # cProfile the platform

For each N:
1. starts ``gbplatform run`` (SQLite in a temporary directory, ``GBP_LOG_LEVEL=warn``,
   ``GBP_MEDIA_IDLE_TIMEOUT`` a day, so a stream nobody watches stays up);
2. starts the device simulator (``gbplatform.simulator.device``, what ``gbplatform simulate
   --devices N --channels 1`` runs) in another process (``--senders K`` splits the
   devices over K processes): each channel answers INVITE with the real ZLMediaKit
   1080p H.264 PS capture, ~4 Mbit/s, 25 fps, ~15 RTP packets per frame, paced every
   40 ms. On SIGUSR1 a sender prints how many frames and packets it has sent;
3. plays every channel through the API (``POST /channels/<id>/play``: INVITE, RTP starts);
4. after ``--warmup`` seconds, measures over ``--window`` seconds: the platform's and the
   senders' CPU (utime + stime from /proc/<pid>/stat, in % of one core), the platform's
   RSS (VmRSS, and the peak VmHWM), and from ``GET /api/v1/streams`` the frames and RTP
   packets each stream received and the RTP loss the reorder buffer declared.

Frame loss is ``sent - received`` over the window, the senders' frame counters against
the frames the platform's streams emitted (each read once at each end of the window, the
senders first: a burst in flight at an edge makes it +-1 per stream, not a trend). RTP
loss (sequence gaps) and the host's UDP receive-buffer drops are exact. ``expected`` is
25 fps x window x N: a sender short of CPU sends fewer (its CPU is printed beside).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import PlatformProcess, free_port, wait_for  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
FPS = 25
FIRST_ID = "34020000001320000001"

# The simulator with a SIGUSR1 handler that reports the media sent so far.
SENDER_SCRIPT = """
import json, random, signal, sys
from gbplatform.simulator.device import SimConfig, run
from gbplatform.app.reactor import install_reactor
install_reactor()
from twisted.internet import reactor
cfg = SimConfig(server=sys.argv[1], devices=int(sys.argv[2]), channels=1, first_id=sys.argv[3],
                keepalive_interval=30.0, status_interval=3600.0)
sims = []
def report(signum, frame):
    senders = [p.sender for sim in sims for d in sim.devices for p in d.plays.values()]
    print(json.dumps({"frames": sum(s.frames for s in senders),
                      "packets": sum(s.packets for s in senders),
                      "dropped": sum(s.frames_dropped for s in senders),
                      "streams": len(senders)}), flush=True)
signal.signal(signal.SIGUSR1, report)
sys.exit(run(cfg, reactor, random.Random(7), sys.stderr, on_started=sims.append))
"""
PORT_BASE = 24000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def udp_drops() -> int:
    """Host-wide UDP receive-buffer drops (RcvbufErrors in /proc/net/snmp)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


def status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Result:
    streams: int
    mode: str
    window: float
    platform_cpu: float  # % of one core
    cpu_per_stream: float
    sender_cpu: float  # % of one core, all sender processes together
    rss_mib: float
    peak_rss_mib: float
    expected_frames: int  # 25 fps x window x streams
    sent_frames: int
    frames: int
    frame_loss: int  # sent - received
    sent_packets: int
    packets: int
    rtp_lost: int
    udp_drops: int  # host-wide kernel drops in the window
    playing: int


def _device_id(i: int) -> str:
    return FIRST_ID[:13] + f"{int(FIRST_ID[13:]) + i:07d}"


class Bench:
    def __init__(self, args: argparse.Namespace, n: int, tmp: Path) -> None:
        self.args = args
        self.n = n
        self.tmp = tmp
        env = {
            "GBP_LOG_LEVEL": "warn",
            "GBP_MEDIA_IDLE_TIMEOUT": "86400",
            # Away from the default range other test platforms on this host may use.
            "GBP_MEDIA_RTP_PORT_MIN": str(PORT_BASE),
            "GBP_MEDIA_RTP_PORT_MAX": str(PORT_BASE + 4 * n + 200),
            **dict(e.split("=", 1) for e in args.env),
        }
        if args.single_port:
            env["GBP_MEDIA_SINGLE_PORT"] = str(free_port())
        self.platform = PlatformProcess(tmp / "data", env=env)
        self.senders: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if self.args.profile:
            self._start_profiled()
        else:
            self.platform.start()
        per = -(-self.n // self.args.senders)
        for k in range(self.args.senders):
            count = min(per, self.n - k * per)
            if count <= 0:
                break
            log = open(self.tmp / f"sim{k}.log", "wb")  # noqa: SIM115 - owned by the child
            self.senders.append(subprocess.Popen(
                [sys.executable, "-c", SENDER_SCRIPT, f"127.0.0.1:{self.platform.sip_port}",
                 str(count), _device_id(k * per)],
                stdout=subprocess.PIPE, stderr=log,
            ))

    def _start_profiled(self) -> None:
        p = self.platform
        p.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(p.log_path, "ab")  # noqa: SIM115 - owned by the child
        p.proc = subprocess.Popen(
            [sys.executable, "-m", "cProfile", "-o", self.args.profile, "-m", "gbplatform", "run"],
            env=p.env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_for(p._healthy, 30, "the platform's health endpoint")

    def stop(self) -> None:
        for sim in self.senders:
            sim.send_signal(signal.SIGTERM)
        for sim in self.senders:
            try:
                sim.wait(20)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait(5)
        self.platform.stop()

    def channels(self) -> list[str]:
        def found() -> list[str] | None:
            status, body = self.platform.api("GET", f"/devices?limit={self.n + 10}")
            online = [d["device_id"] for d in body["items"] if d.get("online")] if status == 200 else []
            if len(online) < self.n:
                return None
            out = []
            for device in online:
                status, body = self.platform.api("GET", f"/devices/{device}/channels")
                items = body["items"] if status == 200 else []
                if not items:
                    return None
                out.append(items[0]["channel_id"])
            return out

        return list(wait_for(found, 60 + self.n, f"{self.n} devices online with a channel", interval=1.0))

    def play(self, channels: list[str]) -> None:
        def play_one(channel_id: str) -> tuple[int, Any]:
            for _ in range(3):  # a port another program holds is marked unusable: try again
                status, body = self.platform.api("POST", f"/channels/{channel_id}/play")
                if status == 200:
                    break
            return status, body

        with ThreadPoolExecutor(8) as pool:
            for channel_id, (status, body) in zip(channels, pool.map(play_one, channels), strict=True):
                if status != 200:
                    raise RuntimeError(f"play {channel_id}: {status} {body}")

    def sent(self) -> dict[str, int]:
        """The senders' counters, summed (each prints one JSON line per SIGUSR1)."""
        for sim in self.senders:
            sim.send_signal(signal.SIGUSR1)
        total: dict[str, int] = {}
        for sim in self.senders:
            assert sim.stdout is not None
            for key, value in json.loads(sim.stdout.readline()).items():
                total[key] = total.get(key, 0) + value
        return total

    def streams(self) -> dict[str, dict[str, Any]]:
        status, body = self.platform.api("GET", "/streams")
        assert status == 200, body
        return {s["channel_id"]: s for s in body["items"]}

    def measure(self) -> Result:
        assert self.platform.proc is not None
        pid = self.platform.proc.pid
        time.sleep(self.args.warmup)
        sent0 = self.sent()
        before = self.streams()
        drops0 = udp_drops()
        cpu0 = cpu_seconds(pid)
        sender0 = sum(cpu_seconds(s.pid) for s in self.senders)
        t0 = time.monotonic()
        spy = None
        if self.args.py_spy:
            # Sampling profile of the window without stopping the process (py-spy >= 0.3).
            spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "100", "-f", "raw",
                                    "-d", str(int(self.args.window)), "-p", str(pid), "-o", self.args.py_spy],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(self.args.window)
        if spy is not None:
            spy.wait(30)
        cpu1 = cpu_seconds(pid)
        sender1 = sum(cpu_seconds(s.pid) for s in self.senders)
        t1 = time.monotonic()
        drops = udp_drops() - drops0
        sent1 = self.sent()
        after = self.streams()
        window = t1 - t0
        frames = sum(s["frames"] - before.get(c, {"frames": s["frames"]})["frames"] for c, s in after.items())
        packets = sum(s["packets"] - before.get(c, {"packets": 0})["packets"] for c, s in after.items())
        lost = sum(s["rtp_lost"] - before.get(c, {"rtp_lost": 0})["rtp_lost"] for c, s in after.items())
        playing = sum(1 for s in after.values() if s["state"] == "playing")
        expected = round(FPS * window * self.n)
        sent_frames = sent1["frames"] - sent0["frames"]
        cpu = 100 * (cpu1 - cpu0) / window
        return Result(
            streams=self.n, mode="single-port" if self.args.single_port else "port-per-stream",
            window=round(window, 1), platform_cpu=round(cpu, 1), cpu_per_stream=round(cpu / self.n, 2),
            sender_cpu=round(100 * (sender1 - sender0) / window, 1),
            rss_mib=round(status_mib(pid, "VmRSS"), 1), peak_rss_mib=round(status_mib(pid, "VmHWM"), 1),
            expected_frames=expected, sent_frames=sent_frames, frames=frames,
            frame_loss=sent_frames - frames, sent_packets=sent1["packets"] - sent0["packets"], packets=packets,
            rtp_lost=lost, udp_drops=drops, playing=playing,
        )


def run_one(args: argparse.Namespace, n: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="gbp-ingest-") as tmp:
        bench = Bench(args, n, Path(tmp))
        try:
            bench.start()
            channels = bench.channels()
            bench.play(channels)
            result = bench.measure()
        except Exception:
            print(bench.platform.log()[-3000:], file=sys.stderr)
            raise
        finally:
            bench.stop()
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[10, 50, 100, 200])
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds after the last play")
    ap.add_argument("--window", type=float, default=30.0, help="measurement window, seconds")
    ap.add_argument("--senders", type=int, default=1, help="simulator processes")
    ap.add_argument("--single-port", action="store_true", help="GBP_MEDIA_SINGLE_PORT mode")
    ap.add_argument("--profile", metavar="FILE", help="run the platform under cProfile, stats to FILE")
    ap.add_argument("--py-spy", metavar="FILE", help="py-spy the platform over the window (collapsed stacks)")
    ap.add_argument("--env", action="append", default=[], help="extra platform setting, e.g. GBP_MEDIA_RCVBUF=8388608")
    ap.add_argument("--json", action="store_true", help="print the results as JSON lines too")
    args = ap.parse_args()

    header = (f"{'streams':>7} {'mode':>15} {'cpu %':>6} {'cpu/str':>7} {'sender %':>8} {'rss MiB':>7} "
              f"{'peak':>6} {'expected':>8} {'sent':>7} {'frames':>7} {'lost fr':>7} {'sent pkt':>8} {'pkts':>8} "
              f"{'rtp lost':>8} {'udp drop':>8} {'playing':>7}")
    print(header, flush=True)
    for n in args.streams:
        r = run_one(args, n)
        print(f"{r.streams:>7} {r.mode:>15} {r.platform_cpu:>6.1f} {r.cpu_per_stream:>7.2f} "
              f"{r.sender_cpu:>8.1f} {r.rss_mib:>7.1f} {r.peak_rss_mib:>6.1f} {r.expected_frames:>8} "
              f"{r.sent_frames:>7} {r.frames:>7} {r.frame_loss:>7} {r.sent_packets:>8} {r.packets:>8} "
              f"{r.rtp_lost:>8} {r.udp_drops:>8} {r.playing:>7}", flush=True)
        if args.json:
            print(json.dumps(asdict(r)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
