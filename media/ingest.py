"""One stream's receive path, sans-IO: RTP in, frames out to a ``FrameDispatcher``.

GB/T 28181-2016 §9.2 / Annex C: a device sends MPEG-PS in RTP (payload type
96 by convention), over UDP or over TCP with the RFC 4571 two-byte length
prefix. Per packet the work is the least we can do — header parse, SSRC
check, reorder, hand the payload to the demuxer — and the demuxer works per
frame.

A device that answers the INVITE with a different ``y=`` SSRC is followed
(``rekey``); packets with any other SSRC are counted and dropped, which is
what keeps one camera's stream out of another's ("串流", WVP issues #57, #1467).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from media.framing import FramingError, Rfc4571Framer
from media.pipeline import FrameDispatcher
from media.ps import PsDemuxer
from media.reorder import ReorderBuffer
from media.rtp import RtpError, RtpPacket

log = logging.getLogger(__name__)

__all__ = ["IngestStats", "RtpIngest"]


@dataclass
class IngestStats:
    packets: int = 0
    bytes: int = 0
    bad_packets: int = 0
    foreign_ssrc: int = 0
    frames: int = 0
    last_packet_at: float | None = None
    first_packet_at: float | None = None


class RtpIngest:
    """RTP/PS receive state of one stream."""

    def __init__(
        self,
        dispatcher: FrameDispatcher,
        *,
        ssrc: int | None = None,
        reorder: ReorderBuffer | None = None,
        demuxer: PsDemuxer | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.ssrc = ssrc  # None: take the first one seen
        self.reorder = reorder if reorder is not None else ReorderBuffer()
        self.demuxer = demuxer if demuxer is not None else PsDemuxer()
        self.framer = Rfc4571Framer()
        self.stats = IngestStats()
        self.failed: str | None = None  # a TCP stream that cannot be re-synchronised

    def rekey(self, ssrc: int) -> None:
        """Follow the SSRC the device really uses (its answer's ``y=``)."""
        self.ssrc = ssrc

    def datagram(self, data: bytes, now: float) -> None:
        """One UDP datagram carrying one RTP packet."""
        try:
            packet = RtpPacket.parse(data)
        except RtpError as e:
            self.stats.bad_packets += 1
            if self.stats.bad_packets <= 10 or self.stats.bad_packets % 1000 == 0:
                log.info("dropping a bad RTP packet (%d so far): %s", self.stats.bad_packets, e)
            return
        self._packet(packet, len(data), now)

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
        for raw in frames:
            self.datagram(raw, now)
        return True

    def tick(self, now: float) -> None:
        """Release packets whose reorder wait has run out (call at ``next_deadline()``)."""
        for packet in self.reorder.flush(now):
            self._demux(packet, now)

    def next_deadline(self) -> float | None:
        return self.reorder.next_deadline()

    def close(self, now: float) -> None:
        """End of stream (BYE, timeout): emit what is still buffered."""
        for packet in self.reorder.flush(float("inf")):
            self._demux(packet, now)
        for frame in self.demuxer.flush():
            self.stats.frames += 1
            self.dispatcher.input_frame(frame, now)

    def _packet(self, packet: RtpPacket, size: int, now: float) -> None:
        if self.ssrc is None:
            self.ssrc = packet.ssrc
        elif packet.ssrc != self.ssrc:
            self.stats.foreign_ssrc += 1
            if self.stats.foreign_ssrc <= 10 or self.stats.foreign_ssrc % 1000 == 0:
                log.info("dropping RTP with SSRC %d, expected %d", packet.ssrc, self.ssrc)
            return
        self.stats.packets += 1
        self.stats.bytes += size
        self.stats.last_packet_at = now
        if self.stats.first_packet_at is None:
            self.stats.first_packet_at = now
        for ready in self.reorder.push(packet, now):
            self._demux(ready, now)

    def _demux(self, packet: RtpPacket, now: float) -> None:
        for frame in self.demuxer.feed(packet.payload):
            self.stats.frames += 1
            self.dispatcher.input_frame(frame, now)
