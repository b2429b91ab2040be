"""HTTP helpers for recording playback: byte ranges and a paced download producer.

``byte_range`` reads a single ``Range: bytes=`` header (RFC 9110 §14.1.2);
HLS players fetch ``EXT-X-BYTERANGE`` parts with exactly that. Several
ranges in one header are answered with the first one only (a client must
accept a 206 with the range it got, RFC 9110 §15.3.7).

``Pacer`` is the ``IPushProducer`` registered on a download's request: the
transport pauses it when its buffer fills (a slow client), and the remux
thread waits in ``wait()`` until resumed, so a download never queues more
than the transport's buffer in memory. A client that goes away cancels it,
which ends the remux thread at its next chunk.
"""

from __future__ import annotations

import re
import threading

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from gbplatform.errors import DomainError
from gbplatform.recording.playback import Cancelled

__all__ = ["MP4_TYPE", "Pacer", "RangeNotSatisfiable", "RecordingOff", "byte_range"]

MP4_TYPE = b"video/mp4"
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
class Pacer:
    """See the module docstring."""

    def __init__(self) -> None:
        self._go = threading.Event()
        self._go.set()
        self.cancelled = False

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._go.clear()

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        self._go.set()

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        self.cancel()

    def cancel(self) -> None:
        self.cancelled = True
        self._go.set()

    def wait(self, timeout: float = 300.0) -> None:
        """Block the producing thread while paused; raise ``Cancelled`` once the client is gone."""
        if not self._go.wait(timeout) or self.cancelled:
            raise Cancelled("the client went away")
