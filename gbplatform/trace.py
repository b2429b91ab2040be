"""A bounded per-device SIP trace: the last messages exchanged with each device.

The first thing anyone debugging a device that will not register needs is
what it sent and what we answered. Every SIP message in or out is recorded
under the GB ID found in its From or To header (whichever is not the
platform's own), up to ``per_device`` messages a device and ``max_bytes`` in
all: past that the oldest entries of any device go first, so ten thousand
devices cannot make the trace eat the process's memory.
"""

from __future__ import annotations

import re
from collections import deque
from typing import NamedTuple

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

    def to_json(self) -> dict[str, object]:
        text = self.data.decode("utf-8", "replace")
        first = text.split("\r\n", 1)[0]
        return {
            "at": self.at,
            "direction": self.direction,
            "transport": self.transport,
            "peer": f"{self.host}:{self.port}",
            "summary": first,
            "message": text,
        }


class SipTrace:
    def __init__(self, platform_id: str, *, per_device: int = 200, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.platform_id = platform_id.encode()
        self.per_device = per_device
        self.max_bytes = max_bytes
        self._devices: dict[str, deque[TraceEntry]] = {}
        self._order: deque[tuple[str, TraceEntry]] = deque()
        self._bytes = 0
        self._count = 0  # live entries; _order may also hold ones the per-device bound dropped

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

    def record(self, direction: str, data: bytes, peer: tuple[str, str, int], at: float) -> None:
        if self.per_device <= 0:
            return
        device_id = self.device_of(data)
        if device_id is None:
            return
        entry = TraceEntry(at, direction, peer[0], peer[1], peer[2], data[:MAX_ENTRY])
        entries = self._devices.get(device_id)
        if entries is None:
            entries = self._devices[device_id] = deque()
        if len(entries) >= self.per_device:
            old = entries.popleft()
            self._bytes -= len(old.data)
            self._count -= 1
        entries.append(entry)
        self._count += 1
        self._order.append((device_id, entry))
        self._bytes += len(entry.data)
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._order:
            device_id, entry = self._order.popleft()
            entries = self._devices.get(device_id)
            if entries and entries[0] is entry:
                entries.popleft()
                self._bytes -= len(entry.data)
                self._count -= 1
                if not entries:
                    del self._devices[device_id]
        # Entries already dropped by the per-device bound linger in _order; trim them.
        if len(self._order) > 2 * self._count + 1024:
            live = {id(e) for d in self._devices.values() for e in d}
            self._order = deque(item for item in self._order if id(item[1]) in live)

    def entries(self, device_id: str, limit: int | None = None) -> list[TraceEntry]:
        entries = list(self._devices.get(device_id, ()))
        return entries[-limit:] if limit else entries

    def forget(self, device_id: str) -> None:
        for entry in self._devices.pop(device_id, ()):
            self._bytes -= len(entry.data)
            self._count -= 1
