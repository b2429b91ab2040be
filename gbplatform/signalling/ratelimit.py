"""Per-device token buckets for the Notify bodies devices send (alarms, positions, catalog changes).

Theory of operation
-------------------
A device may report as often as it likes (GB/T 28181-2016 §9.4, §9.10, §9.11
set no bound): a camera whose motion detection fires on rain, or a vehicle
reporting its position ten times a second, can flood the platform's database
and event stream. The router asks ``NotifyLimiter.allow(device_id, now)``
once per Notify (other than the keepalive, which has its own path) from a
registered device, before it answers 200; ``False`` means answer 503 with
``Retry-After: retry_after(...)`` (RFC 3261 §21.5.4, §20.33): the device
sends it again later, nothing is stored now.

Each device has its own bucket of ``burst`` tokens refilled at ``rate`` per
second (a token bucket), so one device's flood spends only its own tokens
and another device's alarm goes through at once. Sans-IO: the caller passes
``now`` (monotonic seconds). Buckets exist only for devices that passed the
router's registration checks; their number is still bounded (``max_devices``,
the least recently used goes first: a forgotten bucket starts full again).
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["NotifyLimiter"]


class NotifyLimiter:
    """Token buckets by device: ``rate`` tokens a second, at most ``burst`` saved; ``rate`` 0 is no limit."""

    def __init__(self, rate: float, burst: int, *, max_devices: int = 200_000) -> None:
        if rate < 0 or burst < 1 or max_devices < 1:
            raise ValueError("rate must be >= 0, burst and max_devices >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_devices = max_devices
        # device -> [tokens, time of the last refill]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        self.refused = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _bucket(self, device_id: str, now: float) -> list[float]:
        bucket = self._buckets.get(device_id)
        if bucket is None:
            if len(self._buckets) >= self.max_devices:
                self._buckets.popitem(last=False)
            bucket = self._buckets[device_id] = [self.burst, now]
        else:
            self._buckets.move_to_end(device_id)
            # A clock that went backwards refills nothing (and the refill resumes from the latest time seen).
            elapsed = max(0.0, now - bucket[1])
            bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
            bucket[1] = max(bucket[1], now)
        return bucket

    def allow(self, device_id: str, now: float) -> bool:
        """Spend one of ``device_id``'s tokens; False (and counted in ``refused``) when it has none."""
        if not self.enabled:
            return True
        bucket = self._bucket(device_id, now)
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        self.refused += 1
        return False

    def retry_after(self, device_id: str, now: float) -> int:
        """Whole seconds until ``device_id`` has a token again (at least 1), for ``Retry-After``."""
        if not self.enabled:
            return 1
        bucket = self._bucket(device_id, now)
        missing = max(0.0, 1.0 - bucket[0])
        return max(1, math.ceil(missing / self.rate))

    def forget(self, device_id: str) -> None:
        """Drop a device's bucket (it unregistered or was deleted)."""
        self._buckets.pop(device_id, None)

    def __len__(self) -> int:
        return len(self._buckets)
