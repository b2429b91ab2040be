"""``NotifyLimiter`` (gbplatform/signalling/ratelimit.py): per-device token buckets, sans-IO."""

from __future__ import annotations

import pytest

from gbplatform.signalling.ratelimit import NotifyLimiter


def test_burst_then_rate_per_device() -> None:
    limiter = NotifyLimiter(rate=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another device has its own bucket
    assert limiter.retry_after("a", 0.0) == 1
    assert limiter.allow("a", 0.5) and not limiter.allow("a", 0.5)  # 2/s: one token per half second
    assert limiter.allow("a", 10.0) and limiter.allow("a", 10.0) and limiter.allow("a", 10.0)
    assert not limiter.allow("a", 10.0)  # never more than the burst saved
    assert limiter.refused == 3


def test_slow_rate_retry_after_and_a_clock_going_back() -> None:
    limiter = NotifyLimiter(rate=0.1, burst=1)
    assert limiter.allow("a", 100.0) and not limiter.allow("a", 100.0)
    assert limiter.retry_after("a", 100.0) == 10
    assert not limiter.allow("a", 50.0)  # backwards: nothing refilled
    assert limiter.retry_after("a", 105.0) == 5


def test_zero_rate_is_no_limit_and_the_table_is_bounded() -> None:
    off = NotifyLimiter(rate=0.0, burst=1)
    assert all(off.allow("a", 0.0) for _ in range(1000)) and len(off) == 0
    small = NotifyLimiter(rate=1.0, burst=1, max_devices=2)
    for device in ("a", "b", "c"):
        small.allow(device, 0.0)
    assert len(small) == 2
    assert small.allow("a", 0.0)  # forgotten, so full again
    small.forget("a")
    assert len(small) == 1
    with pytest.raises(ValueError):
        NotifyLimiter(rate=-1.0, burst=1)
