"""The main process's side of media workers (gbplatform/sessions/media_workers.py), in memory.

A fake worker collects what a ``RemoteReceiver`` would send; records from the
worker are handed to ``RemoteReceiver.received`` as the channel would. The real
processes are tested in tests/integration/test_media_workers.py.
"""

from __future__ import annotations

import os
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


# -- the supervisor's failure paths, with a fake process and a real channel ----------------------------


class FakeProcess:
    def __init__(self, proto: Any, pid: int) -> None:
        self.proto = proto
        self.pid = pid
        self.signals: list[str] = []
        self.stdin_closed = False

    def closeStdin(self) -> None:  # noqa: N802 - Twisted API
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:  # noqa: N802 - Twisted API
        self.signals.append(name)
        if name == "KILL":
            raise OSError("process already exited")  # ProcessExitedAlready and the like: logged


class SpawnReactor(Clock):
    """``spawnProcess`` records the child and keeps its end of the channel (the test plays the worker)."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: list[Any] = []
        self.spawned: list[tuple[FakeProcess, list[str], Any]] = []
        self.fail_spawn = False

    def addReader(self, r: Any) -> None:  # noqa: N802 - Twisted API
        self.readers.append(r)

    def removeReader(self, r: Any) -> None:  # noqa: N802 - Twisted API
        self.readers.remove(r)

    def spawnProcess(self, proto: Any, exe: str, args: list[str], env: Any = None,  # noqa: N802 - Twisted API
                     childFDs: Any = None) -> FakeProcess:  # noqa: N803 - Twisted API
        if self.fail_spawn:
            raise OSError("fork failed")
        import socket

        theirs = socket.socket(fileno=os.dup(childFDs[3]))
        proc = FakeProcess(proto, 1000 + len(self.spawned))
        proto.makeConnection(proc)
        self.spawned.append((proc, args, theirs))
        return proc


def started(count: int = 1) -> tuple[MediaWorkers, SpawnReactor]:
    r = SpawnReactor()
    mw = MediaWorkers(r, count, host="127.0.0.1", no_rtp_timeout=5.0, rcvbuf=65536)
    mw.startService()
    return mw, r


def close_all(r: SpawnReactor, mw: MediaWorkers) -> None:
    for _, _, sock in r.spawned:
        sock.close()
    for w in mw.workers:
        w._close_channel()  # the main process's ends: no descriptor outlives the test


def exit_child(r: SpawnReactor, i: int, code: int | None = None) -> None:
    from twisted.internet.error import ProcessDone, ProcessTerminated
    from twisted.python.failure import Failure

    proc = r.spawned[i][0]
    reason = ProcessDone(0) if code == 0 else ProcessTerminated(exitCode=code, signal=None if code else 15)
    proc.proto.childDataReceived(2, b"info\tgbplatform.media_worker\tlast words")  # no newline: relayed at exit
    proc.proto.processEnded(Failure(reason))


class Events:
    def __init__(self) -> None:
        from twisted.logger import globalLogPublisher

        self.events: list[dict[str, Any]] = []
        self.pub = globalLogPublisher
        self.pub.addObserver(self.events.append)

    def close(self) -> None:
        self.pub.removeObserver(self.events.append)

    def texts(self) -> list[tuple[str, str, str]]:
        from twisted.logger import formatEvent

        return [(e["log_level"].name, e.get("log_namespace", ""), formatEvent(e)) for e in self.events]


def test_spawn_passes_the_channel_and_options() -> None:
    mw, r = started(2)
    try:
        p0, args, _ = r.spawned[0]
        assert args[1:3] == ["-m", "gbplatform.sessions.worker_process"] and "--fd" in args and "127.0.0.1" in args
        assert p0.stdin_closed and mw.pids == [1000, 1001] and len(r.readers) == 2
        assert r.readers[0].logPrefix() == "media worker 0"
    finally:
        close_all(r, mw)


def test_udp_and_tcp_passive_sockets_travel_with_their_open() -> None:
    import socket

    mw, r = started()
    try:
        sink = Sink()
        ingest = mw.ingest(sink, ssrc=None)  # type: ignore[arg-type]
        receiver = mw.receiver(ingest, PortLease(0, "owner-udp"), mode="udp")
        ingest.set_payload_formats({96: "PS"})  # before start: not sent yet
        receiver.start()
        worker_end = r.spawned[0][2]
        data, fds, _, _ = socket.recv_fds(worker_end, 65536, 4)
        decoder = wire.WireDecoder()
        (msg,) = decoder.feed(data)  # reading stops where the descriptors' record does
        assert isinstance(msg, wire.Open) and msg.mode == "udp" and msg.fds == 2 and len(fds) == 2
        with socket.socket(fileno=fds[0]) as rtp:
            assert rtp.getsockname()[1] == receiver.local_port
        os.close(fds[1])
        passive = mw.receiver(mw.ingest(FrameDispatcher()), PortLease(0, "owner-tcp"), mode="tcp-passive")
        passive.start()
        data, fds, _, _ = socket.recv_fds(worker_end, 65536, 4)
        formats, msg = decoder.feed(data)  # the formats differ from the default: sent after the Open
        assert formats == wire.PayloadFormats(receiver.ident, {96: "PS"})
        assert msg.mode == "tcp-passive" and len(fds) == 1  # type: ignore[union-attr]
        os.close(fds[0])
        # A port another program holds: CannotListenError for LiveStreams' retry.
        from twisted.internet.error import CannotListenError

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            busy = mw.receiver(mw.ingest(FrameDispatcher()), PortLease(taken.getsockname()[1], "o"), mode="udp")
            with pytest.raises(CannotListenError):
                busy.start()
        # Frames and records come back over the channel; late ones for a stopped stream are dropped.
        worker_end.sendall(wire.encode(wire.FrameMessage(receiver.ident, KEY, 3.0))
                           + wire.encode(wire.Stats(receiver.ident, packets=9)) + wire.encode(wire.Closed(999)))
        channel = r.readers[0]
        channel.doRead()
        assert sink.frames == [(KEY, 3.0)] and ingest.stats.packets == 9
    finally:
        close_all(r, mw)


def test_a_garbage_record_ends_the_streams_and_the_worker_is_respawned_with_backoff() -> None:
    from gbplatform.sessions.media_workers import KILL_AFTER, RESPAWN_MIN

    mw, r = started()
    events = Events()
    try:
        timeouts: list[str] = []
        receiver = mw.receiver(mw.ingest(FrameDispatcher()), PortLease(0, "o"), mode="tcp-active",
                               on_timeout=timeouts.append)
        receiver.start()
        connecting = receiver.connect("192.0.2.1", 5000)
        failed: list[str] = []
        connecting.addErrback(lambda f: failed.append(f.getErrorMessage()))
        proc, _, worker_end = r.spawned[0]
        worker_end.sendall(b"\x00\x00\x00\x00")  # record length 0
        r.readers[0].doRead()
        assert timeouts == [WORKER_EXITED] and failed and WORKER_EXITED in failed[0]
        assert proc.signals == ["TERM"] and r.readers == []
        with pytest.raises(NoMediaWorker):
            mw.pick()
        r.advance(KILL_AFTER)
        assert proc.signals == ["TERM", "KILL"]  # the KILL's error is only logged
        exit_child(r, 0, code=None)
        assert any("exited" in t for _, _, t in events.texts())
        r.advance(RESPAWN_MIN)
        assert len(r.spawned) == 2 and mw.pick() is mw.workers[0]
        # Dying again at once doubles the wait.
        r.spawned[1][2].close()
        r.readers[0].doRead()  # EOF: "channel closed"
        exit_child(r, 1, code=1)
        r.advance(RESPAWN_MIN)
        assert len(r.spawned) == 2
        r.advance(RESPAWN_MIN)
        assert len(r.spawned) == 3
        assert any("channel closed" in t for _, _, t in events.texts())
    finally:
        events.close()
        close_all(r, mw)


def test_a_worker_exit_ends_its_streams_and_a_failed_respawn_is_retried() -> None:
    from gbplatform.sessions.media_workers import RESPAWN_MAX, RESPAWN_MIN

    mw, r = started()
    events = Events()
    try:
        timeouts: list[str] = []
        receiver = mw.receiver(mw.ingest(FrameDispatcher()), PortLease(0, "o"), mode="tcp-active",
                               on_timeout=timeouts.append)
        receiver.start()
        broken_handler = mw.receiver(mw.ingest(FrameDispatcher()), PortLease(0, "o2"), mode="tcp-active",
                                     on_timeout=lambda reason: 1 / 0)
        broken_handler.start()
        exit_child(r, 0, code=0)
        assert timeouts == [WORKER_EXITED]
        assert any(lvl == "critical" or "handler" in t for lvl, _, t in events.texts())
        r.fail_spawn = True
        r.advance(RESPAWN_MIN)
        assert any("respawning media worker 0 failed" in t for _, _, t in events.texts())
        r.fail_spawn = False
        r.advance(RESPAWN_MAX)
        assert len(r.spawned) == 2
        # A worker that lived STABLE_AFTER seconds resets the backoff.
        from gbplatform.sessions.media_workers import STABLE_AFTER

        r.advance(STABLE_AFTER)
        exit_child(r, 1, code=0)
        assert mw._backoff[0] == 0.0
    finally:
        events.close()
        close_all(r, mw)


def test_stop_service_closes_channels_and_waits_for_the_exits() -> None:
    from gbplatform.sessions.media_workers import RESPAWN_MIN

    mw, r = started(2)
    try:
        exit_child(r, 1, code=1)  # a respawn pending: cancelled by the stop
        done: list[object] = []
        mw.stopService().addCallback(done.append)
        assert r.spawned[0][0].signals == ["TERM"] and done == []
        assert r.spawned[0][2].recv(10) == b""  # the worker sees EOF
        exit_child(r, 0, code=0)
        assert done == [[None]]
        r.advance(RESPAWN_MIN * 10)
        assert len(r.spawned) == 2
    finally:
        close_all(r, mw)


def test_a_worker_that_does_not_read_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from gbplatform.sessions import media_workers as mwmod

    mw, r = started()
    try:
        worker = mw.workers[0]
        monkeypatch.setattr(mwmod, "SEND_QUEUE_LIMIT", 8 * 1024 * 1024)
        big = wire.Open(1, "tcp-active", None, 5.0, 1, 0, "x" * 60000)
        sent = 0
        while worker._retry is None:
            worker.send(big)
            sent += 1
        assert worker._queue and r.getDelayedCalls()
        r.spawned[0][2].setblocking(False)
        while True:  # the worker reads: the retry sends the rest
            try:
                r.spawned[0][2].recv(1 << 20)
            except BlockingIOError:
                break
        r.advance(mwmod.SEND_RETRY)
        monkeypatch.setattr(mwmod, "SEND_QUEUE_LIMIT", 0)
        while worker.alive and not worker._broken:
            worker.send(big)
        assert worker._broken and r.spawned[0][0].signals == ["TERM"]
        worker.send(big)  # ignored now
    finally:
        close_all(r, mw)


def test_a_write_to_a_closed_channel_breaks_the_worker() -> None:
    mw, r = started()
    try:
        r.spawned[0][2].close()
        mw.workers[0].send(wire.Close(1), [0])  # the dup'd descriptor is closed with the queue
        assert mw.workers[0]._broken and mw.workers[0].sock is None
    finally:
        close_all(r, mw)


def test_stderr_lines_are_relayed_at_their_level() -> None:
    mw, r = started()
    events = Events()
    try:
        proto = r.spawned[0][0].proto
        proto.childDataReceived(2, b"debug\tmedia.rtp\tquiet\nerror\tmedia.ps\tbad\\npacket\\tx\\\\y\\q\n")
        proto.childDataReceived(2, b"\nTraceback without a level\ncritical\t\tno namespace\n")
        proto.childDataReceived(1, b"x" * 70000)  # a runaway line is relayed cut
        got = [(lvl, ns, t) for lvl, ns, t in events.texts() if t.startswith("media worker 0:")]
        assert got[0] == ("debug", "media.rtp", "media worker 0: quiet")
        assert got[1] == ("error", "media.ps", "media worker 0: bad\npacket\tx\\y\\q")
        assert got[2] == ("warn", "gbplatform.media_worker", "media worker 0: Traceback without a level")
        assert got[3] == ("critical", "gbplatform.media_worker", "media worker 0: no namespace")
        assert len(got[4][2]) > 70000
        r.readers[0].connectionLost(None)
        assert mw.workers[0]._broken
    finally:
        events.close()
        close_all(r, mw)
