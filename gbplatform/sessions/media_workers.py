"""Media worker processes (``media.workers`` >= 1): one process per core receives RTP.

Issue 12 ("Both cores"): one Python process uses one core, and the per-packet
work (socket reads, RTP header, reorder, PS demux) is most of a stream's cost.
With ``media.workers = N`` that work runs in N child processes
(``gbplatform/sessions/worker_process.py``) and the main process keeps
everything else: ``LiveStreams``, each stream's ``FrameDispatcher`` and GOP
cache, every output, the registry, the API, the port pool and the SSRCs. No
output knows about workers.

Theory of operation:

- ``MediaWorkers`` (a service) spawns the workers at start, each with one end
  of an ``AF_UNIX`` socket pair as its descriptor 3 (the channel,
  ``media/workerwire.py``), and relays their stderr log lines into this log.
- ``LiveStreams`` gets ``receiver_factory`` and ``ingest_factory`` from here.
  A stream's ``RemoteReceiver.start()`` binds the stream's sockets in this
  process, synchronously, so a port another program holds still raises
  ``CannotListenError`` into ``LiveStreams._bind``'s retry; then it picks the
  worker with the fewest streams, sends ``Open`` with the bound sockets
  (SCM_RIGHTS, unix(7)) and closes its own copies. Single-port mode is not
  handed to workers: its SSRC router needs every packet in one place.
- Frames from the worker go to ``ingest.dispatcher.input_frame(frame, now)``:
  the dispatcher ``LiveStreams`` installed (first-keyframe shim included), as
  ``RtpIngest`` would call it in-process. ``Stats`` records update the local
  ``RemoteIngest``'s counters, reorder stats, PSM stream types and
  depacketizer set, so ``GET /api/v1/streams`` and the timeline read the
  same as in-process. ``RemoteIngest`` sends its SSRC (``rekey``, or None)
  and payload formats (``set_payload_formats``) on to the worker.
- Messages to a worker are written with ``sendmsg`` on this process's own end
  of the pair (records are small and rare; the descriptors must travel with
  their ``Open``), queued briefly if the socket is full; the same end is a
  reader on the reactor for the frames (``_Channel``).
- A worker that exits, whose channel breaks or that sends a bad record: each
  of its streams ends through ``on_timeout("media worker exited")``
  (``LiveStreams`` BYEs the device and releases port and SSRC once), the
  exit status is logged, and the worker is respawned, after a backoff
  (``RESPAWN_MIN`` doubling to ``RESPAWN_MAX``) while it keeps dying within
  ``STABLE_AFTER`` seconds. Stopping the service closes the channels
  (workers exit on EOF), sends SIGTERM, and SIGKILL after ``KILL_AFTER``
  seconds; it returns once every child has exited.
"""

from __future__ import annotations

import os
import socket
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError, ConnectError, ProcessDone
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from gbplatform.core.errors import DomainError
from media import workerwire as wire
from media.frame import Frame
from media.ingest import DEFAULT_PAYLOAD_FORMATS, RtpIngest
from media.pipeline import FrameDispatcher
from media.ports import PortLease
from media.ps import PsDemuxer
from media.reorder import ReorderBuffer

__all__ = ["MediaWorkers", "NoMediaWorker", "RemoteIngest", "RemoteReceiver"]

log = Logger()

WORKER_MODULE = "gbplatform.sessions.worker_process"
CHILD_FD = 3
RESPAWN_MIN = 0.5
RESPAWN_MAX = 30.0
STABLE_AFTER = 10.0  # a worker that lived this long resets the backoff
KILL_AFTER = 3.0  # SIGTERM, then SIGKILL after this many seconds
CLOSE_TIMEOUT = 5.0  # a stream's stop waits this long for the worker's Closed
SEND_QUEUE_LIMIT = 4 * 1024 * 1024  # bytes queued for a worker that does not read: it is given up
SEND_RETRY = 0.01
CHANNEL_READ_SIZE = 256 * 1024  # frames arrive at up to ~100 MB/s with 200 streams: few large reads
READS_PER_WAKEUP = 16
CHANNEL_SNDBUF = 4 * 1024 * 1024  # the kernel caps it at net.core.wmem_max
_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error,
           "critical": LogLevel.critical}
WORKER_EXITED = "media worker exited"


class NoMediaWorker(DomainError):
    """Every media worker is down and waiting to be respawned (API: 503, the documented ``media_unavailable``)."""

    status = 503
    code = "media_unavailable"


class RemoteIngest(RtpIngest):
    """The main process's face of a stream received by a worker: counters mirrored, changes sent on.

    ``LiveStreams`` reads ``stats``, ``reorder.stats``, ``demuxer.stream_types``
    and ``depacketizers`` (``LiveStream.info``, ``_audio_may_come``) and sets
    ``ssrc`` / calls ``rekey`` and ``set_payload_formats`` after the device's
    answer; the last two reach the worker through ``receiver``.
    """

    def __init__(self, dispatcher: FrameDispatcher, *, ssrc: int | None = None,
                 reorder: ReorderBuffer[Any] | None = None, demuxer: PsDemuxer | None = None,
                 payload_formats: Mapping[int, str] | None = None) -> None:
        self.receiver: RemoteReceiver | None = None
        self._ssrc = ssrc
        super().__init__(dispatcher, ssrc=ssrc, reorder=reorder, demuxer=demuxer, payload_formats=payload_formats)

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    @ssrc.setter
    def ssrc(self, value: int | None) -> None:
        changed = value != self._ssrc
        self._ssrc = value
        if changed and self.receiver is not None:
            self.receiver.send(wire.Rekey(self.receiver.ident, value))

    def set_payload_formats(self, formats: Mapping[int, str]) -> None:
        super().set_payload_formats(formats)
        if getattr(self, "receiver", None) is not None:
            assert self.receiver is not None
            self.receiver.send(wire.PayloadFormats(self.receiver.ident, dict(self.payload_formats)))

    def frame(self, frame: Frame, now: float) -> None:
        """A frame the worker assembled: to the dispatcher, counted, as ``RtpIngest._emit`` does."""
        self.stats.frames += 1
        self.dispatcher.input_frame(frame, now)

    def mirror(self, msg: wire.Stats) -> None:
        st = self.stats
        st.packets, st.bytes, st.bad_packets = msg.packets, msg.bytes, msg.bad_packets
        st.foreign_ssrc, st.unknown_payload_type, st.after_marker = (
            msg.foreign_ssrc, msg.unknown_payload_type, msg.after_marker)
        st.first_packet_at, st.last_packet_at = msg.first_packet_at, msg.last_packet_at
        rs = self.reorder.stats
        rs.received, rs.delivered, rs.lost, rs.duplicates = msg.received, msg.delivered, msg.lost, msg.duplicates
        rs.reordered, rs.late, rs.resets, rs.jitter = msg.reordered, msg.late, msg.resets, msg.jitter
        if msg.stream_types:
            self.demuxer.stream_types = dict(msg.stream_types)
        for codec in msg.depacketizers:
            if codec not in self.depacketizers:
                from media.depacketize import Depacketizer

                self.depacketizers[codec] = Depacketizer(codec)  # only its presence is read here


class RemoteReceiver:
    """``RtpReceiver``'s face for ``LiveStreams``; the stream is received by a media worker."""

    def __init__(self, workers: MediaWorkers, ingest: RtpIngest, lease: PortLease, *, mode: str,
                 on_timeout: Any = None) -> None:
        self.workers = workers
        self.ingest = ingest
        self.lease = lease
        self.mode = mode
        self.on_timeout = on_timeout
        self.ident = 0
        self.worker: WorkerProcess | None = None
        self._port = lease.rtp
        self._connecting: defer.Deferred[None] | None = None
        self._stopped = False
        self._done = False
        self._stop_waiters: list[defer.Deferred[None]] = []
        self._close_timer: Any = None

    @property
    def local_port(self) -> int:
        return self._port

    @property
    def stopped(self) -> bool:
        return self._stopped

    def start(self) -> None:
        """Bind (udp, tcp-passive) here, then hand the sockets to the least busy worker.

        ``CannotListenError`` propagates (``LiveStreams._bind`` tries the next pair);
        ``NoMediaWorker`` when every worker is down.
        """
        worker = self.workers.pick()
        socks = self._bind()
        try:
            self.ident = self.workers.next_ident()
            self.worker = worker
            worker.streams[self.ident] = self
            if isinstance(self.ingest, RemoteIngest):
                self.ingest.receiver = self
            ssrc = self.ingest.ssrc
            worker.send(wire.Open(self.ident, self.mode, ssrc, self.workers.no_rtp_timeout, self.workers.rcvbuf,
                                  len(socks), self.lease.owner), [s.fileno() for s in socks])
            if self.ingest.payload_formats != dict(DEFAULT_PAYLOAD_FORMATS):
                worker.send(wire.PayloadFormats(self.ident, dict(self.ingest.payload_formats)))
        finally:
            for s in socks:
                s.close()  # the worker has its own copies (or will, from the send queue's dup)
        log.info("RTP of {owner} ({mode}, port {port}) received by media worker {index}", owner=self.lease.owner,
                 mode=self.mode, port=self._port, index=worker.index)

    def _bind(self) -> list[socket.socket]:
        if self.mode == "tcp-active":
            return []
        host = self.workers.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        kind = socket.SOCK_DGRAM if self.mode == "udp" else socket.SOCK_STREAM
        ports = (self.lease.rtp, self.lease.rtcp) if self.mode == "udp" else (self.lease.rtp,)
        socks: list[socket.socket] = []
        try:
            for port in ports:
                s = socket.socket(family, kind)
                socks.append(s)
                s.setblocking(False)
                if kind == socket.SOCK_STREAM:
                    # As Twisted's listenTCP: a TIME_WAIT from the last stream must not block the port.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    s.listen(50)
        except OSError as e:
            for s in socks:
                s.close()
            raise CannotListenError(host, port, e) from None  # type: ignore[no-untyped-call]
        self._port = int(socks[0].getsockname()[1])
        return socks

    def send(self, msg: wire.Message) -> None:
        if self.worker is not None and not self._done:
            self.worker.send(msg)

    def connect(self, host: str, port: int) -> defer.Deferred[None]:
        """tcp-active: the worker connects out; fires when it did, errbacks with its failure."""
        if self.mode != "tcp-active":
            raise ValueError(f"connect() is for tcp-active receivers, not {self.mode}")
        if self._stopped or self.worker is None:
            return defer.fail(defer.CancelledError("RTP receiver stopped"))
        if self._connecting is not None:
            raise RuntimeError("RemoteReceiver already connecting")
        d: defer.Deferred[None] = defer.Deferred()
        self._connecting = d
        self.send(wire.Connect(self.ident, host, port))
        return d

    def stop(self) -> defer.Deferred[None]:
        """Tell the worker to close; fires once it has (its last frames delivered) or gave out."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._done:
            waiter.callback(None)
            return waiter
        self._stop_waiters.append(waiter)
        if not self._stopped:
            self._stopped = True
            self._connect_result(defer.CancelledError("RTP receiver stopped"))
            if self.worker is None:
                self._finish()
            else:
                self.send(wire.Close(self.ident))
                self._close_timer = self.workers.reactor.callLater(CLOSE_TIMEOUT, self._close_timed_out)
        return waiter

    def _close_timed_out(self) -> None:
        self._close_timer = None
        log.warn("media worker did not confirm closing {owner} in {t} s", owner=self.lease.owner, t=CLOSE_TIMEOUT)
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._close_timer is not None and self._close_timer.active():
            self._close_timer.cancel()
        self._close_timer = None
        if self.worker is not None:
            self.worker.streams.pop(self.ident, None)
        waiters, self._stop_waiters = self._stop_waiters, []
        for w in waiters:
            w.callback(None)

    def _connect_result(self, error: Exception | None) -> None:
        d, self._connecting = self._connecting, None
        if d is not None:
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    # -- from the worker ----------------------------------------------------
    def received(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.FrameMessage):
            if isinstance(self.ingest, RemoteIngest):
                self.ingest.frame(msg.frame, msg.received_at)
            else:
                self.ingest.stats.frames += 1
                self.ingest.dispatcher.input_frame(msg.frame, msg.received_at)
        elif isinstance(msg, wire.Stats):
            if isinstance(self.ingest, RemoteIngest):
                self.ingest.mirror(msg)
        elif isinstance(msg, wire.Timeout):
            self._timed_out(msg.reason)
        elif isinstance(msg, wire.Connected):
            self._connect_result(None)
        elif isinstance(msg, wire.ConnectFailed):
            self._connect_result(ConnectError(string=msg.reason))  # type: ignore[no-untyped-call]
        elif isinstance(msg, wire.Closed):
            self._finish()

    def _timed_out(self, reason: str) -> None:
        if self._stopped:
            return
        log.warn("RTP stream of {owner} timed out: {reason}", owner=self.lease.owner, reason=reason)
        if self.on_timeout is not None:
            try:
                self.on_timeout(reason)
            except Exception:  # noqa: BLE001 - the worker's other streams must go on
                log.failure("RTP timeout handler of {owner} failed", owner=self.lease.owner)

    def worker_lost(self) -> None:
        """The worker died: the stream ends (unless the platform is stopping)."""
        self._connect_result(ConnectError(string=WORKER_EXITED))  # type: ignore[no-untyped-call]
        was_stopped = self._stopped
        self._finish()
        if not was_stopped and not self.workers.stopping:
            self._stopped = True
            if self.on_timeout is not None:
                try:
                    self.on_timeout(WORKER_EXITED)
                except Exception:  # noqa: BLE001 - the other streams must still end
                    log.failure("RTP timeout handler of {owner} failed", owner=self.lease.owner)


@implementer(IReadDescriptor)
class _Channel:
    """The main process's reading end of a worker's channel: a reader on the reactor, not a transport.

    Frames come at up to ~100 MB/s (200 streams of 4 Mbit/s). Twisted's Unix
    transport reads with ``recvmsg`` into a new buffer per call (for file
    descriptors this side never receives); here ``recv_into`` fills one
    reused buffer, up to ``READS_PER_WAKEUP`` times per wakeup.
    """

    def __init__(self, worker: WorkerProcess, sock: socket.socket) -> None:
        self.worker = worker
        self.sock = sock
        self.decoder = wire.WireDecoder()
        self._buf = bytearray(CHANNEL_READ_SIZE)
        self._view = memoryview(self._buf)
        self.closed = False

    def fileno(self) -> int:
        return -1 if self.closed else self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 - Twisted API
        return f"media worker {self.worker.index}"

    def doRead(self) -> None:  # noqa: N802 - Twisted API
        for _ in range(READS_PER_WAKEUP):
            try:
                n = self.sock.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.worker.broken(f"channel read failed: {e}")
                return
            if n == 0:
                self.worker.broken("channel closed")
                return
            self.data_received(self._view[:n])
            if self.closed or n < len(self._buf):
                return

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 - Twisted API
        self.worker.broken("channel closed")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.worker.owner.reactor.removeReader(self)

    def data_received(self, data: memoryview | bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except wire.WireError as e:
            self.worker.broken(f"bad record: {e}")
            return
        streams = self.worker.streams
        for msg in messages:
            receiver = streams.get(msg.stream)
            if receiver is None:
                continue  # a stream that has just been stopped: its late frames are dropped
            try:
                receiver.received(msg)
            except Exception:  # noqa: BLE001 - one stream's output bug must not break the channel
                log.failure("handling {kind} of {owner} failed", kind=type(msg).__name__,
                            owner=receiver.lease.owner)


class _ProcessProtocol(protocol.ProcessProtocol):
    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self._lines = {1: b"", 2: b""}

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        t: Any = self.transport
        t.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N802, N803 - Twisted API
        buf = self._lines.get(childFD, b"") + data
        *lines, rest = buf.split(b"\n")
        if len(rest) > 65536:  # a runaway line: relayed cut rather than kept growing
            lines.append(rest)
            rest = b""
        self._lines[childFD] = rest
        for line in lines:
            self.worker.relay(line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:  # noqa: N802 - Twisted API
        for fd in (1, 2):
            if self._lines.get(fd):
                self.worker.relay(self._lines[fd].decode("utf-8", "replace"))
        self.worker.exited(reason)


class WorkerProcess:
    """One child: its process, its channel, its streams."""

    def __init__(self, owner: MediaWorkers, index: int) -> None:
        self.owner = owner
        self.index = index
        self.streams: dict[int, RemoteReceiver] = {}
        self.process: Any = None
        self.pid: int | None = None
        self.sock: socket.socket | None = None  # our end, written with sendmsg
        self.channel: _Channel | None = None
        self.started_at = 0.0
        self.alive = False
        self._queue: deque[tuple[bytes, list[int]]] = deque()
        self._queued = 0
        self._retry: Any = None
        self._kill_timer: Any = None
        self.ended: defer.Deferred[None] | None = None
        self._broken = False

    def spawn(self) -> None:
        reactor = self.owner.reactor
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The worker writes ~50 MB/s of frames per 100 streams: with the default 208 KiB a
            # reactor iteration's frames often do not fit, and each retry is a wakeup (unix(7)).
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_SNDBUF)
        except OSError as e:
            log.info("media worker channel: cannot set SO_SNDBUF: {e}", e=e)
        args = [sys.executable, "-m", WORKER_MODULE, "--fd", str(CHILD_FD), "--index", str(self.index),
                "--host", self.owner.host, "--drain-interval", repr(self.owner.drain_interval),
                "--log-level", self.owner.log_level]
        try:
            self.process = reactor.spawnProcess(
                _ProcessProtocol(self), sys.executable, args, env=dict(os.environ),
                childFDs={0: "w", 1: "r", 2: "r", CHILD_FD: theirs.fileno()})
        except Exception:
            ours.close()
            raise
        finally:
            theirs.close()
        self.pid = self.process.pid
        self.started_at = reactor.seconds()
        self.alive = True
        self._broken = False
        self.ended = defer.Deferred()
        ours.setblocking(False)
        self.sock = ours
        self.channel = _Channel(self, ours)
        reactor.addReader(self.channel)
        log.info("media worker {index} started (pid {pid})", index=self.index, pid=self.pid)

    # -- writing --------------------------------------------------------------
    def send(self, msg: wire.Message, fds: list[int] | None = None) -> None:
        if self._broken or self.sock is None:
            return
        own = [os.dup(fd) for fd in fds or ()]  # the caller closes its sockets at once; these travel
        self._queue.append((wire.encode(msg), own))
        self._queued += len(self._queue[-1][0])
        self._flush()

    def _flush(self) -> None:
        self._retry = None
        sock = self.sock
        while self._queue and sock is not None:
            data, fds = self._queue[0]
            try:
                if fds:
                    sent = socket.send_fds(sock, [data], fds)
                else:
                    sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as e:
                self.broken(f"cannot write to its channel: {e}")
                return
            if sent == 0:
                break
            for fd in fds:
                os.close(fd)  # sent with the record's first byte
            self._queued -= sent
            if sent < len(data):
                self._queue[0] = (data[sent:], [])
                break
            self._queue.popleft()
        if self._queue:
            if self._queued > SEND_QUEUE_LIMIT:
                self.broken(f"not reading its channel ({self._queued} bytes queued)")
                return
            if self._retry is None:
                self._retry = self.owner.reactor.callLater(SEND_RETRY, self._flush)

    def _drop_queue(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        for _, fds in self._queue:
            for fd in fds:
                os.close(fd)
        self._queue.clear()
        self._queued = 0

    # -- logs -----------------------------------------------------------------
    def relay(self, line: str) -> None:
        if not line.strip():
            return
        level_word, sep, rest = line.partition("\t")
        level = _LEVELS.get(level_word) if sep else None
        if level is None:
            level, text, namespace = LogLevel.warn, line, "gbplatform.media_worker"
        else:
            namespace, _, text = rest.partition("\t")
            text = _unescape(text)
        Logger(namespace=namespace or "gbplatform.media_worker").emit(
            level, "media worker {index}: {text}", index=self.index, text=text)

    # -- ending ---------------------------------------------------------------
    def broken(self, why: str) -> None:
        """The channel broke or carried a bad record: the worker is given up (killed, respawned)."""
        if self._broken:
            return
        self._broken = True
        if self.alive and not self.owner.stopping:
            log.error("media worker {index} (pid {pid}): {why}; ending its {n} stream(s)", index=self.index,
                      pid=self.pid, why=why, n=len(self.streams))
        self._close_channel()
        self._end_streams()
        self.terminate()

    def _close_channel(self) -> None:
        self._drop_queue()
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.close()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _end_streams(self) -> None:
        streams = list(self.streams.values())
        self.streams.clear()
        for receiver in streams:
            receiver.worker_lost()

    def terminate(self) -> None:
        """SIGTERM now, SIGKILL after ``KILL_AFTER`` seconds if still running."""
        if not self.alive or self.process is None:
            return
        self._signal("TERM")
        if self._kill_timer is None:
            self._kill_timer = self.owner.reactor.callLater(KILL_AFTER, self._signal, "KILL")

    def _signal(self, name: str) -> None:
        if name == "KILL":
            self._kill_timer = None
        if not self.alive or self.process is None:
            return
        try:
            self.process.signalProcess(name)
        except Exception as e:  # noqa: BLE001 - ProcessExitedAlready and the like: it is ending anyway
            log.debug("signalling media worker {index}: {e}", index=self.index, e=e)

    def exited(self, reason: Failure) -> None:
        self.alive = False
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        self._kill_timer = None
        status = reason.value
        code = getattr(status, "exitCode", None)
        sig = getattr(status, "signal", None)
        if self.owner.stopping:
            log.info("media worker {index} (pid {pid}) stopped (exit code {code}, signal {sig})",
                     index=self.index, pid=self.pid, code=code, sig=sig)
        else:
            log.error("media worker {index} (pid {pid}) exited: exit code {code}, signal {sig}; ending its "
                      "{n} stream(s)", index=self.index, pid=self.pid, code=code, sig=sig, n=len(self.streams))
        if not self._broken:
            self._broken = True
            self._close_channel()
            self._end_streams()
        ended, self.ended = self.ended, None
        if ended is not None:
            ended.callback(None)
        self.owner.worker_exited(self, clean=isinstance(status, ProcessDone))


class MediaWorkers(Service):
    """Spawns and supervises the media workers; hands out ``RemoteReceiver``s."""

    name = "media-workers"

    def __init__(self, reactor: Any, count: int, *, host: str = "0.0.0.0", rcvbuf: int = 4 * 1024 * 1024,
                 no_rtp_timeout: float = 10.0, drain_interval: float = 0.005, log_level: str = "info") -> None:
        if count < 1:
            raise ValueError(f"media workers: {count} must be at least 1")
        self.reactor = reactor
        self.count = count
        self.host = host
        self.rcvbuf = rcvbuf
        self.no_rtp_timeout = no_rtp_timeout
        self.drain_interval = drain_interval
        self.log_level = log_level
        self.workers = [WorkerProcess(self, i) for i in range(count)]
        self.stopping = False
        self._ident = 0
        self._backoff = [0.0] * count
        self._respawns: dict[int, Any] = {}

    def startService(self) -> None:  # noqa: N802 - Twisted API
        super().startService()  # type: ignore[no-untyped-call]
        self.stopping = False
        for worker in self.workers:
            worker.spawn()
        log.info("{n} media worker process(es) receive RTP (media.workers)", n=self.count)

    def stopService(self) -> defer.Deferred[Any]:  # noqa: N802 - Twisted API
        super().stopService()  # type: ignore[no-untyped-call]
        self.stopping = True
        for call in self._respawns.values():
            if call.active():
                call.cancel()
        self._respawns.clear()
        waits = []
        for worker in self.workers:
            if worker.alive and worker.ended is not None:
                waits.append(worker.ended)
                worker.broken("platform stopping")  # closes the channel: the worker exits on EOF
        return defer.gatherResults(waits, consumeErrors=True)

    def pick(self) -> WorkerProcess:
        live = [w for w in self.workers if w.alive and not w._broken]
        if not live:
            raise NoMediaWorker("every media worker is down; retry in a few seconds")
        return min(live, key=lambda w: len(w.streams))

    def next_ident(self) -> int:
        self._ident = (self._ident + 1) % (1 << 32) or 1
        return self._ident

    def receiver(self, ingest: RtpIngest, lease: PortLease, *, mode: str, on_timeout: Any = None) -> RemoteReceiver:
        """``LiveStreams.receiver_factory``."""
        return RemoteReceiver(self, ingest, lease, mode=mode, on_timeout=on_timeout)

    @staticmethod
    def ingest(dispatcher: FrameDispatcher, *, ssrc: int | None = None) -> RemoteIngest:
        """``LiveStreams.ingest_factory``."""
        return RemoteIngest(dispatcher, ssrc=ssrc)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.alive and w.pid is not None]

    def worker_exited(self, worker: WorkerProcess, *, clean: bool) -> None:
        if self.stopping or not self.running:
            return
        i = worker.index
        lived = self.reactor.seconds() - worker.started_at
        self._backoff[i] = 0.0 if lived >= STABLE_AFTER else min(RESPAWN_MAX, max(RESPAWN_MIN, 2 * self._backoff[i]))
        delay = self._backoff[i]
        log.info("respawning media worker {index} in {delay} s", index=i, delay=delay)
        self._respawns[i] = self.reactor.callLater(delay, self._respawn, worker)

    def _respawn(self, worker: WorkerProcess) -> None:
        self._respawns.pop(worker.index, None)
        if self.stopping:
            return
        try:
            worker.spawn()
        except Exception:  # noqa: BLE001 - tried again later
            log.failure("respawning media worker {index} failed", index=worker.index)
            self._respawns[worker.index] = self.reactor.callLater(RESPAWN_MAX, self._respawn, worker)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    it = iter(text)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(nxt, "\\" + nxt))
        else:
            out.append(ch)
    return "".join(out)

