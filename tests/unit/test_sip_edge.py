"""The SIP edge of the platform (issue 8 items 8, 11, 25): bad IDs, unanswered
transactions, CmdType case. Driven over the in-memory harness; the ``make``
fixture fails a test that logs a traceback.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from twisted.logger import LogEvent, globalLogPublisher

from sip import manscdp
from sip.endpoint import Endpoint, RequestReceived, RequestUnanswered
from sip.message import Response, make_response
from sip.parser import parse_datagram
from tests.unit.platform_harness import DEV, DEVICE_ADDR, PLATFORM_ID, Harness

BAD_USER = b"3402000000132\xff\xfe00001"


def raw_request(method: str, from_user: bytes, body: bytes = b"", *, branch: str = "z9hG4bKedge1",
                content_type: bytes = b"Application/MANSCDP+xml") -> bytes:
    head = (
        method.encode() + b" sip:" + PLATFORM_ID.encode() + b"@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=" + branch.encode() + b"\r\n"
        b"From: <sip:" + from_user + b"@127.0.0.1:5070>;tag=1\r\n"
        b"To: <sip:" + PLATFORM_ID.encode() + b"@127.0.0.1:5060>\r\n"
        b"Call-ID: edge-" + branch.encode() + b"\r\n"
        b"CSeq: 1 " + method.encode() + b"\r\n"
        b"Max-Forwards: 70\r\n"
    )
    if body:
        head += b"Content-Type: " + content_type + b"\r\n"
    return head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def answers(h: Harness) -> list[Response]:
    found = []
    for data, dest in h.sent:
        msg = parse_datagram(data)
        if dest == DEVICE_ADDR and isinstance(msg, Response):
            found.append(msg)
    return found


# --- item 8: IDs are validated once, at the edge -------------------------------


@pytest.mark.parametrize("body", [
    manscdp.encode_keepalive(1, DEV),
    manscdp.encode_notify("Alarm", 2, DEV, extra={"AlarmPriority": "1"}),
])
def test_a_message_from_a_non_utf8_id_is_403_without_a_traceback(h: Harness, body: bytes) -> None:
    h.deliver(raw_request("MESSAGE", BAD_USER, body), DEVICE_ADDR)
    h.advance(1)
    [resp] = answers(h)
    assert (resp.status, resp.reason) == (403, "Invalid Device ID")


@pytest.mark.parametrize("user", [b"3402000000132000000", b"340200000013200000011", b"cam-lab-1",
                                  "３４０２００００００１３２００００００１".encode()])
def test_a_message_from_an_id_that_is_not_20_digits_is_403(h: Harness, user: bytes) -> None:
    h.deliver(raw_request("MESSAGE", user, manscdp.encode_keepalive(1, DEV)), DEVICE_ADDR)
    h.advance(1)
    [resp] = answers(h)
    assert (resp.status, resp.reason) == (403, "Invalid Device ID")


@pytest.mark.parametrize("method", ["MESSAGE", "REGISTER"])
def test_non_strict_ids_with_non_utf8_bytes_are_403_too(make: Callable[..., Harness], method: str) -> None:
    h = make(strict_id=False)
    h.deliver(raw_request(method, b"cam-\xff-1", manscdp.encode_keepalive(1, DEV)), DEVICE_ADDR)
    h.advance(1)
    [resp] = answers(h)
    assert (resp.status, resp.reason) == (403, "Invalid Device ID")


def test_non_strict_ids_still_work(make: Callable[..., Harness]) -> None:
    h = make(strict_id=False)
    dev = h.device("cam-lab-1")
    assert dev.register_auth().status == 200
    assert dev.keepalive().status == 200


# --- item 25: CmdType is matched case-insensitively ------------------------------


def test_an_answer_with_a_lowercase_cmdtype_is_routed(h: Harness) -> None:
    dev = h.registered_device()
    d = h.run(h.platform.queries.device_status(DEV))
    query = dev.last_query("DeviceStatus")
    body = manscdp.encode_response("DeviceStatus", query.sn, DEV, extra={"Result": "OK", "Online": "ONLINE",
                                                                       "Status": "OK"})
    body = body.replace(b"<CmdType>DeviceStatus</CmdType>", b"<CmdType>devicestatus</CmdType>")
    assert dev.message(body).status == 200
    assert d.called
    assert d.result.device_id == DEV and d.result.result == "OK"


def test_a_catalog_answered_as_lowercase_catalog_is_aggregated(h: Harness) -> None:
    dev = h.registered_device()
    query = dev.last_query("Catalog")
    item = manscdp.CatalogItem(device_id="34020000001310000001", name="gate", status="ON", parent_id=DEV)
    body = manscdp.encode_catalog_response(query.sn, DEV, 1, [item])
    body = body.replace(b"<CmdType>Catalog</CmdType>", b"<CmdType>catalog</CmdType>")
    assert dev.message(body).status == 200
    h.advance(1)
    assert [c.channel_id for c in h.channels()] == ["34020000001310000001"]
    progress = h.platform.catalog.progress(DEV)
    assert progress is not None and progress["status"] == "done"


# --- item 11: every server transaction gets a final answer -------------------------


def _critical(events: list[LogEvent]) -> Callable[[LogEvent], None]:
    def observe(event: LogEvent) -> None:
        if "unanswered" in (event.get("log_format") or ""):
            events.append(event)
    return observe


def test_a_request_the_application_never_answers_gets_500_and_is_forgotten(h: Harness) -> None:
    h.router.request_received = lambda event: None  # a handler that forgets to answer
    seen: list[LogEvent] = []
    observer = _critical(seen)
    globalLogPublisher.addObserver(observer)
    try:
        dev = h.device()
        tx = dev.send(dev.request("OPTIONS"))
        assert h.platform.endpoint.transaction_count == 1
        h.advance(40)
    finally:
        globalLogPublisher.removeObserver(observer)
    final = dev.finals.get(id(tx))
    assert [r.status for r in answers(h)] == [500]
    assert final is None or final.status == 500  # the device's timer F may fire first
    assert seen, "no log line for the unanswered request"
    h.advance(40)
    assert h.platform.endpoint.transaction_count == 0


def test_a_handler_exception_is_answered_500_at_once(h: Harness) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError("handler bug")

    h.router.request_received = broken
    dev = h.device()
    resp = dev.exchange(dev.request("OPTIONS"))
    assert resp.status == 500
    assert len(h.log_failures) == 1  # logged with its traceback, not raised into the reactor
    h.log_failures.clear()


def test_answered_requests_get_no_extra_500(h: Harness) -> None:
    dev = h.registered_device()
    assert dev.keepalive().status == 200
    h.advance(100)
    assert 500 not in [r.status for r in answers(h)]


def test_the_endpoint_reports_a_request_left_unanswered_once() -> None:
    ep = Endpoint(rng=random.Random(1), answer_timeout=32.0)
    [received] = ep.receive_datagram(raw_request("OPTIONS", DEV.encode()), DEVICE_ADDR, 0.0)
    assert isinstance(received, RequestReceived) and received.transaction is not None
    [answered] = ep.receive_datagram(raw_request("OPTIONS", DEV.encode(), branch="z9hG4bKedge2"), DEVICE_ADDR, 1.0)
    assert isinstance(answered, RequestReceived) and answered.transaction is not None
    ep.respond(answered.transaction, make_response(answered.request, 200), 1.0)
    assert ep.next_timer() == 32.0
    assert ep.handle_timers(31.9) == []
    assert ep.handle_timers(32.0) == [RequestUnanswered(received.transaction, DEVICE_ADDR)]
    assert ep.handle_timers(100.0) == []
