"""The bounded per-device SIP trace (``gbplatform.signalling.trace``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gbplatform.signalling.trace import MAX_ENTRY, SipTrace
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


def test_entry_fields() -> None:
    trace = SipTrace(PLATFORM_ID)
    data = msg(DEV, PLATFORM_ID) + b"\xff"
    trace.record("recv", data, PEER, 5.5)
    [entry] = trace.entries(DEV)
    assert entry.at == 5.5 and entry.direction == "recv" and entry.transport == "UDP"
    assert entry.peer == "192.0.2.10:5070"
    assert entry.summary == "MESSAGE sip:x@y SIP/2.0"
    assert entry.text.endswith("\ufffd")


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
    summaries = [(e.direction, e.summary) for e in entries]
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


# --- issue 8 item 15: media signalling under the device; strangers kept apart ---

CHANNEL = "34020000001310000001"
DEVICE_AT = ("UDP", "192.0.2.10", 5070)


def invite_dialog(trace: SipTrace, peer: tuple[str, str, int], start: float) -> None:
    """INVITE to a channel of the device at ``peer``, its 200, the ACK and the device's BYE."""
    trace.record("send", msg(PLATFORM_ID, CHANNEL, first=f"INVITE sip:{CHANNEL}@192.0.2.10:5070 SIP/2.0"),
                 peer, start)
    trace.record("recv", msg(PLATFORM_ID, CHANNEL, first="SIP/2.0 200 OK"), peer, start + 1)
    trace.record("send", msg(PLATFORM_ID, CHANNEL, first=f"ACK sip:{CHANNEL}@192.0.2.10:5070 SIP/2.0"),
                 peer, start + 2)
    trace.record("recv", msg(CHANNEL, PLATFORM_ID, first=f"BYE sip:{PLATFORM_ID}@192.0.2.1:5060 SIP/2.0"),
                 peer, start + 3)


def test_media_signalling_to_a_channel_is_filed_under_its_device() -> None:
    trace = SipTrace(PLATFORM_ID, address_of={DEV: DEVICE_AT}.get)
    trace.record("recv", msg(DEV, PLATFORM_ID), DEVICE_AT, 1.0)  # its REGISTER or keepalive
    invite_dialog(trace, DEVICE_AT, 10.0)
    summaries = [e.summary for e in trace.entries(DEV)]
    assert summaries == [
        "MESSAGE sip:x@y SIP/2.0",
        f"INVITE sip:{CHANNEL}@192.0.2.10:5070 SIP/2.0",
        "SIP/2.0 200 OK",
        f"ACK sip:{CHANNEL}@192.0.2.10:5070 SIP/2.0",
        f"BYE sip:{PLATFORM_ID}@192.0.2.1:5060 SIP/2.0",
    ]
    assert len(trace.entries(CHANNEL)) == 4  # and under the channel, as before


def test_media_signalling_of_an_unregistered_address_is_not_filed_under_a_device() -> None:
    trace = SipTrace(PLATFORM_ID, address_of={DEV: DEVICE_AT}.get)
    trace.record("recv", msg(DEV, PLATFORM_ID), STRANGER, 1.0)  # someone using DEV's ID
    invite_dialog(trace, STRANGER, 10.0)
    assert [e.at for e in trace.entries(DEV)] == [1.0]


STRANGER = ("UDP", "203.0.113.66", 5060)


def test_strangers_do_not_push_the_device_history_out() -> None:
    trace = SipTrace(PLATFORM_ID, per_device=200, address_of={DEV: DEVICE_AT}.get)
    for i in range(150):
        trace.record("recv", msg(DEV, PLATFORM_ID), DEVICE_AT, float(i))
    for i in range(1000):  # svcrack: unauthenticated REGISTERs with the device's ID, and our 401s
        trace.record("recv", msg(DEV, PLATFORM_ID, first="REGISTER sip:x@y SIP/2.0"), STRANGER, 1000.0 + i)
        trace.record("send", msg(PLATFORM_ID, DEV, first="SIP/2.0 401 Unauthorized"), STRANGER, 1000.5 + i)
    entries = trace.entries(DEV)
    mine = [e for e in entries if (e.transport, e.host, e.port) == DEVICE_AT]
    theirs = [e for e in entries if (e.transport, e.host, e.port) == STRANGER]
    assert len(mine) == 150
    assert len(theirs) == 200  # the strangers' own bound
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert [e.at for e in trace.entries(DEV, limit=2)] == [1999.0, 1999.5]
    trace.forget(DEV)
    assert trace.entries(DEV) == [] and trace._bytes == 0


def test_an_unregistered_device_has_one_history() -> None:
    trace = SipTrace(PLATFORM_ID, per_device=3, address_of=lambda device_id: None)
    for i in range(5):
        trace.record("recv", msg(DEV, PLATFORM_ID), STRANGER if i % 2 else PEER, float(i))
    assert [e.at for e in trace.entries(DEV)] == [2.0, 3.0, 4.0]


def test_a_registered_device_trace_includes_its_live_video_signalling(h: Harness) -> None:
    dev = h.registered_device()
    invite = h.router.new_request("INVITE", CHANNEL, dev.addr, body=b"v=0\r\n", content_type="Application/SDP")
    h.router.send_request(invite, dev.addr)
    h.pump()
    summaries = [(e.direction, e.summary) for e in h.platform.trace.entries(DEV)]
    assert ("send", f"INVITE sip:{CHANNEL}@127.0.0.1:5070 SIP/2.0") in summaries
    assert summaries[-1] == ("recv", "SIP/2.0 200 OK")
