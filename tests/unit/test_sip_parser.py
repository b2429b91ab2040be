"""Unit tests of the SIP codec: ``sip.parser``, ``sip.message``, ``sip.headers``, ``sip.uri``.

Parsers are fed the whole input, one byte at a time, and with trailing bytes
(house style); random input may only ever raise ``SipParseError``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.errors import SipParseError
from sip.headers import (
    CSeq,
    NameAddr,
    Via,
    contacts,
    expires_value,
    from_header,
    to_header,
    top_via,
    validate_request,
    vias,
)
from sip.message import (
    Headers,
    Request,
    Response,
    canonical_name,
    ensure_parse_error_message,
    make_response,
    split_list,
)
from sip.parser import (
    MAX_BODY,
    MAX_DATAGRAM,
    MAX_HEAD,
    StreamParser,
    is_non_sip,
    parse_datagram,
    parse_head,
)
from sip.uri import SipUri, is_gb_id

DEVICE = "34020000001320000001"
PLATFORM = "34020000002000000001"

REGISTER = (
    f"REGISTER sip:{PLATFORM}@3402000000 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1688573213\r\n"
    f"From: <sip:{DEVICE}@3402000000>;tag=1149088857\r\n"
    f"To: <sip:{DEVICE}@3402000000>\r\n"
    "Call-ID: 764726777\r\n"
    "CSeq: 1 REGISTER\r\n"
    f"Contact: <sip:{DEVICE}@192.168.1.64:5060>\r\n"
    "Max-Forwards: 70\r\n"
    "Expires: 3600\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
).encode()

BODY = b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n</Notify>\r\n'
MESSAGE = (
    f"MESSAGE sip:{PLATFORM}@3402000000 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK376081345\r\n"
    f"From: <sip:{DEVICE}@3402000000>;tag=1298018105\r\n"
    f"To: <sip:{PLATFORM}@3402000000>\r\n"
    "Call-ID: 1785529175\r\n"
    "CSeq: 20 MESSAGE\r\n"
    "Content-Type: Application/MANSCDP+xml\r\n"
    "Max-Forwards: 70\r\n"
    f"Content-Length: {len(BODY)}\r\n"
    "\r\n"
).encode() + BODY

OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 192.168.1.64:5060;rport=5060;branch=z9hG4bK376081345\r\n"
    f"From: <sip:{DEVICE}@3402000000>;tag=1298018105\r\n"
    f"To: <sip:{PLATFORM}@3402000000>;tag=8715ab89\r\n"
    "Call-ID: 1785529175\r\n"
    "CSeq: 20 MESSAGE\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
).encode()

STUN_BINDING = bytes.fromhex("000100002112a442") + bytes(range(12))


def parse(data: bytes) -> Request | Response:
    msg = parse_datagram(data)
    assert isinstance(msg, (Request, Response))
    return msg


def request(data: bytes) -> Request:
    msg = parse(data)
    assert isinstance(msg, Request)
    return msg


def feed_bytewise(data: bytes) -> list[Request | Response]:
    parser = StreamParser()
    out = [m for i in range(len(data)) for m in parser.feed(data[i : i + 1])]
    assert parser.buffered == 0
    return [m for m in out if isinstance(m, (Request, Response))]


# -- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("data", [REGISTER, MESSAGE, OK], ids=["register", "message", "response"])
def test_serialize_parse_round_trip(data: bytes) -> None:
    msg = parse(data)
    assert msg.serialize() == data
    assert [m.serialize() for m in StreamParser().feed(data)] == [data]
    assert [m.serialize() for m in feed_bytewise(data)] == [data]


def test_fields_of_a_canonical_message() -> None:
    msg = request(MESSAGE)
    assert msg.method == "MESSAGE" and msg.uri == f"sip:{PLATFORM}@3402000000" and msg.version == "SIP/2.0"
    assert msg.call_id == "1785529175"
    assert msg.cseq == (20, "MESSAGE")
    assert msg.content_type == "application/manscdp+xml"
    assert msg.body == BODY
    assert repr(msg) == f"<Request MESSAGE sip:{PLATFORM}@3402000000 call-id='1785529175'>"
    ok = parse(OK)
    assert isinstance(ok, Response) and ok.status == 200 and ok.reason == "OK"
    assert repr(ok) == "<Response 200 OK call-id='1785529175'>"


def test_stream_of_several_messages_in_one_segment() -> None:
    data = REGISTER + MESSAGE + OK
    assert [m.serialize() for m in StreamParser().feed(data)] == [REGISTER, MESSAGE, OK]
    assert [m.serialize() for m in feed_bytewise(data)] == [REGISTER, MESSAGE, OK]


# -- header names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("compact", "full"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("e", "Content-Encoding"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("f", "From"),
        ("s", "Subject"),
        ("k", "Supported"),
        ("t", "To"),
        ("v", "Via"),
        ("o", "Event"),
        ("r", "Refer-To"),
        ("u", "Allow-Events"),
        ("x", "Session-Expires"),
        ("I", "Call-ID"),
        ("V", "Via"),
    ],
)
def test_compact_forms(compact: str, full: str) -> None:
    assert canonical_name(compact) == full


def test_compact_message_parses_like_the_long_one() -> None:
    compact = (
        f"MESSAGE sip:{PLATFORM}@3402000000 SIP/2.0\r\n"
        "v: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK376081345\r\n"
        f"f: <sip:{DEVICE}@3402000000>;tag=1298018105\r\n"
        f"t: <sip:{PLATFORM}@3402000000>\r\n"
        "i: 1785529175\r\n"
        "CSeq: 20 MESSAGE\r\n"
        "c: Application/MANSCDP+xml\r\n"
        "Max-Forwards: 70\r\n"
        f"l: {len(BODY)}\r\n"
        "\r\n"
    ).encode() + BODY
    assert request(compact).serialize() == MESSAGE
    validate_request(request(compact))


def test_header_names_are_case_insensitive() -> None:
    data = REGISTER.replace(b"Call-ID:", b"cAlL-iD:").replace(b"CSeq:", b"cseq:").replace(b"Max-Forwards", b"MaX-fOrWaRdS")
    msg = request(data)
    assert msg.call_id == "764726777"
    assert msg.headers.get("CALL-ID") == "764726777" and msg.headers.get("i") == "764726777"
    assert msg.cseq == (1, "REGISTER")
    assert msg.headers.get("max-forwards") == "70"
    assert msg.serialize() == REGISTER


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("call-id", "Call-ID"),
        ("CSEQ", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("mime-version", "MIME-Version"),
        ("RACK", "RAck"),
        ("rseq", "RSeq"),
        ("sip-etag", "SIP-ETag"),
        ("sip-if-match", "SIP-If-Match"),
        ("x-gb-ext", "X-Gb-Ext"),
        ("content-type", "Content-Type"),
    ],
)
def test_canonical_names(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical
    assert canonical_name(name) == canonical  # from the cache


def test_whitespace_before_colon_in_header_name() -> None:
    msg = request(REGISTER.replace(b"Call-ID:", b"Call-ID \t:"))
    assert msg.call_id == "764726777"


# -- folding and multi-valued headers -------------------------------------------------


def test_folded_header_lines_are_unfolded() -> None:
    data = REGISTER.replace(b"Expires: 3600\r\n", b"Subject: a\r\n  b\r\n\tc\r\nExpires: 3600\r\n")
    msg = request(data)
    assert msg.headers.get("Subject") == "a b c"
    assert feed_bytewise(data)[0].headers.get("Subject") == "a b c"


def test_folded_via_value() -> None:
    data = REGISTER.replace(b"Via: SIP/2.0/UDP", b"Via:\r\n SIP/2.0/UDP")
    assert top_via(request(data)).host == "192.168.1.64"


def test_continuation_before_any_header_is_an_error() -> None:
    data = b"OPTIONS sip:a@b SIP/2.0\r\n folded\r\nCall-ID: x\r\n\r\n"
    with pytest.raises(SipParseError, match="continuation line before any header"):
        parse_datagram(data)


def test_multiple_vias_in_one_line_and_in_several_lines() -> None:
    one_line = REGISTER.replace(
        b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1688573213\r\n",
        b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1688573213, SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp\r\n",
    )
    several = REGISTER.replace(
        b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1688573213\r\n",
        b"Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1688573213\r\n"
        b"v: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp\r\n",
    )
    for data in (one_line, several):
        msg = request(data)
        assert [(v.transport, v.host, v.port, v.branch) for v in vias(msg)] == [
            ("UDP", "192.168.1.64", 5060, "z9hG4bK1688573213"),
            ("TCP", "proxy.example.com", None, "z9hG4bKp"),
        ]
        assert top_via(msg).params == {"rport": None, "branch": "z9hG4bK1688573213"}
    assert request(one_line).headers.count("Via") == 1
    assert request(several).headers.count("Via") == 2


def test_make_response_copies_every_via_in_order() -> None:
    data = REGISTER.replace(b"Via:", b"Via: SIP/2.0/UDP first.example.com;branch=z9hG4bKa,")
    resp = make_response(request(data), 200)
    assert [v.host for v in vias(resp)] == ["first.example.com", "192.168.1.64"]


# -- Content-Length -----------------------------------------------------------------


def test_padded_content_length() -> None:
    """eXosip sends ``Content-Length:   390``."""
    data = MESSAGE.replace(f"Content-Length: {len(BODY)}".encode(), f"Content-Length:   {len(BODY)}  ".encode())
    assert request(data).body == BODY
    assert feed_bytewise(data)[0].body == BODY
    assert request(data).serialize() == MESSAGE


def test_missing_content_length_on_udp_takes_the_rest() -> None:
    data = MESSAGE.replace(f"Content-Length: {len(BODY)}\r\n".encode(), b"")
    msg = request(data)
    assert "Content-Length" not in msg.headers
    assert msg.body == BODY
    assert msg.serialize() == MESSAGE


def test_missing_content_length_on_tcp_means_no_body() -> None:
    """RFC 3261 §18.3 requires Content-Length on streams; without it the body is empty."""
    head = REGISTER.replace(b"Content-Length: 0\r\n", b"")
    messages = StreamParser().feed(head)
    assert len(messages) == 1 and messages[0].body == b""


def test_trailing_bytes_in_a_datagram_are_discarded() -> None:
    msg = request(MESSAGE + b"garbage after the body")
    assert msg.body == BODY


def test_trailing_bytes_on_a_stream_wait_for_more() -> None:
    parser = StreamParser()
    assert [m.serialize() for m in parser.feed(MESSAGE + REGISTER[:30])] == [MESSAGE]
    assert parser.buffered == 30
    assert [m.serialize() for m in parser.feed(REGISTER[30:])] == [REGISTER]
    assert parser.buffered == 0


def test_truncated_body_in_a_datagram() -> None:
    with pytest.raises(SipParseError, match="^Content-Length larger than the datagram$") as info:
        parse_datagram(MESSAGE[:-1])
    assert info.value.status_hint == 400
    assert isinstance(info.value.message, Request) and info.value.message.method == "MESSAGE"


@pytest.mark.parametrize("cut", [1, 10, len(BODY), len(BODY) + 2, len(MESSAGE) - 5])
def test_truncated_input_on_a_stream_yields_nothing(cut: int) -> None:
    parser = StreamParser()
    assert parser.feed(MESSAGE[:-cut]) == []
    assert parser.buffered <= len(MESSAGE)
    assert [m.serialize() for m in parser.feed(MESSAGE[-cut:])] == [MESSAGE]


def test_truncated_head_in_a_datagram() -> None:
    """A head without its blank line still parses if the last header is whole."""
    msg = request(REGISTER[:-2])
    assert msg.headers.get("Content-Length") == "0" and msg.body == b""
    with pytest.raises(SipParseError, match="^malformed request line: 'REGISTER sip:'$"):
        parse_datagram(REGISTER[:13])


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", ""])
def test_bad_content_length(value: str) -> None:
    data = MESSAGE.replace(f"Content-Length: {len(BODY)}".encode(), f"Content-Length: {value}".encode())
    with pytest.raises(SipParseError, match="^bad Content-Length") as info:
        parse_datagram(data)
    assert info.value.status_hint == 400
    with pytest.raises(SipParseError, match="^bad Content-Length"):
        StreamParser().feed(data)


def test_conflicting_content_lengths() -> None:
    data = MESSAGE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nContent-Length: 3\r\n")
    msg = request(data)  # UDP: kept, then refused by the validator (TC_MCL01)
    assert msg.body == BODY
    with pytest.raises(SipParseError, match="duplicated Content-Length"):
        validate_request(msg)
    with pytest.raises(SipParseError, match="^conflicting Content-Length values$") as info:
        StreamParser().feed(data)
    assert isinstance(info.value.message, Request)


def test_repeated_equal_content_lengths_are_accepted() -> None:
    data = MESSAGE.replace(b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\nl: {len(BODY)}\r\n".encode())
    assert request(data).body == BODY
    assert StreamParser().feed(data)[0].body == BODY


# -- not SIP: keep-alives and STUN --------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"\r\n\r\n", b"\r\n", b"", b"\x00\x00\x00\x00", b" \t", STUN_BINDING, b"\x16\x03\x01\x02\x00", b"\xff\xfe"],
    ids=["double-crlf", "crlf", "empty", "nuls", "blanks", "stun", "tls-hello", "binary"],
)
def test_non_sip_datagrams_are_none(data: bytes) -> None:
    assert is_non_sip(data)
    assert parse_datagram(data) is None


def test_stun_binding_request_from_the_exosip_device() -> None:
    assert len(STUN_BINDING) == 20 and STUN_BINDING[:8] == bytes.fromhex("000100002112a442")
    assert parse_datagram(STUN_BINDING) is None


def test_leading_crlf_before_a_datagram_message() -> None:
    assert request(b"\r\n" + REGISTER).serialize() == REGISTER


def test_stream_skips_keepalives_and_counts_them() -> None:
    parser = StreamParser()
    assert parser.feed(b"\r\n\r\n") == []
    assert parser.keepalives == 1 and parser.buffered == 0
    messages = parser.feed(b"\r\n\r\n" + REGISTER + b"\r\n\r\n" + OK)
    assert [m.serialize() for m in messages] == [REGISTER, OK]
    assert parser.keepalives == 3
    assert parser.feed(b"\r\n") == [] and parser.keepalives == 3


def test_stream_refuses_binary_noise() -> None:
    with pytest.raises(SipParseError, match="^not a SIP message on the stream$"):
        StreamParser().feed(b"\x16\x03\x01\x00\x00\r\n\r\n")


# -- LF-only messages ----------------------------------------------------------------------


def test_lf_only_messages() -> None:
    data = REGISTER.replace(b"\r\n", b"\n")
    msg = request(data)
    assert msg.serialize() == REGISTER
    assert [m.serialize() for m in feed_bytewise(data)] == [REGISTER]
    lf_body = MESSAGE.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n") + b"\n\n" + BODY
    assert request(lf_body).body == BODY
    assert StreamParser().feed(lf_body)[0].body == BODY


# -- size limits ------------------------------------------------------------------------------


def test_head_larger_than_max_head_on_a_stream() -> None:
    parser = StreamParser()
    big = REGISTER.replace(b"Expires: 3600\r\n", b"X-Big: " + b"a" * MAX_HEAD + b"\r\nExpires: 3600\r\n")
    with pytest.raises(SipParseError, match="^message head too large$") as info:
        parser.feed(big[: MAX_HEAD + 100])
    assert info.value.status_hint == 513


def test_head_limit_is_checked_per_segment_without_rescanning() -> None:
    parser = StreamParser(max_head=100)
    assert parser.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 10) == []
    with pytest.raises(SipParseError, match="too large"):
        parser.feed(b"X: y\r\n" * 10)


def test_head_of_exactly_max_head_on_a_stream_is_fine() -> None:
    parser = StreamParser(max_head=len(REGISTER))
    assert parser.feed(REGISTER[:-4]) == []
    assert len(parser.feed(REGISTER[-4:])) == 1


def test_body_larger_than_max_body() -> None:
    data = MESSAGE.replace(f"Content-Length: {len(BODY)}".encode(), f"Content-Length: {MAX_BODY + 1}".encode())
    with pytest.raises(SipParseError, match="^body too large$") as info:
        parse_datagram(data)
    assert info.value.status_hint == 413 and isinstance(info.value.message, Request)
    with pytest.raises(SipParseError, match="^body too large$") as info:
        StreamParser().feed(data)
    assert info.value.status_hint == 413 and isinstance(info.value.message, Request)


def test_stream_max_body_below_the_global_limit() -> None:
    with pytest.raises(SipParseError, match="^body too large$") as info:
        StreamParser(max_body=10).feed(MESSAGE)
    assert info.value.status_hint == 413


def test_datagram_larger_than_max_datagram() -> None:
    data = MESSAGE + b"x" * MAX_DATAGRAM
    with pytest.raises(SipParseError, match="^datagram too large$") as info:
        parse_datagram(data)
    assert info.value.status_hint == 513


# -- start lines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "reason", "status"),
    [
        (b"SIP/2.0 2000 OK", "bad status code: '2000'", 400),
        (b"SIP/2.0 099 Early", "bad status code: '099'", 400),
        (b"SIP/2.0 700 Late", "bad status code: '700'", 400),
        (b"SIP/2.0 abc OK", "bad status code: 'abc'", 400),
        (b"SIP/3.0 200 OK", "unsupported SIP version SIP/3.0", 400),
        (b"SIP/2.0", "malformed status line: 'SIP/2.0'", 400),
    ],
)
def test_bad_status_lines(start: bytes, reason: str, status: int) -> None:
    data = OK.replace(b"SIP/2.0 200 OK", start, 1)
    with pytest.raises(SipParseError) as info:
        parse_datagram(data)
    assert info.value.reason == reason and info.value.status_hint == status
    assert info.value.message is None  # a response is never answered


def test_status_line_without_reason_phrase() -> None:
    msg = parse(OK.replace(b"SIP/2.0 200 OK", b"SIP/2.0 200", 1))
    assert isinstance(msg, Response) and msg.status == 200 and msg.reason == ""
    lower = parse(OK.replace(b"SIP/2.0 200 OK", b"sip/2.0 180 Ringing", 1))
    assert isinstance(lower, Response) and lower.status == 180 and lower.version == "SIP/2.0"


@pytest.mark.parametrize(
    ("start", "reason", "status"),
    [
        (b"REGISTER sip:a@b SIP/2.0 extra", "malformed request line: 'REGISTER sip:a@b SIP/2.0 extra'", 400),
        (b"REGISTER sip:a@b HTTP/1.1", "bad SIP version: 'HTTP/1.1'", 400),
        (b"REGISTER sip:a@b SIP/2.1", "unsupported SIP version SIP/2.1", 505),
        (b"REGISTER a@b SIP/2.0", "bad Request-URI: 'a@b'", 400),
        (b"REGISTER sip:a@b?x=y SIP/2.0", "headers in the Request-URI", 400),
        (b"REGISTER sip:a@b:99999 SIP/2.0", "bad port in 'sip:a@b:99999'", 400),
        (b"REGISTER http:a\"b SIP/2.0", "bad Request-URI: 'http:a\"b'", 400),
    ],
)
def test_bad_request_lines(start: bytes, reason: str, status: int) -> None:
    data = REGISTER.replace(REGISTER.split(b"\r\n", 1)[0], start, 1)
    with pytest.raises(SipParseError) as info:
        parse_datagram(data)
    assert info.value.reason == reason and info.value.status_hint == status
    # The headers are whole, so the request can still be answered (RFC 4475 §3.1.2).
    assert isinstance(info.value.message, Request)
    assert info.value.message.call_id == "764726777"


def test_broken_request_line_without_answerable_headers() -> None:
    with pytest.raises(SipParseError) as info:
        parse_datagram(b"INVITE  sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n")
    assert info.value.message is None
    with pytest.raises(SipParseError) as info:
        parse_datagram(b"INVITE  sip:a@b SIP/2.0\r\nnot a header\r\n\r\n")
    assert info.value.message is None
    with pytest.raises(SipParseError) as info:
        parse_datagram(REGISTER.replace(b"REGISTER sip:", b"REG(ISTER sip:", 1))
    assert info.value.reason == "bad method: 'REG(ISTER'" and info.value.message is None


def test_non_sip_request_uri_schemes_are_kept() -> None:
    msg = request(REGISTER.replace(f"sip:{PLATFORM}@3402000000".encode(), b"tel:+1-201-555-0123", 1))
    assert msg.uri == "tel:+1-201-555-0123"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"NoColonHere", "malformed header line: 'NoColonHere'"),
        (b"Bad Name: x", "malformed header line: 'Bad Name: x'"),
        (b": empty name", "malformed header line: ': empty name'"),
    ],
)
def test_bad_header_lines(line: bytes, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_datagram(REGISTER.replace(b"Expires: 3600", line))
    assert info.value.reason == reason
    assert isinstance(info.value.message, Request)
    with pytest.raises(SipParseError):
        parse_datagram(OK.replace(b"Content-Length: 0", line))


def test_cseq_checks_in_the_parser() -> None:
    with pytest.raises(SipParseError, match="^CSeq method does not match the request method$") as info:
        parse_datagram(REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: 1 INVITE"))
    assert isinstance(info.value.message, Request)
    with pytest.raises(SipParseError, match="^malformed CSeq: 'x REGISTER'$") as info:
        parse_datagram(REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: x REGISTER"))
    assert isinstance(info.value.message, Request)
    with pytest.raises(SipParseError, match="^malformed CSeq") as info:
        parse_datagram(OK.replace(b"CSeq: 20 MESSAGE", b"CSeq: 20"))
    assert info.value.message is None


def test_parse_head_alone() -> None:
    head = REGISTER.split(b"\r\n\r\n")[0]
    msg = parse_head(head)
    assert isinstance(msg, Request) and msg.body == b""
    assert msg.headers.get("Content-Length") == "0"


def test_non_utf8_header_bytes_survive_a_round_trip() -> None:
    data = REGISTER.replace(b"Expires: 3600", b"Subject: \xc9\xe3\xcf\xf1\xbb\xfa")  # GB2312 "摄像机"
    msg = request(data)
    assert msg.serialize() == data


# -- random input ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_parse_errors(data: bytes) -> None:
    try:
        parse_datagram(data)
    except SipParseError:
        pass
    try:
        StreamParser(max_head=256).feed(data)
    except SipParseError:
        pass


_ALPHABET = st.sampled_from(
    [b"\r\n", b"\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"=", b"@", b"?", b"/", b"[", b"]",
     b"SIP/2.0", b"Via", b"CSeq", b"Content-Length", b"l", b"0", b"9" * 12, b"\x00", b"\xff", b"%00", b"sip:"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([REGISTER, MESSAGE, OK]),
    st.integers(min_value=0, max_value=len(MESSAGE)),
    st.lists(_ALPHABET, max_size=6),
    st.integers(min_value=0, max_value=8),
)
def test_mutated_messages_raise_only_parse_errors(base: bytes, pos: int, insert: list[bytes], delete: int) -> None:
    """A valid message with a splice: parsing and the header views fail only with SipParseError."""
    data = base[:pos] + b"".join(insert) + base[pos + delete :]
    try:
        msg = parse_datagram(data)
    except SipParseError:
        return
    if msg is None:
        return
    for view in (top_via, from_header, to_header, contacts, vias):
        try:
            view(msg)
        except SipParseError:
            pass
    if isinstance(msg, Request):
        try:
            validate_request(msg)
        except SipParseError as e:
            assert e.message is msg
    msg.serialize()
    parser = StreamParser()
    try:
        for i in range(0, len(data), 5):
            parser.feed(data[i : i + 5])
    except SipParseError:
        pass


# -- sip.message -------------------------------------------------------------------------------


def test_headers_multimap() -> None:
    h = Headers([("v", "a"), ("Via", "b, c"), ("call-id", "x")])
    assert len(h) == 3 and "VIA" in h and "i" in h and 42 not in h
    assert h.get("via") == "a" and h.get("X-Missing") is None and h.get("X-Missing", "d") == "d"
    assert h.get_all("Via") == ["a", "b", "c"]
    assert h.count("Via") == 2
    h2 = h.copy()
    h.set("Via", "z")
    assert list(h) == [("Via", "z"), ("Call-ID", "x")]
    assert h2.get_all("Via") == ["a", "b", "c"]
    h.set("Subject", "new")
    assert list(h)[-1] == ("Subject", "new")
    h.add("Subject", "two")
    assert h.get_all("Subject") == ["new", "two"]  # not a list header: no splitting
    h.remove("subject")
    assert "Subject" not in h
    assert h == Headers([("Via", "z"), ("Call-ID", "x")]) and h != [("Via", "z")]
    assert repr(h) == "Headers([('Via', 'z'), ('Call-ID', 'x')])"


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:a@b;x=1,2>, <sip:c@d>;q="0,5", , sip:e@f'
    assert split_list(value) == ['"Doe, John" <sip:a@b;x=1,2>', '<sip:c@d>;q="0,5"', "sip:e@f"]
    assert split_list('"a\\", b", c') == ['"a\\", b"', "c"]
    assert split_list("a>, b") == ["a>", "b"]


def test_message_properties_on_bad_values() -> None:
    msg = Request(method="OPTIONS", uri="sip:a@b")
    assert msg.cseq == (0, "") and msg.call_id == "" and msg.content_type == ""
    msg.headers.add("CSeq", "one OPTIONS")
    assert msg.cseq == (0, "")
    assert msg.serialize() == b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: one OPTIONS\r\nContent-Length: 0\r\n\r\n"


def test_make_response() -> None:
    req = request(REGISTER)
    resp = make_response(req, 200, to_tag="abc", headers=[("Expires", "3600")], body=b"x")
    assert resp.status == 200 and resp.reason == "OK" and resp.body == b"x"
    assert [n for n, _ in resp.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Expires"]
    assert to_header(resp).tag == "abc"
    assert resp.serialize().endswith(b"Content-Length: 1\r\n\r\nx")
    # A To that already has a tag keeps it (in-dialog requests).
    tagged = request(REGISTER.replace(f"To: <sip:{DEVICE}@3402000000>".encode(), f"To: <sip:{DEVICE}@3402000000>;tag=old".encode()))
    assert to_header(make_response(tagged, 481, to_tag="new")).tag == "old"
    assert make_response(req, 299).reason == ""
    assert make_response(req, 404, "Nope").reason == "Nope"
    assert make_response(req, 401).reason == "Unauthorized"


def test_ensure_parse_error_message() -> None:
    req = request(REGISTER)
    assert ensure_parse_error_message(SipParseError("x", 400, req)) is req
    assert ensure_parse_error_message(SipParseError("x", 400, parse(OK))) is None
    assert ensure_parse_error_message(SipParseError("x")) is None


# -- sip.uri ---------------------------------------------------------------------------------


def test_sip_uri_gb_id() -> None:
    uri = SipUri.parse(f"sip:{DEVICE}@3402000000")
    assert uri.user == DEVICE and uri.host == "3402000000" and uri.port is None
    assert is_gb_id(uri.user) and not is_gb_id("3402000000") and not is_gb_id(DEVICE + "1")
    assert str(uri) == f"sip:{DEVICE}@3402000000"


def test_sip_uri_full() -> None:
    text = "SIPS:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi"
    uri = SipUri.parse(text)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == ("sips", "alice", "secret", "[2001:db8::1]", 5061)
    assert uri.params == {"transport": "tcp", "lr": None}
    assert uri.headers == "Subject=hi"
    assert uri.hostport == "[2001:db8::1]:5061"
    assert str(uri) == "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi"
    assert SipUri.parse("sip:[::1]").hostport == "[::1]"
    assert SipUri.parse("sip:host;;a").params == {"a": None}


def test_sip_uri_user_part_with_question_mark_and_semicolons() -> None:
    """RFC 3261 §25.1 user-unreserved includes '?' and ';' (RFC 4475 TC_INTMETH, TC_SEMIURI)."""
    uri = SipUri.parse("sip:user;par=u%40example.net?x@example.com;maddr=1.2.3.4")
    assert uri.user == "user;par=u%40example.net?x" and uri.host == "example.com"
    assert uri.params == {"maddr": "1.2.3.4"} and uri.headers is None


@pytest.mark.parametrize(
    ("text", "reason", "status"),
    [
        ("nocolon", "not a URI: 'nocolon'", 400),
        ("1sip:a@b", "not a URI: '1sip:a@b'", 400),
        ("http://example.com", "unsupported URI scheme 'http'", 416),
        ("sip:a b@c", "invalid character in URI 'sip:a b@c'", 400),
        ("sip:", "URI without host: 'sip:'", 400),
        ("sip:user@:5060", "URI without host: 'sip:user@:5060'", 400),
        ("sip:[::1", "bad IPv6 reference in 'sip:[::1'", 400),
        ("sip:[::1]x", "bad host in 'sip:[::1]x'", 400),
        ("sip:host:0", "bad port in 'sip:host:0'", 400),
        ("sip:host:abc", "bad port in 'sip:host:abc'", 400),
    ],
)
def test_sip_uri_errors(text: str, reason: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        SipUri.parse(text)
    assert info.value.reason == reason and info.value.status_hint == status


# -- sip.headers ------------------------------------------------------------------------------


def test_via_parse_and_str() -> None:
    via = Via.parse("SIP / 2.0 / udp  192.168.1.64:5060 ; rport ; branch=z9hG4bK1")
    assert (via.transport, via.host, via.port) == ("UDP", "192.168.1.64", 5060)
    assert via.params == {"rport": None, "branch": "z9hG4bK1"}
    assert str(via) == "SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1"
    v6 = Via.parse("SIP/2.0/TCP [2001:db8::9]:5070;branch=z9hG4bK2")
    assert (v6.host, v6.port) == ("[2001:db8::9]", 5070)
    assert Via.parse("SIP/2.0/UDP [::1]").port is None
    quoted = Via.parse('SIP/2.0/UDP host;x="a\\";b";branch=z9hG4bK3')
    assert quoted.params == {"x": '"a\\";b"', "branch": "z9hG4bK3"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("SIP/2.0/UDP", "malformed Via: 'SIP/2.0/UDP'"),
        ("HTTP/2.0/UDP host", "unsupported Via protocol in 'HTTP/2.0/UDP host'"),
        ("SIP/3.0/UDP host", "unsupported Via protocol in 'SIP/3.0/UDP host'"),
        ("SIP/2.0/UDP host:70000", "bad port in Via 'SIP/2.0/UDP host:70000'"),
        ("SIP/2.0/UDP host;;branch=x", "empty parameter in Via"),
        ("SIP/2.0/UDP host;branch=", "empty value for parameter 'branch' in Via"),
        ("SIP/2.0/UDP host;bra(nch=x", "bad parameter name 'bra(nch' in Via"),
        ('SIP/2.0/UDP host;x="open', "unterminated quoted string in ';x=\"open'"),
    ],
)
def test_via_errors(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        Via.parse(value)
    assert info.value.reason == reason


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Cam \\"1\\"" <sip:34020000001320000001@3402000000>;tag=a1')
    assert quoted.display == 'Cam \\"1\\"' and quoted.tag == "a1" and quoted.user == DEVICE
    assert str(quoted) == '"Cam \\"1\\"" <sip:34020000001320000001@3402000000>;tag=a1'
    tokens = NameAddr.parse("Cam One <sip:a@b>")
    assert tokens.display == "Cam One" and tokens.uri == "sip:a@b"
    bare = NameAddr.parse("sip:a@b;tag=x;expires=60")
    assert (bare.uri, bare.bracketed, bare.params) == ("sip:a@b", False, {"tag": "x", "expires": "60"})
    assert str(bare) == "sip:a@b;tag=x;expires=60"
    star = NameAddr.parse(" * ")
    assert star.uri == "*" and str(star) == "*"
    assert NameAddr.parse("<tel:+123>").user == ""  # not a SIP URI: no GB ID
    assert str(NameAddr.parse("<sip:a@b>")) == "<sip:a@b>"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"Open <sip:a@b>', "unterminated quoted string in '\"Open <sip:a@b>'"),
        ('"Name" sip:a@b', "quoted display name without <URI> in '\"Name\" sip:a@b'"),
        ('"Name" x <sip:a@b>', "quoted display name without <URI> in '\"Name\" x <sip:a@b>'"),
        ("Bell, A <sip:a@b>", "display name must be quoted in 'Bell, A <sip:a@b>'"),
        ("<sip:a@b", "unterminated <URI> in '<sip:a@b'"),
        ("< sip:a@b>", "whitespace inside <URI> in '< sip:a@b>'"),
        ("sip:a@b?Route=x", "malformed addr-spec in 'sip:a@b?Route=x'"),
        ("", "malformed addr-spec in ''"),
        ("<sip:a@b>;;tag=1", "empty parameter in name-addr"),
    ],
)
def test_name_addr_errors(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        NameAddr.parse(value)
    assert info.value.reason == reason


def test_cseq_parse() -> None:
    assert CSeq.parse(" 20  MESSAGE ") == CSeq(20, "MESSAGE")
    assert CSeq.parse(f"{2**31 - 1} ACK").number == 2**31 - 1
    for bad in ("20", "x MESSAGE", "1 MES(SAGE", "1 A B"):
        with pytest.raises(SipParseError, match="^malformed CSeq"):
            CSeq.parse(bad)
    with pytest.raises(SipParseError, match="^CSeq number too large: 2147483648$"):
        CSeq.parse(f"{2**31} ACK")


def test_expires_value() -> None:
    assert expires_value(None) is None
    assert expires_value(" 3600 ") == 3600
    assert expires_value("9" * 30) == 2**32 - 1
    with pytest.raises(SipParseError, match="^malformed Expires: '-1'$"):
        expires_value("-1")


def test_missing_header_views() -> None:
    msg = Request(method="OPTIONS", uri="sip:a@b")
    for view, name in ((top_via, "Via"), (from_header, "From"), (to_header, "To")):
        with pytest.raises(SipParseError, match=f"^missing {name}$"):
            view(msg)
    assert contacts(msg) == [] and vias(msg) == []


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ((b"Call-ID: 764726777\r\n", b""), "missing Call-ID header"),
        ((b"Expires: 3600", b"Expires: 3600\r\nTo: <sip:x@y>"), "duplicated To header"),
        ((b"Max-Forwards: 70", b"Max-Forwards: 256"), "bad Max-Forwards: '256'"),
        ((b"Max-Forwards: 70", b"Max-Forwards: -1"), "bad Max-Forwards: '-1'"),
        ((b"Expires: 3600", b"Expires: 12345678901"), "bad Expires: '12345678901'"),
        ((b"Expires: 3600", b"Expires: soon"), "bad Expires: 'soon'"),
        ((b"@192.168.1.64:5060>", b"@192.168.1.64:5060>;expires=x"), "bad Contact expires: 'x'"),
        ((b"Expires: 3600", b"Date: Fri, 01 Jan 2010 16:00:00 EST"), "bad Date: 'Fri, 01 Jan 2010 16:00:00 EST'"),
        ((b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/UDP ;"), "malformed Via: 'SIP/2.0/UDP ; 192.168.1.64:5060;rport;branch=z9hG4bK1688573213'"),
    ],
)
def test_validate_request_errors(edit: tuple[bytes, bytes], reason: str) -> None:
    req = request(REGISTER.replace(*edit))
    with pytest.raises(SipParseError) as info:
        validate_request(req)
    assert info.value.reason == reason
    assert info.value.status_hint == 400 and info.value.message is req


def test_validate_request_cseq_method_mismatch_on_a_built_request() -> None:
    req = request(REGISTER)
    req.method = "OPTIONS"
    with pytest.raises(SipParseError, match="^CSeq method does not match the request method$"):
        validate_request(req)


@pytest.mark.parametrize(
    "date",
    ["Sat, 13 Nov 2010 23:29:00 GMT", "2026-11-27T20:43:39.000", "2026-1-2T3:04:05"],
)
def test_validate_request_accepts_gmt_and_gb_dates(date: str) -> None:
    """RFC 3261 §20.17 GMT dates, and the GB/T 28181-2016 §9.1.2.1 local form."""
    validate_request(request(REGISTER.replace(b"Expires: 3600", f"Date: {date}".encode())))
