"""The keepalive fast path (``sip.fastpath``, ``Endpoint.keepalive_handler``, ``DeviceManager.fast_keepalive``).

The rule it must keep: whatever datagram arrives, the platform answers exactly
what the full path (parse, server transaction, router, registrar) answers, and
changes the same state; the fast path only answers the canonical keepalive
(GB/T 28181-2016 §9.6.1) of a device online from its source, once per
transaction (RFC 3261 §17.2.2). Two platforms built from the same seed, one
with the fast path off, receive the same bytes and must send the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from gbplatform.app.config import Config
from sip import manscdp
from sip.endpoint import TIMER_J_UDP, Addr, Endpoint, MessageDropped, RequestReceived
from sip.fastpath import KeepaliveRequest, match_keepalive
from sip.parser import parse_datagram
from tests.unit.platform_harness import DEV, PLATFORM_ID, Harness

SOURCE: Addr = ("UDP", "127.0.0.1", 5070)  # the harness devices' address
BODY = manscdp.encode_keepalive(1001, DEV)


def keepalive(*, head: Callable[[str], str] = lambda h: h, body: bytes = BODY, branch: str = "z9hG4bK776asdhds",
              host: str = "127.0.0.1", port: int = 5070, length: int | None = None) -> bytes:
    """A device's keepalive MESSAGE in eXosip's shape; ``head`` rewrites the head's text."""
    text = (
        f"MESSAGE sip:{PLATFORM_ID}@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch={branch}\r\n"
        f"From: <sip:{DEV}@{host}:{port}>;tag=1804289383\r\n"
        f"To: <sip:{PLATFORM_ID}@127.0.0.1:5060>\r\n"
        "Call-ID: 846930886@127.0.0.1\r\n"
        "CSeq: 20 MESSAGE\r\n"
        "Content-Type: Application/MANSCDP+xml\r\n"
        "Max-Forwards: 70\r\n"
        "User-Agent: IP Camera\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head(text).encode() + body


# -- the matcher -------------------------------------------------------------------
def test_canonical_keepalive_is_matched() -> None:
    ka = match_keepalive(keepalive())
    assert ka is not None
    assert ka.device_id == DEV
    assert ka.key == ("z9hG4bK776asdhds", "127.0.0.1", "5070", "MESSAGE")
    assert (ka.call_id, ka.cseq, ka.body) == ("846930886@127.0.0.1", "20 MESSAGE", BODY)
    assert ka.to_value == f"<sip:{PLATFORM_ID}@127.0.0.1:5060>"


def test_response_copies_the_request_headers() -> None:
    """RFC 3261 §8.2.6.2: Via, From, To (with a tag), Call-ID and CSeq copied; §18.2.1/RFC 3581 stamped."""
    ka = match_keepalive(keepalive(host="192.168.1.64", port=5060))
    assert ka is not None
    resp = parse_datagram(ka.response(("UDP", "203.0.113.7", 40000), "abcd1234", "gbplatform"))
    assert resp is not None
    assert resp.headers.get("Via") == (
        "SIP/2.0/UDP 192.168.1.64:5060;rport=40000;branch=z9hG4bK776asdhds;received=203.0.113.7"
    )
    assert resp.headers.get("From") == f"<sip:{DEV}@192.168.1.64:5060>;tag=1804289383"
    assert resp.headers.get("To") == f"<sip:{PLATFORM_ID}@127.0.0.1:5060>;tag=abcd1234"
    assert resp.headers.get("Call-ID") == "846930886@127.0.0.1"
    assert resp.headers.get("CSeq") == "20 MESSAGE"
    assert resp.headers.get("Content-Length") == "0"


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(head: str) -> str:
        assert old in head, old
        return head.replace(old, new, 1)

    return edit


# Datagrams the full path must judge: each differs from the canonical keepalive in one way.
NOT_CANONICAL: dict[str, bytes] = {
    "extra header": keepalive(head=_replace("Max-Forwards", "Subject: hello\r\nMax-Forwards")),
    "compact From": keepalive(head=_replace("From: ", "f: ")),
    "lower-case name": keepalive(head=_replace("Call-ID:", "call-id:")),
    "folded header": keepalive(head=_replace("User-Agent: IP Camera", "User-Agent: IP\r\n Camera")),
    "two Vias": keepalive(head=_replace("From:", "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKother\r\nFrom:")),
    "two Via values": keepalive(head=_replace(";rport;", ";rport, SIP/2.0/UDP 10.1.1.1;")),
    "To tag": keepalive(head=_replace(":5060>\r\nCall-ID", ":5060>;tag=99\r\nCall-ID")),
    "RFC 2543 branch": keepalive(branch="1234"),
    "Via over TCP": keepalive(head=_replace("SIP/2.0/UDP", "SIP/2.0/TCP")),
    "long Content-Length": keepalive(length=len(BODY) + 1),
    "short Content-Length": keepalive(length=len(BODY) - 10),
    "no Content-Length": keepalive(head=_replace(f"Content-Length: {len(BODY)}\r\n", "")),
    "other Content-Type": keepalive(head=_replace("Application/MANSCDP+xml", "text/plain")),
    "CSeq method": keepalive(head=_replace("20 MESSAGE", "20 INFO")),
    "CSeq too large": keepalive(head=_replace("20 MESSAGE", "4294967296 MESSAGE")),
    "Max-Forwards 256": keepalive(head=_replace("Max-Forwards: 70", "Max-Forwards: 256")),
    "display name": keepalive(head=_replace(f"From: <sip:{DEV}", f'From: "cam" <sip:{DEV}')),
    "From without tag": keepalive(head=_replace(";tag=1804289383", "")),
    "duplicated Call-ID": keepalive(head=_replace("CSeq:", "Call-ID: again\r\nCSeq:")),
    "missing Call-ID": keepalive(head=_replace("Call-ID: 846930886@127.0.0.1\r\n", "")),
    "bad Request-URI port": keepalive(head=_replace("@127.0.0.1:5060 SIP", "@127.0.0.1:99999 SIP")),
    "SIP/3.0": keepalive(head=_replace(" SIP/2.0\r\n", " SIP/3.0\r\n")),
    "leading CRLF": b"\r\n" + keepalive(),
    "bare LF": keepalive(head=_replace("User-Agent: IP Camera", "Accept: a\nCall-ID: other\r\nUser-Agent: IP Camera")),
    "bare CR": keepalive(head=_replace("User-Agent: IP Camera", "User-Agent: IP\rCamera")),
    "control byte": keepalive(head=_replace("Max-Forwards", "Accept: a\x01b\r\nMax-Forwards")),
    "Info in the body": keepalive(body=manscdp.encode_keepalive(1001, DEV, extra={"Info": "x"})),
    "other CmdType": keepalive(body=BODY.replace(b"Keepalive", b"Alarm")),
    "another device's body": keepalive(body=manscdp.encode_keepalive(1001, "34020000001320000099")),
    "status not OK": keepalive(body=manscdp.encode_keepalive(1001, DEV, status="ERROR")),
    "padded body": keepalive(body=BODY.replace(b"<Notify>", b"<Notify>" + b" " * 400)),  # past 512 bytes
}


@pytest.mark.parametrize("name", [n for n in NOT_CANONICAL if "body" not in n and "status" not in n
                                  and "CmdType" not in n])
def test_not_canonical_heads_are_not_matched(name: str) -> None:
    assert match_keepalive(NOT_CANONICAL[name]) is None


def test_garbage_and_truncations_are_not_matched() -> None:
    data = keepalive()
    for cut in range(len(data)):
        assert match_keepalive(data[:cut]) is None
    rng = random.Random(5)
    for _ in range(2000):
        noisy = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            noisy[rng.randrange(len(noisy))] = rng.randrange(256)
        match_keepalive(bytes(noisy))  # may match (a flipped digit in the Call-ID); must not raise


# -- the endpoint: transactions without transaction objects ---------------------------
class Handler:
    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.seen: list[KeepaliveRequest] = []

    def __call__(self, ka: KeepaliveRequest, source: Addr, now: float) -> bool:
        self.seen.append(ka)
        return self.answer


def endpoint(handler: Handler | None = None, **kw: int) -> Endpoint:
    ep = Endpoint(rng=random.Random(1), **kw)  # type: ignore[arg-type]
    ep.keepalive_handler = handler if handler is not None else Handler()
    return ep


def test_retransmission_gets_the_same_answer_and_is_not_handled_twice() -> None:
    handler = Handler()
    ep = endpoint(handler)
    assert ep.receive_datagram(keepalive(), SOURCE, 0.0) == []
    first = ep.take_output()
    assert len(first) == 1 and first[0][0].startswith(b"SIP/2.0 200 OK\r\n") and first[0][1] == SOURCE
    assert ep.receive_datagram(keepalive(), SOURCE, 4.0) == []
    assert ep.take_output() == first
    assert len(handler.seen) == 1
    assert ep.stats["retransmissions"] == 1 and ep.stats["fast_keepalives"] == 1


def test_retransmission_the_fast_path_cannot_match_still_gets_the_answer() -> None:
    """Same branch, other bytes (a header added): the full path finds the answered transaction (§17.2.3)."""
    handler = Handler()
    ep = endpoint(handler)
    ep.receive_datagram(keepalive(), SOURCE, 0.0)
    first = ep.take_output()
    assert ep.receive_datagram(NOT_CANONICAL["extra header"], SOURCE, 1.0) == []
    assert ep.take_output() == first
    assert len(handler.seen) == 1


def test_after_timer_j_the_same_request_is_new() -> None:
    handler = Handler()
    ep = endpoint(handler)
    ep.receive_datagram(keepalive(), SOURCE, 0.0)
    ep.take_output()
    assert ep.next_timer() == TIMER_J_UDP and ep.transaction_count == 1
    ep.handle_timers(TIMER_J_UDP + 0.1)
    assert ep._answered == {} and ep.next_timer() is None and ep.transaction_count == 0
    ep.receive_datagram(keepalive(), SOURCE, TIMER_J_UDP + 0.2)
    assert len(handler.seen) == 2


def test_a_full_path_transaction_keeps_its_request() -> None:
    """The first copy took the full path (an extra header): a canonical copy is its retransmission."""
    handler = Handler()
    ep = endpoint(handler)
    events = ep.receive_datagram(NOT_CANONICAL["extra header"], SOURCE, 0.0)
    assert [type(e) for e in events] == [RequestReceived]
    assert ep.receive_datagram(keepalive(), SOURCE, 0.5) == []
    assert handler.seen == [] and ep.stats["retransmissions"] == 1


def test_a_failing_handler_is_logged_and_the_full_path_answers(caplog: pytest.LogCaptureFixture) -> None:
    def broken(ka: KeepaliveRequest, source: Addr, now: float) -> bool:
        raise RuntimeError("bug")

    ep = endpoint()
    ep.keepalive_handler = broken
    assert [type(e) for e in ep.receive_datagram(keepalive(), SOURCE, 0.0)] == [RequestReceived]
    assert "keepalive fast path failed" in caplog.text


def test_declined_tcp_and_full_table_take_the_full_path() -> None:
    ep = endpoint(Handler(answer=False))
    assert [type(e) for e in ep.receive_datagram(keepalive(), SOURCE, 0.0)] == [RequestReceived]
    handler = Handler()
    ep = endpoint(handler)
    assert [type(e) for e in ep.receive_datagram(keepalive(), ("TCP", "127.0.0.1", 5070), 0.0)] == [RequestReceived]
    assert handler.seen == []
    ep = endpoint(handler, max_transactions=1)
    ep.receive_datagram(keepalive(), SOURCE, 0.0)
    events = ep.receive_datagram(keepalive(branch="z9hG4bKsecond"), SOURCE, 0.0)
    assert [type(e) for e in events] == [MessageDropped]  # 503 from the full path
    assert b" 503 " in ep.take_output()[-1][0]


# -- the platform: the same answers and state as the full path ------------------------
@pytest.fixture
def pair() -> Iterator[tuple[Harness, Harness]]:
    """Two platforms from one seed with the device registered, the second without the fast path."""
    made = []
    for fast in (True, False):
        h = Harness(Config(), seed=3)
        dev = h.device(DEV, SOURCE)
        assert dev.register_auth().status == 200
        h.detach(dev)
        h.advance(40)  # onboarding queries time out
        h.sent.clear()
        if not fast:
            h.platform.endpoint.keepalive_handler = None
        made.append(h)
    yield made[0], made[1]
    failures = made[0].failures() + made[1].failures()
    for h in made:
        h.close()
    assert not failures, "\n".join(failures)


def deliver_both(pair: tuple[Harness, Harness], data: bytes, source: Addr = SOURCE) -> list[bytes]:
    answers = []
    for h in pair:
        h.sent.clear()
        h.deliver(data, source)
        h.pump()
        answers.append([d for d, _ in h.sent])
    assert answers[0] == answers[1]
    return answers[0]


def fast_count(h: Harness) -> int:
    return h.platform.endpoint.stats["fast_keepalives"]


def test_canonical_keepalive_same_bytes_and_state(pair: tuple[Harness, Harness]) -> None:
    fast, full = pair
    answers = deliver_both(pair, keepalive())
    assert len(answers) == 1 and answers[0].startswith(b"SIP/2.0 200 OK\r\n")
    assert (fast_count(fast), fast_count(full)) == (1, 0)
    a, b = fast.devices.live[DEV], full.devices.live[DEV]
    assert (a.last_seen, a.last_keepalive_wall, a.online, a.charset) == (
        b.last_seen, b.last_keepalive_wall, b.online, b.charset)
    assert fast.devices.stats["keepalives"] == full.devices.stats["keepalives"] == 1
    for h in pair:
        h.devices.writer.flush()
    assert fast.record().last_keepalive_at == full.record().last_keepalive_at is not None
    assert [e.data for e in fast.platform.trace.entries(DEV)] == [e.data for e in full.platform.trace.entries(DEV)]
    # A retransmission: the same answer again from both, nothing counted twice.
    assert deliver_both(pair, keepalive()) == answers
    assert fast.devices.stats["keepalives"] == 1


def test_keepalive_of_a_nated_device_same_bytes(pair: tuple[Harness, Harness]) -> None:
    """The device's Via names its private address: ``received`` and ``rport`` as the full path stamps them."""
    answers = deliver_both(pair, keepalive(host="192.168.1.64", port=5060))
    assert b"received=127.0.0.1" in answers[0] and fast_count(pair[0]) == 1
    no_rport = keepalive(head=_replace(";rport;", ";"), branch="z9hG4bKnorport")
    assert deliver_both(pair, no_rport)[0].count(b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnorport\r\n") == 1


# pjsua2's keepalive (tests/integration/pjsua2_device.py, as the platform's trace showed it): another
# header order, Accept, padded Content-Length, CRLFs in the body.
PJSUA2_BODY = (
    '<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n'
    f"<DeviceID>{DEV}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
).encode()
PJSUA2 = (
    f"MESSAGE sip:{PLATFORM_ID}@127.0.0.1:35723 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKPjU6-.LIRvgJvCufgkHtXJpzl53s9vJNDE\r\n"
    f"Max-Forwards: 70\r\nFrom: <sip:{DEV}@3402000000>;tag=nF3lC5szTBvo-dUXjBz641L4kgXJS-J-\r\n"
    f"To: <sip:{PLATFORM_ID}@127.0.0.1>\r\nCall-ID: 9pS6yL1gX2deANHBR8fQK-F7Ony6gl-s\r\nCSeq: 61136 MESSAGE\r\n"
    "Accept: text/plain, application/im-iscomposing+xml\r\nUser-Agent: pjsua2-gb-test\r\n"
    f"Content-Type: Application/MANSCDP+xml\r\nContent-Length:   {len(PJSUA2_BODY)}\r\n\r\n"
).encode() + PJSUA2_BODY


def test_pjsua2_keepalive_same_bytes(pair: tuple[Harness, Harness]) -> None:
    assert deliver_both(pair, PJSUA2)[0].startswith(b"SIP/2.0 200 OK\r\n")
    assert fast_count(pair[0]) == 1


@pytest.mark.parametrize("name", list(NOT_CANONICAL))
def test_not_canonical_datagrams_get_the_full_paths_answer(pair: tuple[Harness, Harness], name: str) -> None:
    deliver_both(pair, NOT_CANONICAL[name])
    assert fast_count(pair[0]) == (1 if name == "status not OK" else 0)  # any Status is a keepalive (§A.2.5.2)


def test_stranger_unknown_and_offline_devices_take_the_full_path(pair: tuple[Harness, Harness]) -> None:
    fast, _ = pair
    # From another address: 404 with the Warning (the registrar's may_speak_for).
    answers = deliver_both(pair, keepalive(), ("UDP", "198.51.100.9", 5070))
    assert answers[0].startswith(b"SIP/2.0 404 ") and b"not registered from this address" in answers[0]
    # An unknown device ID: 404, the device registers again.
    other = keepalive(head=lambda t: t.replace(DEV, "34020000001320000077"), branch="z9hG4bKunknown")
    assert deliver_both(pair, other)[0].startswith(b"SIP/2.0 404 ")
    # Offline after missed keepalives but still registered: the full path brings it back, with its event.
    for h in pair:
        h.advance(200)
        assert not h.devices.live[DEV].online
        h.events.clear()
    assert deliver_both(pair, keepalive(branch="z9hG4bKback"))[0].startswith(b"SIP/2.0 200 ")
    assert [(e.online, e.reason) for e in pair[0].events] == [(True, "keepalive")] == [
        (e.online, e.reason) for e in pair[1].events]
    assert fast_count(fast) == 0
    # Back online: the next keepalive is the fast path's.
    deliver_both(pair, keepalive(branch="z9hG4bKnext"))
    assert fast_count(fast) == 1


def test_garbage_gets_the_full_paths_answer(pair: tuple[Harness, Harness]) -> None:
    data = keepalive()
    for cut in range(0, len(data), 7):
        deliver_both(pair, data[:cut])
    rng = random.Random(11)
    for n in range(300):
        noisy = bytearray(keepalive(branch=f"z9hG4bKnoise{n}"))
        for _ in range(rng.randrange(1, 4)):
            noisy[rng.randrange(len(noisy))] = rng.randrange(256)
        deliver_both(pair, bytes(noisy))


def test_after_a_restart_the_full_path_relearns_then_the_fast_path_answers() -> None:
    h = Harness(Config())
    try:
        h.registered_device(DEV, SOURCE)
        h.advance(100)
        h2 = h.restart()
        dev = h2.device(DEV, SOURCE)
        assert dev.keepalive().status == 200  # not in memory: the registrar reads the registry (full path)
        assert fast_count(h2) == 0 and h2.devices.is_known(DEV)
        assert dev.keepalive().status == 200
        assert fast_count(h2) == 1
        assert h.failures() == []
    finally:
        h.close()


def test_expiry_sweeps_at_most_once_a_second() -> None:
    """Every keepalive leaves a stale deadline; they are swept together, not one timer each (issue 12)."""
    h = Harness(Config())
    try:
        devs = [h.registered_device(f"340200000013200000{n:02d}", ("UDP", "127.0.0.1", 6000 + n)) for n in range(20)]
        for dev in devs:
            h.detach(dev)  # their onboarding queries time out
        h.advance(40)
        sweeps: list[float] = []
        expire = h.devices._expire

        def counted() -> None:
            sweeps.append(h.clock.seconds())
            expire()

        h.devices._expire = counted  # type: ignore[method-assign]
        h.devices._arm(h.clock.seconds())
        started = h.clock.seconds()
        for _ in range(4):  # keepalives 0.05 s apart, a round every 60 s
            for dev in devs[1:]:
                h.attach(dev)
                assert dev.keepalive().status == 200
                h.detach(dev)
                h.advance(0.05)
            h.advance(60 - 0.05 * 19)
        assert fast_count(h) == 4 * 19
        assert sweeps and sweeps[-1] > started + 180  # the stale deadlines of the registrations came due
        assert max(sum(1 for t in sweeps if s <= t < s + 1.0) for s in sweeps) <= 2
        # The silent device still goes offline: its deadline (3 x 60 s after its registration), at most a sweep late.
        assert not h.devices.is_known(devs[0].device_id)
        assert devs[1].device_id in h.devices.live and h.devices.is_known(devs[1].device_id)
        assert h.failures() == []
    finally:
        h.close()
