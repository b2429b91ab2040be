"""Tests for sip.gbid and gbplatform.core.ids (Annex D codes, SSRC allocation, SIP tokens) and gbplatform.core.clock."""

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
from sip.gbid import CATALOG_KINDS, TYPE_KINDS, catalog_kind, civil_code_ancestors, is_domain

# -- Annex D codes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("34020000001320000001", True),
        ("3402000000132000000", False),
        ("340200000013200000011", False),
        ("3402000000132000000a", False),
        ("３４０２００００００１３２００００００１", False),  # full-width digits
        ("34020000001320000001\n", False),  # re's "$" would accept it
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


# GB/T 28181-2016 Annex D Table D.1 (2022 Table E.1): ID -> (id_kind, catalog_kind).
KINDS = [
    # Civil-code nodes: 2, 4, 6 or 8 digits (Annex D.1); other lengths are not.
    ("34", "civil_code", "civil_code"),
    ("3402", "civil_code", "civil_code"),
    ("340200", "civil_code", "civil_code"),
    ("34020000", "civil_code", "civil_code"),
    ("34020001", "civil_code", "civil_code"),
    ("340", "unknown", "channel"),
    ("3402000", "unknown", "channel"),
    ("3402000000", "unknown", "channel"),
    ("３４", "unknown", "channel"),  # full-width digits
    # 111-130 front-end main devices: catalog "device" nodes.
    ("34020000001110000001", "dvr", "device"),
    ("34020000001120000001", "video_server", "device"),
    ("34020000001130000001", "encoder", "device"),
    ("34020000001140000001", "decoder", "device"),
    ("34020000001170000001", "alarm_controller", "device"),
    ("34020000001180000001", "nvr", "device"),
    ("34020000001190000001", "device", "device"),  # unassigned in the range
    ("34020000001300000001", "hvr", "device"),
    # 131-199 front-end peripherals: channels.
    ("34020000001310000001", "camera", "channel"),
    ("34020000001320000001", "camera", "channel"),
    ("34020000001330000001", "display", "channel"),
    ("34020000001340000001", "alarm_input", "channel"),
    ("34020000001350000001", "alarm_output", "channel"),
    ("34020000001370000001", "voice_output", "channel"),
    ("34020000001390000001", "peripheral", "channel"),
    ("34020000001400000001", "peripheral", "channel"),
    ("34020000001990000001", "peripheral", "channel"),
    # 200-299 platform devices; 215/216 are catalog groups.
    ("34020000002000000001", "platform", "channel"),
    ("34020000002020000001", "media_server", "channel"),
    ("34020000002990000001", "server", "channel"),
    ("34020000002150000001", "business_group", "business_group"),
    ("34020000002160000001", "virtual_org", "virtual_org"),
    # Users, and codes outside every range.
    ("34020000003000000001", "centre_user", "channel"),
    ("34020000004000000001", "terminal_user", "channel"),
    ("34020000001100000001", "unknown", "channel"),
    ("34020000001090000001", "unknown", "channel"),
    ("34020000006000000001", "unknown", "channel"),
    ("3402000000132000000a", "unknown", "channel"),
    ("camera-1", "unknown", "channel"),
    ("abc", "unknown", "channel"),
    ("", "unknown", "channel"),
]


@pytest.mark.parametrize(("s", "kind", "node"), KINDS)
def test_id_kind(s: str, kind: str, node: str) -> None:
    assert id_kind(s) == kind


@pytest.mark.parametrize(("s", "kind", "node"), KINDS)
def test_catalog_kind(s: str, kind: str, node: str) -> None:
    assert catalog_kind(s) == node
    assert node in CATALOG_KINDS


def test_every_named_type_is_in_its_range() -> None:
    # A named code outside Table D.1's ranges would make id_kind and
    # catalog_kind disagree about what the code is.
    for code, kind in TYPE_KINDS.items():
        assert 111 <= code <= 499, (code, kind)
        assert id_kind(f"3402000000{code}0000001") == kind


@pytest.mark.parametrize(
    ("code", "ancestors"),
    [
        ("34020001", ("340200", "3402", "34")),
        ("340200", ("3402", "34")),
        ("34", ()),
        ("340", ()),
        ("34020000001320000001", ()),
    ],
)
def test_civil_code_ancestors(code: str, ancestors: tuple[str, ...]) -> None:
    assert civil_code_ancestors(code) == ancestors


def test_one_set_of_rules() -> None:
    # The application, the URI module and the registry all use sip.gbid's rules.
    from gbplatform.core import ids
    from gbplatform.db import queries
    from sip import gbid, uri

    assert ids.is_gb_id is gbid.is_gb_id is uri.is_gb_id
    assert ids.id_kind is gbid.id_kind
    assert queries.CHANNEL_KINDS is gbid.CATALOG_KINDS


@pytest.mark.parametrize(
    ("s", "expected"),
    [("3402000000", True), ("340200000", False), ("34020000000", False), ("340200000a", False),
     ("３４０２０００００００", False), ("3402000000\n", False)],
)
def test_is_domain(s: str, expected: bool) -> None:
    assert is_domain(s) is expected


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


@pytest.mark.parametrize(
    ("value", "ok"),
    [("cam-01.main_2", True), ("A" * 32, True), ("A" * 33, False), ("", False), ("cam/1", False),
     ("cam 1", False), ("cam@1", False), ("câm", False), ("cam1\n", False)],
)
def test_the_loose_id_rule_is_the_one_sip_the_api_and_recovery_share(value: str, ok: bool) -> None:
    """sip.strict_id off: one rule for the SIP edge, the API and the recording store's keys."""
    from gbplatform.recording.recovery import _KEY
    from sip.gbid import is_loose_id

    assert is_loose_id(value) is ok
    key = f"{value}/2026-12-05/{value}-20261205T120000.000Z.ts"
    assert (_KEY.fullmatch(key) is not None) is ok
