"""Recording benchmark: N 4 Mbit/s streams recorded at once through the real write pipeline.

Run by hand (not part of the test suite):

    python benchmarks/record.py --streams 50 --seconds 20            # paced: 25 fps per stream
    python benchmarks/record.py --streams 50 --seconds 20 --flat-out  # as fast as the pipeline goes
    python benchmarks/record.py --writers 2 ...                       # two disks (writer threads)

What it does, in one process:
1. the capture (/work/shared/captures, H.264 1080p 25 fps, ~4 Mbit/s) goes through the real
   receive path (RTP -> PS demux -> frames) once;
2. N ``RecorderSink``s (one per stream, as the platform attaches them) get those frames from the
   main thread, which plays the reactor: paced at 25 fps per stream (every stream's frame for a
   tick at once), or in ``--flat-out`` mode as fast as the write queue takes them (waiting, not
   dropping, when it is over half full, to find the pipeline's ceiling);
3. one ``DiskWriter`` thread per ``--writers`` muxes MPEG-TS segments (``--segment`` s) into a
   temporary directory (``--dir`` to pick the disk) and fsyncs each closed segment.

Prints: MB/s written, process CPU (user+sys, % of one core), the feeding thread's share, peak
queue depth, dropped frames, segments closed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gbplatform.recording.writer import DiskWriter, SegmentClosed  # noqa: E402
from media.frame import Frame  # noqa: E402
from media.ingest import RtpIngest  # noqa: E402
from media.pipeline import FrameDispatcher  # noqa: E402
from tests.media_captures import udp_payloads  # noqa: E402

CAPTURE = Path("/work/shared/captures/zlm_ps_rtp_udp_1080p.pcap")
FPS = 25
TICK = 3600


class _Collect:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


def capture_frames() -> list[Frame]:
    sink = _Collect()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    now = 0.0
    for _, payload in udp_payloads(CAPTURE):
        ingest.datagram(payload, now)
        now += 0.0025
    first = next(i for i, f in enumerate(sink.frames) if f.keyframe)
    return sink.frames[first:]


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--segment", type=float, default=10.0)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--queue-mb", type=int, default=64)
    ap.add_argument("--flat-out", action="store_true")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = ap.parse_args()

    clip = capture_frames()
    span = len(clip)
    clip_bytes = sum(len(f.data) for f in clip)
    print(f"clip: {span} frames, {clip_bytes * 8 / (span / FPS) / 1e6:.2f} Mbit/s")
    root = Path(tempfile.mkdtemp(prefix="gbrec-", dir=args.dir))
    closed: list[SegmentClosed] = []
    lock = threading.Lock()

    def report(event: object) -> None:
        if isinstance(event, SegmentClosed):
            with lock:
                closed.append(event)

    writers = [DiskWriter(root / f"disk{i}", name=f"disk{i}", segment_seconds=args.segment,
                          queue_bytes=args.queue_mb * 1024 * 1024, report=report) for i in range(args.writers)]
    for w in writers:
        w.start()
    sinks = [writers[i % len(writers)].sink(f"3402000000131{i:07d}", time.time) for i in range(args.streams)]
    peak = [0] * len(writers)
    frames_total = int(args.seconds * FPS)
    cpu0, wall0 = cpu(), time.monotonic()
    feed_cpu = 0.0
    for n in range(frames_total):
        loop, i = divmod(n, span)
        src = clip[i]
        # Timestamps run on across loops of the clip, as a camera's would.
        frame = Frame(src.codec, src.data, src.pts + loop * span * TICK, src.dts + loop * span * TICK,
                      src.keyframe, src.stream_id)
        t0 = time.thread_time()
        for sink in sinks:
            sink.input_frame(frame)
        feed_cpu += time.thread_time() - t0
        for k, w in enumerate(writers):
            peak[k] = max(peak[k], w.queue.bytes)
        if args.flat_out:
            for w in writers:
                while w.queue.bytes > w.queue.limit // 2:
                    time.sleep(0.001)
        else:
            due = wall0 + (n + 1) / FPS
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    fed = time.monotonic() - wall0
    for w in writers:
        w.stop(60)
    elapsed = time.monotonic() - wall0
    used = cpu() - cpu0
    written = sum(w.written_bytes for w in writers)
    dropped = sum(w.dropped_frames for w in writers)
    print(f"streams {args.streams}, writers {args.writers}, {'flat-out' if args.flat_out else 'paced 25 fps'}, "
          f"{args.seconds:g} s of video each")
    print(f"fed in {fed:.1f} s, all closed after {elapsed:.1f} s")
    print(f"written: {written / 1e6:.1f} MB, {written / elapsed / 1e6:.1f} MB/s "
          f"({written * 8 / elapsed / 1e6:.0f} Mbit/s)")
    print(f"process CPU: {used:.1f} s = {100 * used / elapsed:.0f} % of one core; feeding (reactor side): "
          f"{feed_cpu:.2f} s = {1e6 * feed_cpu / max(1, frames_total * args.streams):.1f} us per frame")
    print(f"peak queue: {', '.join(f'{p / 1e6:.1f} MB' for p in peak)} of {args.queue_mb} MB; "
          f"dropped frames: {dropped}; segments closed: {len(closed)}")
    shutil.rmtree(root, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
