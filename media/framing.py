"""RTP-over-TCP de-framing: RFC 4571 and RTSP interleaved frames.

GB/T 28181-2016 §C.2 (TCP passive/active media) frames each RTP packet with
the RFC 4571 §2 two-byte big-endian length.  Some devices and ZLMediaKit's
``RtpSplitter`` also send the RTSP interleaved form (RFC 2326 §10.12):
``$``, a channel byte, then the two-byte length.  The form is detected per
frame by the first byte being ``0x24``, as ZLMediaKit does.  The price is
that an RFC 4571 frame whose length is 9216..9471 reads as interleaved; RTP
over TCP from GB devices stays far below that (payloads of about 1,400
bytes), and ZLMediaKit makes the same choice.

Errors: a declared length below the 12-byte RTP fixed header (RFC 3550 §5.1)
means the stream is desynchronised; there is no way to resync a length-
prefixed stream, so the framer raises ``FramingError`` and stays failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from media import accel

__all__ = ["FramingError", "Rfc4571Framer", "TcpFrame"]

log = logging.getLogger(__name__)

_INTERLEAVED = 0x24
_MIN_FRAME = 12
# A whole frame (65535) plus its 4-byte interleaved prefix may wait for its tail.
_DEFAULT_MAX_BUFFER = 65535 + 4
# media._fastpath.split_rfc4571: (packets, bytes used, empty frames, bad length or -1).
Splitter = Callable[[bytes | bytearray | memoryview], tuple[list[bytes], int, int, int]]


class FramingError(ValueError):
    """The TCP byte stream is not RFC 4571 / interleaved framed RTP."""


@dataclass(frozen=True, slots=True)
class TcpFrame:
    """One de-framed packet; ``channel`` is None for RFC 4571, else the RTSP channel."""

    channel: int | None
    data: bytes


class Rfc4571Framer:
    """Split a TCP byte stream into RTP packets (RFC 4571 §2, RFC 2326 §10.12).

    Sans-IO: ``feed`` takes whatever bytes arrived and returns the complete
    frames.  Buffered bytes are bounded by ``max_buffer`` (at most one
    incomplete frame is ever held, so the default fits any legal frame).
    """

    def __init__(self, max_buffer: int = _DEFAULT_MAX_BUFFER) -> None:
        if max_buffer < 4:
            raise ValueError(f"max_buffer {max_buffer} is below the 4-byte frame prefix")
        self._buf = bytearray()
        self._max_buffer = max_buffer
        self._failed: str | None = None
        self.skipped_empty = 0
        # The compiled splitter (media/accel.py), or None for the Python loop.
        self._split: Splitter | None = (
            accel.ext.split_rfc4571 if accel.ext is not None else None
        )

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Feed stream bytes; return complete packets (channel dropped).

        The compiled path splits the bytes where they are (a TCP read of many
        packets is not copied into the buffer first; only an incomplete tail
        is kept); the packets, counters and errors are those of ``feed_frames``.
        """
        split = self._split
        if split is None:
            return [frame.data for frame in self.feed_frames(data)]
        if self._failed is not None:
            raise FramingError(f"framer failed earlier: {self._failed}")
        buf = self._buf
        source: bytes | bytearray | memoryview
        if buf:
            buf += data
            source = buf
        else:
            source = data
        packets, used, empty, bad = split(source)
        self.skipped_empty += empty
        if bad >= 0:
            self._fail(f"declared frame length {bad} is below the 12-byte RTP header")
        if source is buf:
            del buf[:used]
        elif used < len(data):
            buf += memoryview(data)[used:]
        if len(buf) > self._max_buffer:
            self._fail(f"{len(buf)} bytes buffered exceed the {self._max_buffer}-byte limit")
        return packets

    def feed_frames(self, data: bytes | bytearray | memoryview) -> list[TcpFrame]:
        """Feed stream bytes; return complete frames with their interleaved channel."""
        if self._failed is not None:
            raise FramingError(f"framer failed earlier: {self._failed}")
        buf = self._buf
        buf += data
        frames: list[TcpFrame] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            if buf[pos] == _INTERLEAVED:
                if end - pos < 4:
                    break
                channel: int | None = buf[pos + 1]
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                channel = None
                length = (buf[pos] << 8) | buf[pos + 1]
                start = pos + 2
            if length == 0:
                # A keepalive-like empty frame carries nothing; RFC 4571 §2 allows it.
                self.skipped_empty += 1
                pos = start
                continue
            if length < _MIN_FRAME:
                self._fail(f"declared frame length {length} is below the 12-byte RTP header")
            if end - start < length:
                break
            frames.append(TcpFrame(channel, bytes(buf[start : start + length])))
            pos = start + length
        if pos:
            del buf[:pos]
        if len(buf) > self._max_buffer:
            self._fail(f"{len(buf)} bytes buffered exceed the {self._max_buffer}-byte limit")
        return frames

    def _fail(self, reason: str) -> None:
        self._failed = reason
        self._buf.clear()
        log.warning("RTP/TCP framing error, stream unusable: %s", reason)
        raise FramingError(reason)
