"""gbplatform.app.memory: when the platform hands freed heap back (malloc_trim)."""

from __future__ import annotations

import pytest

from gbplatform.app.memory import HeapTrimmer, HeapTrimService, libc_malloc_trim
from gbplatform.core.clock import FakeClock
from media.frame import Codec, Frame
from media.pipeline import FrameDispatcher, GopCache


class Released:
    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


def test_trims_after_enough_gop_bytes_were_let_go_or_after_max_interval() -> None:
    trims: list[int] = []
    released = Released()

    def trim() -> int:
        trims.append(1)
        return 1

    t = HeapTrimmer(trim, released=released, min_released=1000, max_interval=60.0)
    assert t.tick(0.0) and t.trims == 1  # the first tick trims what start-up left
    released.value = 999
    assert not t.tick(5.0)
    released.value = 1000
    assert t.tick(10.0) and t.trims == 2
    assert not t.tick(15.0)  # nothing new let go
    assert not t.tick(69.0)
    assert t.tick(70.0) and t.trims == 3  # 60 s since the last trim
    assert trims == [1, 1, 1]


def test_the_counter_is_what_unwatched_caches_let_go() -> None:
    before = GopCache.released
    d = FrameDispatcher(idle_after=1.0)
    for n in range(30):
        d.input_frame(Frame(Codec.H264, bytes(1000 if n % 10 == 0 else 100), n * 3600, n * 3600,
                            n % 10 == 0, 0xE0), n / 25)
    # At 1.0 s (frame 25, before it is cached) the GOP of 20 (frames 20-24) dropped to its keyframe.
    assert GopCache.released - before == 4 * 100
    trimmer = HeapTrimmer(lambda: 1, min_released=1)
    assert trimmer.released() == GopCache.released


def test_service_ticks_on_the_clock_and_stops() -> None:
    clock = FakeClock()
    released = Released()
    trims: list[float] = []

    def trim() -> int:
        trims.append(clock.seconds())
        return 1

    trimmer = HeapTrimmer(trim, released=released, min_released=10)
    service = HeapTrimService(clock, trimmer, interval=5.0)
    service.startService()
    assert trims == []
    clock.advance(5.0)
    assert trims == [5.0]  # one interval after start: what start-up left
    released.value = 10
    clock.advance(5.0)
    assert trims == [5.0, 10.0]
    clock.advance(55.0)
    assert trims == [5.0, 10.0]
    clock.advance(5.0)  # 60 s after the last trim
    assert trims == [5.0, 10.0, 70.0]
    service.stopService()
    clock.advance(600.0)
    assert trims == [5.0, 10.0, 70.0]


def test_without_malloc_trim_the_service_only_says_so() -> None:
    clock = FakeClock()
    service = HeapTrimService(clock, None)
    service.startService()
    clock.advance(600.0)
    service.stopService()


def test_glibc_malloc_trim_is_found_and_runs() -> None:
    trim = libc_malloc_trim()
    if trim is None:
        pytest.skip("this C library has no malloc_trim")
    assert trim() in (0, 1)
