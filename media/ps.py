"""Sans-IO MPEG-2 program stream demuxer for GB/T 28181 live media.

Theory of operation (ISO/IEC 13818-1 §2.5, GB/T 28181-2016 Annex C): the
device sends one pack per video frame -- pack header (00 00 01 BA), on
keyframes a system header (BB) and a program stream map (BC), then one or more
PES packets (E0 video, C0 audio). `PsDemuxer.feed` takes the byte stream in
any chunking (typically the RTP payloads of a frame), parses every complete
unit in its buffer and keeps the incomplete tail for the next call.

Video PES payloads are collected per stream_id into one access unit until the
next pack header or a PES carrying a different PTS (frames above 65,408 bytes
span several PES packets); chunks go into a list and are joined once per
frame. Audio PES packets are self-contained and become frames immediately.
When ``feed`` gets ``bytes`` (immutable) and nothing is buffered -- the
ingest feeds one RTP timestamp's payloads joined, i.e. one whole pack -- it
parses them in place and keeps the PES payloads by reference, so the frame's
bytes are copied once, by the final join; otherwise bytes go through the
buffer and each PES payload is copied out of it.
Because the end of a video frame is only known when the next one starts, a
frame is emitted one pack late; `flush()` drains the last one.

Bytes that do not start a known unit count one resync and are skipped up to
the next 00 00 01 start code whose code is a pack/system/stream id (>= B9);
NAL units never produce one, their first byte having the forbidden_zero_bit
clear (H.264 §7.4.1, H.265 §7.4.2.2).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from media import nal
from media.frame import Codec, Frame
from media.logthrottle import LogThrottle

log = logging.getLogger(__name__)

PACK_START = 0xBA
PROGRAM_END = 0xB9
SYSTEM_HEADER = 0xBB
PSM = 0xBC
PRIVATE_1 = 0xBD
PADDING = 0xBE
PRIVATE_2 = 0xBF

# ISO/IEC 13818-1 Table 2-34 plus GB/T 28181-2016 Annex C.2 (0x90/0x91 G.711).
STREAM_TYPES: dict[int, Codec] = {
    0x1B: Codec.H264,
    0x24: Codec.H265,
    0x90: Codec.G711A,
    0x91: Codec.G711U,
    0x0F: Codec.AAC,
}

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024

_RESYNC = re.compile(rb"\x00\x00\x01[\xb9-\xff]")


class PsError(ValueError):
    """A program stream unit that cannot be parsed; the demuxer logs and resyncs."""


@dataclass(slots=True)
class PsStats:
    """Counters: frames emitted, bytes fed, resyncs after garbage, frames dropped."""

    frames: int = 0
    bytes: int = 0
    resyncs: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _Pending:
    """An access unit being assembled from one or more PES payloads."""

    pts: int
    dts: int
    chunks: list[bytes | memoryview] = field(default_factory=list)
    size: int = 0
    oversized: bool = False


def _is_video(stream_id: int) -> bool:
    return 0xE0 <= stream_id <= 0xEF


def _is_audio(stream_id: int) -> bool:
    return 0xC0 <= stream_id <= 0xDF


def parse_timestamp(b: bytes | memoryview) -> int:
    """33-bit PTS/DTS from its 5-byte PES field (ISO/IEC 13818-1 §2.4.3.7).

    Marker bits are checked loosely: some cameras get them wrong, and the value
    bits are still right, so a bad marker is logged and the value kept.
    """
    if not (b[0] & 1 and b[2] & 1 and b[4] & 1):
        log.debug("PES timestamp marker bits not set: %s", bytes(b[:5]).hex())
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def first_picture_is_key(codec: Codec, au: bytes) -> bool:
    """Whether the access unit's first slice is an IDR (H.264) / IRAP (H.265) slice.

    Same answer as ``nal.is_keyframe`` for a conforming access unit, whose
    slices are all of one picture (H.264 §7.4.1.2.3, H.265 §7.4.2.4.4), but
    the scan stops at the first VCL NAL unit instead of finding every start
    code of a 100 KB picture: the parameter sets and SEI come first.
    """
    h265 = codec is Codec.H265
    find = au.find
    pos = find(b"\x00\x00\x01")
    while 0 <= pos < len(au) - 3:
        header = au[pos + 3]
        if h265:
            t = (header >> 1) & 0x3F
            if t < 32:  # VCL (H.265 Table 7-1)
                return nal.H265_NAL_IRAP_FIRST <= t <= nal.H265_NAL_IRAP_LAST
        else:
            t = header & 0x1F
            if 1 <= t <= 5:  # VCL (H.264 Table 7-1)
                return t == nal.H264_NAL_IDR
        pos = find(b"\x00\x00\x01", pos + 3)
    return False


def _times(times: int) -> str:
    return f" ({times} times since the last such line)" if times > 1 else ""


class PsDemuxer:
    """Streaming MPEG-PS demuxer: ``feed(bytes) -> list[Frame]``.

    ``max_frame_bytes`` bounds one access unit (the buffer is otherwise bounded
    by the 16-bit PES/PSM length fields); a larger frame is dropped and counted.

    Garbage and broken units are counted in ``stats`` and logged once per
    ``LOG_INTERVAL`` seconds of the ``now`` given to ``feed`` with a count: a
    camera sending junk in every packet would otherwise write a line per
    packet. Without ``now`` (files) only the first line of each kind comes.
    """

    LOG_INTERVAL = 10.0

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.stats = PsStats()
        self.stream_types: dict[int, int] = {}  # elementary_stream_id -> stream_type (PSM)
        self._buf = bytearray()
        self._pending: dict[int, _Pending] = {}
        self._last_pts: dict[int, int] = {}
        self._sniffed: dict[int, Codec] = {}
        self._in_garbage = False
        self._unknown_types_logged: set[int] = set()
        self._log_throttle = LogThrottle(self.LOG_INTERVAL, max_keys=16)
        self._now = 0.0

    # -- public ----------------------------------------------------------

    def feed(self, data: bytes | memoryview, now: float | None = None) -> list[Frame]:
        """Append bytes of the program stream; return the frames now complete.

        A ``memoryview`` (an RTP packet's payload) is appended without an
        intermediate copy. ``now`` (seconds) only paces the log.
        """
        if now is not None:
            self._now = now
        self.stats.bytes += len(data)
        out: list[Frame] = []
        if not self._buf and type(data) is bytes:
            pos = self._parse(data, out)
            if pos < len(data):
                self._buf += memoryview(data)[pos:]
            return out
        self._buf += data
        pos = self._parse(self._buf, out)
        del self._buf[:pos]
        return out

    def flush(self) -> list[Frame]:
        """Emit every access unit still being assembled (end of stream / BYE).

        A unit cut short (its declared length never arrived) is discarded and
        counted in ``stats.dropped``; a following ``feed`` starts afresh.
        """
        out: list[Frame] = []
        if self._buf:
            self.stats.dropped += 1
            log.info("discarding %d bytes of an incomplete PS unit at flush", len(self._buf))
            self._buf.clear()
        self._flush_all(out)
        return out

    def end_of_frame(self) -> list[Frame]:
        """The byte stream reached a frame boundary: emit the pending access units now.

        The RTP ingest calls this when the RTP timestamp changes (one frame per
        timestamp, GB/T 28181-2022 §4.3.6), so a frame leaves as soon as the
        next one starts, without waiting for the next pack header to be
        parsed. While a unit is incomplete in the buffer nothing happens: the
        next pack header ends the frame as usual.
        """
        out: list[Frame] = []
        if not self._buf:
            self._flush_all(out)
        return out

    def codec_of(self, stream_id: int) -> Codec | None:
        """Codec the PSM declared for ``stream_id``, or None when unknown."""
        st = self.stream_types.get(stream_id)
        return None if st is None else STREAM_TYPES.get(st)

    # -- parsing -----------------------------------------------------------

    def _parse(self, buf: bytes | bytearray, out: list[Frame]) -> int:
        stable = type(buf) is bytes  # PES payload views may outlive this call
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            if buf[pos] != 0 or buf[pos + 1] != 0 or buf[pos + 2] != 1 or buf[pos + 3] < 0xB9:
                pos = self._resync(buf, pos)
                continue
            code = buf[pos + 3]
            if code == PACK_START:
                used = self._pack_header(buf, pos)
                if used == 0:
                    break
                if used < 0:
                    pos = self._resync(buf, pos + 1)
                    continue
                self._in_garbage = False
                self._flush_all(out)
                pos += used
                continue
            if code == PROGRAM_END:
                self._in_garbage = False
                self._flush_all(out)
                pos += 4
                continue
            if n - pos < 6:
                break
            end = pos + 6 + (buf[pos + 4] << 8 | buf[pos + 5])
            if end > n:
                break
            self._in_garbage = False
            body = memoryview(buf)[pos + 6 : end]
            try:
                if code == PSM:
                    self._psm(body)
                elif _is_video(code) or _is_audio(code):
                    self._pes(code, body, out, stable)
                # BB system header, BD/BF private, BE padding and other ids: skipped by length.
            except PsError as exc:
                if times := self._log_throttle.hit("unit", self._now):
                    log.warning("dropping PS unit 00 00 01 %02X: %s%s", code, exc, _times(times))
            finally:
                body.release()
            pos = end
        return pos

    def _resync(self, buf: bytes | bytearray, pos: int) -> int:
        """Skip to the next plausible start code; count one resync per garbage run."""
        if not self._in_garbage:
            self._in_garbage = True
            self.stats.resyncs += 1
            if times := self._log_throttle.hit("resync", self._now):
                log.info("PS resync at garbage %s%s", bytes(buf[pos : pos + 8]).hex(), _times(times))
        m = _RESYNC.search(buf, pos + 1)
        if m is not None:
            return m.start()
        # Keep a possible partial start code at the tail for the next feed().
        return max(pos + 1, len(buf) - 3)

    def _pack_header(self, buf: bytes | bytearray, pos: int) -> int:
        """Length of the pack header at ``pos``; 0 if incomplete, -1 if invalid.

        ISO/IEC 13818-1 §2.5.3.3 (MPEG-2: '01' prefix, 14 bytes + stuffing in the
        low 3 bits of byte 13); ISO/IEC 11172-1 §2.4.3.2 (MPEG-1: '0010', 12 bytes).
        """
        if len(buf) - pos < 5:
            return 0
        b4 = buf[pos + 4]
        if b4 >> 6 == 0b01:
            if len(buf) - pos < 14:
                return 0
            used = 14 + (buf[pos + 13] & 0x07)
        elif b4 >> 4 == 0b0010:
            used = 12
        else:
            return -1
        return 0 if len(buf) - pos < used else used

    def _psm(self, body: memoryview) -> None:
        """program_stream_map(): stream_type per elementary_stream_id (§2.5.4.1)."""
        if len(body) < 6:
            raise PsError("PSM shorter than its fixed fields")
        info_len = body[2] << 8 | body[3]
        p = 4 + info_len
        if p + 2 > len(body):
            raise PsError("PSM program_stream_info_length past the end")
        map_end = p + 2 + (body[p] << 8 | body[p + 1])
        p += 2
        if map_end > len(body):
            raise PsError("PSM elementary_stream_map_length past the end")
        types: dict[int, int] = {}
        while p + 4 <= map_end:
            stream_type, es_id = body[p], body[p + 1]
            types[es_id] = stream_type
            p += 4 + (body[p + 2] << 8 | body[p + 3])
        if types != self.stream_types:
            log.info("PSM stream types %s", {hex(k): hex(v) for k, v in types.items()})
            self.stream_types = types

    def _pes(self, stream_id: int, body: memoryview, out: list[Frame], stable: bool = False) -> None:
        """PES_packet() (§2.4.3.6): timestamps, then payload into the pending AU."""
        pts: int | None
        dts: int | None
        if len(body) >= 3 and body[0] >> 6 == 0b10:
            flags = body[1] >> 6
            start = 3 + body[2]
            if start > len(body):
                raise PsError("PES_header_data_length past the end")
            pts = dts = None
            if flags & 0b10:
                if start < 8:
                    raise PsError("PTS flag without room for a PTS")
                pts = dts = parse_timestamp(body[3:8])
                if flags == 0b11:
                    if start < 13:
                        raise PsError("DTS flag without room for a DTS")
                    dts = parse_timestamp(body[8:13])
        else:
            start, pts, dts = self._mpeg1_pes_header(body)
        payload = body[start:]
        if _is_audio(stream_id):
            self._audio(stream_id, pts, payload, out)
            return
        pending = self._pending.get(stream_id)
        if pts is not None and pending is not None and pending.pts != pts:
            self._emit(stream_id, out)
            pending = None
        if pending is None:
            p = self._last_pts.get(stream_id, 0) if pts is None else pts
            pending = _Pending(pts=p, dts=p if dts is None else dts)
            self._pending[stream_id] = pending
            self._last_pts[stream_id] = p
        if pending.oversized or not payload:
            return
        pending.size += len(payload)
        if pending.size > self.max_frame_bytes:
            pending.oversized = True
            pending.chunks.clear()
            self.stats.dropped += 1
            log.warning(
                "dropping frame on stream %02X: over %d bytes", stream_id, self.max_frame_bytes
            )
            return
        pending.chunks.append(payload if stable else bytes(payload))

    @staticmethod
    def _mpeg1_pes_header(body: memoryview) -> tuple[int, int | None, int | None]:
        """MPEG-1 packet header (ISO/IEC 11172-1 §2.4.3.3): stuffing, STD, PTS/DTS."""
        p = 0
        while p < len(body) and body[p] == 0xFF and p < 16:
            p += 1
        if p + 1 < len(body) and body[p] >> 6 == 0b01:
            p += 2  # STD_buffer_scale / size
        if p >= len(body):
            raise PsError("MPEG-1 PES header runs past the packet")
        lead = body[p] >> 4
        if lead == 0b0010 and p + 5 <= len(body):
            pts = parse_timestamp(body[p : p + 5])
            return p + 5, pts, pts
        if lead == 0b0011 and p + 10 <= len(body):
            return p + 10, parse_timestamp(body[p : p + 5]), parse_timestamp(body[p + 5 : p + 10])
        if body[p] == 0x0F:
            return p + 1, None, None
        raise PsError(f"bad MPEG-1 PES header byte {body[p]:02X}")

    def _audio(
        self, stream_id: int, pts: int | None, payload: memoryview, out: list[Frame]
    ) -> None:
        if pts is None:
            pts = self._last_pts.get(stream_id, 0)
        self._last_pts[stream_id] = pts
        if not payload:
            return
        st = self.stream_types.get(stream_id)
        # GB/T 28181-2016 §6.1.2: G.711 is the mandatory audio codec, so assume it.
        codec = Codec.G711A if st is None else STREAM_TYPES.get(st)
        if codec is None or codec.is_video:
            self._unknown_type(stream_id, st)
            return
        self.stats.frames += 1
        out.append(Frame(codec, bytes(payload), pts, pts, True, stream_id))

    def _unknown_type(self, stream_id: int, stream_type: int | None) -> None:
        self.stats.dropped += 1
        if stream_id not in self._unknown_types_logged:
            self._unknown_types_logged.add(stream_id)
            log.warning("dropping stream %02X: unsupported stream_type %s", stream_id, stream_type)

    def _flush_all(self, out: list[Frame]) -> None:
        for stream_id in list(self._pending):
            self._emit(stream_id, out)

    def _emit(self, stream_id: int, out: list[Frame]) -> None:
        pending = self._pending.pop(stream_id)
        if pending.oversized or not pending.chunks:
            return
        data = b"".join(pending.chunks)
        st = self.stream_types.get(stream_id)
        codec: Codec | None
        if st is None:
            codec = self._sniffed.get(stream_id)
            if codec is None:
                codec = nal.sniff_video_codec(data)
                self._sniffed[stream_id] = codec
        else:
            codec = STREAM_TYPES.get(st)
        if codec is not Codec.H264 and codec is not Codec.H265:
            self._unknown_type(stream_id, st)
            return
        self.stats.frames += 1
        out.append(
            Frame(
                codec=codec,
                data=data,
                pts=pending.pts,
                dts=pending.dts,
                keyframe=first_picture_is_key(codec, data),
                stream_id=stream_id,
            )
        )
