"""RTP port pool: even RTP ports with their odd RTCP neighbours, leased per stream.

RFC 3550 §11 puts RTP on an even port and RTCP on the next odd one; a GB/T
28181 media receiver opens one such pair per stream (or one shared port for
all streams in single-port mode, demultiplexed by SSRC). The pool hands out
``PortLease``s; a lease is returned exactly once, on every teardown path, and
exhaustion is a clear error the API can show, not a bind failure.

The starting point is randomised (injected ``rng``) so that a restarted
process does not reuse the ports a device may still be sending to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["PortLease", "PortPool", "PortsExhausted", "SharedPortPool"]


class PortsExhausted(Exception):
    """Every port pair of the range is leased."""


@dataclass(frozen=True)
class PortLease:
    """An even RTP port and its RTCP port, held by ``owner`` until released."""

    rtp: int
    owner: str

    @property
    def rtcp(self) -> int:
        return self.rtp + 1


@dataclass
class PortPool:
    """Leases even ports from ``[first, last]`` (both ends inclusive)."""

    first: int
    last: int
    rng: random.Random
    _free: list[int] = field(init=False)
    _leased: dict[int, PortLease] = field(init=False, default_factory=dict)
    _unusable: set[int] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        if not 1024 <= self.first <= self.last <= 65535:
            raise ValueError(f"bad RTP port range {self.first}-{self.last}")
        start = self.first + (self.first % 2)
        ports = list(range(start, self.last, 2))  # each needs port + 1 <= last
        if not ports:
            raise ValueError(f"RTP port range {self.first}-{self.last} holds no even/odd pair")
        cut = self.rng.randrange(len(ports))
        # A rotation, not a shuffle: recently freed ports go to the back.
        self._free = ports[cut:] + ports[:cut]

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._leased) + len(self._unusable)

    @property
    def available(self) -> int:
        return len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._leased)

    def lease(self, owner: str) -> PortLease:
        """Take the least recently used free pair."""
        if not self._free:
            raise PortsExhausted(
                f"all {self.capacity} RTP port pairs of {self.first}-{self.last} are in use"
            )
        port = self._free.pop(0)
        lease = PortLease(port, owner)
        self._leased[port] = lease
        return lease

    def release(self, lease: PortLease) -> bool:
        """Return a lease; False (and no change) if it was not out, so double releases are harmless."""
        if self._leased.get(lease.rtp) is not lease:
            return False
        del self._leased[lease.rtp]
        self._free.append(lease.rtp)
        return True

    def unusable(self, lease: PortLease) -> None:
        """The OS refused to bind this pair (another program has it): never hand it out again."""
        if self._leased.get(lease.rtp) is lease:
            del self._leased[lease.rtp]
            self._unusable.add(lease.rtp)

    def leases(self) -> list[PortLease]:
        return list(self._leased.values())


class SharedPortPool(PortPool):
    """Single-port mode: every stream's lease names the one shared port.

    The streams are told apart by SSRC (``media.receiver.SharedRtpPort``), so
    a lease only records who receives there; it is still returned exactly
    once. ``max_streams`` bounds the leases: GB/T 28181 SSRCs (WVP
    ``SSRCFactory``) have four sequence digits, so no more than 10,000 live
    streams of one domain can be told apart anyway.
    """

    def __init__(self, port: int, max_streams: int = 10000) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"bad single RTP port {port}")
        if max_streams < 1:
            raise ValueError(f"max_streams {max_streams} must be at least 1")
        self.first = self.last = port
        self.rng = random.Random(0)  # unused: there is no port to pick
        self.max_streams = max_streams
        self._free = []
        self._leased = {}  # id(lease) -> lease: every lease has the same port
        self._unusable = set()

    @property
    def capacity(self) -> int:
        return self.max_streams

    @property
    def available(self) -> int:
        return self.max_streams - len(self._leased)

    def lease(self, owner: str) -> PortLease:
        if len(self._leased) >= self.max_streams:
            raise PortsExhausted(
                f"all {self.max_streams} streams of the single RTP port {self.first} are in use"
            )
        lease = PortLease(self.first, owner)
        self._leased[id(lease)] = lease
        return lease

    def release(self, lease: PortLease) -> bool:
        if self._leased.get(id(lease)) is not lease:
            return False
        del self._leased[id(lease)]
        return True

    def unusable(self, lease: PortLease) -> None:
        """The shared port is bound once at start, not per stream: just give the lease back."""
        self.release(lease)
