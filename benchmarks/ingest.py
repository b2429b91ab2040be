"""Live ingest benchmark: N simulated 1080p PS/RTP cameras streaming into one platform, every transport.

Run by hand (not part of the test suite):

    python benchmarks/ingest.py --streams 100 --modes udp,single-port,tcp-passive,tcp-active
    python benchmarks/ingest.py --streams 100 --repeat 3 --interleave      # all modes, alternated
    python benchmarks/ingest.py --streams 10 50 100 200 --modes udp
    python benchmarks/ingest.py --streams 100 --modes udp --py-spy spy.txt # profile the window
    python benchmarks/ingest.py --streams 100 --sender python              # the old Python sender
    python benchmarks/ingest.py --streams 100 --repeat 2 --interleave --ab GBP_MEDIA_GOP_CACHE_BYTES=0
                                                  # A/B: each run twice, B with that setting
    python benchmarks/ingest.py --streams 200 --modes udp --workers 0,2 --repeat 2 --interleave
                                                  # media.workers 0 against 2 (issue 12, "Both cores")
    python benchmarks/ingest.py --streams 200 400 600 800 --modes udp --workers 2 --find-max
                                                  # capacity: up to the first count with loss

Modes (the platform's names): ``udp`` a port per stream; ``single-port`` every stream on one
RTP port (``GBP_MEDIA_SINGLE_PORT``), demultiplexed by SSRC; ``tcp-passive`` RFC 4571 over TCP,
the device connects to the platform (``media_transport: TCP-PASSIVE``); ``tcp-active`` the
platform connects to the device (``TCP-ACTIVE``).

For each run (a mode, a stream count, a round):
1. starts ``gbplatform run`` (SQLite in a temporary directory, ``GBP_LOG_LEVEL=warn``,
   ``GBP_MEDIA_IDLE_TIMEOUT`` a day, so a stream nobody watches stays up);
2. starts the C sender (``benchmarks/ps_sender.c``, compiled once with the machine's gcc into a
   temporary directory) and the device simulator (``gbplatform.simulator.device`` with
   ``external_sender``): the simulator registers N devices of one channel, answers Catalog and
   INVITE as usual, and hands each answered stream (address, port, SSRC, transport, and the
   UDP / listening TCP socket its answer names) to the C sender, which replays the ZLMediaKit
   1080p H.264 PS capture (~4 Mbit/s, 25 fps, ~15 RTP packets per frame, one burst every
   40 ms) with the stream's SSRC and its own sequence numbers. Signalling stays real; the
   sender costs a few % of a core instead of a Python packetiser's 40+ %;
3. sets each device's ``media_transport`` through the API (TCP modes) and plays every channel
   (``POST /channels/<id>/play``: INVITE, SDP answer, ACK, RTP starts);
4. after ``--warmup`` seconds, measures over ``--window`` seconds: the platform's CPU
   (utime + stime from /proc/<pid>/stat, in % of one core, and scaled to 100 streams), its RSS
   (VmRSS, and the peak VmHWM), the sender's and the simulator's CPU, and from
   ``GET /api/v1/streams`` the frames and RTP packets each stream received and the RTP loss
   (sequence gaps) the reorder buffer declared, and the kernel's drops on the platform's UDP
   sockets (``/proc/net/udp``; the host-wide RcvbufErrors beside, which other programs share).
   With ``--workers N`` (``media.workers``) the platform's media worker children count too: CPU,
   RSS and UDP drops are read for the platform process and each child, and reported apart
   (``main``, ``workers``) and summed (``cpu %``, ``rss``). A worker reports a stream's packet and
   loss counters to the main process at most once a second, so the API's packet and RTP-loss
   figures at the window's edges may be up to a second old; frames are counted by the main
   process as they arrive and are exact.

Capacity (``--find-max``): the stream counts of ``--streams`` are run in ascending order (per
``--workers`` value and mode) and a count stops the series once it shows loss: any RTP loss,
kernel UDP drop or sender drop, a stream not playing, or a platform that does not keep up
(received frames short of those sent by more than 5 % over the window: frames still queued in
the sockets' buffers, late rather than lost, but a backlog that grows ends in drops). The last
count without loss is the capacity.

Frame loss is ``sent - received`` over the window: the sender's counters (read on SIGUSR1)
against the frames the platform's streams emitted, each read once at each end of the window, the
sender first: a burst in flight at an edge makes it +-1 per stream, not a trend. ``sender drop``
is frames a TCP reader was too slow to take (the sender drops them whole, as a live camera).

The summary prints each mode's range over the rounds beside ZLMediaKit's figures from issue 12
(measured on this machine with the same capture and a C sender). ZLMediaKit is not re-run by
this script: it cannot be built in this sandbox (no source fetch).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
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
PORT_BASE = 24000
MODES = ("udp", "single-port", "tcp-passive", "tcp-active")
TRANSPORT = {"tcp-passive": "TCP-PASSIVE", "tcp-active": "TCP-ACTIVE"}
SENDER_SOURCE = Path(__file__).resolve().parent / "ps_sender.c"

# ZLMediaKit (C++, Release, ingest only) on this machine, from issue 12: CPU % of one core and RSS in
# MB by (streams, mode). The issue has no single-port or TCP-active figure for it.
ZLM = {(100, "udp"): ("21.6-23.8", "121-125"), (100, "tcp-passive"): ("28.5-29.1", "118-123"),
       (200, "udp"): ("40.6", "219")}

# The simulator: signalling only with --sender c (external_sender), or sending too with --sender
# python; SIGUSR1 prints what its own senders sent (zeros when the C sender sends).
SIM_SCRIPT = """
import json, random, signal, sys
from gbplatform.simulator.device import SimConfig, run
from gbplatform.app.reactor import install_reactor
install_reactor()
from twisted.internet import reactor
cfg = SimConfig(server=sys.argv[1], devices=int(sys.argv[2]), channels=1, first_id=sys.argv[3],
                keepalive_interval=30.0, status_interval=3600.0, external_sender=sys.argv[4])
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def udp_drops() -> int:
    """Host-wide UDP receive-buffer drops (RcvbufErrors in /proc/net/snmp)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])


def socket_drops(pid: int) -> int:
    """Datagrams the kernel dropped on ``pid``'s UDP sockets (the ``drops`` column of /proc/net/udp[6]).

    Unlike RcvbufErrors it ignores other programs on a shared host.
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 12 and cols[9] in inodes:
                total += int(cols[12])
    return total


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (its media workers), from every thread's ``children`` list."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return kids


def status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_clip(path: Path) -> int:
    """The capture's complete frames for ps_sender: ``GBPSCLP1 u32 frames {u32 packets {u16 len, payload}}``."""
    from gbplatform.simulator.media import PsClip

    clip = PsClip.default()
    out = [b"GBPSCLP1", struct.pack("<I", len(clip.frames))]
    for frame in clip.frames:
        out.append(struct.pack("<I", len(frame.chunks)))
        for chunk in frame.chunks:
            out.append(struct.pack("<H", len(chunk)) + chunk)
    path.write_bytes(b"".join(out))
    return len(clip.frames)


def build_sender(tmp: Path) -> Path:
    exe = tmp / "ps_sender"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(SENDER_SOURCE)], check=True)
    return exe


def tree_state() -> str:
    """The commit measured and what differs from it under media/ (colleagues change the receive path)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--short", "--", "media", "gbplatform/sessions"], cwd=root,
                                 capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError) as e:
        return f"unknown ({e})"
    changed = [line.split()[-1] for line in changed if line.strip()]
    return f"HEAD {head}, changed under media/ and gbplatform/sessions/: {', '.join(changed) or 'nothing'}"


@dataclass
class Result:
    streams: int
    mode: str
    workers: int  # media.workers
    round: int
    variant: str  # "A": the tree as it is; "B": with the --ab setting
    window: float
    platform_cpu: float  # % of one core: the platform and its media workers
    main_cpu: float  # % of one core: the platform process alone
    worker_cpu: float  # % of one core: its media worker children, summed
    cpu_per_100: float  # % of one core scaled to 100 streams
    sender_cpu: float  # % of one core: the C sender (or the Python simulators sending)
    sim_cpu: float  # % of one core: the simulator's signalling (with the C sender)
    rss_mib: float  # the platform and its media workers
    main_rss_mib: float
    worker_rss_mib: float  # summed over the workers
    peak_rss_mib: float  # the platform process's peak
    expected_frames: int  # 25 fps x streams x the time between the two reads of the sender's counters
    sent_frames: int
    frames: int
    frame_loss: int  # sent - received
    sender_dropped: int  # frames a slow TCP reader did not take
    sent_packets: int
    packets: int
    rtp_lost: int
    udp_drops: int  # kernel drops on the platform's UDP sockets in the window
    host_udp_drops: int  # host-wide (RcvbufErrors): other programs on a shared host count too
    playing: int
    load: str  # /proc/loadavg at the end of the window

    @property
    def lossy(self) -> bool:
        """Loss by the capacity mode's rule: any RTP loss, kernel drop or sender drop, a stream not playing,
        or a platform not keeping up (frames behind by more than 5 % of those sent in the window)."""
        return bool(self.rtp_lost or self.udp_drops or self.sender_dropped or self.playing < self.streams
                    or self.frame_loss > 0.05 * self.sent_frames)


def _device_id(i: int) -> str:
    return FIRST_ID[:13] + f"{int(FIRST_ID[13:]) + i:07d}"


class Bench:
    def __init__(self, args: argparse.Namespace, n: int, mode: str, rnd: int, variant: str, tmp: Path,
                 sender_exe: Path | None, clip_file: Path | None, workers: int = 0) -> None:
        self.args = args
        self.workers = workers
        self.n = n
        self.mode = mode
        self.round = rnd
        self.variant = variant
        self.tmp = tmp
        self.sender_exe = sender_exe
        self.clip_file = clip_file
        env = {
            "GBP_LOG_LEVEL": "warn",
            "GBP_MEDIA_IDLE_TIMEOUT": "86400",
            # Away from the default range other test platforms on this host may use.
            "GBP_MEDIA_RTP_PORT_MIN": str(PORT_BASE),
            "GBP_MEDIA_RTP_PORT_MAX": str(PORT_BASE + 4 * n + 200),
            "GBP_MEDIA_WORKERS": str(workers),
            **dict(e.split("=", 1) for e in args.env),
            **(dict(e.split("=", 1) for e in args.ab) if variant == "B" else {}),
        }
        if mode == "single-port":
            env["GBP_MEDIA_SINGLE_PORT"] = str(free_port())
        self.platform = PlatformProcess(tmp / "data", env=env)
        self.sims: list[subprocess.Popen[bytes]] = []
        self.sender: subprocess.Popen[bytes] | None = None
        self.control = tmp / "sender.sock"

    @property
    def media_pids(self) -> list[int]:
        """What sends the RTP: the C sender, or the Python simulators."""
        return [self.sender.pid] if self.sender is not None else [s.pid for s in self.sims]

    def start(self) -> None:
        if self.args.profile:
            self._start_profiled()
        else:
            self.platform.start()
        if self.sender_exe is not None:
            assert self.clip_file is not None
            self.sender = subprocess.Popen([str(self.sender_exe), str(self.clip_file), str(self.control)],
                                           stdout=subprocess.PIPE, stderr=open(self.tmp / "sender.log", "wb"))  # noqa: SIM115
            wait_for(self.control.exists, 10, "the C sender's control socket", interval=0.05)
        per = -(-self.n // self.args.senders)
        for k in range(self.args.senders):
            count = min(per, self.n - k * per)
            if count <= 0:
                break
            log = open(self.tmp / f"sim{k}.log", "wb")  # noqa: SIM115 - owned by the child
            self.sims.append(subprocess.Popen(
                [sys.executable, "-c", SIM_SCRIPT, f"127.0.0.1:{self.platform.sip_port}",
                 str(count), _device_id(k * per), str(self.control) if self.sender else ""],
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
        for proc in [*self.sims, *([self.sender] if self.sender else [])]:
            proc.send_signal(signal.SIGTERM)
        for proc in [*self.sims, *([self.sender] if self.sender else [])]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.platform.stop()

    def channels(self) -> list[str]:
        def found() -> list[str] | None:
            online: list[str] = []
            for offset in range(0, self.n + 10, 500):  # the API pages lists by at most 500
                status, body = self.platform.api("GET", f"/devices?offset={offset}&limit=500")
                online += [d["device_id"] for d in body["items"] if d.get("online")] if status == 200 else []
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

    def set_transport(self) -> None:
        transport = TRANSPORT.get(self.mode)
        if transport is None:
            return
        for i in range(self.n):
            status, body = self.platform.api("PATCH", f"/devices/{_device_id(i)}", {"media_transport": transport})
            if status != 200:
                raise RuntimeError(f"media_transport of {_device_id(i)}: {status} {body}")

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
        """The media counters (one JSON line per SIGUSR1 from each process that sends)."""
        procs = [self.sender] if self.sender is not None else self.sims
        for proc in procs:
            proc.send_signal(signal.SIGUSR1)
        total: dict[str, int] = {}
        for proc in procs:
            assert proc.stdout is not None
            for key, value in json.loads(proc.stdout.readline()).items():
                total[key] = total.get(key, 0) + value
        return total

    def streams(self) -> dict[str, dict[str, Any]]:
        status, body = self.platform.api("GET", f"/streams?limit={self.n + 10}")
        assert status == 200, body
        return {s["channel_id"]: s for s in body["items"]}

    def measure(self) -> Result:
        assert self.platform.proc is not None
        pid = self.platform.proc.pid
        time.sleep(self.args.warmup)
        kids = children(pid)  # media workers (respawned ones in the window would be missed: none expected)
        if len(kids) != self.workers:
            print(f"warning: {len(kids)} child processes, {self.workers} media workers configured", file=sys.stderr)
        sent0 = self.sent()
        s0 = time.monotonic()
        before = self.streams()
        drops0 = udp_drops()
        own0 = sum(socket_drops(p) for p in [pid, *kids])
        cpu0 = cpu_seconds(pid)
        kcpu0 = sum(cpu_seconds(p) for p in kids)
        sender0 = sum(cpu_seconds(p) for p in self.media_pids)
        sim0 = sum(cpu_seconds(s.pid) for s in self.sims)
        t0 = time.monotonic()
        spy = None
        if self.args.py_spy:
            # Sampling profile of the window without stopping the process (py-spy >= 0.3).
            out = (self.args.py_spy if self.args.runs == 1
                   else f"{self.args.py_spy}.{self.mode}.{self.variant}.{self.round}")
            spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "100", "-f", "raw",
                                    "-d", str(int(self.args.window)), "-p", str(pid), "-o", out],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(self.args.window)
        if spy is not None:
            spy.wait(30)
        cpu1 = cpu_seconds(pid)
        kcpu1 = sum(cpu_seconds(p) for p in kids)
        sender1 = sum(cpu_seconds(p) for p in self.media_pids)
        sim1 = sum(cpu_seconds(s.pid) for s in self.sims)
        t1 = time.monotonic()
        drops = udp_drops() - drops0
        own_drops = sum(socket_drops(p) for p in [pid, *kids]) - own0
        sent1 = self.sent()
        s1 = time.monotonic()
        after = self.streams()
        window = t1 - t0
        frames = sum(s["frames"] - before.get(c, {"frames": s["frames"]})["frames"] for c, s in after.items())
        packets = sum(s["packets"] - before.get(c, {"packets": 0})["packets"] for c, s in after.items())
        lost = sum(s["rtp_lost"] - before.get(c, {"rtp_lost": 0})["rtp_lost"] for c, s in after.items())
        playing = sum(1 for s in after.values() if s["state"] == "playing")
        sent_frames = sent1["frames"] - sent0["frames"]
        main_cpu = 100 * (cpu1 - cpu0) / window
        worker_cpu = 100 * (kcpu1 - kcpu0) / window
        cpu = main_cpu + worker_cpu
        main_rss = status_mib(pid, "VmRSS")
        worker_rss = sum(status_mib(p, "VmRSS") for p in kids)
        return Result(
            streams=self.n, mode=self.mode, workers=self.workers, round=self.round, variant=self.variant,
            window=round(window, 1), platform_cpu=round(cpu, 1), main_cpu=round(main_cpu, 1),
            worker_cpu=round(worker_cpu, 1), cpu_per_100=round(100 * cpu / self.n, 1),
            sender_cpu=round(100 * (sender1 - sender0) / window, 1),
            sim_cpu=round(100 * (sim1 - sim0) / window, 1) if self.sender is not None else 0.0,
            rss_mib=round(main_rss + worker_rss, 1), main_rss_mib=round(main_rss, 1),
            worker_rss_mib=round(worker_rss, 1), peak_rss_mib=round(status_mib(pid, "VmHWM"), 1),
            expected_frames=round(FPS * (s1 - s0) * self.n), sent_frames=sent_frames, frames=frames,
            frame_loss=sent_frames - frames, sender_dropped=sent1["dropped"] - sent0["dropped"],
            sent_packets=sent1["packets"] - sent0["packets"], packets=packets,
            rtp_lost=lost, udp_drops=own_drops, host_udp_drops=drops, playing=playing,
            load=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
        )


def run_one(args: argparse.Namespace, n: int, mode: str, rnd: int, variant: str, sender_exe: Path | None,
            clip_file: Path | None, workers: int = 0) -> Result:
    with tempfile.TemporaryDirectory(prefix="gbp-ingest-") as tmp:
        bench = Bench(args, n, mode, rnd, variant, Path(tmp), sender_exe, clip_file, workers)
        try:
            bench.start()
            channels = bench.channels()
            bench.set_transport()
            bench.play(channels)
            result = bench.measure()
        except Exception:
            print(bench.platform.log()[-3000:], file=sys.stderr)
            sender_log = Path(tmp) / "sender.log"
            if sender_log.exists():
                print(sender_log.read_text(errors="replace")[-2000:], file=sys.stderr)
            raise
        finally:
            bench.stop()
        return result


ROW = ("{streams:>7} {mode:>11} {workers:>3} {variant:>3} {round:>5} {platform_cpu:>6.1f} {main_cpu:>6.1f} "
       "{worker_cpu:>6.1f} {cpu_per_100:>7.1f} {sender_cpu:>8.1f} "
       "{sim_cpu:>5.1f} {rss_mib:>7.1f} {worker_rss_mib:>6.1f} {peak_rss_mib:>6.1f} {expected_frames:>8} {sent_frames:>7} {frames:>7} "
       "{frame_loss:>7} {sender_dropped:>7} {rtp_lost:>8} {udp_drops:>8} {host_udp_drops:>9} {playing:>7}  {load}")
HEADER = (f"{'streams':>7} {'mode':>11} {'wrk':>3} {'a/b':>3} {'round':>5} {'cpu %':>6} {'main %':>6} {'wrk %':>6} "
          f"{'%/100st':>7} {'sender %':>8} {'sim %':>5} "
          f"{'rss MiB':>7} {'wrkrss':>6} {'peak':>6} {'expected':>8} {'sent':>7} {'frames':>7} {'lost fr':>7} {'snd drop':>7} "
          f"{'rtp lost':>8} {'udp drop':>8} {'host drop':>9} {'playing':>7}  load (1/5/15 min)")


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.1f}" if lo == hi else f"{lo:.1f}-{hi:.1f}"


def summary(results: list[Result]) -> list[str]:
    """Per mode and stream count: ranges over the rounds, with issue 12's ZLMediaKit figures beside."""
    lines = [f"{'streams':>7} {'mode':>11} {'wrk':>3} {'a/b':>3} {'runs':>4} {'cpu % of a core':>15} {'per 100 str':>11} {'rss MiB':>12} "
             f"{'rtp lost':>8} {'lost fr':>8} {'udp drop':>8} {'sender %':>10}   "
             f"{'ZLMediaKit cpu %':>16} {'ZLM RSS MB':>10} {'ratio':>9}"]
    keys = list(dict.fromkeys((r.streams, r.mode, r.workers, r.variant) for r in results))
    for n, mode, workers, variant in keys:
        rs = [r for r in results if (r.streams, r.mode, r.workers, r.variant) == (n, mode, workers, variant)]
        cpus = [r.platform_cpu for r in rs]
        zlm_cpu, zlm_rss = ZLM.get((n, mode), ("-", "-"))
        ratio = "-"
        if zlm_cpu != "-":
            zlo, _, zhi = zlm_cpu.partition("-")
            ratio = f"{min(cpus) / float(zhi or zlo):.1f}-{max(cpus) / float(zlo):.1f}x"
        lines.append(
            f"{n:>7} {mode:>11} {workers:>3} {variant:>3} {len(rs):>4} {_span(cpus):>15} {_span([r.cpu_per_100 for r in rs]):>11} "
            f"{_span([r.rss_mib for r in rs]):>12} "
            f"{sum(r.rtp_lost for r in rs):>8} {sum(max(0, r.frame_loss) for r in rs):>8} "
            f"{sum(r.udp_drops for r in rs):>8} {_span([r.sender_cpu for r in rs]):>10}   "
            f"{zlm_cpu:>16} {zlm_rss:>10} {ratio:>9}")
    lines.append("ZLMediaKit: issue 12's figures on this machine (same capture, a C sender); it could not be re-run "
                 "here (no source fetch in this sandbox). '-': no ZLMediaKit figure for that mode and count.")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[100])
    ap.add_argument("--modes", default="udp,single-port,tcp-passive,tcp-active",
                    help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every mode")
    ap.add_argument("--interleave", action="store_true",
                    help="alternate the modes round by round (udp, tcp, ..., udp, tcp, ...) so noise cancels")
    ap.add_argument("--warmup", type=float, default=8.0, help="seconds after the last play")
    ap.add_argument("--window", type=float, default=30.0, help="measurement window, seconds")
    ap.add_argument("--sender", choices=("c", "python"), default="c",
                    help="c: benchmarks/ps_sender.c sends, the simulator only signals; python: the "
                         "simulator sends (the method before 2026-12-05)")
    ap.add_argument("--senders", type=int, default=1, help="simulator processes")
    ap.add_argument("--single-port", action="store_true", help="same as --modes single-port")
    ap.add_argument("--profile", metavar="FILE", help="run the platform under cProfile, stats to FILE")
    ap.add_argument("--py-spy", metavar="FILE", help="py-spy the platform over the window (collapsed stacks)")
    ap.add_argument("--env", action="append", default=[], help="extra platform setting, e.g. GBP_MEDIA_RCVBUF=8388608")
    ap.add_argument("--ab", action="append", default=[], metavar="NAME=VALUE",
                    help="run every mode twice, A as the tree is and B with this platform setting "
                         "(e.g. GBP_MEDIA_GOP_CACHE_BYTES=0), alternated so the machine's noise falls on both")
    ap.add_argument("--json", action="store_true", help="print the results as JSON lines too")
    ap.add_argument("--workers", default="0",
                    help="media.workers of the platform; a comma-separated list runs each (interleaved with "
                         "--interleave), e.g. 0,2")
    ap.add_argument("--find-max", action="store_true",
                    help="capacity: run the --streams counts in ascending order, stopping a series (per "
                         "--workers value and mode) at the first count with loss")
    args = ap.parse_args()
    modes = ["single-port"] if args.single_port else [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    rounds = range(1, args.repeat + 1)
    variants = ["A", "B"] if args.ab else ["A"]
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.find_max:
        args.streams = sorted(args.streams)
    plan = ([(n, r, m, v, w) for n in args.streams for r in rounds for m in modes for v in variants for w in workers]
            if args.interleave
            else [(n, r, m, v, w) for n in args.streams for m in modes for w in workers for r in rounds
                  for v in variants])
    args.runs = len(plan)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="gbp-sender-") as build:
        sender_exe = clip_file = None
        if args.sender == "c":
            sender_exe = build_sender(Path(build))
            clip_file = Path(build) / "clip.bin"
            count = write_clip(clip_file)
            print(f"C sender built; clip of {count} frames from the capture", flush=True)
        print(f"tree: {tree_state()}; load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
        print(HEADER, flush=True)
        stopped: set[tuple[str, int, str]] = set()  # capacity series that showed loss
        failed: list[tuple[str, int, int, str]] = []  # (mode, workers, streams, why) of runs that failed
        for n, rnd, mode, variant, w in plan:
            if (mode, w, variant) in stopped:
                continue
            try:
                r = run_one(args, n, mode, rnd, variant, sender_exe, clip_file, w)
            except Exception as e:
                if not args.find_max:
                    raise
                # A platform that cannot keep up may not even answer the plays in time: that count failed.
                stopped.add((mode, w, variant))
                failed.append((mode, w, n, str(e).splitlines()[0][:200] if str(e) else type(e).__name__))
                print(f"run failed at {n} streams ({mode}, media.workers={w}): {failed[-1][3]}; series stopped",
                      flush=True)
                continue
            results.append(r)
            print(ROW.format(**asdict(r)), flush=True)
            if args.find_max and r.lossy:
                stopped.add((mode, w, variant))
                print(f"loss at {n} streams ({mode}, media.workers={w}): series stopped", flush=True)
            if args.json:
                print(json.dumps(asdict(r)), flush=True)
    print()
    for line in summary(results):
        print(line)
    if args.find_max:
        print()
        for line in capacity(results):
            print(line)
        for mode, w, n, why in failed:
            print(f"{mode:>11} {w:>3}: the run at {n} streams failed ({why}): counted as loss")
    return 0


def capacity(results: list[Result]) -> list[str]:
    """Per mode and media.workers: each count's loss figures, and the largest count without loss."""
    lines = [f"{'mode':>11} {'wrk':>3} {'streams':>7} {'lost fr':>8} {'rtp lost':>8} {'udp drop':>8} "
             f"{'snd drop':>8} {'cpu %':>6} {'sender %':>8} {'rss MiB':>7}  verdict"]
    for mode, w in dict.fromkeys((r.mode, r.workers) for r in results):
        for r in sorted((r for r in results if (r.mode, r.workers) == (mode, w)), key=lambda r: r.streams):
            lines.append(f"{mode:>11} {w:>3} {r.streams:>7} {r.frame_loss:>8} {r.rtp_lost:>8} {r.udp_drops:>8} "
                         f"{r.sender_dropped:>8} {r.platform_cpu:>6.1f} {r.sender_cpu:>8.1f} {r.rss_mib:>7.1f}  "
                         f"{'LOSS' if r.lossy else 'ok'}")
        ok = [r.streams for r in results if (r.mode, r.workers) == (mode, w) and not r.lossy]
        lossy = [r.streams for r in results if (r.mode, r.workers) == (mode, w) and r.lossy]
        top = max((n for n in ok if not lossy or n < min(lossy)), default=0)
        lines.append(f"{mode:>11} {w:>3}: zero loss up to {top} streams"
                     + (f", loss at {min(lossy)}" if lossy else " (no count with loss tried)"))
    return lines


if __name__ == "__main__":
    sys.exit(main())
