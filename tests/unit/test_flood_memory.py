"""What a flood of refused requests may keep in memory (issue 8 item 10).

A request refused before the platform keeps any state for it (bad or unknown
device ID, banned source, a digest challenge, a stranger) is answered
statelessly (RFC 3261 §8.2.7): its server transaction is dropped as soon as
the final response is sent, instead of holding the request and the response
for timer J (32 s, §17.2.2). A retransmission is answered again, the same way.
Accepted requests of real devices keep their transactions.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from sip import manscdp
from sip.endpoint import Addr, Endpoint, RequestReceived
from sip.message import Request, Response, make_response
from sip.parser import parse_datagram
from tests.unit.platform_harness import DEV, Harness

SOURCE: Addr = ("UDP", "192.0.2.66", 5099)


def raw_request(method: str, i: int, *, to_tag: str = "") -> bytes:
    req = Request(method=method, uri="sip:34020000002000000001@3402000000")
    req.headers.add("Via", f"SIP/2.0/UDP 192.0.2.66:5099;rport;branch=z9hG4bK{i:x}")
    req.headers.add("From", f"<sip:3402000000132{i:07d}@3402000000>;tag=f{i}")
    req.headers.add("To", f"<sip:3402000000132{i:07d}@3402000000>{to_tag}")
    req.headers.add("Call-ID", f"{i}@192.0.2.66")
    req.headers.add("CSeq", f"1 {method}")
    req.headers.add("Max-Forwards", "70")
    return req.serialize()


def refuse(ep: Endpoint, data: bytes, now: float, status: int = 403) -> bytes:
    """Feed ``data`` and refuse it statelessly; the bytes of the answer."""
    [event] = ep.receive_datagram(data, SOURCE, now)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    resp = make_response(event.request, status, to_tag=ep.new_tag())
    ep.respond(event.transaction, resp, now, stateless=True)
    [(answer, dest)] = ep.take_output()
    assert dest == SOURCE
    return answer


# --- the transaction layer ------------------------------------------------------------


def test_a_thousand_refused_requests_leave_no_transaction() -> None:
    ep = Endpoint(rng=random.Random(0))
    for i in range(1000):
        refuse(ep, raw_request("REGISTER", i), i * 0.001)
    assert ep.transaction_count == 0
    assert ep._by_bytes == {} and ep._raw_of == {} and ep._dest == {}
    assert ep.next_timer() is None and ep._unanswered == []


def test_a_slow_handler_does_not_let_refused_requests_pile_up() -> None:
    """Answered transactions leave the "must be answered by" heap when they reach its
    top; one request a handler is still working on (a registry lookup) sits there."""
    ep = Endpoint(rng=random.Random(0))
    [pending] = ep.receive_datagram(raw_request("MESSAGE", 10**6), SOURCE, 0.0)
    assert isinstance(pending, RequestReceived)
    for i in range(5000):
        refuse(ep, raw_request("REGISTER", i), 0.001)
    ep.next_timer()
    assert ep.transaction_count == 1
    assert len(ep._unanswered) <= 1025


def test_a_retransmitted_refused_request_is_answered_the_same() -> None:
    """§8.2.7: a stateless UAS regenerates the response, To tag included."""
    ep = Endpoint(rng=random.Random(0))
    data = raw_request("REGISTER", 7)
    first = refuse(ep, data, 0.0)
    again = refuse(ep, data, 0.5)  # the TU sees it again and refuses it again
    assert again == first
    answer = parse_datagram(first)
    assert isinstance(answer, Response) and answer.status == 403
    assert ";tag=" in (answer.headers.get("To") or "")
    # Another request gets another tag.
    other = parse_datagram(refuse(ep, raw_request("REGISTER", 8), 1.0))
    assert isinstance(other, Response) and other.headers.get("To") != answer.headers.get("To")


def test_an_in_dialog_request_keeps_its_to_tag_when_refused_statelessly() -> None:
    ep = Endpoint(rng=random.Random(0))
    answer = parse_datagram(refuse(ep, raw_request("BYE", 3, to_tag=";tag=dialog1"), 0.0, 481))
    assert isinstance(answer, Response)
    assert answer.headers.get("To") == "<sip:34020000001320000003@3402000000>;tag=dialog1"


def test_accepted_requests_keep_their_transactions() -> None:
    ep = Endpoint(rng=random.Random(0))
    # Answered with state: a retransmission must not run the TU again.
    [ok] = ep.receive_datagram(raw_request("MESSAGE", 1), SOURCE, 0.0)
    assert isinstance(ok, RequestReceived) and ok.transaction is not None
    ep.respond(ok.transaction, make_response(ok.request, 200, to_tag="t"), 0.0)
    # A 2xx to an INVITE keeps its transaction whatever the TU asks: the 2xx is
    # retransmitted until the ACK (RFC 6026 §7.1).
    [inv] = ep.receive_datagram(raw_request("INVITE", 2), SOURCE, 0.0)
    assert isinstance(inv, RequestReceived) and inv.transaction is not None
    ep.respond(inv.transaction, make_response(inv.request, 200, to_tag="t"), 0.0, stateless=True)
    assert ep.transaction_count == 2
    ep.take_output()
    assert ep.receive_datagram(raw_request("MESSAGE", 1), SOURCE, 0.5) == []
    assert len(ep.take_output()) == 1  # answered from the transaction


def test_an_invite_refused_statelessly_is_refused_again_and_its_ack_absorbed() -> None:
    """§8.2.7: a stateless UAS does not retransmit its final response; the client
    retransmits the INVITE until a response arrives (timer A), and each copy is
    answered again. Measured: 20,000 strangers' INVITEs a second filled the
    100,000-transaction table (603 retransmitted for 32 s each): 784 MiB."""
    ep = Endpoint(rng=random.Random(0))
    data = raw_request("INVITE", 4)
    first = refuse(ep, data, 0.0, 603)
    assert ep.transaction_count == 0 and ep.next_timer() is None
    assert refuse(ep, data, 0.5, 603) == first
    answer = parse_datagram(first)
    assert isinstance(answer, Response)
    ack = Request(method="ACK", uri="sip:34020000002000000001@3402000000")
    for name in ("Via", "From", "Call-ID"):
        ack.headers.add(name, answer.headers.get(name) or "")
    ack.headers.add("To", answer.headers.get("To") or "")
    ack.headers.add("CSeq", "1 ACK")
    [event] = ep.receive_datagram(ack.serialize(), SOURCE, 0.6)
    assert isinstance(event, RequestReceived) and event.transaction is None  # the TU ignores it
    assert ep.take_output() == [] and ep.transaction_count == 0


def test_cancels_matching_nothing_leave_no_transaction() -> None:
    """They were answered 481 statefully, and before the table's bound was checked."""
    ep = Endpoint(rng=random.Random(0), max_transactions=10)
    for i in range(1000):
        assert ep.receive_datagram(raw_request("CANCEL", i), SOURCE, 0.0) == []
        [(data, _dest)] = ep.take_output()
        answer = parse_datagram(data)
        assert isinstance(answer, Response) and answer.status == 481
    assert ep.transaction_count == 0


# --- the platform ------------------------------------------------------------------------


def forged_register(h: Harness, i: int, *, device_id: str | None = None, authorization: str | None = None) -> bytes:
    device_id = device_id or f"3402000000132{i:07d}"
    req = Request(method="REGISTER", uri="sip:34020000002000000001@127.0.0.1:5060")
    req.headers.add("Via", f"SIP/2.0/UDP 192.0.2.66:5099;rport;branch=z9hG4bKflood{i:x}")
    req.headers.add("From", f"<sip:{device_id}@3402000000>;tag=f{i}")
    req.headers.add("To", f"<sip:{device_id}@3402000000>")
    req.headers.add("Call-ID", f"flood{i}@192.0.2.66")
    req.headers.add("CSeq", "1 REGISTER")
    req.headers.add("Contact", f"<sip:{device_id}@192.0.2.66:5099>")
    req.headers.add("Expires", "3600")
    if authorization is not None:
        req.headers.add("Authorization", authorization)
    return req.serialize()


def answers(h: Harness, start: int) -> list[int]:
    out = []
    for data, _dest in h.sent[start:]:
        resp = parse_datagram(data)
        assert isinstance(resp, Response)
        out.append(resp.status)
    return out


def test_a_flood_of_forged_registers_keeps_no_transaction(make: Callable[..., Harness]) -> None:
    h = make(auth_max_failures=5, auth_ban_seconds=600)
    nonce = 'Digest realm="3402000000", nonce="00", algorithm=MD5'
    start = len(h.sent)
    for i in range(1000):
        kind = i % 3
        if kind == 0:
            data = forged_register(h, i)  # no credentials: challenged
        elif kind == 1:
            data = forged_register(h, i, device_id=f"forged-{i}")  # not a GB ID
        else:
            data = forged_register(h, i, authorization=nonce.replace("Digest", f'Digest username="x{i}",'))
        h.deliver(data, SOURCE)
    statuses = answers(h, start)
    assert len(statuses) == 1000 and set(statuses) <= {400, 401, 403}
    assert h.platform.endpoint.transaction_count == 0


def test_a_flood_of_options_keeps_no_transaction(make: Callable[..., Harness]) -> None:
    """svmap scans with OPTIONS: each is answered 200 with the same Allow, no state kept."""
    h = make()
    start = len(h.sent)
    for i in range(1000):
        h.deliver(raw_request("OPTIONS", i), SOURCE)
    assert answers(h, start) == [200] * 1000
    assert h.platform.endpoint.transaction_count == 0


def test_a_flood_of_strangers_invites_keeps_no_transaction(make: Callable[..., Harness]) -> None:
    h = make()
    start = len(h.sent)
    for i in range(1000):
        h.deliver(raw_request("INVITE", i), SOURCE)
    assert answers(h, start) == [603] * 1000
    assert h.platform.endpoint.transaction_count == 0
    h.advance(1.0)  # no timer G: the 603 is not retransmitted
    assert len(h.sent) == start + 1000


def test_a_refused_register_retransmitted_is_refused_the_same(make: Callable[..., Harness]) -> None:
    h = make()
    data = forged_register(h, 1, device_id="forged-1")
    start = len(h.sent)
    h.deliver(data, SOURCE)
    h.deliver(data, SOURCE)
    [(first, _), (again, _)] = h.sent[start:]
    assert first == again and answers(h, start) == [403, 403]
    assert h.platform.endpoint.transaction_count == 0


def test_a_real_devices_register_retransmission_still_hits_its_transaction(make: Callable[..., Harness]) -> None:
    h = make()
    dev = h.device(DEV)
    assert dev.register_auth().status == 200
    registered = h.devices.stats["registered"]
    assert h.platform.endpoint.transaction_count >= 1
    retrans = h.platform.endpoint.stats["retransmissions"]
    start = len(h.sent)
    h.deliver(dev_last_register(h), dev.addr)  # its 200 OK was lost: it sends the REGISTER again
    assert h.platform.endpoint.stats["retransmissions"] == retrans + 1
    assert h.devices.stats["registered"] == registered  # the registrar did not run again
    assert answers(h, start) == [200]


def dev_last_register(h: Harness) -> bytes:
    """The last REGISTER the platform received, from its SIP trace."""
    entries = [e for e in h.platform.trace.entries(DEV) if e.direction == "recv" and e.data.startswith(b"REGISTER")]
    return entries[-1].data


def test_forged_ids_do_not_get_a_trace_each(make: Callable[..., Harness]) -> None:
    """Strangers' messages for IDs that are not registered share one bounded list."""
    h = make()
    for i in range(1000):
        h.deliver(forged_register(h, i), SOURCE)
    trace = h.platform.trace
    assert trace._devices == {} and trace._strangers == {} and trace._count == 0
    assert len(trace._unverified) == 2000 == trace.unverified  # 1,000 REGISTERs and their answers
    for i in range(1000, 1100):
        h.deliver(forged_register(h, i), SOURCE)
    assert len(trace._unverified) == trace.unverified
    # A device trying to register can still be debugged: its attempts are in its trace.
    [sent_in, answer] = trace.entries("34020000001320000999")
    assert sent_in.direction == "recv" and answer.direction == "send"


def forged_keepalive(i: int) -> bytes:
    device_id = f"3402000000132{i:07d}"
    body = manscdp.encode_keepalive(i, device_id)
    req = Request(method="MESSAGE", uri="sip:34020000002000000001@3402000000", body=body)
    req.headers.add("Via", f"SIP/2.0/UDP 192.0.2.66:5099;rport;branch=z9hG4bKka{i:x}")
    req.headers.add("From", f"<sip:{device_id}@3402000000>;tag=f{i}")
    req.headers.add("To", "<sip:34020000002000000001@3402000000>")
    req.headers.add("Call-ID", f"ka{i}@192.0.2.66")
    req.headers.add("CSeq", "20 MESSAGE")
    req.headers.add("Content-Type", "Application/MANSCDP+xml")
    return req.serialize()


def test_forged_keepalives_cost_no_registry_lookup(make: Callable[..., Harness]) -> None:
    """Measured: 20,000 forged keepalives a second queued 38,000 lookups (and their
    transactions) behind the registry, 507 MiB. After the start-up preload an ID
    the registry does not have is known not to be there."""
    h = make()
    h.run(h.devices.preload())
    lookups: list[str] = []
    real_run = h.devices.db.run

    def counting(name: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(name)
        return real_run(name, *args, **kwargs)

    h.devices.db.run = counting
    start = len(h.sent)
    for i in range(1000):
        h.deliver(forged_keepalive(i), SOURCE)
    assert answers(h, start) == [404] * 1000
    assert lookups == [] and h.platform.endpoint.transaction_count == 0


def test_a_keepalive_after_a_restart_still_brings_the_device_back(make: Callable[..., Harness]) -> None:
    h = make()
    dev = h.registered_device()
    h.devices.writer.flush()
    h2 = h.restart()
    h2.run(h2.devices.preload())
    dev2 = h2.device(DEV, dev.addr)
    assert dev2.keepalive().status == 200
    assert h2.devices.is_known(DEV)
