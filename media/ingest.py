"""One stream's receive path, sans-IO: RTP in, frames out to a ``FrameDispatcher``.

GB/T 28181-2016 §9.2 / Annex C: a device sends MPEG-PS in RTP (payload type
96 by convention), over UDP or over TCP with the RFC 4571 two-byte length
prefix. Some devices send the elementary stream itself, H.264 (RFC 6184) or
H.265 (RFC 7798), under the payload type their SDP answer maps to it
(``a=rtpmap:98 H264/90000``). Per packet the work is the least we can do —
header parse, SSRC check, reorder, then append the payload to the frame being
collected (PS) or hand it to the depacketizer its payload type names — and
the demuxer works per frame: the PS payloads of one RTP timestamp are joined
and demuxed when the marker bit or a new timestamp ends them (every packet of
a frame carries its timestamp, GB/T 28181-2022 §4.3.6; the demuxer itself
does not depend on where the byte stream is cut, so a device that gets the
marker wrong still plays). When the timestamp changes the demuxer is told
the previous frame is whole, so a frame leaves at the first packet of the
next one -- or, once the stream has put the marker on the last packet of
``MARKER_TRUST_FRAMES`` frames in a row, at its marker packet (RFC 3550
§5.1). A marker followed by a packet of the same timestamp (mid-frame)
ends that trust for good (logged once); a packet of a frame the trusted
marker already ended is dropped and counted in ``stats.after_marker``. The common RTP header (version 2, no padding,
extension or CSRC) is read with one ``struct`` call and no ``RtpPacket``;
anything else goes through ``RtpPacket.parse``.

Payload types map to formats (``PS``, ``H264``, ``H265``) by
``DEFAULT_PAYLOAD_FORMATS`` (the payloads the platform's INVITE offers) until
``set_payload_formats`` installs the device's answer. A payload type missing
from the map is handed to the PS demuxer, the format GB/T 28181 mandates,
and counted in ``stats.unknown_payload_type``.

A device that answers the INVITE with a different ``y=`` SSRC is followed
(``rekey``); packets with any other SSRC are counted and dropped, which is
what keeps one camera's stream out of another's ("串流", WVP issues #57, #1467).
``rekey_listeners`` are told of the change (the single-port receiver routes
by SSRC and must follow too).

``datagrams`` takes a read pass at once. With the compiled extension
(media/accel.py, media/_fastpath.c) the per-packet work of the common case
-- the plain header, SSRC check, in-order reorder step and PS collection
above -- runs in C for a run of packets per call, and leaves the same state;
the Python code here is the reference, the fallback and the path of every
other packet (docs/performance.md, "Compiled hot path").
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from media import accel
from media.depacketize import Depacketizer
from media.frame import Codec, Frame
from media.framing import FramingError, Rfc4571Framer
from media.logthrottle import LogThrottle
from media.pipeline import FrameDispatcher
from media.ps import PsDemuxer
from media.reorder import ReorderBuffer
from media.rtp import RtpError, RtpPacket

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PAYLOAD_FORMATS",
    "PAYLOAD_FORMATS",
    "IngestStats",
    "RtpIngest",
    "payload_formats_from_rtpmap",
]

PAYLOAD_FORMATS = ("PS", "H264", "H265")
# GB/T 28181-2016 Annex F offer: 96 PS, 97 MPEG4 (not supported), 98 H264; 99 H265 (2022).
DEFAULT_PAYLOAD_FORMATS: Mapping[int, str] = {96: "PS", 98: "H264", 99: "H265"}
# rtpmap encoding names (case-insensitive) -> format. MP2P is RFC 3555's name for
# MPEG-2 PS that some devices answer instead of GB's "PS".
_ENCODINGS = {"PS": "PS", "MP2P": "PS", "MPEG2-PS": "PS", "H264": "H264", "H265": "H265",
              "HEVC": "H265"}
_CODECS = {"H264": Codec.H264, "H265": Codec.H265}

RekeyListener = Callable[[int | None, int], None]
# media._fastpath.ingest_run(ingest, batch, start, now, ps_batch) -> (next index, action).
FastRun = Callable[["RtpIngest", list[bytes], int, float, int], tuple[int, int]]
# What ingest_run asks of its caller.
_FAST_DEMUX: Final = 1  # a PS batch ended: demux it
_FAST_NEW_FRAME: Final = 2  # the next packet starts a frame: end the previous one
# What the reorder buffer holds per packet: (marker|payload type byte, sequence, timestamp, payload).
Item = tuple[int, int, int, "bytes | memoryview"]

# RFC 3550 §5.1 fixed header after its first octet: M|PT, sequence, timestamp, SSRC.
_HEADER: Final = struct.Struct("!BHII")
_PLAIN_V2: Final = 0x80  # V=2, P=0, X=0, CC=0
# PS payloads collected before demuxing even without a marker or timestamp change.
PS_BATCH: Final = 128
# Frames in a row whose marker bit was on their last packet before the marker
# alone ends a PS frame (RFC 3550 §5.1, GB/T 28181-2022 §4.3.6).
MARKER_TRUST_FRAMES: Final = 3
_MARKER_DISTRUSTED: Final = -1
_UNROUTED: Final = object()


def payload_formats_from_rtpmap(rtpmap: Mapping[int, tuple[str, int]]) -> dict[int, str]:
    """``{pt: format}`` from an SDP answer's ``a=rtpmap`` lines (RFC 4566 §6).

    Encodings the ingest cannot take (MPEG4, audio) are left out; the result
    may be empty, meaning the answer named nothing usable.
    """
    formats: dict[int, str] = {}
    for pt, (encoding, _clock) in rtpmap.items():
        fmt = _ENCODINGS.get(encoding.upper())
        if fmt is not None:
            formats[pt] = fmt
    return formats


@dataclass
class IngestStats:
    packets: int = 0
    bytes: int = 0
    bad_packets: int = 0
    foreign_ssrc: int = 0
    unknown_payload_type: int = 0  # payload types seen that the map lacks (taken as PS)
    # PS packets of a frame the trusted marker bit had already ended (dropped).
    after_marker: int = 0
    frames: int = 0
    last_packet_at: float | None = None
    first_packet_at: float | None = None


class RtpIngest:
    """RTP receive state of one stream: PS or raw H.264/H.265 by payload type."""

    def __init__(
        self,
        dispatcher: FrameDispatcher,
        *,
        ssrc: int | None = None,
        reorder: ReorderBuffer[Item] | None = None,
        demuxer: PsDemuxer | None = None,
        payload_formats: Mapping[int, str] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.ssrc = ssrc  # None: take the first one seen
        self.reorder: ReorderBuffer[Item] = reorder if reorder is not None else ReorderBuffer()
        self.demuxer = demuxer if demuxer is not None else PsDemuxer()
        # Bad packets come in floods: one line per kind per interval, with the count.
        self._log_throttle = LogThrottle(PsDemuxer.LOG_INTERVAL, max_keys=4)
        self.depacketizers: dict[Codec, Depacketizer] = {}
        self.framer = Rfc4571Framer()
        self.stats = IngestStats()
        self.failed: str | None = None  # a TCP stream that cannot be re-synchronised
        self.rekey_listeners: list[RekeyListener] = []
        self.payload_formats: dict[int, str] = {}
        # payload type -> Depacketizer, None for PS; filled on first use.
        self._routes: dict[int, Depacketizer | None] = {}
        # The PS frame being collected: its RTP timestamp and payloads.
        self._ps_ts = -1
        self._ps_chunks: list[bytes | memoryview] = []
        # The marker bit: _marker_pending, this frame's last packet so far had it
        # (the compiled loop stops while it is set); _ps_ended, that marker
        # ended the frame; _marker_trust, frames in a row that had the marker
        # on their last packet (MARKER_TRUST_FRAMES and up: trusted), or
        # _MARKER_DISTRUSTED for good once a marker came mid-frame.
        self._marker_pending = False
        self._ps_ended = False
        self._marker_trust = 0
        # The compiled in-order loop (media/accel.py) reads and writes the state
        # above and the reorder buffer's by name: only for the class it knows.
        ext = accel.ext
        self._fast_run: FastRun | None = (
            ext.ingest_run if ext is not None and type(self.reorder) is ReorderBuffer else None
        )
        self.set_payload_formats(
            DEFAULT_PAYLOAD_FORMATS if payload_formats is None else payload_formats
        )

    def set_payload_formats(self, formats: Mapping[int, str]) -> None:
        """Install the payload type map (the device's SDP answer, RFC 3264 §6.1).

        Raises ``ValueError`` for a format other than ``PS``/``H264``/``H265``
        or a payload type outside 0-127 (RFC 3550 §5.1 has 7 bits).
        """
        checked: dict[int, str] = {}
        for pt, fmt in formats.items():
            if not 0 <= pt <= 127:
                raise ValueError(f"payload type {pt} is not 0-127")
            if fmt not in PAYLOAD_FORMATS:
                raise ValueError(f"payload format {fmt!r} is not one of {PAYLOAD_FORMATS}")
            checked[pt] = fmt
        if checked != self.payload_formats:
            log.info("RTP payload formats %s", checked)
        self.payload_formats = checked
        self._routes = {}

    def rekey(self, ssrc: int) -> None:
        """Follow the SSRC the device really uses (its answer's ``y=``)."""
        old, self.ssrc = self.ssrc, ssrc
        if old != ssrc:
            for listener in list(self.rekey_listeners):
                listener(old, ssrc)

    def datagram(self, data: bytes, now: float) -> None:
        """One UDP datagram carrying one RTP packet."""
        if len(data) >= 12 and data[0] == _PLAIN_V2:
            b1, seq, ts, ssrc = _HEADER.unpack_from(data, 1)
            payload: bytes | memoryview = memoryview(data)[12:]
        else:
            try:
                packet = RtpPacket.parse(data)
            except RtpError as e:
                self.stats.bad_packets += 1
                if self._log_throttle.hit("bad", now):
                    log.info("dropping a bad RTP packet (%d so far): %s", self.stats.bad_packets, e)
                return
            b1 = packet.payload_type | (0x80 if packet.marker else 0)
            seq, ts, ssrc, payload = packet.sequence, packet.timestamp, packet.ssrc, packet.payload
        if ssrc != self.ssrc:
            if self.ssrc is not None:
                self.stats.foreign_ssrc += 1
                if self._log_throttle.hit("ssrc", now):
                    log.info("dropping RTP with SSRC %d, expected %d (%d so far)", ssrc, self.ssrc,
                             self.stats.foreign_ssrc)
                return
            self.ssrc = ssrc
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(data)
        stats.last_packet_at = now
        if stats.first_packet_at is None:
            stats.first_packet_at = now
        for item in self.reorder.push_item(seq, ts, (b1, seq, ts, payload), now):
            self._deliver(item, now)

    def datagrams(self, batch: list[bytes], now: float) -> None:
        """Datagrams read together (one read pass), all at ``now``: ``datagram`` for each.

        With the compiled path (media/accel.py) the common case -- plain header,
        the stream's SSRC, in sequence, PS payload of the frame being collected
        -- is taken in C, a run of packets per call; any other packet goes
        through ``datagram``. Counters, reorder state and frames end the same.
        """
        run = self._fast_run
        if run is None:
            for data in batch:
                self.datagram(data, now)
            return
        i = 0
        n = len(batch)
        while i < n:
            i, action = run(self, batch, i, now, PS_BATCH)
            if action == _FAST_DEMUX:
                if batch[i - 1][1] & 0x80:
                    self._ps_marker(now)
                else:
                    self._demux_ps(now)
            elif action == _FAST_NEW_FRAME:
                self._new_ps_frame(now)
            elif i < n:
                self.datagram(batch[i], now)
                i += 1

    def stream_bytes(self, data: bytes, now: float) -> bool:
        """Bytes of an RTP-over-TCP stream (RFC 4571); False once the stream is unusable."""
        if self.failed is not None:
            return False
        try:
            frames = self.framer.feed(data)
        except FramingError as e:
            self.failed = str(e)
            log.warning("RTP over TCP stream unusable: %s", e)
            return False
        if frames:
            self.datagrams(frames, now)
        return True

    def tick(self, now: float) -> None:
        """Release packets whose reorder wait has run out (call at ``next_deadline()``)."""
        for item in self.reorder.flush(now):
            self._deliver(item, now)

    def next_deadline(self) -> float | None:
        return self.reorder.next_deadline()

    @property
    def dropped_frames(self) -> int:
        """Frames dropped whole: incomplete or oversized PS frames and access units."""
        return self.demuxer.stats.dropped + sum(d.stats.dropped for d in self.depacketizers.values())

    def close(self, now: float) -> None:
        """End of stream (BYE, timeout): emit what is still buffered."""
        for item in self.reorder.flush(float("inf")):
            self._deliver(item, now)
        if self._ps_chunks:
            self._demux_ps(now)
        self._emit(self.demuxer.flush(), now)
        for depacketizer in self.depacketizers.values():
            self._emit(depacketizer.flush(), now)

    def _deliver(self, item: Item, now: float) -> None:
        """One packet in sequence order: collect a PS payload or depacketize."""
        b1, seq, ts, payload = item
        pt = b1 & 0x7F
        route = self._routes.get(pt, _UNROUTED)
        if route is _UNROUTED:
            route = self._route(pt)
        if route is None:
            if ts != self._ps_ts:
                self._ps_ts = ts
                self._new_ps_frame(now)
            elif self._marker_pending:
                if self._ps_ended:
                    # The marker ended this frame and it is gone: a later packet
                    # of it would start a broken one. Dropped, counted.
                    self.stats.after_marker += 1
                    self._distrust_marker()
                    return
                self._distrust_marker()
                self._marker_pending = False
            chunks = self._ps_chunks
            chunks.append(payload)
            if b1 & 0x80:
                self._ps_marker(now)
            elif len(chunks) >= PS_BATCH:
                self._demux_ps(now)
        else:
            assert isinstance(route, Depacketizer)
            frames = route.feed_fields(seq, ts, bool(b1 & 0x80), payload)
            if frames:
                self._emit(frames, now)

    def _new_ps_frame(self, now: float) -> None:
        """A packet of a new timestamp (already ``_ps_ts``): end the previous frame."""
        if self._marker_pending:
            if 0 <= self._marker_trust < MARKER_TRUST_FRAMES:
                self._marker_trust += 1
            self._marker_pending = False
        elif 0 < self._marker_trust < MARKER_TRUST_FRAMES:
            self._marker_trust = 0  # not in a row; a trusted stream that lost a marker keeps trust
        if self._ps_ended:
            self._ps_ended = False
        else:
            self._end_ps_frame(now)

    def _ps_marker(self, now: float) -> None:
        """A PS packet with the marker bit was collected: demux, and end the frame if trusted."""
        self._marker_pending = True
        if self._marker_trust >= MARKER_TRUST_FRAMES:
            self._ps_ended = True
            self._end_ps_frame(now)
        else:
            self._demux_ps(now)

    def _distrust_marker(self) -> None:
        """A packet of the same timestamp after a marker: the stream marks mid-frame."""
        if self._marker_trust != _MARKER_DISTRUSTED:
            self._marker_trust = _MARKER_DISTRUSTED
            log.info("RTP stream (SSRC %s) sets the marker bit mid-frame; PS frames end at "
                     "the next timestamp only", self.ssrc)

    def _end_ps_frame(self, now: float) -> None:
        """A new timestamp: the previous frame is whole (GB/T 28181-2022 §4.3.6)."""
        if self._ps_chunks:
            self._demux_ps(now)
        frames = self.demuxer.end_of_frame()
        if frames:
            self._emit(frames, now)

    def _demux_ps(self, now: float) -> None:
        """Demux the PS payloads collected for one timestamp, joined in one copy."""
        chunks, self._ps_chunks = self._ps_chunks, []
        frames = self.demuxer.feed(b"".join(chunks), now)
        if frames:
            self._emit(frames, now)

    def _route(self, pt: int) -> Depacketizer | None:
        fmt = self.payload_formats.get(pt)
        if fmt is None:
            self.stats.unknown_payload_type += 1
            log.info("RTP payload type %d is not in the SDP answer %s; taking it as PS",
                     pt, self.payload_formats)
            fmt = "PS"
        depacketizer: Depacketizer | None = None
        codec = _CODECS.get(fmt)
        if codec is not None:
            depacketizer = self.depacketizers.get(codec)
            if depacketizer is None:
                depacketizer = self.depacketizers[codec] = Depacketizer(codec)
        self._routes[pt] = depacketizer
        return depacketizer

    def _emit(self, frames: list[Frame], now: float) -> None:
        for frame in frames:
            self.stats.frames += 1
            self.dispatcher.input_frame(frame, now)
