"""The bounded per-device SIP trace (``gbplatform.trace``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gbplatform.trace import MAX_ENTRY, SipTrace
from tests.unit.platform_harness import DEV, DEV2, PLATFORM_ID, Harness

PEER = ("UDP", "192.0.2.10", 5070)
DEV3 = "34020000001320000003"


def msg(from_user: str, to_user: str, *, first: str = "MESSAGE sip:x@y SIP/2.0", pad: int = 0,
        compact: bool = False) -> bytes:
    f, t = ("f", "t") if compact else ("From", "To")
    text = (
        f"{first}\r\nVia: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK1\r\n"
        f"{f}: <sip:{from_user}@3402000000>;tag=1\r\n{t}: <sip:{to_user}@3402000000>\r\n"
        f"Call-ID: 1\r\nCSeq: 1 MESSAGE\r\nContent-Length: {pad}\r\n\r\n" + "x" * pad
    )
    return text.encode()


def sized(from_user: str, size: int) -> bytes:
    """A message of exactly ``size`` bytes from ``from_user``."""
    base = msg(from_user, PLATFORM_ID)
    return base + b"x" * (size - len(base))  # the trace never reads Content-Length


def test_device_of_uses_from_unless_it_is_the_platform() -> None:
    trace = SipTrace(PLATFORM_ID)
    assert trace.device_of(msg(DEV, PLATFORM_ID)) == DEV
    assert trace.device_of(msg(PLATFORM_ID, DEV)) == DEV
    assert trace.device_of(msg(DEV, PLATFORM_ID, compact=True)) == DEV
    assert trace.device_of(msg(PLATFORM_ID, DEV, compact=True)) == DEV
    assert trace.device_of(msg(PLATFORM_ID, PLATFORM_ID)) is None
    assert trace.device_of(b"\x00\x01garbage") is None
    sips = msg(DEV, PLATFORM_ID).replace(b"<sip:", b"<sips:")
    assert trace.device_of(sips) == DEV


def test_device_of_non_strict_ids_and_hostile_bytes() -> None:
    trace = SipTrace(PLATFORM_ID)
    assert trace.device_of(msg("cam-lab-1", PLATFORM_ID)) == "cam-lab-1"
    assert trace.device_of(msg(PLATFORM_ID, "cam.lab_2")) == "cam.lab_2"
    hostile = msg(DEV, PLATFORM_ID).replace(DEV.encode(), b"\xff\xfe")
    assert trace.device_of(hostile) is None
    trace.record("recv", hostile, PEER, 0.0)  # no UnicodeDecodeError


def test_entries_are_kept_per_device_with_their_direction_and_peer() -> None:
    trace = SipTrace(PLATFORM_ID)
    trace.record("recv", msg(DEV, PLATFORM_ID), PEER, 1.0)
    trace.record("send", msg(PLATFORM_ID, DEV), PEER, 2.0)
    trace.record("recv", msg(DEV2, PLATFORM_ID), ("TCP", "192.0.2.11", 5071), 3.0)
    trace.record("recv", b"not sip at all", PEER, 4.0)
    assert [(e.direction, e.at) for e in trace.entries(DEV)] == [("recv", 1.0), ("send", 2.0)]
    assert [e.transport for e in trace.entries(DEV2)] == ["TCP"]
    assert trace.entries(PLATFORM_ID) == []
    assert [e.at for e in trace.entries(DEV, limit=1)] == [2.0]
    assert trace.entries("nobody") == []


def test_to_json() -> None:
    trace = SipTrace(PLATFORM_ID)
    data = msg(DEV, PLATFORM_ID) + b"\xff"
    trace.record("recv", data, PEER, 5.5)
    [entry] = trace.entries(DEV)
    out = entry.to_json()
    assert out["at"] == 5.5 and out["direction"] == "recv" and out["transport"] == "UDP"
    assert out["peer"] == "192.0.2.10:5070"
    assert out["summary"] == "MESSAGE sip:x@y SIP/2.0"
    assert isinstance(out["message"], str) and out["message"].endswith("\ufffd")


def test_per_device_bound() -> None:
    trace = SipTrace(PLATFORM_ID, per_device=3)
    for i in range(5):
        trace.record("recv", msg(DEV, PLATFORM_ID), PEER, float(i))
    trace.record("recv", msg(DEV2, PLATFORM_ID), PEER, 9.0)
    assert [e.at for e in trace.entries(DEV)] == [2.0, 3.0, 4.0]
    assert len(trace.entries(DEV2)) == 1


def test_disabled_trace_records_nothing() -> None:
    trace = SipTrace(PLATFORM_ID, per_device=0)
    trace.record("recv", msg(DEV, PLATFORM_ID), PEER, 0.0)
    assert trace.entries(DEV) == []


def test_long_messages_are_cut() -> None:
    trace = SipTrace(PLATFORM_ID)
    trace.record("recv", msg(DEV, PLATFORM_ID, pad=MAX_ENTRY), PEER, 0.0)
    [entry] = trace.entries(DEV)
    assert len(entry.data) == MAX_ENTRY


def test_global_byte_budget_evicts_the_oldest_of_any_device() -> None:
    size = 300
    trace = SipTrace(PLATFORM_ID, max_bytes=3 * size)
    trace.record("recv", sized(DEV, size), PEER, 1.0)
    trace.record("recv", sized(DEV2, size), PEER, 2.0)
    trace.record("recv", sized(DEV, size), PEER, 3.0)
    assert len(sized(DEV, size)) == size
    trace.record("recv", sized(DEV3, size), PEER, 4.0)  # over budget: the 1.0 entry goes
    assert [e.at for e in trace.entries(DEV)] == [3.0]
    trace.record("recv", sized(DEV3, size), PEER, 5.0)  # the 2.0 entry goes, and DEV2 with it
    assert trace.entries(DEV2) == []
    assert DEV2 not in trace._devices
    assert [e.at for e in trace.entries(DEV3)] == [4.0, 5.0]


def test_budget_skips_entries_the_per_device_bound_already_dropped() -> None:
    size = 300
    trace = SipTrace(PLATFORM_ID, per_device=1, max_bytes=2 * size)
    trace.record("recv", sized(DEV, size), PEER, 1.0)
    trace.record("recv", sized(DEV, size), PEER, 2.0)  # drops 1.0 (per device)
    trace.record("recv", sized(DEV2, size), PEER, 3.0)
    trace.record("recv", sized(DEV3, size), PEER, 4.0)  # over budget: 2.0 goes, not 3.0
    assert trace.entries(DEV) == []
    assert [e.at for e in trace.entries(DEV2)] == [3.0]
    assert [e.at for e in trace.entries(DEV3)] == [4.0]


def test_order_queue_is_trimmed_of_dropped_entries() -> None:
    trace = SipTrace(PLATFORM_ID, per_device=1)
    for i in range(3000):
        trace.record("recv", msg(DEV, PLATFORM_ID), PEER, float(i))
    assert len(trace._order) <= 2 * 1 + 1024 + 1
    assert [e.at for e in trace.entries(DEV)] == [2999.0]


def test_forget_drops_a_device_and_frees_its_budget() -> None:
    size = 300
    trace = SipTrace(PLATFORM_ID, max_bytes=2 * size)
    trace.record("recv", sized(DEV, size), PEER, 1.0)
    trace.record("recv", sized(DEV2, size), PEER, 2.0)
    trace.forget(DEV)
    trace.forget("never-seen")
    assert trace.entries(DEV) == []
    trace.record("recv", sized(DEV3, size), PEER, 3.0)  # fits: DEV's bytes were freed
    assert [e.at for e in trace.entries(DEV2)] == [2.0]
    trace.record("recv", sized(DEV, size), PEER, 4.0)  # DEV again: evicts DEV2, not the new entry
    assert [e.at for e in trace.entries(DEV)] == [4.0]
    assert trace.entries(DEV2) == []


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def test_platform_traffic_is_traced_under_the_device_id(h: Harness) -> None:
    h.registered_device()
    entries = h.platform.trace.entries(DEV)
    summaries = [(e.direction, e.to_json()["summary"]) for e in entries]
    assert summaries[:4] == [
        ("recv", f"REGISTER sip:{PLATFORM_ID}@127.0.0.1:5060 SIP/2.0"),
        ("send", "SIP/2.0 401 Unauthorized"),
        ("recv", f"REGISTER sip:{PLATFORM_ID}@127.0.0.1:5060 SIP/2.0"),
        ("send", "SIP/2.0 200 OK"),
    ]
    # The platform's own MESSAGEs (From: the platform) are filed under the device (To).
    assert ("send", f"MESSAGE sip:{DEV}@127.0.0.1:5070 SIP/2.0") in summaries
    assert ("recv", "SIP/2.0 200 OK") in summaries
    assert h.platform.trace.entries(PLATFORM_ID) == []
    assert not h.failures()
