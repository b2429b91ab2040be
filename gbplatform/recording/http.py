"""HTTP helpers for recording playback: byte ranges and a paced download producer.

``byte_range`` reads a single ``Range: bytes=`` header (RFC 9110 §14.1.2);
HLS players fetch ``EXT-X-BYTERANGE`` parts with exactly that. Several
ranges in one header are answered with the first one only (a client must
accept a 206 with the range it got, RFC 9110 §15.3.7).

``Spool`` carries an MP4 download from the remux thread to the client. The
thread writes the MP4 into an unlinked temporary file as fast as it muxes
and returns its thread to the pool; the reactor side is the
``IPushProducer`` registered on the request, which reads the file a chunk
at a time and writes it to the transport while the transport has not
paused it (a slow client pauses it when the transport's buffer fills).
So a slow client costs spool bytes on disk, not a thread, and no more than
one chunk of memory (issue 8, item 23). The spool is bounded too: past
``limit`` bytes not yet sent, the thread waits for the client after all,
so one endless download cannot fill the disk. A client that goes away
cancels the spool, which ends the remux at its next write. The file is
closed by whichever side finishes last, so the thread never writes to a
descriptor the reactor closed (and the kernel may have handed out again).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from gbplatform.core.errors import DomainError
from gbplatform.recording.playback import Cancelled

__all__ = ["MP4_TYPE", "SPOOL_BYTES", "RangeNotSatisfiable", "RecordingOff", "Spool", "byte_range"]

MP4_TYPE = b"video/mp4"
SPOOL_BYTES = 1 << 30  # a download's bytes muxed ahead of its client, at most (on disk)
CHUNK = 64 * 1024  # bytes read from the spool per transport write
_RANGE = re.compile(rb"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*(?:,.*)?", re.DOTALL)


class RecordingOff(DomainError):
    """The platform runs without a recording manager (API: 503)."""

    status = 503
    code = "recording_unavailable"


class RangeNotSatisfiable(DomainError):
    status = 416
    code = "range_not_satisfiable"


def byte_range(header: bytes | None, size: int) -> tuple[int, int]:
    """``(first, last)`` byte positions, inclusive, for a ``Range`` header over ``size`` bytes."""
    if size <= 0:
        raise RangeNotSatisfiable("the segment is empty")
    if not header:
        return 0, size - 1
    m = _RANGE.fullmatch(header)
    if m is None:
        return 0, size - 1  # RFC 9110 §14.2: an unparseable Range is ignored
    first_s, last_s = m.group(1), m.group(2)
    if not first_s:
        if not last_s:
            return 0, size - 1
        n = int(last_s)  # a suffix: the last n bytes
        return max(0, size - n), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(f"bytes {first}-{last_s.decode() or ''} outside a {size}-byte segment")
    return first, last


@implementer(IPushProducer)
class Spool:
    """See the module docstring. ``write`` runs on the remux thread, the rest on the reactor."""

    def __init__(self, consumer: Any, call_from_thread: Any, *, directory: str | None = None,
                 limit: int = SPOOL_BYTES, chunk: int = CHUNK) -> None:
        self._consumer = consumer  # an IConsumer: the download's request
        self._call = call_from_thread
        self.limit = limit
        self.chunk = chunk
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by _release()
        self._fd = self._file.fileno()
        self._cond = threading.Condition(threading.Lock())
        self.written = 0  # bytes the thread put in the spool
        self.sent = 0  # bytes handed to the consumer
        self.paused = False
        self.cancelled = False
        self._ended = False  # the thread writes no more
        self._wake_pending = False
        self._users = 2  # the thread and the reactor; the last to let go closes the file
        self._closed = False  # the reactor let go
        self._done = False  # everything sent, or cancelled
        self._waiters: list[Deferred[None]] = []
        self.full = threading.Event()  # set while the thread waits for the client (tests, state)

    # -- remux thread ---------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Append ``data``; waits only while ``limit`` bytes are unsent. Raises ``Cancelled``."""
        with self._cond:
            while not self.cancelled and self.written - self.sent >= self.limit:
                self.full.set()
                self._cond.wait()
            self.full.clear()
            if self.cancelled:
                raise Cancelled("the client went away")
            at = self.written
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, at)
            at += n
            view = view[n:]
        with self._cond:
            self.written = at
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._call(self._pump)

    def end(self) -> None:
        """The thread is done writing (after success or failure): call it last, from the thread."""
        with self._cond:
            self._ended = True
        self._call(self._pump)
        self._release()

    # -- reactor ---------------------------------------------------------------------
    def drained(self) -> Deferred[None]:
        """Fires once every written byte went to the consumer (after ``end``), or on cancel."""
        d: Deferred[None] = Deferred()
        if self._done:
            d.callback(None)
            return d
        self._waiters.append(d)
        self._pump()
        return d

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.cancel()

    def cancel(self) -> None:
        """The client is gone: the thread stops at its next write; nothing more is sent."""
        with self._cond:
            if self.cancelled:
                return
            self.cancelled = True
            self._cond.notify_all()
        self._finish()

    def close(self) -> None:
        """The reactor is done with the spool (the response ended): cancel, let go of the file."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self._release()

    def _pump(self) -> None:
        with self._cond:
            self._wake_pending = False
        while not self.paused and not self.cancelled:
            with self._cond:
                available, ended = self.written - self.sent, self._ended
            if available <= 0:
                if ended:
                    self._finish()
                return
            data = os.pread(self._fd, min(available, self.chunk), self.sent)
            if not data:  # cannot happen with a regular file; do not spin if it does
                raise OSError(f"download spool: no bytes at {self.sent} of {self.written}")
            with self._cond:
                self.sent += len(data)
                self._cond.notify_all()
            self._consumer.write(data)  # may pause us at once: the loop checks

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _release(self) -> None:
        with self._cond:
            self._users -= 1
            last = self._users == 0
        if last:
            self._file.close()

