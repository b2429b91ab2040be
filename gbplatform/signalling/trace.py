"""A bounded per-device SIP trace: the last messages exchanged with each device.

The first thing anyone debugging a device that will not register needs is
what it sent and what we answered. Every SIP message in or out is recorded
under the GB ID found in its From or To header (whichever is not the
platform's own), up to ``per_device`` messages a device and ``max_bytes`` in
all: past that the oldest entries of any device go first, so ten thousand
devices cannot make the trace eat the process's memory.

Two more rules keep a device's trace useful (issue 8):

- Live-video signalling names the channel, not the device: the INVITE's To is
  the channel ID (GB/T 28181-2016 §9.2.2.1), and so are the ACK and BYE. A
  message exchanged with the address a device is registered at
  (``address_of``) is filed under that device too.
- Anyone can put a device's ID in a From header. Once the device is
  registered, messages with its ID from other addresses go to a separate
  bounded list, so a flood of unauthenticated attempts (svcrack sends
  hundreds) cannot push the device's own history out. ``entries()`` merges
  both by time.
- A flood of forged IDs (issue 8 item 10: 20,000 REGISTERs a second, each
  with a new random ID) must not cost a list per ID. Messages naming an ID
  that no registered or registry-known device has (``is_known``) and that has
  no history yet go to one shared list, bounded by ``unverified`` entries
  and an eighth of ``max_bytes``; ``entries()`` picks a device's messages
  out of it, so a device that fails to register can still be debugged.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

Addr = tuple[str, str, int]

# An RFC 3261 §25.1 user part in ASCII (unreserved characters and the
# user-unreserved ones but ";?/"): non-strict IDs such as "cam-lab-1" are
# traced too, and a match always decodes.
_USER = rb"([\w.!~*'()&=+$,%-]+)"
_FROM_RE = re.compile(rb"^(?:From|f)[ \t]*:[^\r\n]*?sips?:" + _USER + rb"@", re.M | re.I)
_TO_RE = re.compile(rb"^(?:To|t)[ \t]*:[^\r\n]*?sips?:" + _USER + rb"@", re.M | re.I)
MAX_ENTRY = 16_384


class TraceEntry(NamedTuple):
    """One message of the trace; a tuple of plain values, so the GC leaves it alone."""

    at: float
    direction: str  # "recv" | "send"
    transport: str
    host: str
    port: int
    data: bytes
    seq: int = 0  # arrival order across the lists entries() merges; wall time may step back

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def text(self) -> str:
        """The message as text: a trace shows what came, invalid UTF-8 replaced rather than refused."""
        return self.data.decode("utf-8", "replace")

    @property
    def summary(self) -> str:
        """The start line (RFC 3261 §7.1, §7.2)."""
        return self.text.split("\r\n", 1)[0]


class SipTrace:
    def __init__(
        self, platform_id: str, *, per_device: int = 200, max_bytes: int = 32 * 1024 * 1024,
        address_of: Callable[[str], Addr | None] = lambda device_id: None,
        is_known: Callable[[str], bool] = lambda device_id: True,
        unverified: int = 2000,
    ) -> None:
        self.platform_id = platform_id.encode()
        self.per_device = per_device
        self.max_bytes = max_bytes
        self.address_of = address_of  # where a device is registered (DeviceManager.address_of)
        self.is_known = is_known  # in the registry or live (DeviceManager.known_id)
        self.unverified = unverified
        self._unverified: deque[tuple[str, TraceEntry]] = deque()  # unknown IDs, all in one list
        self._unverified_bytes = 0
        self._seq = 0
        self._devices: dict[str, deque[TraceEntry]] = {}
        self._strangers: dict[str, deque[TraceEntry]] = {}  # its ID from other addresses
        self._order: deque[tuple[dict[str, deque[TraceEntry]], str, TraceEntry]] = deque()
        self._bytes = 0
        self._count = 0  # live entries; _order may also hold ones the per-device bound dropped
        self._at_peer: dict[Addr, str] = {}  # registered address -> device, learnt from its messages

    def device_of(self, data: bytes) -> str | None:
        """The GB ID of the peer in a SIP message: From's user, or To's if From is us."""
        head = data[:2048]
        m = _FROM_RE.search(head)
        if m and m.group(1) != self.platform_id:
            return m.group(1).decode()
        m = _TO_RE.search(head)
        if m and m.group(1) != self.platform_id:
            return m.group(1).decode()
        return None

    def record(self, direction: str, data: bytes, peer: Addr, at: float) -> None:
        if self.per_device <= 0:
            return
        named = self.device_of(data)
        if named is None:
            return
        self._seq += 1
        entry = TraceEntry(at, direction, peer[0], peer[1], peer[2], data[:MAX_ENTRY], self._seq)
        registered = self.address_of(named)
        if registered is None and named not in self._devices and not self.is_known(named):
            self._add_unverified(named, entry)
        elif registered is None or registered == peer:
            self._add(self._devices, named, entry)
            if registered is not None:
                if len(self._at_peer) >= 200_000 and peer not in self._at_peer:
                    self._at_peer.clear()  # stale addresses of devices long gone
                self._at_peer[peer] = named
        else:
            self._add(self._strangers, named, entry)
        # A channel's INVITE/ACK/BYE, exchanged with its device's address.
        device_id = self._at_peer.get(peer)
        if device_id is not None and device_id != named and self.address_of(device_id) == peer:
            self._add(self._devices, device_id, entry)
        self._evict()

    def _add_unverified(self, device_id: str, entry: TraceEntry) -> None:
        self._unverified.append((device_id, entry))
        self._unverified_bytes += len(entry.data)
        while self._unverified and (
            len(self._unverified) > self.unverified or self._unverified_bytes > self.max_bytes // 8
        ):
            _, old = self._unverified.popleft()
            self._unverified_bytes -= len(old.data)

    def _add(self, table: dict[str, deque[TraceEntry]], device_id: str, entry: TraceEntry) -> None:
        entries = table.get(device_id)
        if entries is None:
            entries = table[device_id] = deque()
        if len(entries) >= self.per_device:
            old = entries.popleft()
            self._bytes -= len(old.data)
            self._count -= 1
        entries.append(entry)
        self._count += 1
        self._order.append((table, device_id, entry))
        self._bytes += len(entry.data)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._order:
            table, device_id, entry = self._order.popleft()
            entries = table.get(device_id)
            if entries and entries[0] is entry:
                entries.popleft()
                self._bytes -= len(entry.data)
                self._count -= 1
                if not entries:
                    del table[device_id]
        # Entries already dropped by the per-device bound linger in _order; trim them.
        if len(self._order) > 2 * self._count + 1024:
            live = {id(e) for table in (self._devices, self._strangers) for d in table.values() for e in d}
            self._order = deque(item for item in self._order if id(item[2]) in live)

    def entries(self, device_id: str, limit: int | None = None) -> list[TraceEntry]:
        """The device's messages, its own and those of strangers using its ID, oldest first."""
        entries = list(self._devices.get(device_id, ()))
        others = [*self._strangers.get(device_id, ()), *(e for d, e in self._unverified if d == device_id)]
        if others:
            entries = sorted([*entries, *others], key=lambda e: e.seq)
        return entries[-limit:] if limit else entries

    def forget(self, device_id: str) -> None:
        for table in (self._devices, self._strangers):
            for entry in table.pop(device_id, ()):
                self._bytes -= len(entry.data)
                self._count -= 1
        if any(d == device_id for d, _ in self._unverified):
            self._unverified = deque((d, e) for d, e in self._unverified if d != device_id)
            self._unverified_bytes = sum(len(e.data) for _, e in self._unverified)
