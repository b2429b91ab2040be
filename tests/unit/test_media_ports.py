"""The RTP port pool: even pairs, least recently used first, exhaustion, safe release."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.ports import PortLease, PortPool, PortsExhausted


def pool(first: int = 30000, last: int = 30009, seed: int = 1) -> PortPool:
    return PortPool(first, last, random.Random(seed))


def test_pairs_are_even_rtp_with_odd_rtcp_inside_the_range() -> None:
    p = pool(30001, 30010)
    leases = [p.lease(f"s{i}") for i in range(p.capacity)]
    assert sorted(lease.rtp for lease in leases) == [30002, 30004, 30006, 30008]
    assert all(lease.rtcp == lease.rtp + 1 <= 30010 for lease in leases)


def test_exhaustion_is_a_clear_error_and_release_refills() -> None:
    p = pool()
    leases = [p.lease("s") for _ in range(5)]
    assert p.available == 0 and p.in_use == 5
    with pytest.raises(PortsExhausted, match="all 5 RTP port pairs of 30000-30009 are in use"):
        p.lease("one too many")
    assert p.release(leases[2]) is True
    assert p.lease("again").rtp == leases[2].rtp


def test_double_or_foreign_release_changes_nothing() -> None:
    p = pool()
    lease = p.lease("s")
    assert p.release(lease) is True
    assert p.release(lease) is False
    assert p.release(PortLease(lease.rtp, "forged")) is False
    assert p.available == 5 and p.in_use == 0


def test_freed_ports_go_to_the_back() -> None:
    p = pool()
    first = p.lease("a")
    p.release(first)
    following = [p.lease("b").rtp for _ in range(4)]
    assert first.rtp not in following


def test_start_is_randomised_by_the_injected_rng() -> None:
    starts = {pool(seed=seed).lease("s").rtp for seed in range(20)}
    assert len(starts) > 1


def test_unbindable_pair_is_retired() -> None:
    p = pool()
    lease = p.lease("s")
    p.unusable(lease)
    assert p.capacity == 5 and p.available == 4 and p.in_use == 0
    assert lease.rtp not in {p.lease("t").rtp for _ in range(4)}


@pytest.mark.parametrize("first,last", [(80, 90), (30000, 29000), (30000, 30000), (65535, 65535)])
def test_bad_ranges_are_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError):
        PortPool(first, last, random.Random(0))


@given(st.lists(st.booleans(), max_size=200))
def test_pool_is_always_back_to_full(ops: list[bool]) -> None:
    p = pool(40000, 40099)
    held: list[PortLease] = []
    for take in ops:
        if take and p.available:
            held.append(p.lease("s"))
        elif held:
            p.release(held.pop(0))
    assert len({lease.rtp for lease in held}) == len(held) == p.in_use
    for lease in held:
        p.release(lease)
    assert p.available == p.capacity == 50
