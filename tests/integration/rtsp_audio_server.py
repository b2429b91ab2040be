"""A real RTSP server on 127.0.0.1 playing captured video with synthetic audio (test helper).

``python -m tests.integration.rtsp_audio_server PORT SHARED_DIR {g711a,g711u,aac}``
serves ``rtsp://127.0.0.1:PORT/live/CH?token=t`` with the 1080p H.264 of
ZLMediaKit's capture, looped at real time, and 40 ms G.711 blocks or ADTS
AAC next to it, through the platform's own ``RtspFactory``. It prints
``READY`` once listening and stops by itself after ``LIFETIME`` seconds.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet import task

from media.frame import Codec, Frame
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.rtsp_server import RtspFactory
from tests.media_audio import aac_frames, g711_frames, merge_by_dts
from tests.media_captures import udp_payloads

CHANNEL = "34020000001310000001"
TOKEN = "t"
LIFETIME = 120.0
CLOCK = 90_000

reactor: Any = _reactor


class _Collector:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def input_frame(self, frame: Frame) -> None:
        self.frames.append(frame)


class _Stream:
    def __init__(self) -> None:
        self.dispatcher = FrameDispatcher()
        self.on_closed: list[Any] = []


class _Source:
    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    async def open(self, channel_id: str) -> _Stream:
        from media.rtsp import RtspError

        if channel_id != CHANNEL:
            raise RtspError(404, f"no channel {channel_id}")
        return self.stream

    def attach(self, stream: _Stream, sink: Any) -> None:
        stream.dispatcher.add_sink(sink)

    def detach(self, stream: _Stream, sink: Any) -> None:
        stream.dispatcher.remove_sink(sink)


def clip(shared: Path, audio: str) -> tuple[list[Frame], int]:
    sink = _Collector()
    dispatcher = FrameDispatcher()
    dispatcher.add_sink(sink)
    ingest = RtpIngest(dispatcher)
    for _, payload in udp_payloads(shared / "captures" / "zlm_ps_rtp_udp_1080p.pcap"):
        ingest.datagram(payload, 0.0)
    ingest.close(1.0)
    video = sink.frames
    period = video[-1].pts + 3600 - video[0].pts
    seconds = period / CLOCK
    if audio == "aac":
        sound = aac_frames(seconds, video[0].pts)
    else:
        sound = g711_frames(Codec.G711A if audio == "g711a" else Codec.G711U, seconds, video[0].pts)
    return merge_by_dts(video, sound), period


def main() -> None:
    port, shared, audio = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    frames, period = clip(shared, audio)
    stream = _Stream()
    start = time.monotonic()
    origin = frames[0].dts
    state = {"i": 0, "loop": 0}

    def pump() -> None:
        now = (time.monotonic() - start) * CLOCK
        while True:
            f = frames[state["i"]]
            shift = state["loop"] * period
            if f.dts - origin + shift > now:
                return
            stream.dispatcher.input_frame(
                Frame(f.codec, f.data, f.pts + shift, f.dts + shift, f.keyframe, f.stream_id))
            state["i"] += 1
            if state["i"] == len(frames):
                state["i"], state["loop"] = 0, state["loop"] + 1

    task.LoopingCall(pump).start(0.01)
    factory = RtspFactory(_Source(stream), reactor=reactor, token=TOKEN, rng=random.Random(1),
                          listen_udp=lambda p, proto: reactor.listenUDP(p, proto, interface="127.0.0.1"))
    reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.callLater(LIFETIME, reactor.stop)
    print("READY", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
