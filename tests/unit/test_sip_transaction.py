"""RFC 3261 §17 transactions with a stepped clock (``now += TICK``).

Each test drives a transaction by hand: ``handle_timer(now)`` whenever
``next_timer()`` is due, and collects ``take_output()`` with its time, so the
retransmission schedule can be compared with the RFC's.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sip.headers import CSeq, NameAddr, to_header, top_via, vias
from sip.message import Request, Response, make_response
from sip.parser import parse_datagram
from sip.transaction import (
    PROCEEDING_LIMIT,
    T1,
    T2,
    T4,
    AckTimedOut,
    ClientTransaction,
    ResponseReceived,
    ServerTransaction,
    State,
    TransactionEvent,
    TransactionTimedOut,
    client_key,
    server_key,
)

TICK = 0.5
DEVICE = "34020000001320000001"
PLATFORM = "34020000002000000001"


def make_request(method: str, branch: str = "z9hG4bK776asdhds", *, cseq: int = 1, extra: str = "") -> Request:
    data = (
        f"{method} sip:{DEVICE}@192.168.1.64:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch={branch}\r\n"
        "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKproxy\r\n"
        "Route: <sip:proxy.example.com;lr>\r\n"
        f"From: <sip:{PLATFORM}@3402000000>;tag=1928301774\r\n"
        f"To: <sip:{DEVICE}@3402000000>\r\n"
        "Call-ID: a84b4c76e66710@10.0.0.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    return msg


def answer(req: Request, status: int, tag: str | None = "dev-tag") -> Response:
    return make_response(req, status, to_tag=tag if status > 100 else None)


Tx = TypeVar("Tx", ClientTransaction, ServerTransaction)


def state(tx: ClientTransaction | ServerTransaction) -> State:
    """The state, read through a call so that mypy does not keep an earlier narrowing."""
    return tx.state


class Driver(Generic[Tx]):
    """Steps a transaction's clock and records what it sends and reports."""

    def __init__(self, tx: Tx, now: float = 0.0) -> None:
        self.tx: Tx = tx
        self.now = now
        self.sent: list[tuple[float, bytes]] = []
        self.events: list[TransactionEvent] = []
        self.collect()

    def collect(self) -> list[bytes]:
        out = self.tx.take_output()
        self.sent.extend((self.now, data) for data in out)
        return out

    def step(self, until: float) -> None:
        while self.now < until:
            self.now += TICK
            due = self.tx.next_timer()
            if due is not None and due <= self.now:
                self.events.extend(self.tx.handle_timer(self.now))
            self.collect()

    def send(self, response: Response) -> None:
        assert isinstance(self.tx, ServerTransaction)
        self.tx.send(response, self.now)
        self.collect()

    def times(self, since: float = -1.0) -> list[float]:
        return [t for t, _ in self.sent if t > since]


# -- client non-INVITE (§17.1.2) -------------------------------------------------------


def test_non_invite_client_udp_timer_e_schedule_and_timer_f() -> None:
    req = make_request("MESSAGE")
    d = Driver(ClientTransaction(req, reliable=False, now=0.0))
    assert state(d.tx) is State.TRYING and d.times() == [0.0]
    assert d.sent[0][1] == req.serialize()
    assert d.tx.next_timer() == 0.5
    d.step(32.0)
    # E: T1, doubling up to T2, then every T2 (§17.1.2.2).
    assert d.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(data == req.serialize() for _, data in d.sent)
    # F: 64*T1 = 32 s.
    assert d.events == [TransactionTimedOut(d.tx)]
    assert d.tx.terminated and d.tx.next_timer() is None
    d.step(40.0)
    assert d.times(32.0) == []


def test_non_invite_client_tcp_no_retransmissions() -> None:
    d = Driver(ClientTransaction(make_request("MESSAGE"), reliable=True, now=0.0))
    assert d.tx.next_timer() == 32.0
    d.step(32.0)
    assert d.times() == [0.0]
    assert d.events == [TransactionTimedOut(d.tx)]


@pytest.mark.parametrize(("reliable", "k"), [(False, T4), (True, 0.0)])
def test_non_invite_client_final_response_completed_then_k(reliable: bool, k: float) -> None:
    req = make_request("MESSAGE")
    d = Driver(ClientTransaction(req, reliable=reliable, now=0.0))
    d.step(2.0)
    ok = answer(req, 200)
    assert d.tx.receive(ok, d.now) == [ResponseReceived(d.tx, ok)]
    assert d.tx.last_response is ok
    if reliable:
        assert d.tx.terminated
        return
    assert state(d.tx) is State.COMPLETED
    assert d.tx.next_timer() == d.now + k
    # A retransmitted final response is absorbed in Completed.
    assert d.tx.receive(ok, d.now + 1) == []
    sent_before = len(d.sent)
    d.step(2.0 + k)
    assert d.tx.terminated and d.events == []
    assert len(d.sent) == sent_before  # no retransmission while Completed


def test_non_invite_client_provisional_then_final() -> None:
    req = make_request("MESSAGE")
    d = Driver(ClientTransaction(req, reliable=False, now=0.0))
    d.step(1.0)  # retransmitted at 0.5
    trying = answer(req, 100)
    assert d.tx.receive(trying, d.now) == [ResponseReceived(d.tx, trying)]
    assert state(d.tx) is State.PROCEEDING
    d.step(12.0)
    # In Proceeding, E retransmits every T2 (§17.1.2.2).
    assert d.times() == [0.0, 0.5, 1.5, 5.5, 9.5]
    ok = answer(req, 200)
    assert d.tx.receive(ok, d.now) == [ResponseReceived(d.tx, ok)]
    assert state(d.tx) is State.COMPLETED
    d.step(12.0 + T4)
    assert d.tx.terminated
    assert d.tx.receive(ok, d.now) == []  # terminated: ignored


def test_non_invite_client_error_response_is_final_too() -> None:
    req = make_request("REGISTER")
    tx = ClientTransaction(req, reliable=False, now=0.0)
    unauthorized = answer(req, 401)
    assert tx.receive(unauthorized, 0.1) == [ResponseReceived(tx, unauthorized)]
    assert state(tx) is State.COMPLETED


def test_client_keys() -> None:
    req = make_request("MESSAGE", "z9hG4bKabc")
    tx = ClientTransaction(req, reliable=False, now=0.0)
    assert tx.key == client_key("z9hG4bKabc", "MESSAGE") == ("z9hG4bKabc", "MESSAGE")
    assert client_key("z9hG4bKabc", "ACK") == ("z9hG4bKabc", "INVITE")
    assert tx.branch == "z9hG4bKabc" and tx.method == "MESSAGE" and not tx.invite


# -- client INVITE (§17.1.1) ---------------------------------------------------------------


def test_invite_client_timer_a_and_b() -> None:
    req = make_request("INVITE")
    d = Driver(ClientTransaction(req, reliable=False, now=0.0))
    assert state(d.tx) is State.CALLING
    d.step(32.0)
    # A doubles without a cap (§17.1.1.2), B = 64*T1.
    assert d.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert d.events == [TransactionTimedOut(d.tx)]
    assert d.tx.terminated


def test_invite_client_tcp_only_timer_b() -> None:
    d = Driver(ClientTransaction(make_request("INVITE"), reliable=True, now=0.0))
    d.step(32.0)
    assert d.times() == [0.0]
    assert d.events == [TransactionTimedOut(d.tx)]


def test_invite_client_provisional_stops_retransmissions() -> None:
    req = make_request("INVITE")
    d = Driver(ClientTransaction(req, reliable=False, now=0.0))
    d.step(1.0)
    ringing = answer(req, 180)
    assert d.tx.receive(ringing, d.now) == [ResponseReceived(d.tx, ringing)]
    assert state(d.tx) is State.PROCEEDING
    d.step(10.0)
    assert d.times() == [0.0, 0.5]


def test_invite_client_proceeding_waits_past_timer_b_but_not_forever() -> None:
    """§17.1.1.2: no Timer B in Proceeding; the 3-minute bound still frees the transaction."""
    req = make_request("INVITE")
    d = Driver(ClientTransaction(req, reliable=False, now=0.0))
    d.tx.receive(answer(req, 180), 0.1)
    d.step(64.0)
    assert d.events == [] and state(d.tx) is State.PROCEEDING
    d.step(200.0)
    assert d.events == [TransactionTimedOut(d.tx)]


def _check_ack(ack_bytes: bytes, req: Request, resp: Response) -> None:
    """RFC 3261 §17.1.1.3: the ACK of a non-2xx final response."""
    ack = parse_datagram(ack_bytes)
    assert isinstance(ack, Request)
    assert ack.method == "ACK" and ack.uri == req.uri
    # Only the top Via of the request, with the same branch.
    assert [str(v) for v in vias(ack)] == [str(top_via(req))]
    assert ack.headers.get_all("Route") == req.headers.get_all("Route")
    assert ack.headers.get("From") == req.headers.get("From")
    assert ack.call_id == req.call_id
    # To from the response: it carries the tag.
    assert ack.headers.get("To") == resp.headers.get("To")
    assert to_header(ack).tag == "dev-tag"
    assert CSeq.parse(ack.headers.get("CSeq") or "") == CSeq(req.cseq[0], "ACK")
    assert ack.headers.get("Max-Forwards") == "70"
    assert ack.body == b""


@pytest.mark.parametrize("status", [300, 404, 486, 503, 603])
def test_invite_client_non_2xx_generates_ack(status: int) -> None:
    req = make_request("INVITE", cseq=7)
    d = Driver(ClientTransaction(req, reliable=False, now=0.0))
    d.step(1.0)
    d.tx.receive(answer(req, 100), d.now)
    busy = answer(req, status)
    assert d.tx.receive(busy, d.now) == [ResponseReceived(d.tx, busy)]
    assert state(d.tx) is State.COMPLETED
    [ack] = d.collect()
    _check_ack(ack, req, busy)
    # A retransmitted final response means the ACK was lost: send it again.
    assert d.tx.receive(busy, d.now + 0.1) == []
    assert d.collect() == [ack]
    assert d.tx.receive(answer(req, 180), d.now + 0.2) == []  # late provisional: absorbed
    # Timer D: 32 s on UDP.
    assert d.tx.next_timer() == d.now + 32.0
    d.step(d.now + 32.0)
    assert d.tx.terminated and d.events == []


def test_invite_client_non_2xx_over_tcp_terminates_at_once() -> None:
    req = make_request("INVITE")
    tx = ClientTransaction(req, reliable=True, now=0.0)
    tx.take_output()
    busy = answer(req, 486)
    assert tx.receive(busy, 1.0) == [ResponseReceived(tx, busy)]
    [ack] = tx.take_output()
    _check_ack(ack, req, busy)
    assert tx.terminated


def test_invite_client_2xx_goes_accepted() -> None:
    req = make_request("INVITE")
    d = Driver(ClientTransaction(req, reliable=False, now=0.0))
    d.step(0.5)
    ok = answer(req, 200)
    assert d.tx.receive(ok, d.now) == [ResponseReceived(d.tx, ok)]
    assert state(d.tx) is State.ACCEPTED
    assert d.collect() == []  # the TU sends the ACK of a 2xx, not the transaction
    # Retransmitted 2xx (or a forked one) goes up again so the TU re-ACKs (RFC 6026 §8.4).
    assert d.tx.receive(ok, d.now + 1) == [ResponseReceived(d.tx, ok)]
    assert d.tx.receive(answer(req, 486), d.now + 1) == []
    # Timer M: 64*T1, then gone; no retransmission of the INVITE meanwhile.
    assert d.tx.next_timer() == d.now + 64 * T1
    d.step(d.now + 64 * T1)
    assert d.tx.terminated and d.events == []
    assert d.times() == [0.0, 0.5]


# -- server non-INVITE (§17.2.2) ---------------------------------------------------------------


def test_non_invite_server_absorbs_retransmissions_and_timer_j() -> None:
    req = make_request("MESSAGE")
    d = Driver(ServerTransaction(req, reliable=False, now=0.0))
    assert state(d.tx) is State.TRYING and d.tx.key == server_key(req)
    d.tx.receive_retransmission(req, 0.5)  # nothing to resend yet
    assert d.collect() == []
    trying = answer(req, 100)
    d.tx.send(trying, 0.5)
    assert state(d.tx) is State.PROCEEDING
    d.tx.receive_retransmission(req, 0.7)
    assert d.collect() == [trying.serialize(), trying.serialize()]
    ok = answer(req, 200)
    d.now = 1.0
    d.tx.send(ok, d.now)
    assert state(d.tx) is State.COMPLETED
    assert d.collect() == [ok.serialize()]
    d.tx.receive_retransmission(req, 1.5)
    assert d.collect() == [ok.serialize()]
    d.tx.send(answer(req, 500), 1.6)  # the TU may not answer twice
    assert d.collect() == []
    assert d.tx.next_timer() == 1.0 + 64 * T1
    d.step(1.0 + 64 * T1)
    assert d.tx.terminated and d.events == []
    d.tx.receive_retransmission(req, d.now)
    assert d.collect() == []


def test_non_invite_server_tcp_terminates_on_final() -> None:
    req = make_request("MESSAGE")
    tx = ServerTransaction(req, reliable=True, now=0.0)
    tx.send(answer(req, 200), 0.0)
    assert tx.terminated and tx.next_timer() is None


# -- server INVITE (§17.2.1, RFC 6026) -------------------------------------------------------------


def test_invite_server_non_2xx_timer_g_until_ack_then_i() -> None:
    req = make_request("INVITE")
    d = Driver(ServerTransaction(req, reliable=False, now=0.0))
    assert state(d.tx) is State.PROCEEDING
    ringing = answer(req, 180)
    d.send(ringing)
    d.tx.receive_retransmission(req, 0.0)  # INVITE retransmission: resend the 180
    assert d.collect() == [ringing.serialize()]
    assert d.times() == [0.0, 0.0]
    busy = answer(req, 486)
    d.send(busy)
    assert state(d.tx) is State.COMPLETED
    d.step(8.0)
    # G: T1, doubling up to T2.
    assert d.times(0.0) == [0.5, 1.5, 3.5, 7.5]
    assert all(data == busy.serialize() for t, data in d.sent if t > 0)
    ack = make_request("ACK")
    d.tx.receive_retransmission(ack, d.now)
    assert state(d.tx) is State.CONFIRMED
    # Confirmed absorbs ACK retransmissions and sends nothing.
    d.tx.receive_retransmission(ack, d.now)
    d.tx.receive_retransmission(req, d.now)
    assert d.collect() == []
    assert d.tx.next_timer() == 8.0 + T4
    d.step(8.0 + T4)
    assert d.tx.terminated and d.events == []
    assert d.times(8.0) == []


def test_invite_server_non_2xx_g_caps_at_t2_then_h() -> None:
    req = make_request("INVITE")
    d = Driver(ServerTransaction(req, reliable=False, now=0.0))
    d.send(answer(req, 404))
    d.step(32.0)
    assert d.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert d.events == [AckTimedOut(d.tx)]
    assert d.tx.terminated


def test_invite_server_non_2xx_over_tcp() -> None:
    req = make_request("INVITE")
    d = Driver(ServerTransaction(req, reliable=True, now=0.0))
    d.send(answer(req, 404))
    assert d.tx.next_timer() == 64 * T1  # H only
    d.tx.receive_retransmission(make_request("ACK"), 1.0)
    assert d.tx.terminated  # I is zero on TCP
    assert d.times() == [0.0]


def test_invite_server_2xx_retransmitted_until_ack() -> None:
    req = make_request("INVITE")
    d = Driver(ServerTransaction(req, reliable=False, now=0.0))
    ok = answer(req, 200)
    d.send(ok)
    assert state(d.tx) is State.ACCEPTED
    d.step(4.0)
    assert d.times() == [0.0, 0.5, 1.5, 3.5]
    d.tx.receive_retransmission(req, d.now)  # INVITE retransmission: 2xx again
    assert d.collect() == [ok.serialize()]
    d.tx.send(answer(req, 500), d.now)  # no non-2xx after a 2xx
    assert d.collect() == []
    d.tx.receive_retransmission(make_request("ACK"), d.now)
    assert state(d.tx) is State.ACCEPTED
    d.step(64 * T1)
    assert d.times(4.0) == []  # the ACK stopped the 2xx retransmissions
    assert d.tx.terminated and d.events == []  # L


def test_invite_server_2xx_without_ack_stops_at_l() -> None:
    req = make_request("INVITE")
    d = Driver(ServerTransaction(req, reliable=False, now=0.0))
    d.send(answer(req, 200))
    d.step(64 * T1)
    assert d.times() == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert d.tx.terminated and d.events == []


def test_invite_server_2xx_over_tcp() -> None:
    req = make_request("INVITE")
    d = Driver(ServerTransaction(req, reliable=True, now=0.0))
    d.send(answer(req, 200))
    d.step(64 * T1)
    assert d.times() == [0.0] and d.tx.terminated


def test_invite_server_ack_before_final_is_ignored() -> None:
    req = make_request("INVITE")
    tx = ServerTransaction(req, reliable=False, now=0.0)
    tx.receive_retransmission(make_request("ACK"), 0.0)
    assert state(tx) is State.PROCEEDING and tx.take_output() == []


# -- server keys (§17.2.3) ---------------------------------------------------------------------


def test_server_keys() -> None:
    invite = make_request("INVITE", "z9hG4bKxyz")
    ack = make_request("ACK", "z9hG4bKxyz")
    cancel = make_request("CANCEL", "z9hG4bKxyz")
    assert server_key(invite) == ("z9hG4bKxyz", "10.0.0.1", "5060", "INVITE")
    assert server_key(ack) == server_key(invite)
    assert server_key(cancel)[-1] == "CANCEL" and server_key(cancel)[:-1] == server_key(invite)[:-1]


def test_server_keys_rfc2543() -> None:
    old = make_request("INVITE", "1234")
    key = server_key(old)
    assert key == ("2543", "a84b4c76e66710@10.0.0.1", "1928301774", "1", "10.0.0.1", "5060", "INVITE")
    assert server_key(make_request("ACK", "1234")) == key
    assert server_key(make_request("INVITE", "1234", cseq=2)) != key
    no_tag = make_request("INVITE", "1234")
    no_tag.headers.set("From", f"<sip:{PLATFORM}@3402000000>")
    assert server_key(no_tag)[2] == ""


# -- state machine invariants ---------------------------------------------------------------------

_INPUTS = st.lists(
    st.one_of(
        st.tuples(st.just("resp"), st.sampled_from([100, 180, 200, 202, 302, 404, 486, 603])),
        st.tuples(st.just("wait"), st.floats(min_value=0.0, max_value=10.0)),
        st.tuples(st.just("req"), st.sampled_from(["retransmit", "ACK"])),
    ),
    max_size=25,
)


# 1xx at t=30 s and t=200 s: each re-arms Timer B, so the transaction ends at 380 s (issue 8, item 28).
_TWO_PROVISIONALS = [("wait", 10.0)] * 3 + [("resp", 180)] + [("wait", 10.0)] * 17 + [("resp", 180)]


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(["INVITE", "MESSAGE"]), reliable=st.booleans(), inputs=_INPUTS)
@example(method="INVITE", reliable=True, inputs=_TWO_PROVISIONALS)
@example(method="INVITE", reliable=False, inputs=_TWO_PROVISIONALS)
def test_client_transaction_never_raises_and_ends(method: str, reliable: bool, inputs: list[tuple[str, object]]) -> None:
    """Any order of responses and waits is absorbed, and the transaction ends by its deadline.

    The deadline moves with the input: Timer B/F at 64*T1 from the start (RFC 3261
    §17.1.1.2, §17.1.2.2); each INVITE 1xx re-arms B to PROCEEDING_LIMIT (Timer C,
    §16.6); a final response leaves at most Timer D (32 s), M (64*T1) or K (T4).
    """
    req = make_request(method)
    tx = ClientTransaction(req, reliable=reliable, now=0.0)
    now = 0.0
    deadline = 64 * T1
    finals = 0
    for kind, value in inputs:
        if kind == "resp":
            assert isinstance(value, int)
            live = tx.state in (State.CALLING, State.TRYING, State.PROCEEDING)
            events = tx.receive(answer(req, value), now)
            finals += sum(1 for e in events if isinstance(e, ResponseReceived) and e.response.status >= 200)
            if live and value >= 200:
                deadline = now + max(32.0, 64 * T1, T4)
            elif live and tx.invite:
                deadline = now + PROCEEDING_LIMIT
        elif kind == "wait":
            assert isinstance(value, float)
            now += value
            due = tx.next_timer()
            if due is not None and due <= now:
                tx.handle_timer(now)
            if now >= deadline:
                assert tx.terminated, f"still {tx.state} at {now} s, deadline {deadline} s"
        tx.take_output()
    if not tx.invite:
        assert finals <= 1
    inputs_end = now
    for _ in range(200):
        due = tx.next_timer()
        if due is None:
            break
        now = max(now, due)
        tx.handle_timer(now)
    assert tx.terminated
    assert now <= max(inputs_end, deadline)


@settings(max_examples=150, deadline=None)
@given(method=st.sampled_from(["INVITE", "MESSAGE"]), reliable=st.booleans(), inputs=_INPUTS)
def test_server_transaction_never_raises_and_ends(method: str, reliable: bool, inputs: list[tuple[str, object]]) -> None:
    req = make_request(method)
    tx = ServerTransaction(req, reliable=reliable, now=0.0)
    now = 0.0
    for kind, value in inputs:
        if kind == "resp":
            assert isinstance(value, int)
            tx.send(answer(req, value), now)
        elif kind == "wait":
            assert isinstance(value, float)
            now += value
            due = tx.next_timer()
            if due is not None and due <= now:
                tx.handle_timer(now)
        else:
            tx.receive_retransmission(make_request("ACK") if value == "ACK" else req, now)
        for data in tx.take_output():
            sent = parse_datagram(data)
            assert isinstance(sent, Response)
            # Never a second, different final response (§17.2.1, §17.2.2).
            if tx.last_response is not None and tx.last_response.status >= 200:
                assert sent.status < 200 or sent.status == tx.last_response.status
    if tx.last_response is None or tx.last_response.status < 200:
        assert tx.next_timer() is None  # waiting for the TU, not the clock
        return
    for _ in range(200):
        due = tx.next_timer()
        if due is None:
            break
        now = max(now, due)
        tx.handle_timer(now)
    assert tx.terminated


def test_timer_constants() -> None:
    assert (T1, T2, T4) == (0.5, 4.0, 5.0)


def test_name_addr_to_of_generated_ack_is_parseable() -> None:
    req = make_request("INVITE")
    tx = ClientTransaction(req, reliable=False, now=0.0)
    tx.take_output()
    tx.receive(answer(req, 404, tag="t-1"), 0.1)
    [ack] = tx.take_output()
    parsed = parse_datagram(ack)
    assert parsed is not None
    assert NameAddr.parse(parsed.headers.get("To") or "").tag == "t-1"
