"""The main process's side of media workers (gbplatform/sessions/media_workers.py), in memory.

A fake worker collects what a ``RemoteReceiver`` would send; records from the
worker are handed to ``RemoteReceiver.received`` as the channel would. The real
processes are tested in tests/integration/test_media_workers.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from gbplatform.sessions.media_workers import (
    CLOSE_TIMEOUT,
    WORKER_EXITED,
    MediaWorkers,
    NoMediaWorker,
    RemoteIngest,
    RemoteReceiver,
)
from media import workerwire as wire
from media.frame import Codec, Frame
from media.pipeline import FrameDispatcher
from media.ports import PortLease

KEY = Frame(Codec.H264, b"\x00\x00\x00\x01\x65\x88", 3600, 3600, True, 0xE0)


class FakeWorker:
    def __init__(self, index: int = 0) -> None:
        self.index = index
        self.streams: dict[int, Any] = {}
        self.sent: list[tuple[wire.Message, list[int]]] = []
        self.alive = True
        self._broken = False

    def send(self, msg: wire.Message, fds: list[int] | None = None) -> None:
        self.sent.append((msg, list(fds or ())))


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[Frame, float]] = []

    def input_frame(self, frame: Frame, now: float = 0.0) -> None:
        self.frames.append((frame, now))


def make(mode: str = "tcp-active", workers: int = 2) -> tuple[MediaWorkers, list[FakeWorker], RemoteIngest,
                                                                RemoteReceiver, list[str]]:
    clock = Clock()
    mw = MediaWorkers(clock, workers, no_rtp_timeout=7.0, rcvbuf=65536)
    fakes = [FakeWorker(i) for i in range(workers)]
    mw.workers = fakes  # type: ignore[assignment]
    ingest = mw.ingest(FrameDispatcher(), ssrc=1234)
    timeouts: list[str] = []
    receiver = mw.receiver(ingest, PortLease(30000, "34020000001310000001"), mode=mode, on_timeout=timeouts.append)
    return mw, fakes, ingest, receiver, timeouts


def test_start_opens_on_the_least_busy_worker_and_changes_follow() -> None:
    mw, fakes, ingest, receiver, _ = make()
    fakes[0].streams[99] = object()
    receiver.start()
    assert receiver.worker is fakes[1] and fakes[1].streams == {receiver.ident: receiver}
    assert fakes[1].sent == [(wire.Open(receiver.ident, "tcp-active", 1234, 7.0, 65536, 0, "34020000001310000001"),
                              [])]
    ingest.rekey(5678)  # the device answered another y=
    ingest.ssrc = None  # no y= at all: the first packet's
    ingest.set_payload_formats({98: "H264"})
    assert [m for m, _ in fakes[1].sent[1:]] == [
        wire.Rekey(receiver.ident, 5678), wire.Rekey(receiver.ident, None),
        wire.PayloadFormats(receiver.ident, {98: "H264"})]


def test_no_live_worker_is_a_503() -> None:
    _, fakes, _, receiver, _ = make()
    for f in fakes:
        f.alive = False
    with pytest.raises(NoMediaWorker):
        receiver.start()


def test_frames_and_stats_reach_what_live_streams_reads() -> None:
    _, _, ingest, receiver, _ = make()
    receiver.start()
    sink = Sink()
    ingest.dispatcher = sink  # type: ignore[assignment]  # LiveStreams' first-keyframe shim sits here
    receiver.received(wire.FrameMessage(receiver.ident, KEY, 12.5))
    assert sink.frames == [(KEY, 12.5)] and ingest.stats.frames == 1
    receiver.received(wire.Stats(receiver.ident, packets=40, bytes=52000, foreign_ssrc=3, first_packet_at=11.0,
                                 last_packet_at=12.4, lost=2, jitter=900.0, stream_types=((0xE0, 0x1B),),
                                 depacketizers=(Codec.H265,)))
    assert (ingest.stats.packets, ingest.stats.bytes, ingest.stats.foreign_ssrc) == (40, 52000, 3)
    assert (ingest.stats.first_packet_at, ingest.stats.frames) == (11.0, 1)  # frames: counted here, not mirrored
    assert ingest.reorder.stats.lost == 2 and ingest.reorder.stats.jitter_seconds == 0.01
    assert ingest.demuxer.stream_types == {0xE0: 0x1B} and Codec.H265 in ingest.depacketizers


def test_connect_fires_on_connected_and_fails_with_the_reason() -> None:
    _, fakes, _, receiver, _ = make()
    receiver.start()
    d = receiver.connect("192.0.2.1", 6000)
    assert fakes[0].sent[-1][0] == wire.Connect(receiver.ident, "192.0.2.1", 6000)
    got: list[object] = []
    d.addCallback(got.append)
    receiver.received(wire.Connected(receiver.ident))
    assert got == [None]
    _, _, _, receiver2, _ = make()
    receiver2.start()
    failed: list[str] = []
    receiver2.connect("192.0.2.1", 6000).addErrback(lambda f: failed.append(f.getErrorMessage()))
    receiver2.received(wire.ConnectFailed(receiver2.ident, "Connection refused"))
    assert failed and "Connection refused" in failed[0]


def test_stop_waits_for_closed_or_gives_up_after_the_timeout() -> None:
    mw, fakes, _, receiver, timeouts = make()
    receiver.start()
    done: list[object] = []
    receiver.stop().addCallback(done.append)
    assert fakes[0].sent[-1][0] == wire.Close(receiver.ident) and done == []
    receiver.received(wire.Closed(receiver.ident))
    assert done == [None] and fakes[0].streams == {}
    receiver.stop().addCallback(done.append)  # idempotent
    assert done == [None, None]
    _, fakes2, _, silent, _ = make()
    silent.start()
    late: list[object] = []
    silent.stop().addCallback(late.append)
    clock: Clock = silent.workers.reactor
    clock.advance(CLOSE_TIMEOUT)
    assert late == [None] and timeouts == []


def test_worker_timeout_and_death_end_the_stream_once() -> None:
    mw, fakes, _, receiver, timeouts = make()
    receiver.start()
    receiver.received(wire.Timeout(receiver.ident, "no RTP for 10 s"))
    assert timeouts == ["no RTP for 10 s"]
    _, _, _, r2, timeouts2 = make()
    r2.start()
    r2.worker_lost()
    r2.worker_lost()
    assert timeouts2 == [WORKER_EXITED]
    stopped: list[object] = []
    r2.stop().addCallback(stopped.append)
    assert stopped == [None]


def test_platform_stopping_does_not_end_streams_through_the_timeout() -> None:
    mw, _, _, receiver, timeouts = make()
    receiver.start()
    mw.stopping = True
    receiver.worker_lost()
    assert timeouts == []


def test_media_workers_setting_takes_a_count_or_auto() -> None:
    import os

    from gbplatform.app.config import ConfigError, load_config

    assert load_config(None, {}).media.workers == 0
    assert load_config(None, {"GBP_MEDIA_WORKERS": "2"}).media.workers == 2
    assert load_config(None, {"GBP_MEDIA_WORKERS": "auto"}).media.workers == (os.cpu_count() or 1)
    for bad in ("-1", "257", "two"):
        with pytest.raises(ConfigError, match=r'media.workers: expected an integer 0-256 or "auto"'):
            load_config(None, {"GBP_MEDIA_WORKERS": bad})


def test_a_platform_with_media_workers_spawns_them_as_a_service(tmp_path: Any) -> None:
    from gbplatform.app.config import load_config
    from gbplatform.app.service import make_service
    from tests.unit.test_devices import _Reactor

    config = load_config(None, {"GBP_MEDIA_WORKERS": "2", "GBP_STORAGE_DATA_DIR": str(tmp_path)})
    top = make_service(config, _Reactor())  # nothing started: no process spawned
    mw = top.getServiceNamed("media-workers")
    assert isinstance(mw, MediaWorkers) and mw.count == 2
    top.platform.db.dispose()  # type: ignore[attr-defined]
    single = load_config(None, {"GBP_MEDIA_WORKERS": "2", "GBP_MEDIA_SINGLE_PORT": "10000",
                                "GBP_STORAGE_DATA_DIR": str(tmp_path)})
    top = make_service(single, _Reactor())
    names = [s.name for s in top]
    assert "media-workers" not in names and "rtp-single-port" in names
    top.platform.db.dispose()  # type: ignore[attr-defined]
