"""Wire codec between the platform and its media worker processes, sans-IO.

Theory of operation (``media.workers`` >= 1, docs/architecture.md "Media
workers"): the main process keeps the stream table, the SIP side and every
output; a worker process receives a stream's RTP (socket reads, RTP header,
reorder, PS demux: ``RtpReceiver`` + ``RtpIngest``) and sends whole frames
back. The two talk over one ``AF_UNIX`` ``SOCK_STREAM`` socket pair per
worker. The main process binds each stream's sockets itself (so the port pool
and its bind-failure retry stay where they are) and passes the bound sockets
with ``SCM_RIGHTS`` ancillary data (unix(7)) on the bytes of the ``Open``
record that uses them; ``Open.fds`` says how many descriptors it takes from
the queue of those received.

A record is a 4-byte big-endian length ``L``, then ``L`` bytes: one type
octet and the type's body (fixed ``struct`` fields, then a variable tail:
UTF-8 text or frame bytes). ``L`` is at most ``MAX_RECORD`` (16 MiB; a
1080p I-frame is ~100-300 KB, H.265 4K ones a few MB): a larger length, an
unknown type, a body shorter than its fields, bad UTF-8 or an out-of-range
code is a ``WireError``, after which the decoder refuses further input
(the stream of records is out of step; the owner closes the channel).

Main -> worker: ``Open``, ``Rekey``, ``PayloadFormats``, ``Connect``,
``Close``. Worker -> main: ``FrameMessage`` (encoded as a header plus the
frame's bytes, written as two buffers so the frame is never joined in
Python), ``Stats``, ``Timeout``, ``Connected``, ``ConnectFailed``,
``Closed``. Floats that may be absent (``first_packet_at``) travel as NaN.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Final

from media.frame import Codec, Frame

__all__ = [
    "MAX_RECORD",
    "MODES",
    "Closed",
    "Close",
    "ConnectFailed",
    "Connect",
    "Connected",
    "FrameMessage",
    "Message",
    "Open",
    "PayloadFormats",
    "Rekey",
    "Stats",
    "Timeout",
    "WireDecoder",
    "WireError",
    "encode",
    "encode_frame_header",
]

MAX_RECORD: Final = 16 * 1024 * 1024
# Transport modes of media.receiver, by wire code.
MODES: Final = ("udp", "tcp-passive", "tcp-active")
# Payload formats of RtpIngest.set_payload_formats, by wire code.
FORMATS: Final = ("PS", "H264", "H265")
CODECS: Final = tuple(Codec)
# Depacketizer codecs in Stats.depacketizers, as a bit mask.
_DEPACKETIZER_BITS: Final = {Codec.H264: 1, Codec.H265: 2}

_LEN: Final = struct.Struct("!I")
_TYPE_LEN: Final = 5  # length prefix + type octet

# Type octets.
T_OPEN: Final = 1
T_REKEY: Final = 2
T_FORMATS: Final = 3
T_CONNECT: Final = 4
T_CLOSE: Final = 5
T_FRAME: Final = 16
T_STATS: Final = 17
T_TIMEOUT: Final = 18
T_CONNECTED: Final = 19
T_CONNECT_FAILED: Final = 20
T_CLOSED: Final = 21

_OPEN: Final = struct.Struct("!IBBIdIB")  # stream, mode, has ssrc, ssrc, no_rtp_timeout, rcvbuf, fds; owner
_REKEY: Final = struct.Struct("!IBI")  # stream, has ssrc, ssrc
_FORMATS: Final = struct.Struct("!IB")  # stream, count; count x (pt, format)
_CONNECT: Final = struct.Struct("!IH")  # stream, port; host
_STREAM: Final = struct.Struct("!I")  # stream; (reason)
_FRAME: Final = struct.Struct("!IBBBqqd")  # stream, codec, keyframe, PES stream_id, pts, dts, received_at
# stream, packets, bytes, bad, foreign ssrc, unknown pt, after marker, first/last packet at,
# reorder received, delivered, lost, duplicates, reordered, late, resets, jitter,
# depacketizer mask, stream type count; count x (elementary stream id, stream type)
_STATS: Final = struct.Struct("!I6qdd7qdBB")


class WireError(ValueError):
    """A record that breaks the format: the channel is out of step and must be closed."""


@dataclass(frozen=True, slots=True)
class Open:
    """Receive stream ``stream`` (the main process's number for it) on the next ``fds`` descriptors.

    udp: two (RTP, RTCP; RFC 3550 §11), tcp-passive: one listening socket,
    tcp-active: none (``Connect`` follows). ``ssrc`` None: take the first seen.
    """

    stream: int
    mode: str
    ssrc: int | None
    no_rtp_timeout: float
    rcvbuf: int
    fds: int
    owner: str  # the channel, for the worker's log lines


@dataclass(frozen=True, slots=True)
class Rekey:
    """The device answered another ``y=`` SSRC (GB/T 28181-2016 Annex F), or None: take the first seen."""

    stream: int
    ssrc: int | None


@dataclass(frozen=True, slots=True)
class PayloadFormats:
    """The SDP answer's payload type map (RFC 3264 §6.1), what ``RtpIngest.set_payload_formats`` takes."""

    stream: int
    formats: dict[int, str]


@dataclass(frozen=True, slots=True)
class Connect:
    """tcp-active: connect to the device's answered media address."""

    stream: int
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Close:
    stream: int


@dataclass(frozen=True, slots=True)
class FrameMessage:
    stream: int
    frame: Frame
    received_at: float


@dataclass(frozen=True, slots=True)
class Stats:
    """What the stream's API entry and start timeline read from the ingest (``LiveStream.info``)."""

    stream: int
    packets: int = 0
    bytes: int = 0
    bad_packets: int = 0
    foreign_ssrc: int = 0
    unknown_payload_type: int = 0
    after_marker: int = 0
    first_packet_at: float | None = None
    last_packet_at: float | None = None
    received: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    resets: int = 0
    jitter: float = 0.0  # RTP timestamp units (RFC 3550 §6.4.1)
    depacketizers: tuple[Codec, ...] = ()  # bare-ES codecs in use (RFC 6184/7798)
    stream_types: tuple[tuple[int, int], ...] = ()  # the PSM's (elementary stream id, stream type)


@dataclass(frozen=True, slots=True)
class Timeout:
    """The worker's no-RTP watchdog ended the stream."""

    stream: int
    reason: str


@dataclass(frozen=True, slots=True)
class Connected:
    stream: int


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    stream: int
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The worker closed the stream's sockets and flushed its ingest (after ``Close``)."""

    stream: int


Message = (Open | Rekey | PayloadFormats | Connect | Close | FrameMessage | Stats | Timeout | Connected
           | ConnectFailed | Closed)


def _record(kind: int, body: bytes) -> bytes:
    if len(body) + 1 > MAX_RECORD:
        raise WireError(f"record of {len(body) + 1} bytes exceeds {MAX_RECORD}")
    return _LEN.pack(len(body) + 1) + bytes((kind,)) + body


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else value


def encode_frame_header(stream: int, frame: Frame, received_at: float) -> bytes:
    """The record header of a frame; the frame's ``data`` follows it on the wire as is."""
    size = 1 + _FRAME.size + len(frame.data)
    if size > MAX_RECORD:
        raise WireError(f"frame of {len(frame.data)} bytes exceeds the record limit {MAX_RECORD}")
    return _LEN.pack(size) + bytes((T_FRAME,)) + _FRAME.pack(
        stream, CODECS.index(frame.codec), 1 if frame.keyframe else 0, frame.stream_id, frame.pts, frame.dts,
        received_at)


def encode(msg: Message) -> bytes:
    """One record (a frame's too, joined: ``encode_frame_header`` avoids that copy)."""
    if isinstance(msg, Open):
        return _record(T_OPEN, _OPEN.pack(
            msg.stream, MODES.index(msg.mode), msg.ssrc is not None, msg.ssrc or 0, msg.no_rtp_timeout,
            msg.rcvbuf, msg.fds) + msg.owner.encode())
    if isinstance(msg, Rekey):
        return _record(T_REKEY, _REKEY.pack(msg.stream, msg.ssrc is not None, msg.ssrc or 0))
    if isinstance(msg, PayloadFormats):
        body = bytearray(_FORMATS.pack(msg.stream, len(msg.formats)))
        for pt, fmt in msg.formats.items():
            body += bytes((pt, FORMATS.index(fmt)))
        return _record(T_FORMATS, bytes(body))
    if isinstance(msg, Connect):
        return _record(T_CONNECT, _CONNECT.pack(msg.stream, msg.port) + msg.host.encode())
    if isinstance(msg, FrameMessage):
        return encode_frame_header(msg.stream, msg.frame, msg.received_at) + msg.frame.data
    if isinstance(msg, Stats):
        mask = 0
        types = msg.stream_types[:255]  # a PSM lists a handful of elementary streams
        for codec in msg.depacketizers:
            mask |= _DEPACKETIZER_BITS[codec]
        body = bytearray(_STATS.pack(
            msg.stream, msg.packets, msg.bytes, msg.bad_packets, msg.foreign_ssrc, msg.unknown_payload_type,
            msg.after_marker, _nan(msg.first_packet_at), _nan(msg.last_packet_at), msg.received, msg.delivered,
            msg.lost, msg.duplicates, msg.reordered, msg.late, msg.resets, msg.jitter, mask,
            len(types)))
        for es_id, stream_type in types:
            body += bytes((es_id, stream_type))
        return _record(T_STATS, bytes(body))
    if isinstance(msg, Timeout):
        return _record(T_TIMEOUT, _STREAM.pack(msg.stream) + msg.reason.encode())
    if isinstance(msg, ConnectFailed):
        return _record(T_CONNECT_FAILED, _STREAM.pack(msg.stream) + msg.reason.encode())
    kind = {Close: T_CLOSE, Connected: T_CONNECTED, Closed: T_CLOSED}[type(msg)]
    return _record(kind, _STREAM.pack(msg.stream))


class WireDecoder:
    """Bytes in, messages out; ``feed`` raises ``WireError`` on a broken record and for good after it."""

    def __init__(self, max_record: int = MAX_RECORD) -> None:
        self.max_record = max_record
        self._buf = bytearray()
        self.failed: str | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> list[Message]:
        """The messages ``data`` completes; a record cut at the end waits for the next call.

        Records wholly inside ``data`` are decoded from it in place; only a
        record cut by the end of a read is copied aside (frames are the bulk
        of the channel: one copy of their bytes, into the ``Frame``).
        """
        if self.failed is not None:
            raise WireError(f"channel already broken: {self.failed}")
        out: list[Message] = []
        view = memoryview(data)
        n = len(view)
        pos = 0
        try:
            buf = self._buf
            if buf:  # a record cut by the last read: complete it first
                if len(buf) < 4:
                    take = min(4 - len(buf), n)
                    buf += view[:take]
                    pos = take
                    if len(buf) < 4:
                        return out
                size = self._size(_LEN.unpack_from(buf)[0])
                take = min(4 + size - len(buf), n - pos)
                buf += view[pos:pos + take]
                pos += take
                if len(buf) < 4 + size:
                    return out
                self._buf = bytearray()
                with memoryview(buf) as whole:
                    out.append(self._decode(buf[4], whole[5:4 + size]))
            while n - pos >= 4:
                size = self._size(_LEN.unpack_from(view, pos)[0])
                if n - pos - 4 < size:
                    break
                out.append(self._decode(view[pos + 4], view[pos + 5:pos + 4 + size]))
                pos += 4 + size
        except WireError as e:
            self.failed = str(e)
            self._buf = bytearray()
            raise
        if pos < n:
            self._buf = bytearray(view[pos:])
        return out

    def _size(self, size: int) -> int:
        if size == 0 or size > self.max_record:
            raise WireError(f"record length {size} is outside 1-{self.max_record}")
        return size

    def _decode(self, kind: int, body: memoryview) -> Message:
        try:
            return self._decode_body(kind, body)
        except (struct.error, IndexError, KeyError) as e:
            raise WireError(f"record type {kind}: malformed body of {len(body)} bytes ({e})") from None
        except UnicodeDecodeError:
            raise WireError(f"record type {kind}: text is not UTF-8") from None
        finally:
            body.release()

    @staticmethod
    def _decode_body(kind: int, body: memoryview) -> Message:
        if kind == T_FRAME:
            stream, codec, key, es_id, pts, dts, at = _FRAME.unpack_from(body)
            if codec >= len(CODECS):
                raise WireError(f"frame codec {codec} unknown")
            return FrameMessage(stream, Frame(CODECS[codec], bytes(body[_FRAME.size:]), pts, dts, bool(key), es_id),
                                at)
        if kind == T_STATS:
            f = _STATS.unpack_from(body)
            pairs = body[_STATS.size:]
            count = f[18]
            if len(pairs) != 2 * count:
                raise WireError(f"stats: {count} stream types in {len(pairs)} bytes")
            types = tuple((pairs[2 * i], pairs[2 * i + 1]) for i in range(count))
            codecs = tuple(c for c, bit in _DEPACKETIZER_BITS.items() if f[17] & bit)
            return Stats(
                f[0], packets=f[1], bytes=f[2], bad_packets=f[3], foreign_ssrc=f[4], unknown_payload_type=f[5],
                after_marker=f[6], first_packet_at=_opt(f[7]), last_packet_at=_opt(f[8]), received=f[9],
                delivered=f[10], lost=f[11], duplicates=f[12], reordered=f[13], late=f[14], resets=f[15],
                jitter=f[16], depacketizers=codecs, stream_types=types)
        if kind == T_OPEN:
            stream, mode, has, ssrc, timeout, rcvbuf, fds = _OPEN.unpack_from(body)
            if mode >= len(MODES):
                raise WireError(f"open: transport mode {mode} unknown")
            if not timeout > 0:
                raise WireError(f"open: no_rtp_timeout {timeout} must be positive")
            return Open(stream, MODES[mode], ssrc if has else None, timeout, rcvbuf, fds,
                        str(body[_OPEN.size:], "utf-8"))
        if kind == T_REKEY:
            if len(body) != _REKEY.size:
                raise WireError(f"rekey: {len(body)} bytes")
            stream, has, ssrc = _REKEY.unpack(body)
            return Rekey(stream, ssrc if has else None)
        if kind == T_FORMATS:
            stream, count = _FORMATS.unpack_from(body)
            pairs = body[_FORMATS.size:]
            if len(pairs) != 2 * count:
                raise WireError(f"payload formats: {count} entries in {len(pairs)} bytes")
            formats: dict[int, str] = {}
            for i in range(count):
                pt, fmt = pairs[2 * i], pairs[2 * i + 1]
                if pt > 127 or fmt >= len(FORMATS):
                    raise WireError(f"payload formats: type {pt} format {fmt} out of range")
                formats[pt] = FORMATS[fmt]
            return PayloadFormats(stream, formats)
        if kind == T_CONNECT:
            stream, port = _CONNECT.unpack_from(body)
            return Connect(stream, str(body[_CONNECT.size:], "utf-8"), port)
        if kind in (T_TIMEOUT, T_CONNECT_FAILED):
            (stream,) = _STREAM.unpack_from(body)
            reason = str(body[_STREAM.size:], "utf-8")
            return Timeout(stream, reason) if kind == T_TIMEOUT else ConnectFailed(stream, reason)
        if kind in (T_CLOSE, T_CONNECTED, T_CLOSED):
            if len(body) != _STREAM.size:
                raise WireError(f"record type {kind}: {len(body)} bytes")
            (stream,) = _STREAM.unpack(body)
            return Close(stream) if kind == T_CLOSE else Connected(stream) if kind == T_CONNECTED else Closed(stream)
        raise WireError(f"record type {kind} unknown")
