"""The device-side user agent core (sip/useragent.py), driven with a stepped clock.

A small in-memory registrar on ``sip.auth.DigestServer`` answers the
REGISTERs the session asks to send; time moves only when a test says so.
"""

from __future__ import annotations

import math
import random

import pytest

from sip import manscdp, sdp
from sip.auth import DigestServer, ha1, parse_auth_header
from sip.message import Request, Response, make_response
from sip.useragent import (
    Deregistered,
    KeepaliveDue,
    KeepaliveFailed,
    MessageFactory,
    NatKeepaliveDue,
    OutgoingRegister,
    QueryAnswers,
    Registered,
    RegistrationConfig,
    RegistrationFailed,
    RegistrationSession,
    RegistrationState,
    RetryPolicy,
    Unregistered,
    answer_invite,
    invite_refusal,
)

DEVICE = "34020000001320000001"
SERVER = "34020000002000000001"
REGISTRAR = f"sip:{SERVER}@127.0.0.1:5060"
PASSWORD = "12345678"
CONTACT = f"sip:{DEVICE}@10.0.0.5:5070"


class Registrar:
    """Challenges, checks the digest (nonce good for ``ttl`` s) and grants ``grant`` s."""

    def __init__(self, *, ttl: float = 300.0, grant: int = 100, qop: bool = True) -> None:
        self.server = DigestServer("3402000000", b"secret", nonce_ttl=ttl, qop=qop)
        self.rng = random.Random(3)
        self.grant = grant
        self.seen: list[Request] = []

    def answer(self, req: Request, now: float) -> Response:
        self.seen.append(req)
        auth = req.headers.get("Authorization")
        if auth is None:
            return self._challenge(req, now, stale=False)
        result = self.server.verify(
            auth, "REGISTER", now, lambda user, algo: ha1(user, "3402000000", PASSWORD, algo)
        )
        if result.stale:
            return self._challenge(req, now, stale=True)
        if not result.ok:
            return make_response(req, 403)
        return make_response(req, 200, headers=[("Expires", str(self.grant))])

    def _challenge(self, req: Request, now: float, *, stale: bool) -> Response:
        value = self.server.challenge(now, self.rng, stale=stale)
        return make_response(req, 401, headers=[("WWW-Authenticate", value)])


def session(**options: object) -> RegistrationSession:
    values: dict[str, object] = {"password": PASSWORD, **options}
    config = RegistrationConfig(
        user=DEVICE, domain="3402000000", registrar_uri=REGISTRAR,
        **values,  # type: ignore[arg-type]
    )
    return RegistrationSession(config, random.Random(1), lambda: CONTACT)


def exchange(ua: RegistrationSession, registrar: Registrar, now: float) -> list[object]:
    """Answer every REGISTER the session wants sent until it is quiet; return its events."""
    events: list[object] = []
    while sent := ua.take_requests():
        for out in sent:
            ua.handle_answer(out.token, registrar.answer(out.request, now), now)
    events.extend(ua.take_events())
    return events


def auth_params(req: Request) -> dict[str, str]:
    return parse_auth_header(req.headers.get("Authorization") or "")[1]


def test_register_answers_the_digest_challenge() -> None:
    ua, reg = session(expires=3600), Registrar(grant=100)
    ua.start(0.0)
    events = exchange(ua, reg, 0.0)
    first, second = reg.seen
    assert first.headers.get("Authorization") is None
    assert first.headers.get("Expires") == "3600"
    assert first.headers.get("Contact") == f"<{CONTACT}>"
    assert first.call_id == second.call_id and first.call_id.endswith("@10.0.0.5")
    assert [first.headers.get("CSeq"), second.headers.get("CSeq")] == ["1 REGISTER", "2 REGISTER"]
    assert auth_params(second)["nc"] == "00000001"
    assert events == [Registered(100)]
    assert ua.registered and ua.registered_until == 100.0
    assert ua.state is RegistrationState.REGISTERED
    # The keepalive (60 s) comes before the refresh (0.8 x 100 s).
    assert ua.next_timer() == 60.0


def test_refresh_at_a_fraction_of_the_grant_reuses_the_nonce() -> None:
    ua, reg = session(keepalive_interval=1000.0), Registrar(grant=100)
    ua.start(0.0)
    exchange(ua, reg, 0.0)
    assert ua.next_timer() == 80.0
    ua.handle_timer(80.0)
    (out,) = ua.take_requests()
    assert out.request.call_id == reg.seen[0].call_id
    assert out.request.headers.get("CSeq") == "3 REGISTER"
    assert auth_params(out.request)["nc"] == "00000002"
    assert auth_params(out.request)["nonce"] == auth_params(reg.seen[1])["nonce"]
    ua.handle_answer(out.token, reg.answer(out.request, 80.0), 80.0)
    assert ua.take_events() == [Registered(100)]
    assert ua.registered_until == 180.0 and ua.next_timer() == 160.0


def test_a_stale_nonce_is_answered_again_at_once() -> None:
    ua, reg = session(keepalive_interval=1000.0), Registrar(grant=1000, ttl=300.0)
    ua.start(0.0)
    exchange(ua, reg, 0.0)
    ua.handle_timer(800.0)  # refresh after the nonce aged out
    events = exchange(ua, reg, 800.0)
    assert [r.headers.get("Authorization") is None for r in reg.seen[2:]] == [False, False]
    assert auth_params(reg.seen[3])["nonce"] != auth_params(reg.seen[2])["nonce"]
    assert auth_params(reg.seen[3])["nc"] == "00000001"
    assert events == [Registered(1000)]
    assert ua.registered  # never dropped in between


def test_a_stale_nonce_loop_is_a_failure() -> None:
    ua = session(max_stale_retries=2, retry=RetryPolicy(rejected=30.0, factor=1.0))
    ua.start(0.0)
    (out,) = ua.take_requests()
    stale = DigestServer("3402000000", b"s").challenge(0.0, random.Random(0), stale=True)
    for _ in range(3):
        ua.handle_answer(out.token, make_response(
            out.request, 401, headers=[("WWW-Authenticate", stale)]), 0.0)
        sent = ua.take_requests()
        if sent:
            (out,) = sent
    events = ua.take_events()
    assert events[0] == RegistrationFailed("stale nonce loop", 401, 30.0, 1)


def test_wrong_password_is_a_failure_not_a_loop() -> None:
    ua, reg = session(password="wrong"), Registrar()
    ua.start(0.0)
    events = exchange(ua, reg, 0.0)
    assert len(reg.seen) == 2
    assert events == [RegistrationFailed("403 Forbidden", 403, 30.0, 1)]
    assert ua.state is RegistrationState.BACKING_OFF
    assert ua.next_timer() == 30.0


def test_back_off_grows_by_the_factor_up_to_the_cap_and_resets_on_success() -> None:
    ua = session(retry=RetryPolicy(rejected=10.0, factor=2.0, cap=35.0))
    now = 0.0
    ua.start(now)
    waits = []
    for _ in range(4):
        (out,) = ua.take_requests()
        ua.handle_answer(out.token, make_response(out.request, 503), now)
        (failed,) = [e for e in ua.take_events() if isinstance(e, RegistrationFailed)]
        waits.append(failed.retry_in)
        timer = ua.next_timer()
        assert timer == now + failed.retry_in
        now = timer
        ua.handle_timer(now)
    assert waits == [10.0, 20.0, 35.0, 35.0]
    assert ua.state is RegistrationState.REGISTERING
    reg = Registrar()
    events = exchange(ua, reg, now)
    assert isinstance(events[-1], Registered)
    # A failure after a success starts from the base again.
    ua.handle_timer(now + 80.0)  # refresh... and the keepalive
    (out,) = ua.take_requests()
    ua.handle_answer(out.token, make_response(out.request, 503), now + 80.0)
    assert [e.retry_in for e in ua.take_events() if isinstance(e, RegistrationFailed)] == [10.0]


def test_retry_policy_delay() -> None:
    fixed = RetryPolicy(factor=1.0, cap=math.inf)
    assert [fixed.delay(30.0, n) for n in (1, 2, 9)] == [30.0, 30.0, 30.0]
    assert RetryPolicy(factor=2.0, cap=600.0).delay(5.0, 5000) == 600.0


def test_no_answer_retries_after_its_own_base() -> None:
    ua = session(retry=RetryPolicy(rejected=30.0, no_answer=5.0, factor=1.0))
    ua.start(0.0)
    (out,) = ua.take_requests()
    ua.handle_answer(out.token, None, 32.0)
    assert ua.take_events() == [RegistrationFailed("no answer", None, 5.0, 1)]
    assert ua.next_timer() == 37.0
    ua.handle_timer(37.0)
    assert len(ua.take_requests()) == 1


def test_an_answer_to_a_superseded_attempt_is_ignored() -> None:
    ua = session()
    ua.start(0.0)
    (old,) = ua.take_requests()
    ua.handle_answer(old.token, None, 1.0)
    ua.handle_timer(100.0)
    ua.take_events()
    (new,) = ua.take_requests()
    ua.handle_answer(old.token, make_response(old.request, 200), 100.0)
    assert not ua.registered and ua.take_events() == []
    assert new.token != old.token


def registered_session(**options: object) -> tuple[RegistrationSession, Registrar]:
    ua, reg = session(**options), Registrar(grant=3600)
    ua.start(0.0)
    exchange(ua, reg, 0.0)
    assert ua.registered
    return ua, reg


def test_keepalive_every_interval() -> None:
    ua, _ = registered_session(keepalive_interval=60.0)
    ua.handle_timer(60.0)
    assert ua.take_events() == [KeepaliveDue()]
    ua.keepalive_answered(200, 60.0)
    assert ua.next_timer() == 120.0


def test_re_register_at_once_when_a_keepalive_gets_404() -> None:
    ua, reg = registered_session()
    call_id = reg.seen[0].call_id
    ua.handle_timer(60.0)
    ua.take_events()
    ua.keepalive_answered(404, 60.0)
    assert ua.take_events() == [
        KeepaliveFailed(404, 0, True), Deregistered("keepalive answered 404"),
    ]
    (out,) = ua.take_requests()
    assert out.request.call_id != call_id
    assert out.request.headers.get("CSeq") == "1 REGISTER"
    assert out.request.headers.get("Authorization") is None
    ua.handle_answer(out.token, reg.answer(out.request, 60.0), 60.0)
    assert exchange(ua, reg, 60.0) == [Registered(3600)]


def test_re_register_statuses_are_configurable() -> None:
    ua, _ = registered_session(reregister_statuses=frozenset({401, 403, 404}))
    ua.keepalive_answered(401, 60.0)
    assert ua.take_events()[0] == KeepaliveFailed(401, 0, True)
    plain, _ = registered_session()
    plain.keepalive_answered(401, 60.0)
    assert plain.take_events() == [KeepaliveFailed(401, 1, False)]


def test_lost_keepalives_register_again_after_the_limit() -> None:
    ua, _ = registered_session(keepalive_max_misses=3)
    for n in (1, 2):
        ua.keepalive_answered(None, 60.0 * n)
        assert ua.take_events() == [KeepaliveFailed(None, n, False)]
        assert ua.take_requests() == []
    ua.keepalive_answered(408, 180.0)
    assert ua.take_events() == [KeepaliveFailed(408, 3, True), Deregistered("3 keepalives lost")]
    assert len(ua.take_requests()) == 1


def test_nat_keepalive_only_when_configured() -> None:
    ua, _ = registered_session(nat_keepalive_interval=17.0)
    assert ua.next_timer() == 17.0
    ua.handle_timer(17.0)
    assert ua.take_events() == [NatKeepaliveDue()]
    plain, _ = registered_session()
    assert plain.next_timer() == 60.0


def test_pause_keeps_only_the_expiry_and_resume_sends_a_keepalive() -> None:
    ua, _ = registered_session()
    ua.pause(10.0)
    assert ua.next_timer() == 3600.0
    ua.resume(20.0)
    assert ua.take_events() == [KeepaliveDue()]
    ua.pause(30.0)
    ua.handle_timer(3600.0)
    assert ua.take_events() == [Deregistered("expired")]
    ua.resume(3700.0)
    assert len(ua.take_requests()) == 1


def test_unregister_sends_expires_zero_and_reports_once() -> None:
    ua, reg = registered_session()
    assert ua.unregister(5.0) is True
    assert ua.unregister(5.0) is True
    assert ua.state is RegistrationState.UNREGISTERING
    (out,) = ua.take_requests()
    assert out.request.headers.get("Expires") == "0"
    ua.handle_answer(out.token, reg.answer(out.request, 5.0), 5.0)
    assert ua.take_events() == [Deregistered("unregistered"), Unregistered(True)]
    assert ua.next_timer() is None


def test_unregister_with_nothing_registered() -> None:
    assert session().unregister(0.0) is False


def test_interval_too_brief_asks_again_with_min_expires() -> None:
    ua = session(expires=30)
    ua.start(0.0)
    (out,) = ua.take_requests()
    ua.handle_answer(out.token, make_response(out.request, 423, headers=[("Min-Expires", "60")]), 0.0)
    (again,) = ua.take_requests()
    assert again.request.headers.get("Expires") == "60"


def test_exosip_answers_the_first_of_two_challenges() -> None:
    ua, reg = session(double_unauth_register=True, numeric_ids=True), Registrar()
    ua.start(0.0)
    assert exchange(ua, reg, 0.0) == [Registered(100)]
    assert [r.headers.get("Authorization") is None for r in reg.seen] == [True, True, False]
    assert reg.seen[0].call_id.isdigit()
    first_nonce = parse_auth_header(reg.server.challenge(0.0, random.Random(3)))[1]["nonce"]
    assert auth_params(reg.seen[2])["nonce"] == first_nonce


def test_extra_headers_and_user_agent_end_the_register() -> None:
    ua = session(user_agent="ua/1", extra_headers=(("Allow", "INVITE"),))
    ua.start(0.0)
    (out,) = ua.take_requests()
    assert isinstance(out, OutgoingRegister)
    names = [name for name, _ in out.request.headers]
    assert names[-3:] == ["User-Agent", "Expires", "Allow"]


# -- answering requests --------------------------------------------------------


def message(body: bytes, content_type: str = "Application/MANSCDP+xml") -> Request:
    req = Request(method="MESSAGE", uri=f"sip:{DEVICE}@3402000000")
    req.headers.add("Content-Type", content_type)
    req.body = body
    return req


QUERY = (b'<?xml version="1.0" encoding="GB2312"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n'
         b"<SN>7</SN>\r\n<DeviceID>" + DEVICE.encode() + b"</DeviceID>\r\n</Query>\r\n")


def test_queries_go_to_the_answerer_of_their_cmd_type_case_insensitively() -> None:
    answers = QueryAnswers()
    answers.register("catalog", lambda q: [f"catalog {q.sn}".encode()])
    assert "CATALOG" in answers
    got = answers.answer_message(message(QUERY), "GB2312")
    assert (got.status, got.bodies) == (200, (b"catalog 7",))
    with pytest.raises(ValueError, match="already registered"):
        answers.register("Catalog", lambda q: [])


def test_unknown_query_gets_200_and_no_answer() -> None:
    got = QueryAnswers().answer_message(message(QUERY), "GB2312")
    assert (got.status, got.bodies) == (200, ())


def test_not_manscdp_is_415_and_garbage_is_400() -> None:
    answers = QueryAnswers()
    got = answers.answer_message(message(QUERY, "text/plain"), "GB2312")
    assert (got.status, got.headers) == (415, (("Accept", "Application/MANSCDP+xml"),))
    assert answers.answer_message(message(b"<Query><CmdType>"), "GB2312").status == 400


def test_notifications_get_200_and_no_answer() -> None:
    body = manscdp.encode_keepalive(3, DEVICE, charset="GB2312")
    answers = QueryAnswers()
    answers.register("Keepalive", lambda q: [b"never"])
    got = answers.answer_message(message(body), "GB2312")
    assert (got.status, got.bodies) == (200, ())


OFFER = (b"v=0\r\no=34020000002000000001 0 0 IN IP4 10.0.0.1\r\ns=Play\r\nc=IN IP4 10.0.0.1\r\n"
         b"t=0 0\r\nm=video 30000 RTP/AVP 96\r\na=recvonly\r\na=rtpmap:96 PS/90000\r\ny=0100000001\r\n")


def invite(to_tag: str = "") -> Request:
    req = Request(method="INVITE", uri=f"sip:{DEVICE}@3402000000")
    h = req.headers
    h.add("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1")
    h.add("From", f"<sip:{SERVER}@3402000000>;tag=abc")
    h.add("To", f"<sip:{DEVICE}@3402000000>{to_tag}")
    h.add("Call-ID", "call-1")
    h.add("CSeq", "1 INVITE")
    h.add("Contact", f"<sip:{SERVER}@10.0.0.1:5060>")
    h.add("Content-Type", "application/sdp")
    req.body = OFFER
    return req


def test_invite_refusals() -> None:
    assert invite_refusal(invite(), active_calls=(), sessions=0, max_sessions=1) is None
    busy = invite_refusal(invite(), active_calls=(), sessions=1, max_sessions=1)
    assert busy is not None and busy.status == 486
    re_invite = invite(";tag=x")
    known = invite_refusal(re_invite, active_calls={"call-1"}, sessions=1, max_sessions=9)
    unknown = invite_refusal(re_invite, active_calls=(), sessions=0, max_sessions=9)
    assert (known and known.status, unknown and unknown.status) == (488, 481)


def test_answer_invite_builds_the_200_and_its_dialog_around_the_hook() -> None:
    def answer(offer: sdp.SessionDescription) -> sdp.SessionDescription:
        return offer

    got = answer_invite(invite(), answer_sdp=answer, contact=CONTACT, new_tag=lambda: "t1")
    assert got.status == 200 and got.response is not None and got.dialog is not None
    assert got.response.headers.get("Contact") == f"<{CONTACT}>"
    assert got.response.body == sdp.parse(OFFER).serialize()

    def refuse(offer: sdp.SessionDescription) -> sdp.SessionDescription:
        raise sdp.SdpError("no PS")

    def broken(offer: sdp.SessionDescription) -> sdp.SessionDescription:
        raise OSError("no port")

    assert answer_invite(invite(), answer_sdp=refuse, contact=CONTACT, new_tag=lambda: "t").status == 488
    assert answer_invite(invite(), answer_sdp=broken, contact=CONTACT, new_tag=lambda: "t").status == 500


def test_messages_are_transactions_of_their_own_with_rising_cseq() -> None:
    config = RegistrationConfig(user=DEVICE, domain="3402000000", registrar_uri=REGISTRAR,
                                password=PASSWORD, user_agent="ua/1")
    factory = MessageFactory(config, random.Random(5), lambda: "10.0.0.5")
    first, second = factory.message(b"<a/>"), factory.message(b"<b/>")
    assert first.call_id != second.call_id and first.call_id.endswith("@10.0.0.5")
    assert [first.headers.get("CSeq"), second.headers.get("CSeq")] == ["1 MESSAGE", "2 MESSAGE"]
    assert first.headers.get("To") == f"<{REGISTRAR}>"
    assert first.headers.get("Content-Type") == "Application/MANSCDP+xml"
    assert (first.uri, first.body) == (REGISTRAR, b"<a/>")
    assert [factory.next_sn(), factory.next_sn()] == [1, 2]
