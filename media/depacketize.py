"""Sans-IO RTP depacketizers for raw H.264 (RFC 6184) and H.265 (RFC 7798) video.

Some GB/T 28181 devices answer the INVITE with ``a=rtpmap:98 H264/90000`` or
``a=rtpmap:99 H265/90000`` and send the elementary stream in RTP directly
instead of MPEG-PS. ``Depacketizer.feed`` takes that stream's RTP packets in
sequence order (after the ``ReorderBuffer``) and returns Annex B access units
as ``Frame``s, the same shape ``PsDemuxer`` produces.

Theory of operation
-------------------
Only the non-interleaved packetization modes are supported, which is all a
camera uses (RFC 6184 §6.2 mode 0 and §6.3 mode 1; RFC 7798 with
``sprop-max-don-diff`` 0, so no DONL fields):

* H.264: single NAL unit packets (types 1-23, §5.6), STAP-A (24, §5.7.1) and
  FU-A (28, §5.8). STAP-B, MTAP16/24 and FU-B (25-27, 29) exist only in
  interleaved mode and drop the access unit they arrive in; types 0 and 30-31
  are undefined and ignored (§5.2).
* H.265: single NAL unit packets (types 0-47, §4.4.1), aggregation packets
  (48, §4.4.2) and fragmentation units (49, §4.4.3); PACI (50, §4.4.4) and the
  reserved types 51-63 are ignored.

An access unit ends at a packet with the marker bit (RFC 6184 §5.1, RFC 7798
§4.1) or when the timestamp changes (every packet of an access unit carries
its timestamp; GB/T 28181-2022 §4.3.6 says the same), for devices that never
set the marker. Each NAL unit is written with a four-byte start code; the
payload slices are collected by reference and joined once per frame, so a
payload byte is copied exactly once.

Loss: packets arrive here after the reorder buffer, so a sequence number gap
is loss the buffer has given up on. The access unit open at the gap may have
lost its middle or tail, and the next one may have lost its head (its
parameter sets, its first fragment): both are dropped and counted in
``stats.dropped``. So is an access unit holding a fragment without its start
or end, a malformed aggregation packet, or more than ``max_frame_bytes``.
Corrupt data is never emitted; the decoder conceals the missing picture as it
would for a lost PS frame.

An access unit without a VCL NAL unit (a camera that sends SPS/PPS with their
own timestamp or marker) is held and put in front of the next access unit, so
a keyframe always carries its parameter sets (H.264 §7.4.1.2.3 order).

``pts`` and ``dts`` are the RTP timestamp (90 kHz, RFC 6184 §8.2.1, RFC 7798
§7.1) unwrapped past 2**32, starting at the first packet's value; RTP has no
decode timestamp, so ``dts == pts``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from media.frame import Codec, Frame
from media.nal import H264_NAL_IDR, H265_NAL_IRAP_FIRST, H265_NAL_IRAP_LAST
from media.rtp import RtpPacket, ts_delta

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "Depacketizer", "DepacketizeStats", "VIDEO_STREAM_ID"]

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
VIDEO_STREAM_ID = 0xE0  # what PsDemuxer reports for the first video stream
START_CODE = b"\x00\x00\x00\x01"

# RFC 6184 §5.2 Table 1.
_H264_STAP_A = 24
_H264_FU_A = 28
_H264_INTERLEAVED = frozenset({25, 26, 27, 29})  # STAP-B, MTAP16, MTAP24, FU-B
# RFC 7798 §4.4.
_H265_AP = 48
_H265_FU = 49

_LOGGED = 10  # log the first few of each kind of drop, then every 1000th


@dataclass(slots=True)
class DepacketizeStats:
    """Counters: frames emitted, access units dropped, bad and ignored packets."""

    packets: int = 0
    frames: int = 0
    dropped: int = 0  # access units dropped whole (loss, bad packet, oversize)
    bad_packets: int = 0  # malformed or unsupported payloads
    ignored_packets: int = 0  # undefined / PACI types, skipped per the RFCs


class PayloadError(ValueError):
    """A payload that breaks its RFC's format; its access unit is dropped."""


class Depacketizer:
    """RTP packets of one H.264 or H.265 stream in, Annex B access units out."""

    def __init__(
        self,
        codec: Codec,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        stream_id: int = VIDEO_STREAM_ID,
    ) -> None:
        if codec not in (Codec.H264, Codec.H265):
            raise ValueError(f"no RTP depacketizer for {codec}")
        self.codec = codec
        self.max_frame_bytes = max_frame_bytes
        self.stream_id = stream_id
        self.stats = DepacketizeStats()
        self._h265 = codec is Codec.H265
        self._seq: int | None = None
        self._last_ts: int | None = None
        self._pts = 0
        # The access unit being assembled.
        self._open = False
        self._ts = 0
        self._chunks: list[bytes | memoryview] = []
        self._size = 0
        self._key = False
        self._vcl = False
        self._damaged = False
        self._in_fragment = False
        # NALs of an access unit that had no VCL NAL, for the next one.
        self._carry: list[bytes | memoryview] = []
        self._carry_size = 0
        self._carry_key = False

    # -- public ------------------------------------------------------------

    def feed(self, packet: RtpPacket) -> list[Frame]:
        """Take the next packet in sequence order; return the access units it completed."""
        return self.feed_fields(packet.sequence, packet.timestamp, packet.marker, packet.payload)

    def feed_fields(
        self, seq: int, ts: int, marker: bool, payload: bytes | memoryview
    ) -> list[Frame]:
        """``feed`` with the packet's fields given apart (the ingest builds no ``RtpPacket``)."""
        out: list[Frame] = []
        self.stats.packets += 1
        gap = self._seq is not None and seq != (self._seq + 1) & 0xFFFF
        self._seq = seq
        if self._open and ts != self._ts:
            if gap:
                self._damaged = True  # it may have lost its tail
            self._finish(out)
        if not self._open:
            self._begin(ts)
            if gap:
                self._damaged = True  # it may have lost its head
        elif gap:
            self._damaged = True  # lost from its middle
        if not self._damaged:
            try:
                if self._h265:
                    self._h265_payload(payload)
                else:
                    self._h264_payload(payload)
            except PayloadError as e:
                self.stats.bad_packets += 1
                self._damaged = True
                if self.stats.bad_packets <= _LOGGED or self.stats.bad_packets % 1000 == 0:
                    log.info(
                        "bad %s RTP payload (seq %d), dropping its access unit: %s",
                        self.codec.value,
                        seq,
                        e,
                    )
            if self._size > self.max_frame_bytes and not self._damaged:
                self._damaged = True
                log.warning(
                    "dropping %s access unit over %d bytes", self.codec.value, self.max_frame_bytes
                )
        if marker:
            self._finish(out)
        return out

    def flush(self) -> list[Frame]:
        """End of stream: emit the open access unit if it is complete."""
        out: list[Frame] = []
        if self._open:
            self._finish(out)
        return out

    # -- access units --------------------------------------------------------

    def _begin(self, ts: int) -> None:
        if self._last_ts is None:
            self._pts = ts
        else:
            self._pts += ts_delta(self._last_ts, ts)
        self._last_ts = ts
        self._open = True
        self._ts = ts
        self._chunks = self._carry
        self._size = self._carry_size
        self._key = self._carry_key
        self._carry, self._carry_size, self._carry_key = [], 0, False
        self._vcl = False
        self._damaged = False
        self._in_fragment = False

    def _finish(self, out: list[Frame]) -> None:
        self._open = False
        chunks, self._chunks = self._chunks, []
        if self._in_fragment:
            self._damaged = True  # the last NAL's end fragment never came
        if self._damaged:
            self.stats.dropped += 1
            if self.stats.dropped <= _LOGGED or self.stats.dropped % 1000 == 0:
                log.info(
                    "dropped an incomplete %s access unit (%d so far)",
                    self.codec.value,
                    self.stats.dropped,
                )
            return
        if not chunks:
            return
        if not self._vcl:
            # Parameter sets / SEI alone: they belong in front of the next picture.
            self._carry, self._carry_size, self._carry_key = chunks, self._size, self._key
            return
        self.stats.frames += 1
        out.append(
            Frame(
                codec=self.codec,
                data=b"".join(chunks),
                pts=self._pts,
                dts=self._pts,
                keyframe=self._key,
                stream_id=self.stream_id,
            )
        )

    def _nal(self, nal: bytes | memoryview, nal_type: int) -> None:
        """Append one whole NAL unit with its start code."""
        self._chunks.append(START_CODE)
        self._chunks.append(nal)
        self._size += 4 + len(nal)
        self._mark(nal_type)

    def _mark(self, nal_type: int) -> None:
        if self._h265:
            if nal_type < 32:  # H.265 Table 7-1: VCL types 0-31
                self._vcl = True
                if H265_NAL_IRAP_FIRST <= nal_type <= H265_NAL_IRAP_LAST:
                    self._key = True
        elif 1 <= nal_type <= 5:  # H.264 Table 7-1: VCL types 1-5
            self._vcl = True
            if nal_type == H264_NAL_IDR:
                self._key = True

    # -- H.264, RFC 6184 -------------------------------------------------------

    def _h264_payload(self, payload: bytes | memoryview) -> None:
        if not payload:
            raise PayloadError("empty payload")
        header = payload[0]
        if header & 0x80:
            raise PayloadError("forbidden_zero_bit set")  # RFC 6184 §5.3
        t = header & 0x1F
        if 1 <= t <= 23:  # §5.6 single NAL unit packet
            self._end_fragment_expected()
            self._nal(payload, t)
        elif t == _H264_FU_A:  # §5.8
            if len(payload) < 3:
                raise PayloadError(f"FU-A of {len(payload)} bytes")
            fu = payload[1]
            inner = fu & 0x1F
            self._fragment(
                start=bool(fu & 0x80),
                end=bool(fu & 0x40),
                header=bytes(((header & 0xE0) | inner,)),
                data=payload[2:],
                nal_type=inner,
            )
        elif t == _H264_STAP_A:  # §5.7.1
            self._end_fragment_expected()
            for nal in _aggregated(payload, 1):
                if nal[0] & 0x80:
                    raise PayloadError("aggregated NAL with forbidden_zero_bit set")
                self._nal(nal, nal[0] & 0x1F)
        elif t in _H264_INTERLEAVED:
            raise PayloadError(f"NAL type {t} needs interleaved mode, not supported")
        else:
            self.stats.ignored_packets += 1  # §5.2: types 0, 30, 31 are ignored

    # -- H.265, RFC 7798 -------------------------------------------------------

    def _h265_payload(self, payload: bytes | memoryview) -> None:
        if len(payload) < 2:
            raise PayloadError(f"payload of {len(payload)} bytes, header needs 2")
        b0 = payload[0]
        if b0 & 0x80:
            raise PayloadError("forbidden_zero_bit set")  # RFC 7798 §4.4
        t = (b0 >> 1) & 0x3F
        if t < _H265_AP:  # §4.4.1 single NAL unit packet
            self._end_fragment_expected()
            self._nal(payload, t)
        elif t == _H265_FU:  # §4.4.3
            if len(payload) < 4:
                raise PayloadError(f"FU of {len(payload)} bytes")
            fu = payload[2]
            inner = fu & 0x3F
            self._fragment(
                start=bool(fu & 0x80),
                end=bool(fu & 0x40),
                header=bytes(((b0 & 0x81) | (inner << 1), payload[1])),
                data=payload[3:],
                nal_type=inner,
            )
        elif t == _H265_AP:  # §4.4.2
            self._end_fragment_expected()
            for nal in _aggregated(payload, 2):
                if len(nal) < 2 or nal[0] & 0x80:
                    raise PayloadError("bad aggregated NAL unit header")
                self._nal(nal, (nal[0] >> 1) & 0x3F)
        else:
            self.stats.ignored_packets += 1  # PACI (50) and reserved types

    # -- fragments -------------------------------------------------------------

    def _fragment(
        self, *, start: bool, end: bool, header: bytes, data: bytes | memoryview, nal_type: int
    ) -> None:
        """One FU-A (RFC 6184 §5.8) or H.265 FU (RFC 7798 §4.4.3) fragment."""
        if start:
            self._end_fragment_expected()
            self._chunks.append(START_CODE)
            self._chunks.append(header)
            self._size += 4 + len(header)
            self._mark(nal_type)
            # S and E both set is forbidden (§5.8) but unambiguous: a whole NAL.
            self._in_fragment = not end
        elif not self._in_fragment:
            raise PayloadError("fragment without its start fragment")
        elif end:
            self._in_fragment = False
        self._chunks.append(data)
        self._size += len(data)

    def _end_fragment_expected(self) -> None:
        if self._in_fragment:
            raise PayloadError("fragmented NAL unit interrupted before its end fragment")


def _aggregated(payload: bytes | memoryview, header_size: int) -> list[bytes | memoryview]:
    """The NAL units of a STAP-A (RFC 6184 §5.7.1) or AP (RFC 7798 §4.4.2).

    Each unit is a 16-bit size then that many bytes; a zero size, an overrun
    or an empty aggregate is malformed.
    """
    nals: list[bytes | memoryview] = []
    pos = header_size
    end = len(payload)
    while pos < end:
        if end - pos < 2:
            raise PayloadError("aggregation packet ends inside a NAL unit size")
        size = payload[pos] << 8 | payload[pos + 1]
        pos += 2
        if size == 0 or pos + size > end:
            raise PayloadError(f"aggregated NAL unit size {size} overruns the packet")
        nals.append(payload[pos : pos + size])
        pos += size
    if not nals:
        raise PayloadError("aggregation packet holds no NAL unit")
    return nals
