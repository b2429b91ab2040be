"""Sans-IO RTP reorder buffer with loss, duplicate and jitter accounting.

Theory of operation: ``expected`` is the next sequence number to deliver.
A pushed packet at ``expected`` is delivered with every contiguous packet
already waiting behind it.  A packet ahead of ``expected`` waits in
``pending``; the gap before it is declared lost when the oldest waiting
packet has waited ``max_wait`` seconds or ``capacity`` packets wait, and
delivery resumes at the lowest waiting sequence number.  A packet behind
``expected`` is a duplicate (already delivered) or late (already declared
lost) and is dropped.  A jump of more than ``reset_threshold`` either way is
a stream restart (RFC 3550 §A.1 ``MAX_DROPOUT``/``MAX_MISORDER`` idea):
the waiting packets are released as they are and delivery restarts at the
new packet.  Sequence arithmetic is modulo 2**16 (RFC 3550 §5.1).

No clock is read: every call takes ``now`` in seconds; ``next_deadline``
tells the adapter when to call ``flush``.

The buffer holds any item with a sequence number and timestamp:
``push(packet)`` takes an ``RtpPacket``, ``push_item(seq, ts, item)`` what
the caller likes (the ingest's hot path keeps a tuple rather than build an
``RtpPacket`` per packet). A packet that arrives in order while nothing waits
-- nearly every packet of a healthy stream -- is delivered at once without
touching the pending table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Generic, TypeVar

from media.rtp import RtpPacket, seq_delta, ts_delta

__all__ = ["ReorderBuffer", "ReorderStats"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNKNOWN = 0
_DELIVERED = 1
_LOST = 2


@dataclass(slots=True)
class ReorderStats:
    """Counters of one receive stream (RFC 3550 §6.4.1 for jitter).

    ``jitter`` is in RTP timestamp units, as the RR report field carries it.
    """

    clock_rate: int
    received: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    resets: int = 0
    jitter: float = 0.0

    @property
    def jitter_seconds(self) -> float:
        """Interarrival jitter in seconds."""
        return self.jitter / self.clock_rate


class ReorderBuffer(Generic[T]):
    """Reorder RTP packets of one SSRC by sequence number (see module docstring)."""

    def __init__(
        self,
        capacity: int = 64,
        max_wait: float = 0.1,
        clock_rate: int = 90000,
        reset_threshold: int = 3000,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity} must be at least 1")
        if max_wait < 0:
            raise ValueError(f"max_wait {max_wait} must not be negative")
        if not 0 < reset_threshold < 0x8000:
            raise ValueError(f"reset_threshold {reset_threshold} must be in 1..32767")
        self.capacity = capacity
        self.max_wait = max_wait
        self.reset_threshold = reset_threshold
        self.stats = ReorderStats(clock_rate=clock_rate)
        self._expected: int | None = None
        self._highest: int | None = None
        self._pending: dict[int, tuple[T, float]] = {}
        # The same table, for callers to test cheaply ("is anything waiting?");
        # never rebound, only cleared. Read-only outside this class.
        self.waiting = self._pending
        # Fate of each sequence number behind ``expected``: tells a duplicate
        # from a late packet in O(1).  Every number between a past value and
        # ``expected`` was marked when passed, and only numbers less than
        # ``reset_threshold`` behind are looked up, so a ring of the next power
        # of two above it (4 KiB by default, not 64) never shows a stale mark;
        # a reset clears it.
        self._fate_mask = (1 << reset_threshold.bit_length()) - 1
        self._fate = bytearray(self._fate_mask + 1)
        self._last_now = 0.0
        self._last_ts: int | None = None

    @property
    def pending(self) -> int:
        """Packets waiting for a gap to fill."""
        return len(self._pending)

    def next_deadline(self) -> float | None:
        """When ``flush`` would next release something, or None when nothing waits."""
        if not self._pending:
            return None
        return min(at for _, at in self._pending.values()) + self.max_wait

    def push(self: ReorderBuffer[RtpPacket], packet: RtpPacket, now: float) -> list[RtpPacket]:
        """Take one packet that arrived at ``now``; return packets ready, in order."""
        return self.push_item(packet.sequence, packet.timestamp, packet, now)

    def push_item(self, seq: int, timestamp: int, item: T, now: float) -> list[T]:
        """``push`` for any item: its sequence number and RTP timestamp given apart."""
        stats = self.stats
        stats.received += 1
        if seq == self._expected and not self._pending:
            # In order with nothing waiting: deliver now (the hot path).
            last_ts = self._last_ts
            if last_ts is not None:
                transit = (now - self._last_now) * stats.clock_rate - (
                    ((timestamp - last_ts + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000
                )
                stats.jitter += (abs(transit) - stats.jitter) / 16
            self._last_now = now
            self._last_ts = timestamp
            self._fate[seq & self._fate_mask] = _DELIVERED
            stats.delivered += 1
            self._expected = (seq + 1) & 0xFFFF
            self._highest = seq
            return [item]
        if self._expected is None:
            self._expected = seq
            self._highest = seq
        delta = seq_delta(self._expected, seq)
        out: list[T] = []
        if delta > self.reset_threshold or delta < -self.reset_threshold:
            log.info("RTP sequence jump %d -> %d, resetting reorder buffer", self._expected, seq)
            out = self._reset(seq)
            delta = 0
        elif delta < 0:
            if self._fate[seq & self._fate_mask] == _DELIVERED:
                stats.duplicates += 1
            else:
                stats.late += 1
            return []
        elif seq in self._pending:
            stats.duplicates += 1
            return []
        self._update_jitter(timestamp, now)
        assert self._highest is not None
        if seq_delta(self._highest, seq) < 0:
            stats.reordered += 1
        else:
            self._highest = seq
        self._pending[seq] = (item, now)
        self._drain(out)
        self._release_expired(now, out)
        return out

    def flush(self, now: float) -> list[T]:
        """Release what waited ``max_wait`` (timer-driven), declaring the gaps lost."""
        out: list[T] = []
        self._release_expired(now, out)
        return out

    def _update_jitter(self, timestamp: int, now: float) -> None:
        """RFC 3550 §6.4.1: J += (|D| - J) / 16, in timestamp units."""
        stats = self.stats
        if self._last_ts is not None:
            transit_delta = (now - self._last_now) * stats.clock_rate - ts_delta(
                self._last_ts, timestamp
            )
            stats.jitter += (abs(transit_delta) - stats.jitter) / 16
        self._last_now = now
        self._last_ts = timestamp

    def _drain(self, out: list[T]) -> None:
        pending = self._pending
        expected = self._expected
        assert expected is not None
        while expected in pending:
            packet, _ = pending.pop(expected)
            out.append(packet)
            self._fate[expected & self._fate_mask] = _DELIVERED
            self.stats.delivered += 1
            expected = (expected + 1) & 0xFFFF
        self._expected = expected

    def _release_expired(self, now: float, out: list[T]) -> None:
        pending = self._pending
        while pending and (
            len(pending) >= self.capacity
            or min(at for _, at in pending.values()) + self.max_wait <= now
        ):
            expected = self._expected
            assert expected is not None
            gap = min(seq_delta(expected, seq) for seq in pending)
            for i in range(gap):
                self._fate[(expected + i) & self._fate_mask] = _LOST
            self.stats.lost += gap
            self._expected = (expected + gap) & 0xFFFF
            self._drain(out)

    def _reset(self, seq: int) -> list[T]:
        """Stream restart: hand over what waited, in order, and start again at ``seq``."""
        expected = self._expected
        assert expected is not None
        old = sorted(self._pending.items(), key=lambda item: seq_delta(expected, item[0]))
        released = [packet for _, (packet, _) in old]
        self.stats.delivered += len(released)
        self.stats.resets += 1
        self._pending.clear()
        self._fate = bytearray(self._fate_mask + 1)
        self._expected = seq
        self._highest = seq
        self._last_ts = None
        return released
