"""RFC 3261 §12 dialogs: creation, in-dialog requests, checks, registry, and two endpoints in memory.

The INVITE / 200 pairs copy the shape of the eXosip camera exchange in
``/work/shared/vectors/sip-wire/exosip-device-udp.log`` (Subject, SDP with y=).
"""

from __future__ import annotations

import random

import pytest

from sip.dialog import Dialog, DialogId, Dialogs, DialogState
from sip.endpoint import Addr, Endpoint, EndpointEvent, RequestReceived, ResponseReceived
from sip.errors import LocalSipError, SipParseError
from sip.headers import from_header, to_header
from sip.message import Request, Response, make_response
from sip.parser import parse_datagram

DEVICE_ID = "34020000001320000001"
PLATFORM_ID = "34020000002000000001"
CALL_ID = "fbea8d622c8f461f@127.0.0.1"
PLATFORM_CONTACT = f"<sip:{PLATFORM_ID}@127.0.0.1:5060>"
DEVICE_CONTACT = f"<sip:{DEVICE_ID}@127.0.0.1:5070>"

OFFER = (
    b"v=0\r\n"
    b"o=34020000002000000001 0 0 IN IP4 127.0.0.1\r\n"
    b"s=Play\r\n"
    b"u=34020000001320000001:0\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=video 30000 RTP/AVP 96 97 98\r\n"
    b"a=recvonly\r\n"
    b"a=rtpmap:96 PS/90000\r\n"
    b"a=rtpmap:97 MPEG4/90000\r\n"
    b"a=rtpmap:98 H264/90000\r\n"
    b"y=0200000329\r\n"
)
ANSWER = (
    b"v=0\r\n"
    b"o=34020000001320000001 0 0 IN IP4 127.0.0.1\r\n"
    b"s=Play\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=video 17724 RTP/AVP 96\r\n"
    b"a=sendonly\r\n"
    b"a=rtpmap:96 PS/90000\r\n"
    b"y=0200000329\r\n"
)


def invite(*, record_route: tuple[str, ...] = (), uri_scheme: str = "sip") -> Request:
    req = Request(method="INVITE", uri=f"{uri_scheme}:{DEVICE_ID}@127.0.0.1:5070", body=OFFER)
    req.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK5a6a27a199")
    for rr in record_route:
        req.headers.add("Record-Route", rr)
    req.headers.add("From", f"<sip:{PLATFORM_ID}@3402000000>;tag=ac8147e8")
    req.headers.add("To", f"<sip:{DEVICE_ID}@3402000000>")
    req.headers.add("Call-ID", CALL_ID)
    req.headers.add("CSeq", "104 INVITE")
    req.headers.add("Max-Forwards", "70")
    req.headers.add("Contact", PLATFORM_CONTACT)
    req.headers.add("Subject", f"{DEVICE_ID}:0200000329,{PLATFORM_ID}:0")
    req.headers.add("Content-Type", "APPLICATION/SDP")
    return req


def answer(
    req: Request,
    status: int = 200,
    *,
    tag: str | None = "1444524996",
    contact: str | None = DEVICE_CONTACT,
    record_route: tuple[str, ...] = (),
) -> Response:
    headers = [("Record-Route", rr) for rr in record_route]
    if contact is not None:
        headers.append(("Contact", contact))
    body = ANSWER if status == 200 else b""
    if body:
        headers.append(("Content-Type", "APPLICATION/SDP"))
    return make_response(req, status, to_tag=tag, headers=headers, body=body)


def uac_dialog(record_route: tuple[str, ...] = ()) -> Dialog:
    req = invite()
    return Dialog.from_uac(req, answer(req, record_route=record_route))


def device_request(dialog_of_device: Dialog, method: str) -> Request:
    """A request the device sends in its dialog, as the platform would receive it."""
    req = dialog_of_device.new_request(method)
    req.headers._items.insert(0, ("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKdev"))
    return req


# -- creation ----------------------------------------------------------------


def test_uac_dialog_from_invite_and_200() -> None:
    req = invite()
    d = Dialog.from_uac(req, answer(req))
    assert d.id == DialogId(CALL_ID, "ac8147e8", "1444524996")
    assert d.state is DialogState.CONFIRMED
    assert d.uac and d.method == "INVITE"
    assert d.local_uri == f"<sip:{PLATFORM_ID}@3402000000>;tag=ac8147e8"
    assert d.remote_uri == f"<sip:{DEVICE_ID}@3402000000>;tag=1444524996"
    assert d.local_seq == 104
    assert d.remote_seq is None
    assert d.remote_target == f"sip:{DEVICE_ID}@127.0.0.1:5070"
    assert d.route_set == []
    assert d.secure is False
    assert d.contact == PLATFORM_CONTACT


def test_uas_dialog_from_received_invite_and_our_200() -> None:
    req = invite()
    d = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    assert d.id == DialogId(CALL_ID, "dev-tag", "ac8147e8")
    assert d.state is DialogState.CONFIRMED
    assert not d.uac
    assert d.local_uri == f"<sip:{DEVICE_ID}@3402000000>;tag=dev-tag"
    assert d.remote_uri == f"<sip:{PLATFORM_ID}@3402000000>;tag=ac8147e8"
    assert d.remote_seq == 104
    assert d.local_seq == 0
    assert d.remote_target == f"sip:{PLATFORM_ID}@127.0.0.1:5060"
    assert d.contact == DEVICE_CONTACT


def test_sips_request_uri_makes_the_dialog_secure() -> None:
    req = invite(uri_scheme="sips")
    assert Dialog.from_uac(req, answer(req)).secure
    assert Dialog.from_uas(req, answer(req)).secure


def test_early_dialog_from_180_is_confirmed_by_200() -> None:
    req = invite()
    ringing = answer(req, 180, contact=f"<sip:{DEVICE_ID}@192.0.2.9:5070>")
    d = Dialog.from_uac(req, ringing)
    assert d.state.value == "early"
    assert d.remote_target == f"sip:{DEVICE_ID}@192.0.2.9:5070"
    d.update_from_response(answer(req, 183, contact=f"<sip:{DEVICE_ID}@192.0.2.10:5070>"))
    assert d.state.value == "early"
    assert d.remote_target == f"sip:{DEVICE_ID}@192.0.2.10:5070"
    d.update_from_response(answer(req, record_route=("<sip:proxy.example;lr>",)))
    assert d.state is DialogState.CONFIRMED
    assert d.remote_target == f"sip:{DEVICE_ID}@127.0.0.1:5070"
    assert d.route_set == ["<sip:proxy.example;lr>"]  # recomputed from the 2xx, §13.2.2.4


def test_early_dialog_ends_on_final_failure() -> None:
    req = invite()
    d = Dialog.from_uac(req, answer(req, 183))
    d.update_from_response(answer(req, 486, contact=None))
    assert d.state is DialogState.TERMINATED


def test_creation_misuse_is_a_local_error() -> None:
    req = invite()
    with pytest.raises(LocalSipError, match="no To tag"):
        Dialog.from_uac(req, answer(req, 180, tag=None))
    with pytest.raises(LocalSipError, match="does not create a dialog"):
        Dialog.from_uac(req, answer(req, 100, tag=None))
    with pytest.raises(LocalSipError, match="does not create a dialog"):
        Dialog.from_uac(req, answer(req, 486))
    message = invite()
    message.method = "MESSAGE"
    with pytest.raises(LocalSipError, match="MESSAGE does not create"):
        Dialog.from_uas(message, answer(message))
    with pytest.raises(LocalSipError, match="no To tag"):
        Dialog.from_uas(req, answer(req, tag=None))
    other = answer(req)
    other.headers.set("Call-ID", "someone-else")
    with pytest.raises(LocalSipError, match="does not answer"):
        Dialog.from_uac(req, other)


def test_malformed_peer_headers_are_parse_errors() -> None:
    req = invite()
    with pytest.raises(SipParseError):
        Dialog.from_uac(req, answer(req, contact='"unterminated <sip:x@y>'))
    with pytest.raises(SipParseError):
        Dialog.from_uac(req, answer(req, record_route=("<sip:proxy.example;lr",)))
    bad = invite()
    bad.headers.set("Contact", "<http://not-sip.example/>")
    with pytest.raises(SipParseError):
        Dialog.from_uas(bad, answer(bad))


def test_missing_contact_falls_back_to_request_uri() -> None:
    req = invite()
    d = Dialog.from_uac(req, answer(req, contact=None))
    assert d.remote_target == req.uri


# -- building requests -------------------------------------------------------


def test_bye_and_info_in_dialog() -> None:
    d = uac_dialog()
    info = d.new_request(
        "INFO",
        body=b"PLAY RTSP/1.0\r\nCSeq: 2\r\nScale: 2.0\r\n\r\n",
        content_type="Application/MANSRTSP",
    )
    assert info.method == "INFO"
    assert info.uri == f"sip:{DEVICE_ID}@127.0.0.1:5070"
    assert info.headers.get("CSeq") == "105 INFO"
    assert from_header(info).tag == "ac8147e8"
    assert to_header(info).tag == "1444524996"
    assert info.call_id == CALL_ID
    assert info.headers.get("Contact") == PLATFORM_CONTACT
    assert info.headers.get("Content-Type") == "Application/MANSRTSP"
    assert "Via" not in info.headers and "Route" not in info.headers
    bye = d.new_request("BYE", headers=[("Reason", 'SIP;cause=200;text="stop"')])
    assert bye.headers.get("CSeq") == "106 BYE"
    assert bye.headers.get("Reason") == 'SIP;cause=200;text="stop"'
    assert d.local_seq == 106
    assert d.state is DialogState.TERMINATED  # §15.1.1
    with pytest.raises(LocalSipError, match="terminated"):
        d.new_request("INFO")


def test_requests_round_trip_through_the_parser() -> None:
    d = uac_dialog()
    bye = d.new_request("BYE")
    bye.headers._items.insert(0, ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"))
    parsed = parse_datagram(bye.serialize())
    assert isinstance(parsed, Request)
    assert parsed.cseq == (105, "BYE")
    assert parsed.uri == bye.uri


def test_uas_first_request_uses_cseq_1() -> None:
    req = invite()
    d = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    bye = d.new_request("BYE")
    assert bye.headers.get("CSeq") == "1 BYE"
    assert bye.uri == f"sip:{PLATFORM_ID}@127.0.0.1:5060"
    assert to_header(bye).tag == "ac8147e8" and from_header(bye).tag == "dev-tag"


def test_callee_may_not_bye_an_early_dialog() -> None:
    req = invite()
    d = Dialog.from_uas(req, answer(req, 180, tag="dev-tag"))
    with pytest.raises(LocalSipError, match="early"):
        d.new_request("BYE")
    caller = Dialog.from_uac(req, answer(req, 180))
    assert caller.new_request("BYE").method == "BYE"  # §15: the caller may


def test_ack_and_cancel_are_not_new_requests() -> None:
    d = uac_dialog()
    for method in ("ACK", "CANCEL"):
        with pytest.raises(LocalSipError):
            d.new_request(method)


def test_ack_for_2xx_reuses_the_invite_cseq() -> None:
    d = uac_dialog(("<sip:p1.example;lr>",))
    ack = d.ack_for(104)
    assert ack.method == "ACK"
    assert ack.headers.get("CSeq") == "104 ACK"
    assert ack.uri == f"sip:{DEVICE_ID}@127.0.0.1:5070"
    assert ack.headers.get_all("Route") == ["<sip:p1.example;lr>"]
    assert ack.headers.get("Max-Forwards") == "70"
    assert "Contact" not in ack.headers
    assert d.local_seq == 104
    assert d.new_request("INFO").headers.get("CSeq") == "105 INFO"


def test_route_set_is_reversed_for_the_uac_only() -> None:
    rrs = ("<sip:p1.example;lr>", "<sip:p2.example;lr>")
    req = invite(record_route=rrs)
    uac = Dialog.from_uac(req, answer(req, record_route=rrs))
    uas = Dialog.from_uas(req, answer(req, record_route=rrs))
    assert uac.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert uas.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    bye = uac.new_request("BYE")
    assert bye.uri == uac.remote_target
    assert bye.headers.get_all("Route") == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
    assert uas.new_request("BYE").headers.get_all("Route") == list(rrs)


def test_record_route_in_one_comma_separated_header() -> None:
    req = invite()
    d = Dialog.from_uac(req, answer(req, record_route=("<sip:p1.example;lr>, <sip:p2.example;lr>",)))
    assert d.route_set == ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]


def test_strict_router_takes_the_request_uri() -> None:
    req = invite()
    d = Dialog.from_uac(
        req, answer(req, record_route=("<sip:p2.example;lr>", "<sip:strict.example;method=INVITE>"))
    )
    info = d.new_request("INFO")
    # RFC 3261 §12.2.1.1: first route (without params not allowed there) is the
    # Request-URI; the remote target goes last in Route.
    assert info.uri == "sip:strict.example"
    assert info.headers.get_all("Route") == [
        "<sip:p2.example;lr>",
        f"<sip:{DEVICE_ID}@127.0.0.1:5070>",
    ]


# -- receiving requests ------------------------------------------------------


def test_in_order_requests_are_accepted_and_out_of_order_get_500() -> None:
    req = invite()
    platform = Dialog.from_uac(req, answer(req, tag="dev-tag"))
    device = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    first = device_request(device, "INFO")
    second = device_request(device, "INFO")
    assert platform.receive_request(second) is None
    assert platform.remote_seq == 2
    assert platform.receive_request(first) == 500
    assert platform.remote_seq == 2
    third = device_request(device, "MESSAGE")
    assert platform.receive_request(third) is None
    assert platform.remote_seq == 3


def test_uas_rejects_lower_cseq_than_the_invite() -> None:
    req = invite()
    device = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    platform = Dialog.from_uac(req, answer(req, tag="dev-tag"))
    platform.local_seq = 50  # below the INVITE's 104: a broken peer
    assert device.receive_request(platform.new_request("INFO")) == 500
    assert device.remote_seq == 104


def test_target_refresh_by_reinvite_and_not_by_info() -> None:
    req = invite()
    platform = Dialog.from_uac(req, answer(req, tag="dev-tag"))
    device = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    device.contact = f"<sip:{DEVICE_ID}@198.51.100.4:5070>"
    info = device_request(device, "INFO")
    assert platform.receive_request(info) is None
    assert platform.remote_target == f"sip:{DEVICE_ID}@127.0.0.1:5070"
    reinvite = device_request(device, "INVITE")
    assert platform.receive_request(reinvite) is None
    assert platform.remote_target == f"sip:{DEVICE_ID}@198.51.100.4:5070"
    assert platform.new_request("INFO").uri == f"sip:{DEVICE_ID}@198.51.100.4:5070"


def test_target_refresh_by_2xx_to_reinvite() -> None:
    d = uac_dialog()
    reinvite = d.new_request("INVITE", body=OFFER, content_type="APPLICATION/SDP")
    reinvite.headers._items.insert(0, ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKre"))
    ok = make_response(reinvite, 200, headers=[("Contact", f"<sip:{DEVICE_ID}@198.51.100.5>")])
    d.update_from_response(ok)
    assert d.state is DialogState.CONFIRMED
    assert d.remote_target == f"sip:{DEVICE_ID}@198.51.100.5"
    d.update_from_response(make_response(reinvite, 488))
    assert d.state is DialogState.CONFIRMED  # a failed re-INVITE keeps the dialog, §14.1


def test_481_to_in_dialog_request_terminates() -> None:
    d = uac_dialog()
    info = d.new_request("INFO")
    info.headers._items.insert(0, ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKi"))
    d.update_from_response(make_response(info, 481))
    assert d.terminated


def test_bye_terminates_and_later_requests_get_481() -> None:
    req = invite()
    platform = Dialog.from_uac(req, answer(req, tag="dev-tag"))
    device = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    assert device.receive_request(platform.new_request("BYE")) is None
    assert device.state is DialogState.TERMINATED
    late = Dialog.from_uac(req, answer(req, tag="dev-tag"))
    late.local_seq = 200
    assert device.receive_request(late.new_request("INFO")) == 481


def test_requests_of_another_dialog_get_481() -> None:
    req = invite()
    device = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    stranger = Dialog.from_uac(req, answer(req, tag="other-tag"))
    info = stranger.new_request("INFO")
    assert not device.matches(info)
    assert device.receive_request(info) == 481
    assert device.receive_request(stranger.ack_for(104)) is None  # an ACK is never answered
    with pytest.raises(LocalSipError):
        device.update_from_response(answer(req, tag="other-tag"))


# -- registry ----------------------------------------------------------------


def test_registry_matches_requests_and_responses() -> None:
    req = invite()
    platform = Dialog.from_uac(req, answer(req, tag="dev-tag"))
    device = Dialog.from_uas(req, answer(req, tag="dev-tag"))
    platform_dialogs, device_dialogs = Dialogs(), Dialogs()
    platform_dialogs.add(platform)
    device_dialogs.add(device)

    bye = platform.new_request("BYE")
    bye.headers._items.insert(0, ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb"))
    assert device_dialogs.find_for_request(bye) is device
    assert platform_dialogs.find_for_request(bye) is None  # tags are the other way round
    ok = make_response(bye, 200)
    assert platform_dialogs.find_for_response(ok) is platform
    assert device_dialogs.find_for_response(ok) is None
    assert device.matches(bye) and platform.matches(ok)
    assert not platform.matches(bye) and not device.matches(ok)
    assert device_dialogs.find_for_request(invite()) is None  # no To tag: outside dialogs

    assert device in device_dialogs and len(device_dialogs) == 1
    device_dialogs.remove(device)
    device_dialogs.remove(device.id)  # twice is fine
    assert device_dialogs.find_for_request(bye) is None and len(device_dialogs) == 0


def test_registry_is_bounded_and_refuses_duplicates() -> None:
    dialogs = Dialogs(max_dialogs=2)
    for tag in ("a", "b"):
        req = invite()
        dialogs.add(Dialog.from_uac(req, answer(req, tag=tag)))
    req = invite()
    with pytest.raises(LocalSipError, match="too many"):
        dialogs.add(Dialog.from_uac(req, answer(req, tag="c")))
    dialogs.remove(DialogId(CALL_ID, "ac8147e8", "a"))
    with pytest.raises(LocalSipError, match="exists"):
        dialogs.add(Dialog.from_uac(req, answer(req, tag="b")))
    dialogs.add(Dialog.from_uac(req, answer(req, tag="c")))
    assert sorted(d.id.remote_tag for d in dialogs) == ["b", "c"]


# -- two endpoints in memory --------------------------------------------------

PLATFORM_ADDR: Addr = ("UDP", "127.0.0.1", 5060)
DEVICE_ADDR: Addr = ("UDP", "127.0.0.1", 5070)


class Pair:
    def __init__(self) -> None:
        self.platform = Endpoint(rng=random.Random(1), user_agent="platform")
        self.device = Endpoint(rng=random.Random(2), user_agent="device")
        self.platform.local["UDP"] = (PLATFORM_ADDR[1], PLATFORM_ADDR[2])
        self.device.local["UDP"] = (DEVICE_ADDR[1], DEVICE_ADDR[2])
        self.now = 0.0
        self.platform_events: list[EndpointEvent] = []
        self.device_events: list[EndpointEvent] = []

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for data, dest in self.platform.take_output():
                assert dest == DEVICE_ADDR
                moved = True
                self.device_events += self.device.receive_datagram(data, PLATFORM_ADDR, self.now)
            for data, dest in self.device.take_output():
                assert dest == PLATFORM_ADDR
                moved = True
                self.platform_events += self.platform.receive_datagram(data, DEVICE_ADDR, self.now)

    def take(self, events: list[EndpointEvent]) -> list[EndpointEvent]:
        out = list(events)
        events.clear()
        return out


def test_invite_ack_bye_between_two_endpoints() -> None:
    pair = Pair()
    platform_dialogs, device_dialogs = Dialogs(), Dialogs()
    offer = invite()
    offer.headers.remove("Via")
    offer.headers.remove("Max-Forwards")
    pair.platform.send_request(offer, DEVICE_ADDR, pair.now)
    pair.pump()

    [incoming] = pair.take(pair.device_events)
    assert isinstance(incoming, RequestReceived) and incoming.transaction is not None
    assert device_dialogs.find_for_request(incoming.request) is None
    ok = make_response(
        incoming.request,
        200,
        to_tag=pair.device.new_tag(),
        headers=[("Contact", DEVICE_CONTACT), ("Content-Type", "APPLICATION/SDP")],
        body=ANSWER,
    )
    device_dialog = Dialog.from_uas(incoming.request, ok)
    device_dialogs.add(device_dialog)
    pair.device.respond(incoming.transaction, ok, pair.now)
    pair.pump()

    [reply] = pair.take(pair.platform_events)
    assert isinstance(reply, ResponseReceived) and reply.response.status == 200
    platform_dialog = Dialog.from_uac(reply.transaction.request, reply.response)
    platform_dialogs.add(platform_dialog)
    assert platform_dialog.id == DialogId(
        device_dialog.id.call_id, device_dialog.id.remote_tag, device_dialog.id.local_tag
    )
    assert platform_dialogs.find_for_response(reply.response) is platform_dialog

    pair.platform.send_stateless(platform_dialog.ack_for(reply.transaction.request.cseq[0]), DEVICE_ADDR)
    pair.pump()
    [ack] = pair.take(pair.device_events)
    assert isinstance(ack, RequestReceived) and ack.transaction is None
    assert ack.request.method == "ACK" and ack.request.cseq == (104, "ACK")
    assert device_dialogs.find_for_request(ack.request) is device_dialog
    assert device_dialog.receive_request(ack.request) is None

    bye = platform_dialog.new_request("BYE")
    pair.platform.send_request(bye, DEVICE_ADDR, pair.now)
    pair.pump()
    [bye_in] = pair.take(pair.device_events)
    assert isinstance(bye_in, RequestReceived) and bye_in.transaction is not None
    assert bye_in.request.cseq == (105, "BYE")
    assert bye_in.request.uri == f"sip:{DEVICE_ID}@127.0.0.1:5070"
    found = device_dialogs.find_for_request(bye_in.request)
    assert found is device_dialog
    assert found.receive_request(bye_in.request) is None
    assert found.state is DialogState.TERMINATED
    device_dialogs.remove(found)
    pair.device.respond(bye_in.transaction, make_response(bye_in.request, 200), pair.now)
    pair.pump()

    [bye_ok] = pair.take(pair.platform_events)
    assert isinstance(bye_ok, ResponseReceived) and bye_ok.response.status == 200
    found_uac = platform_dialogs.find_for_response(bye_ok.response)
    assert found_uac is platform_dialog
    found_uac.update_from_response(bye_ok.response)
    assert found_uac.terminated
