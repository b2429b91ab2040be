"""The sans-IO subscriber (sip.subscription): RFC 6665 rules with a stepped clock."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from sip.dialog import DialogId
from sip.errors import SipParseError
from sip.message import Headers, Request, Response, make_response
from sip.subscription import (
    DialogClosed,
    DialogOpened,
    SendRequest,
    StateChanged,
    SubscribeTarget,
    Subscription,
    parse_subscription_state,
)

DEVICE = "34020000001320000001"


def target(expires: int = 100) -> SubscribeTarget:
    return SubscribeTarget(
        request_uri=f"sip:{DEVICE}@127.0.0.1:5070", from_uri="sip:34020000002000000001@3402000000",
        to_uri=f"sip:{DEVICE}@3402000000", contact="<sip:34020000002000000001@127.0.0.1:5060>",
        event="Catalog", expires=expires, body=lambda: b"<Query/>",
    )


class Peer:
    """The device's side, enough to answer SUBSCRIBEs and send NOTIFYs."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.tag = "devtag"
        self.cseq = 0

    def sent(self) -> list[SendRequest]:
        return [o for o in self.sub.take_outputs() if isinstance(o, SendRequest)]

    def answer(self, send: SendRequest, status: int, now: float, *, expires: int | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        extra = list(headers or [])
        if expires is not None:
            extra.append(("Expires", str(expires)))
        if 200 <= status < 300:
            extra.append(("Contact", f"<sip:{DEVICE}@127.0.0.1:5070>"))
        resp = make_response(send.request, status, to_tag=self.tag, headers=extra)
        self.sub.on_response(send.token, resp, now)

    def notify(self, initial: Request, state: str, now: float) -> int | None:
        self.cseq += 1
        h = Headers()
        h.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKn" + str(self.cseq))
        h.add("From", f"<sip:{DEVICE}@3402000000>;tag={self.tag}")
        h.add("To", initial.headers.get("From") or "")
        h.add("Call-ID", initial.call_id)
        h.add("CSeq", f"{self.cseq} NOTIFY")
        h.add("Contact", f"<sip:{DEVICE}@127.0.0.1:5070>")
        h.add("Event", "Catalog")
        h.add("Subscription-State", state)
        return self.sub.on_notify(Request(headers=h, method="NOTIFY", uri="sip:p@127.0.0.1:5060"), now)


def states(outputs: Sequence[object]) -> list[str]:
    return [o.state for o in outputs if isinstance(o, StateChanged)]


def started(expires: int = 100) -> tuple[Subscription, Peer, SendRequest]:
    sub = Subscription(rng=random.Random(1))
    peer = Peer(sub)
    sub.start(0.0, target(expires))
    out = sub.take_outputs()
    sends = [o for o in out if isinstance(o, SendRequest)]
    assert len(sends) == 1 and sub.state == "subscribing" and sub.api_state == "pending"
    return sub, peer, sends[0]


def test_initial_subscribe_carries_event_expires_accept_and_the_query() -> None:
    _sub, _peer, send = started()
    req = send.request
    assert req.method == "SUBSCRIBE"
    assert req.headers.get("Event") == "Catalog"
    assert req.headers.get("Expires") == "100"
    assert req.headers.get("Accept") == "Application/MANSCDP+xml"
    assert req.headers.get("Content-Type") == "Application/MANSCDP+xml"
    assert req.body == b"<Query/>"
    assert ";tag=" in (req.headers.get("From") or "") and ";tag=" not in (req.headers.get("To") or "")


def test_2xx_establishes_and_refreshes_at_80_percent_of_the_granted_expiry() -> None:
    sub, peer, send = started(100)
    peer.answer(send, 200, 1.0, expires=50)
    out = sub.take_outputs()
    assert any(isinstance(o, DialogOpened) for o in out) and states(out) == ["active"]
    assert sub.expires_at == 51.0 and sub.next_timer() == pytest.approx(41.0)
    sub.on_timer(40.9)
    assert peer.sent() == []
    sub.on_timer(41.0)
    refresh = peer.sent()
    assert len(refresh) == 1
    r = refresh[0].request
    assert r.method == "SUBSCRIBE" and r.call_id == send.request.call_id
    assert "tag=devtag" in (r.headers.get("To") or "") and r.headers.get("Expires") == "100"
    peer.answer(refresh[0], 200, 42.0, expires=100)
    assert sub.state == "active" and sub.expires_at == 142.0 and sub.next_timer() == pytest.approx(122.0)


def test_2xx_without_expires_grants_what_was_asked() -> None:
    sub, peer, send = started(100)
    peer.answer(send, 200, 0.0)
    assert sub.expires_at == 100.0


def test_notify_before_the_2xx_creates_the_dialog() -> None:
    sub, peer, send = started()
    assert peer.notify(send.request, "active;expires=80", 0.5) is None
    out = sub.take_outputs()
    opened = [o for o in out if isinstance(o, DialogOpened)]
    assert opened and opened[0].dialog_id == DialogId(send.request.call_id, sub._tag, "devtag")
    assert sub.state == "active" and sub.expires_at == 80.5 and sub.last_notify_at == 0.5
    peer.answer(send, 200, 0.6, expires=100)  # the late 2xx: same dialog, no second one
    out = sub.take_outputs()
    assert not any(isinstance(o, DialogOpened) for o in out)
    assert sub.state == "active"


def test_notify_pending_then_active() -> None:
    sub, peer, send = started()
    peer.answer(send, 202, 0.0, expires=100)
    assert peer.notify(send.request, "pending;expires=100", 0.1) is None
    assert sub.api_state == "pending"
    assert peer.notify(send.request, "Active;expires=90", 1.0) is None  # vendors capitalise it
    assert sub.api_state == "active" and sub.expires_at == 91.0


def test_notify_without_subscription_state_is_400_and_out_of_sequence_500() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    h = Headers()
    h.add("From", f"<sip:{DEVICE}@3402000000>;tag=devtag")
    h.add("To", send.request.headers.get("From") or "")
    h.add("Call-ID", send.request.call_id)
    h.add("CSeq", "5 NOTIFY")
    assert sub.on_notify(Request(headers=h, method="NOTIFY", uri="sip:p@h"), 1.0) == 400
    peer.cseq = 10
    assert peer.notify(send.request, "active", 1.0) is None
    peer.cseq = 3
    assert peer.notify(send.request, "active", 1.0) == 500


def test_terminated_timeout_resubscribes_at_once_then_backs_off() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    assert peer.notify(send.request, "terminated;reason=timeout", 10.0) is None
    out = sub.take_outputs()
    assert any(isinstance(o, DialogClosed) for o in out)
    again = [o for o in out if isinstance(o, SendRequest)]
    assert len(again) == 1 and again[0].request.call_id != send.request.call_id
    assert "tag=" not in (again[0].request.headers.get("To") or "")
    # It keeps being terminated at once: the next attempt waits the back-off.
    peer.answer(again[0], 200, 10.5, expires=100)
    sub.take_outputs()
    # A successful 2xx resets the count; a terminated NOTIFY right after is "at once" again.
    assert peer.notify(again[0].request, "terminated;reason=deactivated", 11.0) is None
    third = peer.sent()
    assert len(third) == 1
    peer.answer(third[0], 489, 11.5)  # now the device refuses: the second failure in a row backs off
    assert sub.state == "failed" and sub.status == 489
    assert sub.next_timer() == pytest.approx(11.5 + 10.0)
    sub.on_timer(21.5)
    fourth = peer.sent()
    assert len(fourth) == 1
    peer.answer(fourth[0], 489, 22.0)
    assert sub.next_timer() == pytest.approx(22.0 + 20.0)  # doubled


def test_terminated_rejected_is_not_retried_until_restart() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    peer.notify(send.request, "terminated;reason=rejected", 5.0)
    assert sub.state == "failed" and sub.reason == "terminated: rejected"
    assert peer.sent() == [] and sub.next_timer() is None
    sub.restart(50.0)  # the device registered again
    assert len(peer.sent()) == 1 and sub.state == "subscribing"


def test_probation_waits_retry_after() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    peer.notify(send.request, "terminated;reason=probation;retry-after=30", 5.0)
    assert peer.sent() == [] and sub.next_timer() == 35.0
    sub.on_timer(35.0)
    assert len(peer.sent()) == 1


def test_4xx_fails_with_the_reason_and_retries_with_back_off() -> None:
    sub, peer, send = started()
    peer.answer(send, 403, 1.0)
    out = sub.take_outputs()
    assert states(out) == ["failed"]
    assert sub.api_state == "failed" and sub.status == 403 and sub.reason == "Forbidden"
    assert sub.next_timer() == 6.0


def test_no_answer_fails_with_408() -> None:
    sub, _peer, send = started()
    sub.on_response(send.token, None, 32.0)
    assert sub.state == "failed" and sub.status == 408


def test_refresh_481_starts_a_new_subscription() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    sub.on_timer(80.0)
    refresh = peer.sent()[0]
    peer.answer(refresh, 481, 80.1)
    out = sub.take_outputs()
    assert any(isinstance(o, DialogClosed) for o in out)
    new = [o for o in out if isinstance(o, SendRequest)]
    assert len(new) == 1 and new[0].request.call_id != send.request.call_id


def test_refresh_failure_keeps_it_until_expiry_then_resubscribes() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    sub.on_timer(80.0)
    peer.answer(peer.sent()[0], 500, 80.0)
    assert sub.state == "active" and sub.status == 500
    assert sub.next_timer() == 85.0  # retried with the back-off
    sub.on_timer(85.0)
    peer.answer(peer.sent()[0], 500, 85.0)
    assert sub.next_timer() == 95.0
    sub.on_timer(95.0)
    peer.answer(peer.sent()[0], 500, 95.0)
    assert sub.next_timer() == 100.0  # never past the expiry
    sub.on_timer(100.0)
    out = sub.take_outputs()
    assert "failed" in states(out)
    assert len([o for o in out if isinstance(o, SendRequest)]) == 1  # a new subscription


def test_423_retries_with_min_expires() -> None:
    sub, peer, send = started(100)
    peer.answer(send, 423, 0.0, headers=[("Min-Expires", "600")])
    again = peer.sent()
    assert len(again) == 1 and again[0].request.headers.get("Expires") == "600"


def test_unsubscribe_sends_expires_0_and_lingers_for_the_final_notify() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    sub.stop(10.0)
    out = sub.take_outputs()
    unsub = [o for o in out if isinstance(o, SendRequest)]
    assert len(unsub) == 1 and unsub[0].request.headers.get("Expires") == "0"
    assert sub.api_state == "off" and not any(isinstance(o, DialogClosed) for o in out)
    assert sub.awaiting and not sub.idle
    peer.answer(unsub[0], 200, 10.1, expires=0)
    assert not sub.awaiting and not sub.idle  # the final NOTIFY is awaited in the dialog
    assert peer.notify(send.request, "terminated;reason=timeout", 10.2) is None
    out = sub.take_outputs()
    assert any(isinstance(o, DialogClosed) for o in out)
    assert sub.state == "off" and sub.next_timer() is None and peer.sent() == []
    assert sub.idle  # nothing left: the caller may drop it


def test_unsubscribe_without_final_notify_closes_after_linger() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    sub.take_outputs()
    sub.stop(10.0)
    sub.take_outputs()
    assert sub.next_timer() == 42.0
    sub.on_timer(42.0)
    assert any(isinstance(o, DialogClosed) for o in sub.take_outputs())


def test_stop_while_subscribing_unsubscribes_what_the_device_accepts() -> None:
    sub, peer, send = started()
    sub.stop(1.0)
    assert sub.state == "off"
    assert sub.awaiting and not sub.idle  # the initial SUBSCRIBE's answer may still open a subscription
    peer.answer(send, 200, 1.5, expires=100)
    unsub = peer.sent()
    assert len(unsub) == 1 and unsub[0].request.headers.get("Expires") == "0"
    peer.answer(unsub[0], 200, 1.6, expires=0)
    assert sub.idle


def test_parse_subscription_state() -> None:
    s = parse_subscription_state("terminated;reason=Timeout;retry-after=5")
    assert (s.state, s.reason, s.retry_after) == ("terminated", "timeout", 5)
    assert parse_subscription_state("active;expires=3600").expires == 3600
    for bad in (None, "", "bogus", "active;expires=x"):
        with pytest.raises(SipParseError):
            parse_subscription_state(bad)


def test_late_answer_to_a_replaced_subscribe_is_ignored() -> None:
    sub, peer, send = started()
    sub.restart(1.0)
    newer = peer.sent()[0]
    peer.answer(send, 403, 2.0)
    assert sub.state == "subscribing"
    peer.answer(newer, 200, 2.0, expires=100)
    assert sub.state == "active"
    assert isinstance(newer.request, Request) and not isinstance(newer.request, Response)


def test_a_notify_with_a_malformed_contact_is_400() -> None:
    sub, peer, send = started()
    peer.answer(send, 200, 0.0, expires=100)
    h = Headers()
    h.add("From", f"<sip:{DEVICE}@3402000000>;tag=devtag")
    h.add("To", send.request.headers.get("From") or "")
    h.add("Call-ID", send.request.call_id)
    h.add("CSeq", "5 NOTIFY")
    h.add("Contact", "<not a uri>")
    h.add("Subscription-State", "active")
    assert sub.on_notify(Request(headers=h, method="NOTIFY", uri="sip:p@h"), 1.0) == 400
