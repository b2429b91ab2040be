"""The signalling router's registries: by SIP method, by MANSCDP (kind, CmdType), by dialog; SN correlation.

Driven through the in-memory platform (``platform_harness``), so what is
checked is what a device on the wire sees: the router is wired as
``gbplatform.app.service`` wires it, and tests add their own registrations.
"""

from __future__ import annotations

import pytest

from gbplatform.signalling.router import SipRouter
from sip import manscdp
from sip.dialog import DialogId
from sip.endpoint import Addr
from sip.headers import from_header
from sip.message import Request, make_response
from sip.transaction import ServerTransaction
from tests.unit.platform_harness import DEV, PLATFORM_ID, FakeDevice, Harness, result_of

Received = list[tuple[str, manscdp.ManscdpMessage]]


def _alarm(sn: int, cmd_type: str = "Alarm") -> bytes:
    return manscdp.encode_notify(cmd_type, sn, DEV, extra={"AlarmPriority": "1"})


def _allow(value: str | None) -> list[str]:
    return [m.strip() for m in (value or "").split(",")]


# --- MANSCDP listeners ---------------------------------------------------------


def test_several_listeners_of_one_cmd_type_each_get_the_message_answered_once(h: Harness) -> None:
    events: Received = []
    cascade: Received = []
    h.router.on_manscdp("Notify", "Alarm", lambda device_id, msg: events.append((device_id, msg)))
    h.router.on_manscdp("Notify", "Alarm", lambda device_id, msg: cascade.append((device_id, msg)))
    dev = h.registered_device()
    sent_before = len(h.sent)
    assert dev.message(_alarm(5)).status == 200
    assert [(d, m.sn) for d, m in events] == [(DEV, 5)] == [(d, m.sn) for d, m in cascade]
    # One final response to the MESSAGE, however many listeners.
    answers = [data for data, _ in h.sent[sent_before:] if data.startswith(b"SIP/2.0 200")]
    assert len(answers) == 1


def test_cmd_type_and_kind_are_matched_case_insensitively(h: Harness) -> None:
    seen: Received = []
    h.router.on_manscdp("NOTIFY", "alarm", lambda device_id, msg: seen.append((device_id, msg)))
    dev = h.registered_device()
    assert dev.message(_alarm(7, cmd_type="ALARM")).status == 200
    assert dev.message(_alarm(8)).status == 200
    assert [m.sn for _, m in seen] == [7, 8]


def test_a_failing_listener_is_logged_and_the_others_still_run(h: Harness) -> None:
    seen: Received = []

    def broken(device_id: str, msg: manscdp.ManscdpMessage) -> None:
        raise RuntimeError("boom")

    h.router.on_manscdp("Notify", "Alarm", broken)
    h.router.on_manscdp("Notify", "Alarm", lambda device_id, msg: seen.append((device_id, msg)))
    dev = h.registered_device()
    assert dev.message(_alarm(9)).status == 200
    assert len(seen) == 1
    assert len(h.log_failures) == 1
    h.log_failures.clear()


def test_listeners_see_nothing_the_trust_checks_refused(h: Harness) -> None:
    seen: Received = []
    h.router.on_manscdp("Notify", "Alarm", lambda device_id, msg: seen.append((device_id, msg)))
    # Not registered: 403 before any listener.
    resp = h.device().message(_alarm(1))
    assert (resp.status, resp.reason) == (403, "Not Registered")
    h.registered_device()
    # Registered, but the MESSAGE comes from elsewhere: anyone can write a From header.
    stranger = h.device(addr=("UDP", "198.51.100.9", 5070))
    h.attach(stranger)
    resp = stranger.message(_alarm(2))
    assert resp.status == 403 and "not registered from this address" in (resp.headers.get("Warning") or "")
    # A From user that is no device ID: refused before the body is even decoded.
    resp = h.device(device_id="1" * 40).message(_alarm(3))
    assert (resp.status, resp.reason) == (403, "Invalid Device ID")
    assert seen == []


def test_keepalive_has_one_responder_and_a_second_is_refused(h: Harness) -> None:
    dev = h.registered_device()
    assert dev.keepalive().status == 200  # devices registered its responder at wiring time
    with pytest.raises(ValueError, match="answered already"):
        h.router.answer_manscdp("notify", "KEEPALIVE", lambda *args: None)


# --- SN correlation ------------------------------------------------------------


def test_a_correlation_gets_every_part_with_its_sn_until_closed(h: Harness) -> None:
    dev = h.registered_device()
    parts: list[manscdp.ManscdpMessage] = []
    others: Received = []
    h.router.on_manscdp("Response", "RecordInfo", lambda device_id, msg: others.append((device_id, msg)))
    correlation = h.router.expect(DEV, "RecordInfo", 4242, parts.append)
    assert correlation.sn == 4242 and correlation.open
    # CmdType written in another case still correlates (devices answer "recordinfo").
    for cmd in ("RecordInfo", "recordinfo"):
        assert dev.message(manscdp.encode_response(cmd, 4242, DEV)).status == 200
    assert dev.message(manscdp.encode_response("RecordInfo", 4243, DEV)).status == 200  # another SN
    assert [m.sn for m in parts] == [4242, 4242]
    correlation.close()
    assert not correlation.open
    assert dev.message(manscdp.encode_response("RecordInfo", 4242, DEV)).status == 200
    assert len(parts) == 2
    # Listeners of the CmdType see every Response, correlated or not.
    assert [m.sn for _, m in others] == [4242, 4242, 4243, 4242]


def test_query_goes_through_one_correlation_and_leaves_none_behind(h: Harness) -> None:
    dev = h.registered_device()
    d = h.run(h.router.query(DEV, "DeviceStatus"))
    query = dev.last_query("DeviceStatus")
    assert [k for k in h.router._correlations if k[1] == "devicestatus"] == [(DEV, "devicestatus", query.sn)]
    dev.message(manscdp.encode_response("DeviceStatus", query.sn, DEV, extra={"Result": "OK"}))
    assert result_of(d).sn == query.sn
    assert not [k for k in h.router._correlations if k[1] == "devicestatus"]


# --- SIP methods ---------------------------------------------------------------


def test_a_registered_method_is_served_and_listed_in_allow(h: Harness) -> None:
    served: list[str] = []

    def publish(req: Request, tx: ServerTransaction, source: Addr) -> None:
        served.append(req.method)
        h.router.respond(tx, make_response(req, 200, to_tag=h.platform.endpoint.new_tag()))

    dev = h.device()
    before = _allow(dev.exchange(dev.request("OPTIONS")).headers.get("Allow"))
    assert "PUBLISH" not in before
    assert before[:3] == ["REGISTER", "MESSAGE", "OPTIONS"]
    h.router.on_request("PUBLISH", publish)
    assert dev.exchange(dev.request("PUBLISH")).status == 200
    assert served == ["PUBLISH"]
    resp = dev.exchange(dev.request("UPDATE"))
    assert resp.status == 405
    assert _allow(resp.headers.get("Allow")) == before + ["PUBLISH"]
    assert _allow(dev.exchange(dev.request("OPTIONS")).headers.get("Allow")) == before + ["PUBLISH"]


def test_one_handler_per_method(h: Harness) -> None:
    for method in ("REGISTER", "message", "OPTIONS"):
        with pytest.raises(ValueError, match="served already"):
            h.router.on_request(method, lambda req, tx, source: None)


def test_from_device_methods_get_the_device_id_check(h: Harness) -> None:
    served: list[str] = []
    h.router.on_request("PUBLISH", lambda req, tx, source: served.append(req.method), from_device=True)
    dev = h.device(device_id="1" * 40)
    resp = dev.exchange(dev.request("PUBLISH"))
    assert (resp.status, resp.reason) == (403, "Invalid Device ID")
    assert served == []


# --- dialogs -------------------------------------------------------------------


def _in_dialog(dev: FakeDevice, method: str, call_id: str, local_tag: str, remote_tag: str) -> Request:
    req: Request = dev.request(method)
    req.headers.set("Call-ID", call_id)
    req.headers.set("From", f"<sip:{DEV}@127.0.0.1:5070>;tag={remote_tag}")
    req.headers.set("To", f"<sip:{PLATFORM_ID}@127.0.0.1:5060>;tag={local_tag}")
    return req


def test_in_dialog_requests_go_to_the_dialog_owner_and_others_are_481(h: Harness) -> None:
    dev = h.device()
    got: list[tuple[str, str]] = []

    def owner(req: Request, tx: ServerTransaction, source: Addr) -> None:
        got.append((req.method, from_header(req).tag or ""))
        h.router.respond(tx, make_response(req, 200))

    dialog = DialogId("call-1", "ours", "theirs")
    h.router.add_dialog(dialog, owner)
    assert dev.exchange(_in_dialog(dev, "INFO", "call-1", "ours", "theirs")).status == 200
    # Same Call-ID, another tag: not this dialog (RFC 3261 §12.2.2).
    assert dev.exchange(_in_dialog(dev, "BYE", "call-1", "ours", "other")).status == 481
    # A method the dialog was not registered for goes on to the method registry.
    assert dev.exchange(_in_dialog(dev, "INVITE", "call-1", "ours", "theirs")).status == 603
    assert dev.exchange(_in_dialog(dev, "BYE", "call-1", "ours", "theirs")).status == 200
    assert got == [("INFO", "theirs"), ("BYE", "theirs")]
    h.router.remove_dialog(dialog)
    h.router.remove_dialog(dialog)  # both ends may end it: not an error
    assert dev.exchange(_in_dialog(dev, "BYE", "call-1", "ours", "theirs")).status == 481


def test_dialog_methods_are_chosen_by_the_owner(h: Harness) -> None:
    dev = h.device()
    got: list[str] = []

    def owner(req: Request, tx: ServerTransaction, source: Addr) -> None:
        got.append(req.method)
        h.router.respond(tx, make_response(req, 200))

    h.router.add_dialog(DialogId("call-2", "a", "b"), owner, methods=frozenset({"NOTIFY"}))
    assert dev.exchange(_in_dialog(dev, "NOTIFY", "call-2", "a", "b")).status == 200
    assert dev.exchange(_in_dialog(dev, "BYE", "call-2", "a", "b")).status == 481
    assert got == ["NOTIFY"]


def test_router_type_is_what_the_context_holds(h: Harness) -> None:
    assert isinstance(h.platform.router, SipRouter)


def test_a_subscription_dialog_gives_its_notify_bodies_the_message_checks_and_listeners(h: Harness) -> None:
    seen: Received = []
    h.router.on_manscdp("Notify", "Alarm", lambda device_id, msg: seen.append((device_id, msg)))
    dev = h.registered_device()
    h.router.add_dialog(DialogId("sub-1", "ours", "theirs"), h.router.handle_manscdp, methods=frozenset({"NOTIFY"}))
    notify = _in_dialog(dev, "NOTIFY", "sub-1", "ours", "theirs")
    notify.headers.add("Event", "Alarm")
    notify.headers.add("Content-Type", "Application/MANSCDP+xml")
    notify.body = _alarm(11)
    assert dev.exchange(notify).status == 200
    assert [m.sn for _, m in seen] == [11]
    stranger = h.device(addr=("UDP", "198.51.100.9", 5070))
    h.attach(stranger)
    forged = _in_dialog(stranger, "NOTIFY", "sub-1", "ours", "theirs")
    forged.headers.add("Event", "Alarm")
    forged.headers.add("Content-Type", "Application/MANSCDP+xml")
    forged.body = _alarm(12)
    assert stranger.exchange(forged).status == 403
    assert len(seen) == 1
