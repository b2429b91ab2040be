"""The media worker program (gbplatform/sessions/worker_process.py), run in the test process.

A ``MediaWorker`` reads one end of a ``socketpair(AF_UNIX, SOCK_STREAM)`` on
the real reactor; the test plays the main process on the other end with
``media.workerwire`` (records out, SCM_RIGHTS for the stream's sockets,
unix(7)) and checks what comes back. ``channel_lost`` stops the reactor in the
real program: here the worker gets a reactor proxy whose ``stop`` only records
the call, so the trial reactor goes on. The channel writer and the logging
set-up are tested without a reactor (``Clock``, a memory stream).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import Clock, LoopingCall
from twisted.python.failure import Failure
from twisted.trial import unittest
from zope.interface import implementer

from gbplatform.sessions import worker_process as wp
from media import workerwire as wire
from media.frame import Codec, Frame
from tests.conftest import locate_shared_dir
from tests.media_captures import udp_payloads

R: Any = reactor
OWNER = "34020000001310000001"
WAIT = 20.0  # bounded waits (trial's timeout is the backstop)


def capture_payloads() -> list[bytes]:
    shared = locate_shared_dir()
    if shared is None:
        raise unittest.SkipTest("shared captures folder not found")
    return [p for _, p in udp_payloads(shared / "captures" / "zlm_ps_rtp_udp_1080p.pcap")]


class WorkerReactor:
    """The real reactor, but ``stop`` (the worker's exit) is only recorded."""

    running = True

    def __init__(self) -> None:
        self.stopped: defer.Deferred[None] = defer.Deferred()

    def stop(self) -> None:
        self.stopped.callback(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(R, name)


@implementer(IReadDescriptor)
class MainEnd:
    """The main process's end of the channel, for the test: records out, messages in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.decoder = wire.WireDecoder()
        self.messages: list[wire.Message] = []
        self.eof = False
        self._waiters: list[tuple[Callable[[], bool], defer.Deferred[None]]] = []
        R.addReader(self)

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 - Twisted API
        return "test main end"

    def doRead(self) -> None:  # noqa: N802 - Twisted API
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                R.removeReader(self)
                break
            self.messages.extend(self.decoder.feed(data))
        self._check()

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 - Twisted API
        self.eof = True

    def _check(self) -> None:
        for pred, d in list(self._waiters):
            if pred():
                self._waiters.remove((pred, d))
                d.callback(None)

    def until(self, pred: Callable[[], bool], what: str) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        if pred():
            d.callback(None)
            return d
        self._waiters.append((pred, d))
        # Some conditions are the worker's state, not a record: looked at each reactor tick too.
        poll = LoopingCall(self._check)
        poll.start(0.01, now=False)

        def done(result: Any) -> Any:
            if poll.running:
                poll.stop()
            return result

        return d.addTimeout(WAIT, R, onTimeoutCancel=lambda _r, _t: self._timed_out(what)).addBoth(done)

    @staticmethod
    def _timed_out(what: str) -> None:
        raise AssertionError(f"timed out waiting for {what}")

    def send(self, msg: wire.Message, fds: list[int] | None = None) -> None:
        data = wire.encode(msg)
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.sendall(data)

    def of(self, kind: type, stream: int) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind) and getattr(m, "stream", None) == stream]

    def close(self) -> None:
        if not self.eof:
            R.removeReader(self)
            self.eof = True
        self.sock.close()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)


class WorkerCase(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.logs = Records()
        logger = logging.getLogger("gbplatform.media_worker")
        logger.addHandler(self.logs)
        old_level = logger.level
        logger.setLevel(logging.DEBUG)
        self.addCleanup(logger.setLevel, old_level)
        self.addCleanup(logger.removeHandler, self.logs)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.wr = WorkerReactor()
        self.worker = wp.MediaWorker(self.wr, drainer=None, host="127.0.0.1")
        R.adoptStreamConnection(theirs.fileno(), socket.AF_UNIX,
                                protocol.Factory.forProtocol(lambda: wp._Channel(self.worker)))
        theirs.close()
        self.worker.start()
        self.main = MainEnd(ours)
        self.addCleanup(self._end)

    @defer.inlineCallbacks
    def _end(self) -> Any:
        self.main.close()
        yield self.wr.stopped.addTimeout(WAIT, R)
        if self.worker._timer.running:
            self.worker._timer.stop()  # the real program exits here
        # Twisted's transport finishes closing in a later reactor turn.
        yield defer.succeed(None)

    # -- helpers ------------------------------------------------------------
    def open_udp(self, ident: int, rcvbuf: int = 8 * 1024 * 1024) -> tuple[int, list[socket.socket]]:
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        self.main.send(wire.Open(ident, "udp", None, 30.0, rcvbuf, 2, OWNER), [rtp.fileno(), rtcp.fileno()])
        rtp.close()
        rtcp.close()
        return port, []

    def pump(self, send: Callable[[bytes], Any], payloads: list[bytes], chunk: int = 50) -> defer.Deferred[None]:
        """Send ``payloads`` ``chunk`` at a time, one chunk per reactor turn (the worker reads between)."""
        done: defer.Deferred[None] = defer.Deferred()

        def step(i: int) -> None:
            for p in payloads[i:i + chunk]:
                send(p)
            if i + chunk < len(payloads):
                R.callLater(0.002, step, i + chunk)
            else:
                done.callback(None)

        R.callLater(0, step, 0)
        return done

    # -- tests --------------------------------------------------------------
    @defer.inlineCallbacks
    def test_udp_stream_frames_stats_changes_and_close(self) -> Any:
        payloads = capture_payloads()[:600]
        port, _ = self.open_udp(1)
        yield self.main.until(lambda: 1 in self.worker.streams, "the Open to be handled")
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(out.close)
        yield self.pump(lambda p: out.sendto(p, ("127.0.0.1", port)), payloads)
        yield self.main.until(
            lambda: any(m.frame.keyframe for m in self.main.of(wire.FrameMessage, 1))
            and any(m.packets > 0 for m in self.main.of(wire.Stats, 1)), "a keyframe and stats")
        frames = self.main.of(wire.FrameMessage, 1)
        assert all(m.frame.codec == Codec.H264 for m in frames)
        first = next(m for m in self.main.of(wire.Stats, 1) if m.packets > 0)
        assert first.first_packet_at is not None and first.stream_types

        s = self.worker.streams[1]
        self.main.send(wire.PayloadFormats(1, {96: "PS", 98: "H264"}))
        self.main.send(wire.Rekey(1, 0x12345678))
        yield self.main.until(lambda: s.ingest.ssrc == 0x12345678, "the Rekey")
        assert s.ingest.payload_formats[98] == "H264"
        self.main.send(wire.Rekey(1, None))
        yield self.main.until(lambda: s.ingest.ssrc is None, "the Rekey to None")

        self.main.send(wire.Close(1))
        yield self.main.until(lambda: bool(self.main.of(wire.Closed, 1)), "Closed")
        assert 1 not in self.worker.streams
        closed_at = self.main.messages.index(self.main.of(wire.Closed, 1)[0])
        assert isinstance(self.main.messages[closed_at - 1], wire.Stats)  # the final counters first
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.bind(("127.0.0.1", port))  # the worker's copy is closed
        again.close()

    @defer.inlineCallbacks
    def test_tcp_passive_stream_with_rfc4571_framing(self) -> Any:
        payloads = capture_payloads()[:400]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        self.main.send(wire.Open(2, "tcp-passive", None, 30.0, 1 << 20, 1, OWNER), [listener.fileno()])
        listener.close()
        yield self.main.until(lambda: 2 in self.worker.streams, "the Open")
        client = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(client.close)
        client.setblocking(False)  # the worker reads in this process: a blocking send could wait for ever
        pending = bytearray()

        def send(p: bytes) -> None:
            pending.extend(struct.pack("!H", len(p)) + p)  # RFC 4571 §2: a 16-bit length per RTP packet
            try:
                del pending[:client.send(pending)]
            except BlockingIOError:
                pass

        yield self.pump(send, payloads, chunk=20)
        for _ in range(1000):  # what the socket did not take yet, as the worker reads it
            if not pending:
                break
            yield deferLater(0.002)
            try:
                del pending[:client.send(pending)]
            except BlockingIOError:
                pass
        yield self.main.until(lambda: any(m.frame.keyframe for m in self.main.of(wire.FrameMessage, 2)),
                              "a keyframe over TCP")
        self.main.send(wire.Close(2))
        self.main.send(wire.Close(2))  # a second Close while closing is ignored
        yield self.main.until(lambda: bool(self.main.of(wire.Closed, 2)), "Closed")
        assert len(self.main.of(wire.Closed, 2)) == 1

    @defer.inlineCallbacks
    def test_tcp_active_connect_succeeds_or_reports_the_failure(self) -> Any:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        self.addCleanup(server.close)
        refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        refused.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        self.addCleanup(refused.close)
        self.main.send(wire.Open(3, "tcp-active", 1234, 30.0, 1 << 20, 0, OWNER))
        self.main.send(wire.Open(4, "tcp-active", None, 30.0, 1 << 20, 0, OWNER))
        self.main.send(wire.Connect(3, "127.0.0.1", server.getsockname()[1]))
        self.main.send(wire.Connect(4, "127.0.0.1", refused.getsockname()[1]))
        yield self.main.until(lambda: bool(self.main.of(wire.Connected, 3) and self.main.of(wire.ConnectFailed, 4)),
                              "Connected and ConnectFailed")
        assert self.main.of(wire.ConnectFailed, 4)[0].reason
        for ident in (3, 4):
            self.main.send(wire.Close(ident))
        yield self.main.until(lambda: bool(self.main.of(wire.Closed, 3) and self.main.of(wire.Closed, 4)), "Closed")

    @defer.inlineCallbacks
    def test_open_without_its_sockets_or_with_a_bad_one_is_a_timeout(self) -> Any:
        self.main.send(wire.Open(5, "udp", None, 30.0, 1 << 20, 2, OWNER))  # no descriptors came
        r, w = os.pipe()  # not a socket: cannot be adopted
        self.main.send(wire.Open(6, "udp", None, 30.0, 1 << 20, 1, OWNER), [r])
        os.close(r)
        os.close(w)
        yield self.main.until(lambda: bool(self.main.of(wire.Timeout, 5) and self.main.of(wire.Timeout, 6)),
                              "two Timeouts")
        assert "did not receive" in self.main.of(wire.Timeout, 5)[0].reason
        assert "cannot receive" in self.main.of(wire.Timeout, 6)[0].reason
        assert self.worker.streams == {} and self.worker.fds == []
        # Records for streams it does not have, and records only a worker sends, are ignored.
        self.main.send(wire.Rekey(77, None))
        self.main.send(wire.Closed(77))
        self.main.send(wire.Connected(5))
        self.main.send(wire.Open(8, "tcp-active", None, 30.0, 1 << 20, 0, OWNER))
        self.main.send(wire.Connected(8))
        yield self.main.until(lambda: 8 in self.worker.streams, "the last Open")
        assert "unexpected Connected from the platform ignored" in self.logs.text()
        assert "Rekey for unknown stream 77 ignored" in self.logs.text()

    @defer.inlineCallbacks
    def test_the_no_rtp_watchdog_sends_stats_then_timeout(self) -> Any:
        self.main.send(wire.Open(9, "tcp-active", None, 0.05, 1 << 20, 0, OWNER))
        yield self.main.until(lambda: bool(self.main.of(wire.Timeout, 9)), "the watchdog's Timeout")
        assert "no RTP" in self.main.of(wire.Timeout, 9)[0].reason
        assert self.main.of(wire.Stats, 9)

    @defer.inlineCallbacks
    def test_a_garbage_record_closes_the_channel_and_the_worker_stops(self) -> Any:
        port, _ = self.open_udp(10)
        yield self.main.until(lambda: 10 in self.worker.streams, "the Open")
        self.main.sock.sendall(struct.pack("!I", wire.MAX_RECORD + 1) + b"\x01")  # oversized length
        yield self.wr.stopped.addTimeout(WAIT, R)
        assert "bad record from the platform" in self.logs.text()
        assert "channel to the platform closed" in self.logs.text()
        assert self.worker.streams == {} and self.worker.channel is None
        yield self.main.until(lambda: self.main.eof, "the worker's end to close")
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.bind(("127.0.0.1", port))
        again.close()

    @defer.inlineCallbacks
    def test_an_unknown_record_type_closes_the_channel(self) -> Any:
        self.main.sock.sendall(struct.pack("!IB", 1, 99))
        yield self.wr.stopped.addTimeout(WAIT, R)
        assert "record type 99 unknown" in self.logs.text()

    @defer.inlineCallbacks
    def test_the_platform_closing_ends_every_stream_and_leaks_no_descriptor(self) -> Any:
        port, _ = self.open_udp(11)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        tcp_port = listener.getsockname()[1]
        self.main.send(wire.Open(12, "tcp-passive", None, 30.0, 1 << 20, 1, OWNER), [listener.fileno()])
        listener.close()
        spare = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # sent, never claimed by an Open
        self.main.send(wire.Rekey(99, None), [spare.fileno()])
        spare.close()
        yield self.main.until(lambda: 11 in self.worker.streams and 12 in self.worker.streams
                              and len(self.worker.fds) == 1, "the streams and the spare descriptor")
        (spare_fd,) = self.worker.fds
        self.main.close()
        yield self.wr.stopped.addTimeout(WAIT, R)
        assert self.worker.streams == {} and self.worker.fds == []
        with pytest.raises(OSError):
            os.fstat(spare_fd)  # the unclaimed descriptor was closed
        self.worker._timer.stop()
        yield deferLater(0.01)  # Twisted closes the channel's transport in a later turn
        for kind, p in ((socket.SOCK_DGRAM, port), (socket.SOCK_STREAM, tcp_port)):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", p))
            s.close()

    @defer.inlineCallbacks
    def test_frames_past_the_backlog_limit_are_dropped_and_logged(self) -> Any:
        self.patch(wp, "BACKLOG_LIMIT", 0)
        self.main.send(wire.Open(13, "tcp-active", None, 30.0, 1 << 20, 0, OWNER))
        yield self.main.until(lambda: 13 in self.worker.streams, "the Open")
        key = Frame(Codec.H264, b"\x00\x00\x00\x01\x65" + b"\x88" * 1000, 3600, 3600, True, 0xE0)
        for _ in range(5):
            self.worker.send_frame(13, key, 1.0)  # one queued; the rest wait past the limit
        assert self.worker.channel is not None and self.worker.channel.dropped == 4
        yield self.main.until(lambda: len(self.main.of(wire.FrameMessage, 13)) == 1, "the one frame")
        assert "dropping frames" in self.logs.text()
        yield self.main.until(lambda: "forwarding frames again after 4 dropped" in self.logs.text(), "the drain")
        self.worker.send_frame(13, Frame(Codec.H264, bytes(wire.MAX_RECORD), 0, 0, True, 0xE0), 1.0)
        assert "frame dropped" in self.logs.text()


def deferLater(delay: float) -> defer.Deferred[None]:  # noqa: N802 - as twisted.internet.task's
    from twisted.internet.task import deferLater as later

    return later(R, delay, lambda: None)


# -- the channel writer, with a Clock ----------------------------------------


class WriterReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.writers: list[Any] = []

    def addWriter(self, w: Any) -> None:  # noqa: N802 - Twisted API
        self.writers.append(w)

    def removeWriter(self, w: Any) -> None:  # noqa: N802 - Twisted API
        self.writers.remove(w)


def test_writer_waits_for_writability_when_the_socket_is_full(caplog: pytest.LogCaptureFixture) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    b.setblocking(False)
    r = WriterReactor()
    w = wp._ChannelWriter(r, a)
    assert w.logPrefix() == "media worker channel" and w.fileno() == a.fileno()
    chunk = b"x" * 65536
    for _ in range(200):  # ~13 MB: more than the socket's buffer
        w.write(chunk)
    r.advance(wp.FLUSH_DELAY)
    assert w.queue and r.writers == [w]
    got = 0
    while w.queue or got < 200 * 65536:
        try:
            got += len(b.recv(1 << 20))
        except BlockingIOError:
            w.doWrite()
    assert got == 200 * 65536 and r.writers == [] and w.queued == 0
    # Partly sent buffers continue where they stopped (memoryview of the rest).
    b.close()
    w.write(b"after the peer is gone")
    with caplog.at_level(logging.ERROR, logger="gbplatform.media_worker"):
        r.advance(wp.FLUSH_DELAY)
    assert w.closed and w.fileno() == -1 and "writing to the platform failed" in caplog.text
    w.write(b"ignored")
    assert not w.queue
    w.close()


def test_writer_close_cancels_the_flush_and_the_writer() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r = WriterReactor()
    w = wp._ChannelWriter(r, a)
    w.write(b"queued")
    assert r.getDelayedCalls()
    w._watching = True
    r.writers.append(w)
    w.connectionLost(None)
    assert r.getDelayedCalls() == [] and r.writers == [] and w.queue.maxlen is None and not w.queue
    b.close()


def test_frame_forwarder_and_no_channel() -> None:
    worker = wp.MediaWorker(Clock(), drainer=None)
    fwd = wp._FrameForwarder(worker, 3)
    fwd.input_frame(Frame(Codec.H264, b"\x00", 0, 0, True, 0xE0), 1.0)  # no channel yet: nothing to do
    worker.send(wire.Closed(3))
    assert worker.channel is None


# -- logging -----------------------------------------------------------------


def test_escape_and_the_line_formatter() -> None:
    assert wp.escape("a\\b\nc\td") == "a\\\\b\\nc\\td"
    fmt = wp._LineFormatter()
    rec = logging.LogRecord("media.ps", logging.WARNING, __file__, 1, "bad\npacket %d", (3,), None)
    assert fmt.format(rec) == "warn\tmedia.ps\tbad\\npacket 3"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        exc = sys.exc_info()
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), exc)
    line = fmt.format(rec)
    assert line.startswith("error\tx\tfailed\\nTraceback") and "\n" not in line and "ValueError: boom" in line
    assert fmt.format(logging.LogRecord("x", 60, __file__, 1, "m", (), None)).startswith("error\t")
    assert fmt.format(logging.LogRecord("x", 25, __file__, 1, "m", (), None)).startswith("info\t")


class FakeBeginner:
    def __init__(self) -> None:
        self.observers: list[Any] = []

    def beginLoggingTo(self, observers: list[Any], redirectStandardIO: bool = True) -> None:  # noqa: N802, N803
        assert redirectStandardIO is False
        self.observers.extend(observers)


def test_setup_logging_writes_relayable_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import twisted.logger
    from twisted.logger import LogLevel

    beginner = FakeBeginner()
    monkeypatch.setattr(twisted.logger, "globalLogBeginner", beginner)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        wp.setup_logging("warn")
        assert root.level == logging.WARNING
        logging.getLogger("media.rtp").warning("two\nlines")
        logging.getLogger("media.rtp").info("below the floor")
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)
    (observe,) = beginner.observers
    observe({"log_level": LogLevel.info, "log_format": "quiet", "log_namespace": "t"})
    observe({"log_level": LogLevel.error, "log_format": "port {p}\ngone", "p": 5, "log_namespace": "twisted.x"})
    try:
        raise RuntimeError("bug")
    except RuntimeError:
        failure = Failure()
    observe({"log_level": LogLevel.critical, "log_format": "oops", "log_failure": failure})
    lines = err.getvalue().splitlines()
    assert lines[0] == "warn\tmedia.rtp\ttwo\\nlines"
    assert lines[1] == "error\ttwisted.x\tport 5\\ngone"
    assert lines[2].startswith("critical\ttwisted\toops\\nTraceback") and "RuntimeError: bug" in lines[2]
    assert len(lines) == 3


class MainReactor(Clock):
    """What ``main`` uses of the reactor, recorded."""

    running = False

    def __init__(self) -> None:
        super().__init__()
        self.adopted: list[tuple[int, int, Any]] = []
        self.ran = False

    def adoptStreamConnection(self, fd: int, family: int, factory: Any) -> None:  # noqa: N802 - Twisted API
        self.adopted.append((fd, family, factory))

    def run(self, installSignalHandlers: bool = True) -> None:  # noqa: N803 - Twisted API
        assert installSignalHandlers is False
        self.ran = True

    def callFromThread(self, f: Any, *args: Any) -> None:  # noqa: N802 - Twisted API
        f(*args)

    def stop(self) -> None:
        self.stopped = True


def test_main_adopts_the_channel_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    import twisted.internet

    from gbplatform.app import reactor as app_reactor

    fake = MainReactor()
    monkeypatch.setattr(twisted.internet, "reactor", fake, raising=False)
    monkeypatch.setattr(app_reactor, "install_reactor", lambda *a, **k: None)
    levels: list[str] = []
    monkeypatch.setattr(wp, "setup_logging", levels.append)
    handlers: dict[int, Any] = {}
    monkeypatch.setattr(signal, "signal", lambda sig, h: handlers.__setitem__(sig, h))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fd = os.dup(b.fileno())
        assert wp.main(["--fd", str(fd), "--index", "2", "--drain-interval", "0", "--log-level", "debug"]) == 0
        assert levels == ["debug"] and fake.ran
        ((got_fd, family, factory),) = fake.adopted
        assert (got_fd, family) == (fd, socket.AF_UNIX)
        with pytest.raises(OSError):
            os.fstat(fd)  # main closed its copy: the reactor has its own
        assert isinstance(factory.buildProtocol(None), wp._Channel)
        assert handlers[signal.SIGINT] == signal.SIG_IGN
        handlers[signal.SIGTERM](signal.SIGTERM, None)
        assert fake.stopped
        assert fake.getDelayedCalls()  # the stats timer started
        assert wp.main(["--fd", str(os.dup(b.fileno()))]) == 0  # with a drainer
    finally:
        a.close()
        b.close()


def test_bound_port_leaves_the_descriptor_open() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    assert wp._bound_port(s.fileno()) == s.getsockname()[1]
    assert s.getsockname()  # still open
    s.close()



def test_stats_timer_reports_first_packet_then_changes_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    from media.ingest import RtpIngest
    from media.pipeline import FrameDispatcher

    clock = Clock()
    worker = wp.MediaWorker(clock, drainer=None)
    ingest = RtpIngest(FrameDispatcher())
    worker.streams[1] = wp._Stream(1, OWNER, ingest, receiver=None)  # type: ignore[arg-type]
    worker.start()
    clock.advance(wp.FIRST_STATS_INTERVAL)
    assert worker.streams[1].reported_packets == -1  # nothing yet
    ingest.stats.first_packet_at, ingest.stats.packets = 1.0, 5
    clock.advance(wp.FIRST_STATS_INTERVAL)
    assert worker.streams[1].first_reported and worker.streams[1].reported_packets == 5
    ingest.stats.packets = 9
    for _ in range(round(wp.STATS_INTERVAL / wp.FIRST_STATS_INTERVAL)):  # LoopingCall skips missed ticks
        clock.advance(wp.FIRST_STATS_INTERVAL)
    assert worker.streams[1].reported_packets == 9

    def broken(ssrc: int) -> None:
        raise RuntimeError("rekey bug")

    ingest.rekey = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="gbplatform.media_worker"):
        worker.data_received(wire.encode(wire.Rekey(1, 5)))
    assert "handling Rekey failed" in caplog.text and "rekey bug" in caplog.text
