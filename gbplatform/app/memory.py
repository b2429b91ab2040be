"""Handing freed heap back to the kernel: glibc's ``malloc_trim`` now and then.

Why: CPython allocates a video frame (about 20 KiB at 4 Mbit/s, 40 KiB for a
keyframe) with ``malloc``, below glibc's mmap threshold, so frames live in the
main heap. ``free`` returns memory to the kernel only from the top of the heap
(glibc manual, "Memory Allocation Tunables", ``M_TRIM_THRESHOLD``); the GOPs an
unwatched stream's cache lets go (media/pipeline.py, ``media.gop_cache_idle``)
or a closed stream's sit in the middle, so without a trim the process keeps
its high-water mark for ever: 100 streams whose caches dropped to their
keyframes still showed the RSS of 100 full GOPs (docs/performance.md
"Memory"). ``malloc_trim(0)`` releases every whole free page of every arena
(``madvise(MADV_DONTNEED)``, glibc >= 2.8); it took 1-5 ms on a 200 MiB heap
of frames, measured.

``HeapTrimmer`` decides (sans-IO: ``tick(now)``): once at start, then after
``min_released`` bytes of GOPs were let go since the last trim, or ``max_interval`` seconds
after it whatever happened (streams that ended, a registration storm's
garbage). ``HeapTrimService`` ticks it on the reactor clock. Where the C
library has no ``malloc_trim`` (musl, macOS) nothing is trimmed, and that is
logged once at start.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from twisted.application.service import Service
from twisted.logger import Logger

from gbplatform.core.clock import Clock, DelayedCallLike
from media.pipeline import GopCache

__all__ = ["HeapTrimService", "HeapTrimmer", "libc_malloc_trim"]

log = Logger()

TICK = 5.0  # seconds between checks
MIN_RELEASED = 8 * 1024 * 1024  # GOP bytes let go before a trim is worth its few ms
MAX_INTERVAL = 60.0  # seconds: trim at least this often


def libc_malloc_trim() -> Callable[[], int] | None:
    """``malloc_trim(0)`` of the process's C library, or None if it has none."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int

    def trim() -> int:
        return int(fn(0))

    return trim


class HeapTrimmer:
    """When to trim: enough GOP bytes let go, or ``max_interval`` since the last trim."""

    def __init__(
        self,
        trim: Callable[[], int],
        *,
        released: Callable[[], int] = lambda: GopCache.released,
        min_released: int = MIN_RELEASED,
        max_interval: float = MAX_INTERVAL,
    ) -> None:
        self.trim = trim
        self.released = released
        self.min_released = min_released
        self.max_interval = max_interval
        self.trims = 0
        self._last_at: float | None = None
        self._last_released = released()

    def tick(self, now: float) -> bool:
        """Trim if it is time; True if it trimmed.

        The first tick always trims: start-up leaves garbage behind (module
        bodies run once, configuration parsing, the first SQL compiled),
        about 2 MiB of free pages (measured).
        """
        released = self.released()
        if self._last_at is not None and released - self._last_released < self.min_released \
                and now - self._last_at < self.max_interval:
            return False
        self.trim()
        self.trims += 1
        self._last_at = now
        self._last_released = released
        return True


class HeapTrimService(Service):
    """Ticks a ``HeapTrimmer`` every ``interval`` seconds of the clock while the platform runs."""

    name = "heap-trim"

    def __init__(self, clock: Clock, trimmer: HeapTrimmer | None, interval: float = TICK) -> None:
        self.clock = clock
        self.trimmer = trimmer
        self.interval = interval
        self._call: DelayedCallLike | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]
        if self.trimmer is None:
            log.info("the C library has no malloc_trim: freed memory is not handed back to the kernel")
            return
        # The first tick one interval after start: after the reactor ran and
        # start-up's garbage was collected (cli.tune_gc).
        self._call = self.clock.call_later(self.interval, self._tick)

    def stopService(self) -> None:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        assert self.trimmer is not None
        try:
            self.trimmer.tick(self.clock.seconds())
        except Exception:  # noqa: BLE001 - a failed trim must not stop the ticks; the process runs on untrimmed
            log.failure("malloc_trim failed")
        self._call = self.clock.call_later(self.interval, self._tick)
