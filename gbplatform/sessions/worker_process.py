"""A media worker process: receives streams' RTP and sends their frames to the platform.

Run by the main process (``gbplatform/sessions/media_workers.py``) as
``python -m gbplatform.sessions.worker_process --fd 3 ...`` with one end of an
``AF_UNIX`` socket pair as descriptor 3: the channel (``media/workerwire.py``).
It imports Twisted and ``media`` only (no SQLAlchemy, Klein, lxml), so each
worker costs a few tens of MB.

Per ``Open`` it adopts the sockets the main process bound and passed with the
record (``RtpReceiver(adopt=...)``), and runs the stream's receive path as the
main process would in-process: ``RtpReceiver`` + ``RtpIngest``, the compiled
path (``media.accel``) and the ``UdpDrainer`` included. The ingest's
"dispatcher" here writes each frame to the channel (header and the frame's
bytes as two buffers). Counters go up as ``Stats``: for a stream's first packet
within ``FIRST_STATS_INTERVAL``, then at most once a second while they change.

If the main process reads more slowly than frames come, at most
``BACKLOG_LIMIT`` bytes wait in the channel writer's queue; past that frames
are dropped (logged) until it drains, so the worker's memory is bounded.
Frames are written a few milliseconds after they are made, together, with
one scatter ``sendmsg`` (``_ChannelWriter``), not through Twisted's transport.

Logging: stdlib ``logging`` (the ``media`` cores) and twisted.logger both go
to stderr as ``LEVEL<TAB>namespace<TAB>message`` lines, newlines escaped; the
main process relays them into its own log. The worker exits when the channel
closes (the main process is gone or gave it up) and on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, cast

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IFileDescriptorReceiver, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from media import workerwire as wire
from media.frame import Frame
from media.ingest import RtpIngest
from media.pipeline import FrameDispatcher
from media.ports import PortLease
from media.receiver import RtpReceiver, TransportMode, UdpDrainer, socket_family

log = logging.getLogger("gbplatform.media_worker")

FIRST_STATS_INTERVAL = 0.1  # seconds: how soon a stream's first packet is reported (its start timeline)
STATS_INTERVAL = 1.0
BACKLOG_LIMIT = 64 * 1024 * 1024
IOV_BATCH = 512  # buffers per sendmsg (Linux IOV_MAX is 1024)
# Frames wait this long to go out together: TCP streams are read per connection wakeup, not per
# drain pass, and one sendmsg (and one wakeup of the platform) per frame cost more than the frames.
FLUSH_DELAY = 0.003
CHANNEL_READ_SIZE = 64 * 1024  # the platform's records are small: Twisted's recvmsg allocates this per read


class _FrameForwarder:
    """The ingest's dispatcher in a worker: frames go to the channel."""

    def __init__(self, worker: MediaWorker, stream: int) -> None:
        self.worker = worker
        self.stream = stream

    def input_frame(self, frame: Frame, now: float = 0.0) -> None:
        self.worker.send_frame(self.stream, frame, now)


@dataclass
class _Stream:
    ident: int
    owner: str
    ingest: RtpIngest
    receiver: RtpReceiver
    reported_packets: int = -1
    first_reported: bool = False
    closing: bool = False


@implementer(IFileDescriptorReceiver)
class _Channel(protocol.Protocol):
    def __init__(self, worker: MediaWorker) -> None:
        self.worker = worker

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        t: Any = self.transport
        t.bufferSize = CHANNEL_READ_SIZE
        # Twisted reads (records and their descriptors); writes bypass it (_ChannelWriter).
        # A descriptor of its own: the reactor keys readers and writers by descriptor, one object each.
        self.worker.channel = _ChannelWriter(self.worker.reactor, t.getHandle().dup())
        self.worker.reader = t

    def fileDescriptorReceived(self, descriptor: int) -> None:  # noqa: N802 - Twisted API
        self.worker.fds.append(descriptor)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        self.worker.data_received(data)

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 - Twisted API
        self.worker.channel_lost(reason)


@implementer(IWriteDescriptor)
class _ChannelWriter:
    """Records to the platform: what a few milliseconds queued goes out in one ``sendmsg``, never joined.

    Twisted's transport joins its write buffer into one ``bytes`` before each
    send; a frame is the bulk of the traffic (~50 MB/s per worker at 100
    streams), so here the buffers (record header, frame bytes, ...) go to the
    kernel as a scatter list (sendmsg(2)), at most ``IOV_BATCH`` per call.
    Writes wait ``FLUSH_DELAY`` to be sent together. All records go through here, in order: a stream's ``Closed`` never passes
    its last frames. If the socket is full the rest waits for writability;
    frames past ``BACKLOG_LIMIT`` queued bytes are dropped (logged), control
    records never are.
    """

    def __init__(self, reactor: Any, sock: socket.socket) -> None:
        self.reactor = reactor
        self.sock = sock
        self.queue: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.closed = False
        self.dropping = False
        self.dropped = 0
        self._flush_call: Any = None
        self._watching = False

    def fileno(self) -> int:
        return -1 if self.closed else self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 - Twisted API
        return "media worker channel"

    def write(self, *bufs: bytes | memoryview, droppable: bool = False) -> None:
        if self.closed:
            return
        if droppable and self.queued > BACKLOG_LIMIT:
            self.dropped += 1
            if not self.dropping:
                self.dropping = True
                log.warning("the platform reads frames too slowly (%d bytes queued); dropping frames", self.queued)
            return
        for b in bufs:
            self.queue.append(b)
            self.queued += len(b)
        if self._flush_call is None and not self._watching:
            self._flush_call = self.reactor.callLater(FLUSH_DELAY, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        self.doWrite()

    def doWrite(self) -> None:  # noqa: N802 - Twisted API
        queue = self.queue
        while queue and not self.closed:
            try:
                n = self.sock.sendmsg(list(islice(queue, IOV_BATCH)))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.error("writing to the platform failed: %s", e)
                self.close()
                return
            self.queued -= n
            while n:
                head = queue[0]
                if len(head) <= n:
                    n -= len(head)
                    queue.popleft()
                else:
                    queue[0] = memoryview(head)[n:]
                    n = 0
        if queue and not self._watching and not self.closed:
            self._watching = True
            self.reactor.addWriter(self)
        elif not queue and self._watching:
            self._watching = False
            self.reactor.removeWriter(self)
        if not queue and self.dropping:
            self.dropping = False
            log.warning("channel drained; forwarding frames again after %d dropped", self.dropped)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._watching:
            self._watching = False
            self.reactor.removeWriter(self)
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self.queue.clear()
        self.queued = 0
        self.sock.close()

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 - Twisted API
        self.close()  # the reading side (Twisted's transport) reports the loss


class MediaWorker:
    """The worker's streams, driven by the channel's records."""

    def __init__(self, reactor: Any, *, drainer: UdpDrainer | None, host: str = "0.0.0.0") -> None:
        self.reactor = reactor
        self.drainer = drainer
        self.host = host
        self.decoder = wire.WireDecoder()
        self.fds: list[int] = []
        self.streams: dict[int, _Stream] = {}
        self.channel: _ChannelWriter | None = None
        self.reader: Any = None  # Twisted's transport of the channel, reading
        self._ticks = 0
        self._timer = LoopingCall(self._tick)
        self._timer.clock = reactor

    def start(self) -> None:
        d = self._timer.start(FIRST_STATS_INTERVAL, now=False)
        d.addErrback(lambda f: log.error("stats timer failed: %s", f.getTraceback()))

    # -- to the main process ----------------------------------------------
    def send(self, msg: wire.Message) -> None:
        if self.channel is not None:
            self.channel.write(wire.encode(msg))

    def send_frame(self, stream: int, frame: Frame, now: float) -> None:
        channel = self.channel
        if channel is None:
            return
        try:
            header = wire.encode_frame_header(stream, frame, now)
        except wire.WireError as e:
            log.warning("stream %d: frame dropped: %s", stream, e)
            return
        channel.write(header, frame.data, droppable=True)

    def _stats(self, s: _Stream) -> wire.Stats:
        st = s.ingest.stats
        rs = s.ingest.reorder.stats
        return wire.Stats(
            s.ident, packets=st.packets, bytes=st.bytes, bad_packets=st.bad_packets, foreign_ssrc=st.foreign_ssrc,
            unknown_payload_type=st.unknown_payload_type, after_marker=st.after_marker,
            first_packet_at=st.first_packet_at, last_packet_at=st.last_packet_at, received=rs.received,
            delivered=rs.delivered, lost=rs.lost, duplicates=rs.duplicates, reordered=rs.reordered, late=rs.late,
            resets=rs.resets, jitter=rs.jitter, depacketizers=tuple(s.ingest.depacketizers),
            stream_types=tuple(s.ingest.demuxer.stream_types.items()))

    def _report(self, s: _Stream) -> None:
        s.reported_packets = s.ingest.stats.packets + s.ingest.stats.foreign_ssrc
        s.first_reported = s.ingest.stats.first_packet_at is not None
        self.send(self._stats(s))

    def _tick(self) -> None:
        self._ticks += 1
        full = self._ticks % round(STATS_INTERVAL / FIRST_STATS_INTERVAL) == 0
        for s in self.streams.values():
            if not s.first_reported and s.ingest.stats.first_packet_at is not None:
                self._report(s)
            elif full and s.reported_packets != s.ingest.stats.packets + s.ingest.stats.foreign_ssrc:
                self._report(s)

    # -- from the main process ----------------------------------------------
    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except wire.WireError as e:
            log.error("bad record from the platform: %s; closing the channel", e)
            if self.reader is not None:
                self.reader.loseConnection()
            return
        for msg in messages:
            try:
                self._handle(msg)
            except Exception:
                log.exception("handling %s failed", type(msg).__name__)

    def _handle(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Open):
            self._open(msg)
            return
        s = self.streams.get(getattr(msg, "stream", -1))
        if s is None:
            log.info("%s for unknown stream %s ignored", type(msg).__name__, getattr(msg, "stream", "?"))
            return
        if isinstance(msg, wire.Rekey):
            if msg.ssrc is None:
                s.ingest.ssrc = None  # the first packet's SSRC is the stream's
            else:
                s.ingest.rekey(msg.ssrc)
        elif isinstance(msg, wire.PayloadFormats):
            s.ingest.set_payload_formats(msg.formats)
        elif isinstance(msg, wire.Connect):
            d = s.receiver.connect(msg.host, msg.port)
            d.addCallbacks(lambda _: self.send(wire.Connected(s.ident)),
                           lambda f: self.send(wire.ConnectFailed(s.ident, f.getErrorMessage())))
        elif isinstance(msg, wire.Close):
            self._close(s)
        else:
            log.warning("unexpected %s from the platform ignored", type(msg).__name__)

    def _open(self, msg: wire.Open) -> None:
        if len(self.fds) < msg.fds:
            log.error("stream %d (%s): %d sockets expected, %d received", msg.stream, msg.owner, msg.fds,
                      len(self.fds))
            self.send(wire.Timeout(msg.stream, "media worker did not receive the stream's sockets"))
            return
        fds, self.fds = self.fds[:msg.fds], self.fds[msg.fds:]
        try:
            for fd in fds:
                # Twisted's adopted ports assume O_NONBLOCK: a blocking listener's accept() would hang the
                # whole worker. The platform passes them non-blocking; this does not rely on it.
                os.set_blocking(fd, False)
            port = _bound_port(fds[0]) if fds else 0
            ingest = RtpIngest(FrameDispatcher(), ssrc=msg.ssrc)
            ident = msg.stream
            ingest.dispatcher = _FrameForwarder(self, ident)  # type: ignore[assignment]
            mode: TransportMode = msg.mode  # type: ignore[assignment]
            receiver = RtpReceiver(
                self.reactor, ingest, PortLease(port, msg.owner), mode=mode, host=self.host, rcvbuf=msg.rcvbuf,
                no_rtp_timeout=msg.no_rtp_timeout, drainer=self.drainer, adopt=tuple(fds),
                on_timeout=lambda reason: self._timed_out(ident, reason),
            )
            receiver.start()
        except Exception as e:
            log.exception("stream %d (%s): cannot adopt its sockets", msg.stream, msg.owner)
            self.send(wire.Timeout(msg.stream, f"media worker cannot receive: {e}"))
            return
        finally:
            for fd in fds:
                os.close(fd)  # adopted ones were duplicated
        self.streams[ident] = _Stream(ident, msg.owner, ingest, receiver)

    def _timed_out(self, ident: int, reason: str) -> None:
        s = self.streams.get(ident)
        if s is not None:
            self._report(s)
        self.send(wire.Timeout(ident, reason))

    def _close(self, s: _Stream) -> None:
        if s.closing:
            return
        s.closing = True
        d = s.receiver.stop()  # flushes the ingest: its last frames go out before Closed

        def closed(_: object) -> None:
            self.streams.pop(s.ident, None)
            self._report(s)
            self.send(wire.Closed(s.ident))

        d.addCallback(closed)
        d.addErrback(lambda f: log.error("closing stream %d failed: %s", s.ident, f.getTraceback()))

    def channel_lost(self, reason: Failure | None) -> None:
        """The platform is gone (or gave this worker up): stop receiving and exit."""
        if self.channel is not None:
            self.channel.close()
        self.channel = None
        log.info("channel to the platform closed (%s); exiting",
                 reason.getErrorMessage() if reason is not None else "no reason")
        stops = [s.receiver.stop() for s in self.streams.values()]
        self.streams.clear()
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        d = defer.DeferredList(stops, consumeErrors=True)
        d.addBoth(lambda _: self.reactor.stop() if self.reactor.running else None)


def _bound_port(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.detach()


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
           "critical": logging.CRITICAL}
_LEVEL_WORDS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
                logging.CRITICAL: "critical"}


def escape(text: str) -> str:
    """One log record on one line: the main process splits the relayed stderr by line."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        word = _LEVEL_WORDS.get(record.levelno, "error" if record.levelno > logging.ERROR else "info")
        return f"{word}\t{record.name}\t{escape(text)}"


def setup_logging(level: str) -> None:
    """stdlib logging and twisted.logger to stderr, one relayed line per record."""
    from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogBeginner

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    ranks = {name: rank for rank, name in enumerate(("debug", "info", "warn", "error", "critical"))}
    floor = ranks.get(level, 1)

    def observe(event: dict[str, Any]) -> None:
        lvl = event.get("log_level", LogLevel.info)
        if ranks.get(lvl.name, 1) < floor:
            return
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        sys.stderr.write(f"{lvl.name}\t{event.get('log_namespace', 'twisted')}\t{escape(text)}\n")
        sys.stderr.flush()

    # Without an observer twisted.logger buffers events in memory; the worker has none of the platform's.
    globalLogBeginner.beginLoggingTo([cast(ILogObserver, observe)], redirectStandardIO=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="gbplatform media worker (started by the platform)")
    ap.add_argument("--fd", type=int, required=True, help="the channel's descriptor")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--host", default="0.0.0.0", help="interface of the platform's media sockets (logs)")
    ap.add_argument("--drain-interval", type=float, default=0.005, help="0: read at each wakeup")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)

    from gbplatform.app.reactor import install_reactor

    install_reactor()
    from twisted.internet import reactor

    r: Any = reactor
    drainer = UdpDrainer(r, args.drain_interval) if args.drain_interval > 0 else None
    worker = MediaWorker(r, drainer=drainer, host=args.host)
    factory = protocol.Factory.forProtocol(lambda: _Channel(worker))
    r.adoptStreamConnection(args.fd, socket_family(args.fd), factory)
    os.close(args.fd)
    worker.start()
    log.info("started (pid %d)", os.getpid())
    # Ctrl-C reaches the whole process group: the platform stops its workers itself
    # (channel closed, then SIGTERM), so SIGINT is not theirs to act on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: r.callFromThread(r.stop))
    r.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
