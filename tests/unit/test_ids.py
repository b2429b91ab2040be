"""Tests for gbplatform.core.ids (Annex D codes, SSRC allocation, SIP tokens) and gbplatform.core.clock."""

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock as TwistedClock

from gbplatform.core.clock import FakeClock, ReactorClock
from gbplatform.core.ids import (
    SsrcAllocator,
    SsrcExhaustedError,
    domain_of,
    gb_id_type,
    id_kind,
    is_civil_code,
    is_gb_id,
    new_branch,
    new_call_id,
    new_tag,
)

# -- Annex D codes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("34020000001320000001", True),
        ("3402000000132000000", False),
        ("340200000013200000011", False),
        ("3402000000132000000a", False),
        ("３４０２００００００１３２００００００１", False),  # full-width digits
        ("", False),
    ],
)
def test_is_gb_id(s: str, expected: bool) -> None:
    assert is_gb_id(s) is expected


def test_gb_id_type() -> None:
    assert gb_id_type("34020000001320000001") == 132
    assert gb_id_type("34020000002000000001") == 200
    assert gb_id_type("34020000000010000001") == 1
    assert gb_id_type("3402") is None
    assert gb_id_type("not an id") is None


@pytest.mark.parametrize("s", ["34", "3402", "340200", "34020000"])
def test_civil_codes(s: str) -> None:
    assert is_civil_code(s)


@pytest.mark.parametrize("s", ["", "3", "340", "3402000", "340200000", "3402000000", "34a2"])
def test_not_civil_codes(s: str) -> None:
    assert not is_civil_code(s)


@pytest.mark.parametrize(
    ("s", "kind"),
    [
        ("34", "civil_code"),
        ("3402", "civil_code"),
        ("340200", "civil_code"),
        ("34020000", "civil_code"),
        ("34020000002150000001", "business_group"),
        ("34020000002160000001", "virtual_org"),
        ("34020000002000000001", "platform"),
        ("34020000001310000001", "camera"),
        ("34020000001320000001", "camera"),
        ("34020000001180000001", "nvr"),
        ("34020000001110000001", "dvr"),
        ("34020000001120000001", "encoder"),
        ("34020000001340000001", "alarm_input"),
        ("34020000001350000001", "alarm_output"),
        ("34020000001100000001", "device"),
        ("34020000001140000001", "device"),
        ("34020000001330000001", "device"),
        ("34020000001390000001", "device"),
        ("34020000001400000001", "unknown"),
        ("34020000003000000001", "unknown"),
        ("34020000001090000001", "unknown"),
        ("3402000000", "unknown"),
        ("abc", "unknown"),
        ("", "unknown"),
    ],
)
def test_id_kind(s: str, kind: str) -> None:
    assert id_kind(s) == kind


def test_domain_of() -> None:
    assert domain_of("34020000002000000001") == "3402000000"
    with pytest.raises(ValueError, match="not a 20-digit GB/T 28181 ID: '3402'"):
        domain_of("3402")


# -- SSRC ---------------------------------------------------------------------------


def test_ssrc_format() -> None:
    alloc = SsrcAllocator("3402000000", random.Random(1))
    live = alloc.allocate(history=False)
    history = alloc.allocate(history=True)
    assert live[0] == "0" and live[1:6] == "20000" and len(live) == 10
    assert history[0] == "1" and history[1:6] == "20000" and len(history) == 10
    assert live[6:] != history[6:]
    # y= values are decimal SSRCs; they must fit the 32-bit RTP field (RFC 3550 §5.1).
    assert int(history) < 2**32


def test_ssrc_uses_domain_digits_4_to_8() -> None:
    alloc = SsrcAllocator("1101081234", random.Random(0))
    assert alloc.allocate(history=False)[1:6] == "10812"


def test_ssrc_start_depends_on_rng() -> None:
    starts = {SsrcAllocator("3402000000", random.Random(seed)).allocate(False) for seed in range(8)}
    assert len(starts) > 1
    again = SsrcAllocator("3402000000", random.Random(3)).allocate(False)
    assert again == SsrcAllocator("3402000000", random.Random(3)).allocate(False)


def test_ssrc_unique_until_exhausted_then_reusable() -> None:
    alloc = SsrcAllocator("3402000000", random.Random(42))
    leased = [alloc.allocate(history=i % 2 == 1) for i in range(10_000)]
    assert len({s[6:] for s in leased}) == 10_000
    assert alloc.in_use == 10_000
    with pytest.raises(SsrcExhaustedError, match="all 10000 SSRC sequences are in use"):
        alloc.allocate(history=False)
    assert alloc.release(leased[1234])
    again = alloc.allocate(history=False)
    assert again[6:] == leased[1234][6:]
    assert again[0] == "0"


def test_ssrc_release() -> None:
    alloc = SsrcAllocator("3402000000", random.Random(7))
    ssrc = alloc.allocate(history=False)
    assert alloc.is_leased(ssrc)
    # Same sequence, other kind: not this lease.
    assert not alloc.release("1" + ssrc[1:])
    assert alloc.release(ssrc)
    assert not alloc.is_leased(ssrc)
    assert not alloc.release(ssrc)
    assert not alloc.release("garbage")
    assert not alloc.release("")
    assert alloc.in_use == 0


def test_ssrc_released_sequence_is_not_reused_at_once() -> None:
    alloc = SsrcAllocator("3402000000", random.Random(5))
    first = alloc.allocate(history=False)
    alloc.release(first)
    assert alloc.allocate(history=False) != first


def test_ssrc_bad_domain() -> None:
    with pytest.raises(ValueError, match="SIP domain must be 10 digits, got '3402'"):
        SsrcAllocator("3402", random.Random(0))


@given(
    seed=st.integers(min_value=0, max_value=2**32),
    ops=st.lists(st.tuples(st.booleans(), st.booleans()), max_size=200),
)
def test_ssrc_live_leases_never_share_a_sequence(seed: int, ops: list[tuple[bool, bool]]) -> None:
    rng = random.Random(seed)
    alloc = SsrcAllocator("3402000000", rng)
    live: list[str] = []
    for release, history in ops:
        if release and live:
            assert alloc.release(live.pop(rng.randrange(len(live))))
        else:
            live.append(alloc.allocate(history))
        sequences = [s[6:] for s in live]
        assert len(sequences) == len(set(sequences))
        assert alloc.in_use == len(live)


# -- SIP tokens -------------------------------------------------------------------


def test_tokens_are_deterministic_per_seed() -> None:
    a, b = random.Random(9), random.Random(9)
    assert (new_tag(a), new_branch(a), new_call_id(a, "10.0.0.1")) == (
        new_tag(b),
        new_branch(b),
        new_call_id(b, "10.0.0.1"),
    )


def test_token_shapes() -> None:
    rng = random.Random(0)
    assert re.fullmatch(r"[0-9a-f]{16}", new_tag(rng))
    assert re.fullmatch(r"z9hG4bK[0-9a-f]{16}", new_branch(rng))
    assert re.fullmatch(r"[0-9a-f]{32}@192\.168\.1\.2", new_call_id(rng, "192.168.1.2"))
    assert re.fullmatch(r"[0-9a-f]{32}", new_call_id(rng, ""))


def test_tokens_differ() -> None:
    rng = random.Random(0)
    assert len({new_tag(rng) for _ in range(1000)}) == 1000
    assert len({new_branch(rng) for _ in range(1000)}) == 1000


# -- Clock (gbplatform.core.clock) ----------------------------------------------------------


def test_fake_clock_advances_reactor_and_wall_time() -> None:
    clock = FakeClock(start=5.0, wall_start=1_000.0)
    assert (clock.seconds(), clock.time()) == (5.0, 1_000.0)
    fired: list[tuple[str, float]] = []
    call = clock.call_later(10, lambda tag: fired.append((tag, clock.time())), "t")
    assert call.active() and clock.pending() == 1
    clock.advance(9.5)
    assert fired == []
    clock.advance(0.5)
    assert fired == [("t", 1_010.0)]
    assert not call.active() and clock.pending() == 0
    assert clock.seconds() == 15.0


def test_fake_clock_cancel_and_wall_jump() -> None:
    clock = FakeClock()
    fired: list[int] = []
    call = clock.call_later(1, fired.append, 1)
    call.cancel()
    clock.pump([1, 1])
    assert fired == [] and not call.active()
    clock.set_time(2_000_000_000.0)
    assert clock.time() == 2_000_000_000.0
    assert clock.seconds() == 2.0
    clock.advance(1)
    assert clock.time() == 2_000_000_001.0


def test_reactor_clock() -> None:
    reactor = TwistedClock()
    clock = ReactorClock(reactor, wall=lambda: 123.0)
    fired: list[str] = []
    call = clock.call_later(3, fired.append, "x")
    reactor.advance(3)
    assert fired == ["x"] and not call.active()
    assert clock.seconds() == 3.0
    assert clock.time() == 123.0
