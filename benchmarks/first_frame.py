"""Time to first frame: from the play request to the first decoded picture at an RTSP and an HTTP-FLV client.

Run by hand (not part of the test suite):

    python benchmarks/first_frame.py                      # 10 rounds per output
    python benchmarks/first_frame.py --rounds 3 --outputs http-flv
    python benchmarks/first_frame.py --json results.json  # every round's timestamps too

Starts ``gbplatform run`` (SQLite in a temporary directory) and the device simulator (``gbplatform
simulate``: one device, one channel, the ZLMediaKit 1080p H.264 PS capture at 25 fps, a 2 s GOP, every
play starting on its keyframe) as real processes on 127.0.0.1. Per round and output:

1. cold viewer: ``POST /api/v1/channels/{id}/play`` (the benchmark stamps request and answer), then the
   client opens the output's URL and stamps its first decoded picture;
2. second viewer: after a random 0.3-1.9 s (anywhere in the GOP), a second client of the same output
   opens while the first keeps reading, and stamps its first decoded picture;
3. ``GET /api/v1/streams``: the stream's ``timeline`` gives the platform's own stamps (INVITE sent,
   200 OK, first RTP packet, first keyframe assembled, and per viewer when it attached and when its
   first media was written); then ``POST .../stop`` ends the stream before the next round.

Clients are PyAV (FFmpeg) processes, one per viewer and started ahead of their round (imports are
not timed), with low probing (``probesize`` 32, ``analyzeduration`` 0),
slice threads only (frame threads hold pictures back by a frame per thread), decoding until the first
picture: RTSP over TCP interleaved (RFC 2326 §10.12), HTTP-FLV as a plain GET. All stamps are the
wall clock of this host, shared by both processes, in milliseconds.

The tables: per step, median and max over the rounds. The goals (issue 12): first RTP -> decoded
<= 500 ms for the cold viewer, request -> decoded <= 100 ms for the second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, wait_for  # noqa: E402

DEVICE_ID = "34020000001320000001"
PORT_BASE = 26000
# Not fflags=nobuffer: it drops the packets read while probing, the first keyframe among them, so a
# client would only decode at the next keyframe (a GOP later).
LOW_PROBE = {"probesize": "32", "analyzeduration": "0"}


# One viewer, in its own process so that viewers do not share a GIL with each other or with this
# script: imports PyAV, says "ready", waits for a line on stdin, then stamps, opens, decodes until the
# first picture, prints its stamps as JSON and keeps reading (a viewer that stays) until stdin closes.
CLIENT_SCRIPT = r"""
import json, os, sys, threading, time
import av
url, options = sys.argv[1], json.loads(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
out = {"started": time.time()}
container = None
try:
    container = av.open(url, options=options, timeout=15)
    out["opened"] = time.time()
    video = container.streams.video[0]
    video.thread_type = "SLICE"  # frame threads hold pictures back by a frame per thread
    for packet in container.demux(video):
        if video.decode(packet):
            out["decoded"] = time.time()
            break
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out), flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
if container is not None and "decoded" in out:
    for _ in container.demux(video):
        pass
os._exit(0)
"""


@dataclass
class Client:
    """One PyAV viewer process (``CLIENT_SCRIPT``), started ahead so its imports are not timed."""

    url: str
    options: dict[str, str]
    started: float = 0.0
    opened: float | None = None
    decoded: float | None = None
    error: str | None = None
    proc: subprocess.Popen[str] | None = None

    def prepare(self) -> Client:
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, self.url, json.dumps(self.options)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the client did not start")
        return self

    def start(self) -> Client:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self

    def wait_decoded(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            out = json.loads(line)
        except ValueError:
            self.error = f"client said {line!r}"
            return
        self.started = out["started"]
        self.opened = out.get("opened")
        self.decoded = out.get("decoded")
        self.error = out.get("error") or (None if self.decoded else "no picture")

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _url(platform: PlatformProcess, output: str, channel_id: str) -> tuple[str, dict[str, str]]:
    if output == "rtsp":
        return (f"rtsp://127.0.0.1:{platform.rtsp_port}/live/{channel_id}?token={TOKEN}",
                {**LOW_PROBE, "rtsp_transport": "tcp"})
    return f"http://127.0.0.1:{platform.http_port}/live/{channel_id}.flv?token={TOKEN}", dict(LOW_PROBE)


def _stream(platform: PlatformProcess, channel_id: str) -> dict[str, Any] | None:
    status, body = platform.api("GET", "/streams")
    if status != 200:
        return None
    for item in body["items"]:
        if item["channel_id"] == channel_id:
            return dict(item)
    return None


def one_round(platform: PlatformProcess, output: str, channel_id: str, rng: random.Random) -> dict[str, Any]:
    url, options = _url(platform, output, channel_id)
    cold, second = Client(url, options).prepare(), Client(url, options).prepare()
    t_req = time.time()
    status, body = platform.api("POST", f"/channels/{channel_id}/play")
    t_ans = time.time()
    if status != 200:
        raise RuntimeError(f"play answered {status}: {body}")
    cold.start().wait_decoded()
    time.sleep(rng.uniform(0.3, 1.9))
    second.start().wait_decoded()
    stream = _stream(platform, channel_id)
    for client in (second, cold):
        client.close()
    platform.api("POST", f"/channels/{channel_id}/stop")
    wait_for(lambda: _stream(platform, channel_id) is None, 10, "the stream to end", interval=0.05)
    timeline = stream["timeline"] if stream else {}
    viewers = [v for v in timeline.get("viewers", []) if v["output"] == output]
    ms = 1000.0
    return {
        "output": output,
        "request": t_req * ms, "answer": t_ans * ms,
        "invite_sent": timeline.get("invite_sent_ms"), "answered": timeline.get("answered_ms"),
        "first_rtp": timeline.get("first_rtp_ms"), "first_keyframe": timeline.get("first_keyframe_ms"),
        "cold": _client(cold, viewers[0] if viewers else None),
        "second": _client(second, viewers[1] if len(viewers) > 1 else None),
    }


def _client(client: Client, viewer: dict[str, Any] | None) -> dict[str, Any]:
    ms = 1000.0
    return {
        "request": client.started * ms,
        "opened": client.opened * ms if client.opened else None,
        "decoded": client.decoded * ms if client.decoded else None,
        "attached": viewer["attached_ms"] if viewer else None,
        "first_out": viewer["first_frame_ms"] if viewer else None,
        "error": client.error,
    }


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


COLD_STEPS = [
    ("request->answer", "request", "answer"),
    ("request->INVITE", "request", "invite_sent"),
    ("INVITE->200", "invite_sent", "answered"),
    ("200->first RTP", "answered", "first_rtp"),
    ("RTP->keyframe", "first_rtp", "first_keyframe"),
    ("answer->attach", "answer", "c.attached"),
    ("attach->out", "c.attached", "c.first_out"),
    ("RTP->out", "first_rtp", "c.first_out"),
    ("out->decoded", "c.first_out", "c.decoded"),
    ("RTP->decoded", "first_rtp", "c.decoded"),
    ("request->decoded", "request", "c.decoded"),
]
SECOND_STEPS = [
    ("request->attach", "c.request", "c.attached"),
    ("attach->out", "c.attached", "c.first_out"),
    ("out->decoded", "c.first_out", "c.decoded"),
    ("request->decoded", "c.request", "c.decoded"),
]


def _get(r: dict[str, Any], viewer: str, key: str) -> float | None:
    if key.startswith("c."):
        value = r[viewer][key[2:]]
    else:
        value = r[key]
    return None if value is None else float(value)


def table(results: list[dict[str, Any]], output: str, viewer: str) -> str:
    steps = COLD_STEPS if viewer == "cold" else SECOND_STEPS
    rounds = [r for r in results if r["output"] == output]
    errors = [r[viewer]["error"] for r in rounds if r[viewer]["error"]]
    lines = [f"{output}, {'first (cold) viewer' if viewer == 'cold' else 'second viewer'}: "
             f"{len(rounds)} rounds, ms" + (f"; errors: {errors}" if errors else ""),
             f"  {'step':<18}{'median':>9}{'max':>9}{'min':>9}"]
    for name, a, b in steps:
        spans = [s for r in rounds if (s := _span(_get(r, viewer, a), _get(r, viewer, b))) is not None]
        if not spans:
            lines.append(f"  {name:<18}{'-':>9}{'-':>9}{'-':>9}")
            continue
        lines.append(f"  {name:<18}{statistics.median(spans):9.1f}{max(spans):9.1f}{min(spans):9.1f}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--outputs", nargs="+", default=["rtsp", "http-flv"], choices=["rtsp", "http-flv"])
    ap.add_argument("--json", metavar="FILE", help="write every round's timestamps here")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra platform setting")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(f"load: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gbp-ttff-") as tmp:
        env = {
            "GBP_LOG_LEVEL": "warn",
            "GBP_MEDIA_RTP_PORT_MIN": str(PORT_BASE),
            "GBP_MEDIA_RTP_PORT_MAX": str(PORT_BASE + 200),
            **dict(e.split("=", 1) for e in args.env),
        }
        platform = PlatformProcess(Path(tmp) / "data", env=env).start()
        sim = SimulatorProcess(platform, Path(tmp) / "sim.log", "--devices", "1", "--channels", "1",
                               "--first-id", DEVICE_ID)
        results: list[dict[str, Any]] = []
        try:
            channel_id = platform.first_channel(DEVICE_ID)
            one_round(platform, args.outputs[0], channel_id, rng)  # warm-up: imports, first connections
            for i in range(args.rounds):
                for output in args.outputs:
                    results.append(one_round(platform, output, channel_id, rng))
                print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            sim.kill()
            platform.stop()
    print(f"load: {os.getloadavg()}")
    for output in args.outputs:
        print(table(results, output, "cold"))
        print(table(results, output, "second"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

