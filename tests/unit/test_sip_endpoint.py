"""Two ``Endpoint``s linked in memory (h11 ``ConnectionPair`` style), time stepped by ``TICK``.

The device sits behind NAT: it believes it is 192.168.1.64:5060 and puts that
in its Via, but the platform sees its packets come from 203.0.113.7:40000 and
must answer there (RFC 3581, GB/T 28181 devices behind NAT).
"""

from __future__ import annotations

import random

import pytest

from sip.endpoint import (
    Addr,
    CancelReceived,
    Endpoint,
    EndpointEvent,
    MessageDropped,
    RequestReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from sip.errors import SipParseError
from sip.headers import to_header, top_via, vias
from sip.message import Request, Response, make_response
from sip.parser import parse_datagram
from sip.transaction import ServerTransaction, State

TICK = 0.5
DEVICE_ID = "34020000001320000001"
PLATFORM_ID = "34020000002000000001"
PLATFORM_ADDR: Addr = ("UDP", "10.0.0.1", 5060)
DEVICE_PUBLIC: Addr = ("UDP", "203.0.113.7", 40000)  # what the platform sees
DEVICE_LOCAL = ("192.168.1.64", 5060)  # what the device puts in its Via


def new_request(method: str, *, to_uri: str, from_uri: str, call_id: str, cseq: int = 1, body: bytes = b"") -> Request:
    req = Request(method=method, uri=to_uri, body=body)
    req.headers.add("From", f"<{from_uri}>;tag=ftag{cseq}")
    req.headers.add("To", f"<{to_uri}>")
    req.headers.add("Call-ID", call_id)
    req.headers.add("CSeq", f"{cseq} {method}")
    if body:
        req.headers.add("Content-Type", "Application/MANSCDP+xml")
    return req


def platform_request(method: str, cseq: int = 1, call_id: str = "call-1@10.0.0.1", body: bytes = b"") -> Request:
    return new_request(
        method,
        to_uri=f"sip:{DEVICE_ID}@3402000000",
        from_uri=f"sip:{PLATFORM_ID}@3402000000",
        call_id=call_id,
        cseq=cseq,
        body=body,
    )


def device_request(method: str, cseq: int = 1, call_id: str = "764726777") -> Request:
    return new_request(
        method,
        to_uri=f"sip:{PLATFORM_ID}@3402000000",
        from_uri=f"sip:{DEVICE_ID}@3402000000",
        call_id=call_id,
        cseq=cseq,
    )


class Pair:
    """A platform and a device Endpoint, with a NAT between them."""

    def __init__(self) -> None:
        self.platform = Endpoint(rng=random.Random(1), user_agent="platform")
        self.device = Endpoint(rng=random.Random(2), user_agent="device")
        self.platform.local["UDP"] = (PLATFORM_ADDR[1], PLATFORM_ADDR[2])
        self.device.local["UDP"] = DEVICE_LOCAL
        self.now = 0.0
        self.platform_events: list[EndpointEvent] = []
        self.device_events: list[EndpointEvent] = []
        self.wire: list[tuple[str, bytes]] = []  # ("p>d" | "d>p", bytes)
        self.drop_next: set[str] = set()

    def pump(self) -> None:
        """Deliver everything both sides want to send, until quiet."""
        while True:
            moved = False
            for data, dest in self.platform.take_output():
                # The platform must answer where packets came from, never a Via host.
                assert dest == DEVICE_PUBLIC
                moved = True
                self.wire.append(("p>d", data))
                if "p>d" in self.drop_next:
                    self.drop_next.discard("p>d")
                    continue
                self.device_events += self.device.receive_datagram(data, PLATFORM_ADDR, self.now)
            for data, dest in self.device.take_output():
                assert dest == PLATFORM_ADDR
                moved = True
                self.wire.append(("d>p", data))
                if "d>p" in self.drop_next:
                    self.drop_next.discard("d>p")
                    continue
                # NAT: the platform sees the public address.
                self.platform_events += self.platform.receive_datagram(data, DEVICE_PUBLIC, self.now)
            if not moved:
                return

    def step(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += TICK
            for ep, events in ((self.platform, self.platform_events), (self.device, self.device_events)):
                due = ep.next_timer()
                if due is not None and due <= self.now:
                    events += ep.handle_timers(self.now)
            self.pump()

    def settle(self) -> None:
        """Run the clock until both sides have forgotten every transaction."""
        for _ in range(200):
            if self.platform.transaction_count == 0 and self.device.transaction_count == 0:
                break
            self.step(1.0)
        assert self.platform.transaction_count == 0
        assert self.device.transaction_count == 0
        assert self.platform.next_timer() is None and self.device.next_timer() is None

    def sent(self, direction: str) -> list[Request | Response]:
        out = []
        for d, data in self.wire:
            if d == direction:
                msg = parse_datagram(data)
                assert isinstance(msg, (Request, Response))
                out.append(msg)
        return out


def only(events: list[EndpointEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


# -- MESSAGE ------------------------------------------------------------------------


def test_message_transaction_end_to_end() -> None:
    pair = Pair()
    body = b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query><CmdType>Catalog</CmdType><SN>1</SN></Query>\r\n'
    req = platform_request("MESSAGE", body=body)
    tx = pair.platform.send_request(req, DEVICE_PUBLIC, pair.now)
    assert pair.platform.destination(tx) == DEVICE_PUBLIC
    via = top_via(req)
    assert via.host == "10.0.0.1" and via.port == 5060 and "rport" in via.params
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert req.headers.get("Max-Forwards") == "70" and req.headers.get("User-Agent") == "platform"
    pair.pump()
    [event] = pair.device_events
    assert isinstance(event, RequestReceived)
    assert event.source == PLATFORM_ADDR and event.received_at == 0.0
    assert event.request.body == body and event.request.method == "MESSAGE"
    assert isinstance(event.transaction, ServerTransaction)
    assert pair.device.destination(event.transaction) == PLATFORM_ADDR
    pair.step(0.5)
    pair.device.respond(event.transaction, make_response(event.request, 200, to_tag="dtag"), pair.now)
    pair.pump()
    [got] = only(pair.platform_events, ResponseReceived)
    assert got.transaction is tx and got.response.status == 200
    assert got.response.headers.get("User-Agent") == "device"
    assert to_header(got.response).tag == "dtag"
    # The retransmission at 0.5 s reached the device and was absorbed.
    assert len(only(pair.device_events, RequestReceived)) == 1
    assert pair.device.stats["retransmissions"] == 1
    pair.settle()
    assert pair.now >= 32.0  # J keeps the device's transaction 64*T1


def test_lost_response_is_resent_on_request_retransmission() -> None:
    pair = Pair()
    tx = pair.platform.send_request(platform_request("MESSAGE"), DEVICE_PUBLIC, pair.now)
    pair.pump()
    [event] = pair.device_events
    assert isinstance(event, RequestReceived) and event.transaction is not None
    pair.drop_next.add("d>p")
    pair.device.respond(event.transaction, make_response(event.request, 200, to_tag="x"), pair.now)
    pair.pump()
    assert pair.platform_events == []
    pair.step(0.5)  # Timer E retransmits; the device answers from its transaction
    [got] = only(pair.platform_events, ResponseReceived)
    assert got.transaction is tx
    assert len(only(pair.device_events, RequestReceived)) == 1
    pair.settle()


def test_request_timeout_is_reported_and_cleaned_up() -> None:
    pair = Pair()
    tx = pair.platform.send_request(platform_request("MESSAGE"), ("UDP", "198.51.100.1", 5060), pair.now)
    pair.platform.take_output()
    now = 0.0
    events: list[EndpointEvent] = []
    sent = 0
    while pair.platform.next_timer() is not None:
        now += TICK
        events += pair.platform.handle_timers(now)
        out = pair.platform.take_output()
        assert all(dest == ("UDP", "198.51.100.1", 5060) for _, dest in out)
        sent += len(out)
    assert events == [TransactionTimedOut(tx)]
    assert now == 32.0 and sent == 10
    assert pair.platform.transaction_count == 0


# -- REGISTER -----------------------------------------------------------------------------


def test_register_challenge_then_ok_with_nat_via() -> None:
    pair = Pair()
    first = device_request("REGISTER", cseq=1)
    first.headers.add("Expires", "3600")
    tx1 = pair.device.send_request(first, PLATFORM_ADDR, pair.now)
    pair.pump()
    [event] = pair.platform_events
    assert isinstance(event, RequestReceived) and event.source == DEVICE_PUBLIC
    # RFC 3581 §4 / RFC 3261 §18.2.1: the Via records where the packet really came from.
    via = top_via(event.request)
    assert (via.host, via.port) == DEVICE_LOCAL
    assert via.params["received"] == "203.0.113.7" and via.params["rport"] == "40000"
    challenge = make_response(event.request, 401, to_tag="p1", headers=[("WWW-Authenticate", 'Digest realm="3402000000", nonce="n1"')])
    assert event.transaction is not None
    pair.platform.respond(event.transaction, challenge, pair.now)
    pair.pump()
    [got] = only(pair.device_events, ResponseReceived)
    assert got.transaction is tx1 and got.response.status == 401
    # The response still carries the stamped Via back to the device.
    assert top_via(got.response).params["received"] == "203.0.113.7"

    second = device_request("REGISTER", cseq=2)
    second.headers.add("Authorization", 'Digest username="34020000001320000001", realm="3402000000", nonce="n1"')
    tx2 = pair.device.send_request(second, PLATFORM_ADDR, pair.now)
    assert top_via(second).branch != top_via(first).branch
    pair.pump()
    event2 = pair.platform_events[-1]
    assert isinstance(event2, RequestReceived) and event2.transaction is not None
    assert event2.request.cseq == (2, "REGISTER")
    pair.platform.respond(event2.transaction, make_response(event2.request, 200, to_tag="p2", headers=[("Expires", "3600")]), pair.now)
    pair.pump()
    got2 = only(pair.device_events, ResponseReceived)[-1]
    assert got2.transaction is tx2 and got2.response.status == 200
    assert got2.response.headers.get("User-Agent") == "platform"
    pair.settle()


# -- INVITE, CANCEL, ACK ---------------------------------------------------------------------


def _invite(pair: Pair) -> tuple[Request, RequestReceived]:
    invite = platform_request("INVITE", cseq=20, call_id="inv-1@10.0.0.1", body=b"v=0\r\n")
    invite.headers.set("Content-Type", "APPLICATION/SDP")
    pair.platform.send_request(invite, DEVICE_PUBLIC, pair.now)
    pair.pump()
    [event] = pair.device_events
    assert isinstance(event, RequestReceived) and event.transaction is not None
    pair.device_events.clear()
    return invite, event


def test_invite_cancel() -> None:
    pair = Pair()
    invite, event = _invite(pair)
    assert event.transaction is not None
    pair.device.respond(event.transaction, make_response(event.request, 180, to_tag="ring"), pair.now)
    pair.pump()
    [ringing] = only(pair.platform_events, ResponseReceived)
    assert ringing.response.status == 180
    # RFC 3261 §9.1: CANCEL copies the INVITE's top Via (same branch), URI, Call-ID, From, To, CSeq number.
    cancel = Request(method="CANCEL", uri=invite.uri)
    cancel.headers.add("Via", invite.headers.get_all("Via")[0])
    for name in ("From", "To", "Call-ID"):
        cancel.headers.add(name, invite.headers.get(name) or "")
    cancel.headers.add("CSeq", "20 CANCEL")
    cancel_tx = pair.platform.send_request(cancel, DEVICE_PUBLIC, pair.now)
    assert top_via(cancel).branch == top_via(invite).branch
    pair.pump()
    [cancelled] = pair.device_events
    assert isinstance(cancelled, CancelReceived)
    assert cancelled.invite is event.transaction and cancelled.source == PLATFORM_ADDR
    statuses = sorted((r.status, r.cseq[1]) for r in pair.sent("d>p") if isinstance(r, Response))
    assert statuses == [(180, "INVITE"), (200, "CANCEL"), (487, "INVITE")]
    got = only(pair.platform_events, ResponseReceived)
    assert [(e.response.status, e.transaction is cancel_tx) for e in got[1:]] == [(200, True), (487, False)]
    # The 487 was ACKed by the platform's INVITE transaction (§17.1.1.3) ...
    acks = [m for m in pair.sent("p>d") if isinstance(m, Request) and m.method == "ACK"]
    assert len(acks) == 1 and top_via(acks[0]).branch == top_via(invite).branch
    # ... which confirmed the device's INVITE transaction without bothering its TU.
    assert event.transaction.state is State.CONFIRMED
    assert pair.device_events == [cancelled]
    pair.settle()


def test_cancel_retransmission_is_absorbed() -> None:
    pair = Pair()
    invite, event = _invite(pair)
    cancel = Request(method="CANCEL", uri=invite.uri)
    cancel.headers.add("Via", invite.headers.get_all("Via")[0])
    for name in ("From", "To", "Call-ID"):
        cancel.headers.add(name, invite.headers.get(name) or "")
    cancel.headers.add("CSeq", "20 CANCEL")
    raw = cancel.serialize()
    pair.device.receive_datagram(raw, PLATFORM_ADDR, 1.0)
    first = pair.device.take_output()
    assert sorted(parse_datagram(d).status for d, _ in first) == [200, 487]  # type: ignore[union-attr]
    assert pair.device.receive_datagram(raw, PLATFORM_ADDR, 1.5) == []
    [(again, dest)] = pair.device.take_output()
    assert dest == PLATFORM_ADDR
    resent = parse_datagram(again)
    assert isinstance(resent, Response) and (resent.status, resent.cseq[1]) == (200, "CANCEL")


def test_cancel_without_invite_is_481_and_after_final_is_200() -> None:
    ep = Endpoint(rng=random.Random(0))
    src: Addr = ("UDP", "127.0.0.1", 5999)
    lone = platform_request("CANCEL")
    lone.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnone")
    assert ep.receive_datagram(lone.serialize(), src, 0.0) == []
    [(data, dest)] = ep.take_output()
    assert dest == src and parse_datagram(data).status == 481  # type: ignore[union-attr]

    invite = platform_request("INVITE", cseq=5)
    invite.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKinv")
    [event] = ep.receive_datagram(invite.serialize(), src, 0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    ep.respond(event.transaction, make_response(event.request, 200, to_tag="t"), 0.0)
    ep.take_output()
    late = platform_request("CANCEL", cseq=5)
    late.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKinv")
    assert ep.receive_datagram(late.serialize(), src, 0.1) == []
    [(data, _)] = ep.take_output()
    answer = parse_datagram(data)
    assert isinstance(answer, Response) and (answer.status, answer.cseq[1]) == (200, "CANCEL")


def _ack_for_2xx(invite: Request, ok: Response, branch: str | None) -> Request:
    ack = Request(method="ACK", uri=invite.uri)
    if branch is not None:
        ack.headers.add("Via", f"SIP/2.0/UDP 10.0.0.1:5060;rport;branch={branch}")
    ack.headers.add("From", invite.headers.get("From") or "")
    ack.headers.add("To", ok.headers.get("To") or "")
    ack.headers.add("Call-ID", invite.call_id)
    ack.headers.add("CSeq", f"{invite.cseq[0]} ACK")
    ack.headers.add("Max-Forwards", "70")
    return ack


@pytest.mark.parametrize("reuse_branch", [False, True], ids=["new-branch", "invite-branch"])
def test_ack_for_2xx_reaches_the_tu_and_stops_2xx_retransmissions(reuse_branch: bool) -> None:
    pair = Pair()
    invite, event = _invite(pair)
    assert event.transaction is not None
    pair.device.respond(event.transaction, make_response(event.request, 200, to_tag="ok", body=b"v=0\r\n"), pair.now)
    pair.pump()
    [ok] = only(pair.platform_events, ResponseReceived)
    assert ok.response.status == 200
    assert ok.transaction.state is State.ACCEPTED
    # The platform's TU answers with the ACK of the 2xx, a transaction of its own
    # (RFC 3261 §13.2.2.4) with a new branch, unless a sloppy UA reuses the INVITE's.
    branch = top_via(invite).branch if reuse_branch else None
    pair.platform.send_stateless(_ack_for_2xx(invite, ok.response, branch), DEVICE_PUBLIC)
    pair.step(0.5)
    acks = only(pair.device_events, RequestReceived)
    assert len(acks) == 1
    assert acks[0].request.method == "ACK" and acks[0].transaction is None
    if not reuse_branch:
        assert top_via(acks[0].request).branch != top_via(invite).branch
    oks_before = sum(1 for m in pair.sent("d>p") if isinstance(m, Response))
    pair.step(10.0)
    assert sum(1 for m in pair.sent("d>p") if isinstance(m, Response)) == oks_before
    pair.settle()


def test_unacked_2xx_is_retransmitted_until_timer_l() -> None:
    pair = Pair()
    _, event = _invite(pair)
    assert event.transaction is not None
    pair.device.respond(event.transaction, make_response(event.request, 200, to_tag="ok"), pair.now)
    pair.pump()
    pair.settle()
    oks = [m for m in pair.sent("d>p") if isinstance(m, Response) and m.status == 200]
    assert len(oks) == 11  # 0, 0.5, 1.5, 3.5, 7.5 ... 31.5
    # Retransmitted 2xx reach the platform's TU while its transaction is Accepted.
    assert len(only(pair.platform_events, ResponseReceived)) >= 2


def test_non_2xx_to_invite_is_acked_and_cleaned_up() -> None:
    pair = Pair()
    _, event = _invite(pair)
    assert event.transaction is not None
    pair.device.respond(event.transaction, make_response(event.request, 486, to_tag="busy"), pair.now)
    pair.pump()
    [busy] = only(pair.platform_events, ResponseReceived)
    assert busy.response.status == 486
    assert event.transaction.state is State.CONFIRMED
    assert pair.device_events == []  # the ACK of a non-2xx stays in the transaction layer
    pair.settle()


# -- robustness ------------------------------------------------------------------------------------


def test_stray_responses_are_dropped() -> None:
    ep = Endpoint(rng=random.Random(0))
    resp = make_response(platform_request("MESSAGE"), 200)
    resp.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKunknown")
    [event] = ep.receive_datagram(resp.serialize(), DEVICE_PUBLIC, 0.0)
    assert isinstance(event, MessageDropped) and event.source == DEVICE_PUBLIC
    assert event.reason == "stray response 200 (MESSAGE)"
    bad_via = make_response(platform_request("MESSAGE"), 200)
    bad_via.headers.add("Via", "garbage")
    [event] = ep.receive_datagram(bad_via.serialize(), DEVICE_PUBLIC, 0.0)
    assert isinstance(event, MessageDropped) and event.reason.startswith("response with bad Via")
    no_via = make_response(platform_request("MESSAGE"), 200)
    [event] = ep.receive_datagram(no_via.serialize(), DEVICE_PUBLIC, 0.0)
    assert isinstance(event, MessageDropped)
    assert ep.take_output() == []
    assert ep.stats["dropped"] == 3


def test_response_with_wrong_method_does_not_match() -> None:
    pair = Pair()
    req = platform_request("MESSAGE")
    pair.platform.send_request(req, DEVICE_PUBLIC, 0.0)
    pair.platform.take_output()
    resp = make_response(req, 200)
    resp.headers.set("CSeq", "1 INFO")
    [event] = pair.platform.receive_datagram(resp.serialize(), DEVICE_PUBLIC, 0.0)
    assert isinstance(event, MessageDropped)


def test_retransmitted_request_is_absorbed() -> None:
    ep = Endpoint(rng=random.Random(0))
    req = device_request("MESSAGE")
    req.headers.add("Via", "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK42")
    raw = req.serialize()
    [event] = ep.receive_datagram(raw, DEVICE_PUBLIC, 0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert ep.receive_datagram(raw, DEVICE_PUBLIC, 0.5) == []  # no response yet: nothing to resend
    assert ep.take_output() == []
    ep.respond(event.transaction, make_response(event.request, 200, to_tag="t"), 0.6)
    [(first, dest)] = ep.take_output()
    assert dest == DEVICE_PUBLIC
    assert ep.receive_datagram(raw, DEVICE_PUBLIC, 1.0) == []
    assert ep.take_output() == [(first, DEVICE_PUBLIC)]
    assert ep.stats["retransmissions"] == 2 and ep.transaction_count == 1


def test_response_goes_to_the_source_not_the_via_host() -> None:
    ep = Endpoint(rng=random.Random(0))
    src: Addr = ("UDP", "127.0.0.1", 6000)
    req = device_request("OPTIONS")
    req.headers.add("Via", "SIP/2.0/UDP 192.0.2.99:5080;branch=z9hG4bKvictim, SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx")
    [event] = ep.receive_datagram(req.serialize(), src, 0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    # No rport: only "received" is added; the second Via value is kept after it.
    assert [str(v) for v in vias(event.request)] == [
        "SIP/2.0/UDP 192.0.2.99:5080;branch=z9hG4bKvictim;received=127.0.0.1",
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx",
    ]
    ep.respond(event.transaction, make_response(event.request, 200, to_tag="t"), 0.0)
    [(_, dest)] = ep.take_output()
    assert dest == src


def test_via_matching_the_source_is_left_alone() -> None:
    ep = Endpoint(rng=random.Random(0))
    req = device_request("OPTIONS")
    value = "SIP/2.0/UDP 203.0.113.7:40000;branch=z9hG4bKsame"
    req.headers.add("Via", value)
    [event] = ep.receive_datagram(req.serialize(), DEVICE_PUBLIC, 0.0)
    assert isinstance(event, RequestReceived)
    assert event.request.headers.get("Via") == value


def test_max_transactions_answers_503() -> None:
    ep = Endpoint(rng=random.Random(0), max_transactions=2)
    for i in range(3):
        req = device_request("MESSAGE", cseq=i + 1)
        req.headers.add("Via", f"SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bK{i}")
        events = ep.receive_datagram(req.serialize(), DEVICE_PUBLIC, 0.0)
    assert len(events) == 1 and isinstance(events[0], MessageDropped)
    assert events[0].reason == "transaction table full"
    [(data, dest)] = ep.take_output()
    answer = parse_datagram(data)
    assert dest == DEVICE_PUBLIC and isinstance(answer, Response) and answer.status == 503
    assert answer.headers.get("Warning") == '399 gbplatform "too many transactions"'
    assert ep.transaction_count == 2


def test_malformed_request_is_answered_400_at_the_source() -> None:
    ep = Endpoint(rng=random.Random(0))
    req = device_request("MESSAGE")
    req.headers.add("Via", "SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKbad")
    req.headers.set("From", 'Bell, A <sip:a@b>;tag=1')
    [event] = ep.receive_datagram(req.serialize(), DEVICE_PUBLIC, 0.0)
    assert isinstance(event, MessageDropped)
    assert event.reason == "unparsable message: display name must be quoted in 'Bell, A <sip:a@b>;tag=1'"
    [(data, dest)] = ep.take_output()
    assert dest == DEVICE_PUBLIC
    answer = parse_datagram(data)
    assert isinstance(answer, Response) and answer.status == 400
    assert answer.headers.get("Warning") == (
        "399 gbplatform \"display name must be quoted in 'Bell, A <sip:a@b>;tag=1'\""
    )
    assert ep.transaction_count == 0


def test_non_sip_datagrams_are_silently_ignored() -> None:
    ep = Endpoint(rng=random.Random(0))
    stun = bytes.fromhex("000100002112a442") + bytes(12)
    for data in (stun, b"\r\n\r\n", b"\r\n"):
        assert ep.receive_datagram(data, DEVICE_PUBLIC, 0.0) == []
    assert ep.take_output() == [] and ep.stats["received"] == 0


def test_parse_failed_from_a_stream_parser() -> None:
    ep = Endpoint(rng=random.Random(0))
    src: Addr = ("TCP", "203.0.113.7", 40001)
    req = device_request("MESSAGE")
    req.headers.add("Via", "SIP/2.0/TCP 192.168.1.64:5060;branch=z9hG4bKtcp")
    [event] = ep.parse_failed(SipParseError("body too large", 413, req), src, 0.0)
    assert isinstance(event, MessageDropped) and event.reason == "unparsable message: body too large"
    [(data, dest)] = ep.take_output()
    assert dest == src and parse_datagram(data).status == 413  # type: ignore[union-attr]
    ack = device_request("ACK")
    ack.headers.add("Via", "SIP/2.0/TCP 192.168.1.64:5060;branch=z9hG4bKack")
    ep.parse_failed(SipParseError("bad", 400, ack), src, 0.0)
    assert ep.take_output() == []  # an ACK is never answered (RFC 3261 §17.2.1)
    ep.parse_failed(SipParseError("bad"), src, 0.0)
    assert ep.take_output() == []


def test_tcp_server_transaction_ends_with_the_final_response() -> None:
    ep = Endpoint(rng=random.Random(0))
    src: Addr = ("TCP", "203.0.113.7", 40001)
    req = device_request("MESSAGE")
    req.headers.add("Via", "SIP/2.0/TCP 192.168.1.64:5060;branch=z9hG4bKtcp")
    [event] = ep.receive_message(parse_datagram(req.serialize()), src, 0.0)  # type: ignore[arg-type]
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert not event.transaction.terminated and event.transaction.reliable
    resp = make_response(event.request, 200, to_tag="t")
    resp.headers.add("Server", "custom")
    ep.respond(event.transaction, resp, 0.0)
    [(data, dest)] = ep.take_output()
    assert dest == src and b"User-Agent" not in data and b"Server: custom" in data
    assert ep.transaction_count == 0 and ep.next_timer() is None


def test_send_request_keeps_caller_headers_and_defaults_local_address() -> None:
    ep = Endpoint(rng=random.Random(7), user_agent="ua")
    req = platform_request("OPTIONS")
    req.headers.add("Max-Forwards", "10")
    req.headers.add("User-Agent", "mine")
    tx = ep.send_request(req, ("TCP", "198.51.100.2", 5060), 0.0)
    via = top_via(req)
    assert (via.transport, via.host, via.port) == ("TCP", "127.0.0.1", 5060)
    assert req.headers.get("Max-Forwards") == "10" and req.headers.get("User-Agent") == "mine"
    assert tx.reliable and [n for n, _ in req.headers][0] == "Via"
    [(data, dest)] = ep.take_output()
    assert dest == ("TCP", "198.51.100.2", 5060) and data == req.serialize()
    assert ep.next_timer() == 32.0  # F only on TCP
    ok = make_response(req, 200, to_tag="t")
    [got] = ep.receive_datagram(ok.serialize(), ("TCP", "198.51.100.2", 5060), 1.0)
    assert isinstance(got, ResponseReceived) and got.transaction is tx
    assert tx.terminated and ep.transaction_count == 0
    assert ep.next_timer() is None  # the stale F entry is dropped


def test_send_stateless_adds_a_via_when_missing() -> None:
    ep = Endpoint(rng=random.Random(7))
    ack = platform_request("ACK")
    ep.send_stateless(ack, DEVICE_PUBLIC)
    [(data, dest)] = ep.take_output()
    assert dest == DEVICE_PUBLIC
    assert top_via(ack).branch and data.startswith(b"ACK ")
    assert ep.transaction_count == 0


def test_ids_come_from_the_injected_rng() -> None:
    a = Endpoint(rng=random.Random(5))
    b = Endpoint(rng=random.Random(5))
    assert [a.new_branch(), a.new_tag()] == [b.new_branch(), b.new_tag()]
    assert a.new_branch().startswith("z9hG4bK") and len(a.new_tag()) == 8


def test_next_timer_follows_transactions_that_changed() -> None:
    ep = Endpoint(rng=random.Random(0))
    req = platform_request("MESSAGE")
    tx = ep.send_request(req, DEVICE_PUBLIC, 0.0)
    assert ep.next_timer() == 0.5
    ep.take_output()
    ok = make_response(req, 200, to_tag="t")
    ep.receive_datagram(ok.serialize(), DEVICE_PUBLIC, 0.2)
    assert tx.state is State.COMPLETED
    # The heap still holds the old E entry: next_timer() re-files it at K.
    assert ep.next_timer() == 0.2 + 5.0
    assert ep.handle_timers(5.2) == []
    assert ep.transaction_count == 0 and ep.next_timer() is None


def test_many_transactions_all_cleaned_up() -> None:
    pair = Pair()
    for i in range(20):
        pair.platform.send_request(platform_request("MESSAGE", cseq=i + 1), DEVICE_PUBLIC, pair.now)
    pair.pump()
    for event in pair.device_events:
        assert isinstance(event, RequestReceived) and event.transaction is not None
        pair.device.respond(event.transaction, make_response(event.request, 200, to_tag="t"), pair.now)
    pair.pump()
    assert len(only(pair.platform_events, ResponseReceived)) == 20
    assert pair.device.transaction_count == 20
    pair.settle()


def test_identical_datagram_is_absorbed_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 3261 §17.2.2: a retransmission is the same request; answer it from the transaction."""
    import sip.endpoint as endpoint_module

    ep = Endpoint(rng=random.Random(3))
    req = device_request("MESSAGE")
    req.headers._items.insert(0, ("Via", "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK-same-bytes"))
    raw = req.serialize()
    source: Addr = ("UDP", "203.0.113.7", 40000)
    [event] = ep.receive_datagram(raw, source, 0.0)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert ep.receive_datagram(raw, source, 0.1) == []  # before the answer: nothing to resend
    assert ep.take_output() == []
    ep.respond(event.transaction, make_response(event.request, 200, to_tag="t"), 0.2)
    [(answer, dest)] = ep.take_output()

    def no_parsing(data: bytes) -> None:
        raise AssertionError("a retransmission must not be parsed again")

    monkeypatch.setattr(endpoint_module, "parse_datagram", no_parsing)
    assert ep.receive_datagram(raw, source, 0.3) == []
    assert ep.take_output() == [(answer, dest)]
    assert ep.stats["retransmissions"] == 2
    monkeypatch.undo()
    # From another address the bytes are parsed, and §17.2.3 matching (branch and
    # sent-by) still finds the transaction: absorbed, not a new request.
    assert ep.receive_datagram(raw, ("UDP", "203.0.113.8", 40000), 0.4) == []
    ep.handle_timers(100.0)  # Timer J: the transactions end and their bytes are forgotten
    assert ep.transaction_count == 0 and ep._by_bytes == {} and ep._raw_of == {}
