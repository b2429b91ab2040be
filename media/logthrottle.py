"""Log once per interval with a count: repeated events must not flood the disk.

Theory of operation
-------------------
A flood (20,000 forged REGISTERs a second, a camera sending garbage PS) repeats
the same event thousands of times a second; a line per event wrote 21.7 MB of
log in 45 s. ``LogThrottle.hit(key, now)`` counts one event of kind ``key``
and says whether to write a line for it: the first event of a kind is logged
at once, then at most one line per ``interval`` seconds, carrying how many
events it stands for (itself and those kept quiet since the previous line).
Events that come after the last line of a burst are reported by the next
line of the same kind; their totals live in the caller's counters anyway.

It is sans-IO like the rest of ``media/``: the caller passes ``now`` (any
monotonic seconds), and it is shared with ``gbplatform`` (``media/`` may not
import the application). The number of kinds tracked is bounded so that a
key built from peer input (a source address) cannot grow it without limit:
the oldest kind is forgotten, which at worst logs one line more.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["LogThrottle"]


class LogThrottle:
    """Decides which of many repeated events get a log line."""

    def __init__(self, interval: float = 10.0, *, max_keys: int = 1024) -> None:
        if interval < 0 or max_keys < 1:
            raise ValueError("interval must be >= 0 and max_keys >= 1")
        self.interval = interval
        self.max_keys = max_keys
        # key -> [time of the last line, events since it]
        self._kinds: dict[Hashable, list[float]] = {}

    def hit(self, key: Hashable, now: float) -> int:
        """Count one event of ``key``; 0: stay quiet, else log it as this many events."""
        entry = self._kinds.get(key)
        if entry is None:
            if len(self._kinds) >= self.max_keys:
                del self._kinds[next(iter(self._kinds))]
            self._kinds[key] = [now, 0.0]
            return 1
        # A clock that went backwards (a test, a restarted reactor) logs again
        # rather than staying quiet for the whole jump.
        if now - entry[0] >= self.interval or now < entry[0]:
            count = int(entry[1]) + 1
            entry[0], entry[1] = now, 0.0
            return count
        entry[1] += 1
        return 0

    def pending(self, key: Hashable) -> int:
        """Events of ``key`` kept quiet since its last line."""
        entry = self._kinds.get(key)
        return 0 if entry is None else int(entry[1])
