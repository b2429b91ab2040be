"""Tests for sip.sdp: RFC 4566 parsing/serialising and the GB/T 28181 builders."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import sdp
from sip.errors import RemoteSipError
from sip.sdp import (
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    build_gb_answer,
    build_gb_offer,
    parse,
    serialize,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


# INVITE offer and device answer from /work/shared/vectors/sip-wire/exosip-device-udp.log
# (Content-Length 240 and 160 on the wire: CRLF line ends).
EXOSIP_OFFER = crlf(
    "v=0\n"
    "o=34020000002000000001 0 0 IN IP4 127.0.0.1\n"
    "s=Play\n"
    "u=34020000001320000001:0\n"
    "c=IN IP4 127.0.0.1\n"
    "t=0 0\n"
    "m=video 30000 RTP/AVP 96 97 98\n"
    "a=recvonly\n"
    "a=rtpmap:96 PS/90000\n"
    "a=rtpmap:97 MPEG4/90000\n"
    "a=rtpmap:98 H264/90000\n"
    "y=0200000329\n"
)
EXOSIP_ANSWER = crlf(
    "v=0\n"
    "o=34020000001320000001 0 0 IN IP4 127.0.0.1\n"
    "s=Play\n"
    "c=IN IP4 127.0.0.1\n"
    "t=0 0\n"
    "m=video 17724 RTP/AVP 96\n"
    "a=sendonly\n"
    "a=rtpmap:96 PS/90000\n"
    "y=0200000329\n"
)


def minimal(extra: str = "", media: str = "m=video 5000 RTP/AVP 96\n") -> bytes:
    return crlf("v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=IN IP4 1.2.3.4\nt=0 0\n" + media + extra)


# -- wire vectors -----------------------------------------------------------------


def test_exosip_offer_fields() -> None:
    sdp = parse(EXOSIP_OFFER)
    assert sdp.version == 0
    assert sdp.origin == Origin("34020000002000000001", "0", "0", "IN", "IP4", "127.0.0.1")
    assert sdp.session_name == "Play"
    assert sdp.uri == "34020000001320000001:0"
    assert sdp.connection == Connection("IN", "IP4", "127.0.0.1")
    assert sdp.timing == (0, 0)
    [video] = sdp.media
    assert (video.media, video.port, video.proto, video.formats) == (
        "video",
        30000,
        "RTP/AVP",
        ["96", "97", "98"],
    )
    assert video.rtpmap() == {96: ("PS", 90000), 97: ("MPEG4", 90000), 98: ("H264", 90000)}
    assert video.direction == "recvonly"
    assert video.setup is None
    assert not video.is_tcp
    assert video.ssrc == "0200000329"
    assert sdp.ssrc is None
    assert sdp.effective_ssrc == "0200000329"
    assert sdp.ssrc_int == 200000329
    assert sdp.media_ip() == "127.0.0.1"


def test_exosip_answer_fields() -> None:
    sdp = parse(EXOSIP_ANSWER)
    [video] = sdp.media
    assert video.port == 17724
    assert video.direction == "sendonly"
    assert video.rtpmap() == {96: ("PS", 90000)}
    assert sdp.ssrc_int == 200000329
    assert sdp.origin.username == "34020000001320000001"


@pytest.mark.parametrize("body", [EXOSIP_OFFER, EXOSIP_ANSWER])
def test_round_trip_canonical(body: bytes) -> None:
    assert serialize(parse(body)) == body
    assert parse(body).serialize() == body


@pytest.mark.parametrize("body", [EXOSIP_OFFER, EXOSIP_ANSWER])
def test_lf_only_trailing_whitespace_blank_lines_nul_padding(body: bytes) -> None:
    sloppy = body.replace(b"\r\n", b"  \t\n\n") + b"\n\x00"
    assert parse(sloppy) == parse(body)
    assert parse(sloppy).serialize() == body


def test_byte_at_a_time_truncation_never_crashes() -> None:
    for cut in range(len(EXOSIP_OFFER)):
        try:
            parse(EXOSIP_OFFER[:cut])
        except SdpError:
            pass


def test_truncated_inside_m_line_exact_message() -> None:
    cut = EXOSIP_OFFER.index(b"m=video 30000") + len(b"m=video 300")
    with pytest.raises(SdpError) as info:
        parse(EXOSIP_OFFER[:cut])
    assert str(info.value) == (
        "line 7: bad m= 'video 300': expected <media> <port> <proto> <fmt>..."
    )


# -- tolerance and extra lines ----------------------------------------------------


def test_unknown_and_unmodelled_lines_kept_in_rfc_order() -> None:
    body = crlf(
        "v=0\n"
        "o=- 1 1 IN IP4 10.0.0.1\n"
        "s=Playback\n"
        "i=session info\n"
        "u=34020000001310000001:0\n"
        "c=IN IP4 10.0.0.1\n"
        "b=AS:4096\n"
        "t=1700000000 1700003600\n"
        "a=tool:x\n"
        "x=vendor line\n"
        "m=video 6000/2 TCP/RTP/AVP 96\n"
        "i=media info\n"
        "c=IN IP4 10.0.0.2\n"
        "b=AS:2048\n"
        "a=sendonly\n"
        "a=rtpmap:96 PS/90000\n"
        "a=filesize:1048576\n"
        "z=vendor media line\n"
        "y=1100000001\n"
        "f=v/2/5/25/1/4096a///\n"
    )
    sdp = parse(body)
    assert sdp.extra == [("i", "session info"), ("b", "AS:4096"), ("x", "vendor line")]
    video = sdp.media[0]
    assert video.port_count == 2
    assert video.extra == [("i", "media info"), ("b", "AS:2048"), ("z", "vendor media line")]
    assert video.file_size == 1048576
    assert video.format == "v/2/5/25/1/4096a///"
    assert sdp.effective_format == "v/2/5/25/1/4096a///"
    assert sdp.timing == (1700000000, 1700003600)
    assert sdp.media_ip() == "10.0.0.2"
    assert sdp.attribute("tool") == "x"
    assert serialize(sdp) == body


def test_y_and_f_before_m_line_parse_at_session_level_and_move_to_end() -> None:
    body = crlf(
        "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=IN IP4 1.2.3.4\nt=0 0\n"
        "y=0123456789\nf=v/2/6/25/1/2048a/1/8/1\n"
        "m=video 5000 RTP/AVP 96\na=rtpmap:96 PS/90000\n"
    )
    sdp = parse(body)
    assert sdp.ssrc == "0123456789"
    assert sdp.format == "v/2/6/25/1/2048a/1/8/1"
    assert sdp.media[0].ssrc is None
    assert sdp.effective_ssrc == "0123456789"
    assert sdp.ssrc_int == 123456789
    assert serialize(sdp).endswith(
        b"a=rtpmap:96 PS/90000\r\ny=0123456789\r\nf=v/2/6/25/1/2048a/1/8/1\r\n"
    )


def test_s_space_for_empty_session_name() -> None:
    body = crlf("v=0\no=a 0 0 IN IP4 1.2.3.4\ns= \nt=0 0\n")
    sdp = parse(body)
    assert sdp.session_name == ""
    assert serialize(sdp) == body


def test_non_utf8_session_name_survives_round_trip() -> None:
    body = minimal().replace(b"s=Play", "s=摄像机".encode("gb2312"))
    assert serialize(parse(body)) == body


def test_repeated_t_lines_kept() -> None:
    body = crlf("v=0\no=a 0 0 IN IP4 1.2.3.4\ns=x\nt=1 2\nt=3 4\nr=7d 1h 0\n")
    sdp = parse(body)
    assert sdp.timing == (1, 2)
    assert sdp.extra == [("t", "3 4"), ("r", "7d 1h 0")]
    assert serialize(sdp) == body


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty SDP body"),
        (b"\r\n\r\n", "empty SDP body"),
        (
            b"o=a 0 0 IN IP4 1.2.3.4\r\n",
            "line 1: SDP must start with v=, got 'o=a 0 0 IN IP4 1.2.3.4'",
        ),
        (b"v=zero\r\n", "line 1: bad v= 'zero'"),
        (b"v=0\r\ns=x\r\n", "missing o= line"),
        (b"v=0\r\no=a 0 0 IN IP4\r\n", "line 2: bad o= 'a 0 0 IN IP4': expected 6 fields"),
        (b"v=0\r\nv=0\r\n", "line 2: duplicate v= line"),
        (b"v=0\r\nhello\r\n", "line 2: expected <type>=<value>, got 'hello'"),
        (b"v=0\r\n=x\r\n", "line 2: expected <type>=<value>, got '=x'"),
    ],
)
def test_session_errors(body: bytes, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse(body)
    assert str(info.value) == message
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    ("media", "message"),
    [
        ("m=video\n", "line 6: bad m= 'video': expected <media> <port> <proto> <fmt>..."),
        (
            "m=video 5000 RTP/AVP\n",
            "line 6: bad m= 'video 5000 RTP/AVP': expected <media> <port> <proto> <fmt>...",
        ),
        ("m=video abc RTP/AVP 96\n", "line 6: bad m= port 'abc': not a port number"),
        ("m=video 70000 RTP/AVP 96\n", "line 6: bad m= port '70000': not a port number"),
        ("m=video -1 RTP/AVP 96\n", "line 6: bad m= port '-1': not a port number"),
        ("m=video 5000/x RTP/AVP 96\n", "line 6: bad m= port count '5000/x'"),
        (
            "m=video 5000 RTP/AVP 96\ny=abc\n",
            "line 7: bad y= 'abc': SSRC must be 1-10 decimal digits",
        ),
        (
            "m=video 5000 RTP/AVP 96\ny=01234567890\n",
            "line 7: bad y= '01234567890': SSRC must be 1-10 decimal digits",
        ),
        ("m=video 5000 RTP/AVP 96\ny=\n", "line 7: bad y= '': SSRC must be 1-10 decimal digits"),
        ("m=video 5000 RTP/AVP 96\ny=1\ny=2\n", "line 8: duplicate y= line"),
        (
            "m=video 5000 RTP/AVP 96\nc=IN IP4\n",
            "line 7: bad c= 'IN IP4': expected <nettype> <addrtype> <address>",
        ),
        ("m=video 5000 RTP/AVP 96\ns=again\n", "line 7: s= line inside a media section"),
    ],
)
def test_media_errors(media: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse(minimal(media=media))
    assert str(info.value) == message


def test_bad_t_line() -> None:
    with pytest.raises(SdpError, match=r"line 4: bad t= 'now later'"):
        parse(b"v=0\r\no=a 0 0 IN IP4 1.2.3.4\r\ns=x\r\nt=now later\r\n")


def test_oversized_body() -> None:
    with pytest.raises(SdpError, match="too large"):
        parse(b"v=0\r\n" + b"a=x\r\n" * 20000)


def test_sdp_error_is_value_error_and_remote_error() -> None:
    assert issubclass(SdpError, ValueError)
    assert issubclass(SdpError, RemoteSipError)


# -- helpers ---------------------------------------------------------------------------


def test_media_helpers() -> None:
    sdp = parse(
        minimal(
            media="m=video 5000 RTP/AVP/TCP 96 97\n"
            "a=setup:ACTIVE\na=connection:new\na=rtpmap:96 PS/90000\n"
            "a=rtpmap:97 bogus\na=downloadspeed:4\n"
        )
    )
    video = sdp.media[0]
    assert video.is_tcp
    assert video.setup == "active"
    assert video.rtpmap() == {96: ("PS", 90000)}
    assert video.download_speed == 4
    assert video.file_size is None
    assert video.direction is None
    assert sdp.media_direction(video) == "sendrecv"
    assert video.attribute("CONNECTION") == "new"


def test_session_level_direction_applies_to_media() -> None:
    sdp = parse(
        minimal(extra="", media="m=audio 8000 RTP/AVP 8\n").replace(
            b"t=0 0\r\n", b"t=0 0\r\na=recvonly\r\n"
        )
    )
    assert sdp.media_direction(sdp.media[0]) == "recvonly"
    assert sdp.first_media("video") is None
    assert sdp.first_media("audio") is sdp.media[0]


def test_media_ip_falls_back_to_session_and_strips_ttl() -> None:
    sdp = parse(minimal().replace(b"c=IN IP4 1.2.3.4", b"c=IN IP4 224.2.1.1/127"))
    assert sdp.media_ip() == "224.2.1.1"
    assert dataclasses.replace(sdp, connection=None).media_ip() is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=stream:1", ("stream", 1)),
        ("a=streamnumber:0", ("streamnumber", 0)),
        ("a=streamprofile:1", ("streamprofile", 1)),
        ("a=streamMode:sub", ("streamMode", 1)),
        ("a=streamMode:MAIN", ("streamMode", 0)),
        ("a=streamMode:hd", None),
        ("a=recvonly", None),
    ],
)
def test_stream_index(line: str, expected: tuple[str, int] | None) -> None:
    sdp = parse(minimal(media=f"m=video 5000 RTP/AVP 96\n{line}\n"))
    assert sdp.media[0].stream_index == expected


def test_non_numeric_filesize_is_ignored() -> None:
    sdp = parse(minimal(media="m=video 5000 RTP/AVP 96\na=filesize:big\n"))
    assert sdp.media[0].file_size is None


# -- builders --------------------------------------------------------------------------


def test_offer_matches_exosip_log_shape() -> None:
    offer = build_gb_offer(
        device_id="34020000002000000001",
        channel_id="34020000001320000001",
        ip="127.0.0.1",
        port=30000,
        ssrc="0200000329",
        payloads=("96 PS/90000", "97 MPEG4/90000", "98 H264/90000"),
    )
    # The log's stub also wrote u= for Play; GB/T 28181-2016 §F.1 only needs it for history.
    expected = EXOSIP_OFFER.replace(b"u=34020000001320000001:0\r\n", b"")
    assert serialize(offer) == expected
    assert parse(serialize(offer)) == offer


def test_default_offer_payloads_like_wvp() -> None:
    offer = build_gb_offer(
        device_id="34020000002000000001",
        channel_id="34020000001320000001",
        ip="192.168.1.10",
        port=30002,
        ssrc="0340200001",
    )
    video = offer.media[0]
    assert video.formats == ["96", "98", "97", "99"]
    assert video.rtpmap()[99] == ("H265", 90000)
    assert offer.uri is None
    assert offer.timing == (0, 0)


def test_playback_tcp_passive_offer() -> None:
    offer = build_gb_offer(
        device_id="34020000002000000001",
        channel_id="34020000001310000001",
        ip="10.1.1.1",
        port=30004,
        ssrc="1340200002",
        session="Download",
        tcp="passive",
        start=1700000000,
        end=1700003600,
        download_speed=4,
        stream_index=("streamMode", 1),
        media_format="v/2/5/25/1/4096a///",
    )
    text = serialize(offer).decode()
    assert (
        "s=Download\r\nu=34020000001310000001:0\r\nc=IN IP4 10.1.1.1\r\nt=1700000000 1700003600\r\n"
        in text
    )
    assert "m=video 30004 TCP/RTP/AVP 96 98 97 99\r\n" in text
    assert (
        "a=setup:passive\r\na=connection:new\r\na=downloadspeed:4\r\na=streamMode:sub\r\n" in text
    )
    assert text.endswith("y=1340200002\r\nf=v/2/5/25/1/4096a///\r\n")
    assert parse(serialize(offer)) == offer


def test_talk_offer_is_audio_sendrecv() -> None:
    offer = build_gb_offer(
        device_id="34020000002000000001",
        channel_id="34020000001370000001",
        ip="10.1.1.1",
        port=30006,
        ssrc="0340200003",
        session="Talk",
        tcp="active",
    )
    audio = offer.media[0]
    assert (audio.media, audio.proto, audio.formats) == ("audio", "TCP/RTP/AVP", ["8"])
    assert audio.direction == "sendrecv"
    assert audio.rtpmap() == {8: ("PCMA", 8000)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ssrc": "12345678901"},
        {"ssrc": "abc"},
        {"session": "Live"},
        {"tcp": "actpass"},
        {"port": 70000},
        {"payloads": ("PS/90000",)},
    ],
)
def test_offer_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "device_id": "1",
        "channel_id": "2",
        "ip": "1.1.1.1",
        "port": 1,
        "ssrc": "1",
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        build_gb_offer(**args)  # type: ignore[arg-type]


def test_answer_matches_exosip_device() -> None:
    answer = build_gb_answer(
        parse(EXOSIP_OFFER), device_id="34020000001320000001", ip="127.0.0.1", port=17724
    )
    assert serialize(answer) == EXOSIP_ANSWER


@pytest.mark.parametrize(
    ("offered", "answered"), [("passive", "active"), ("active", "passive"), ("actpass", "active")]
)
def test_answer_inverts_tcp_setup(offered: str, answered: str) -> None:
    offer = parse(
        minimal(
            media=f"m=video 5000 TCP/RTP/AVP 98 96\na=recvonly\na=rtpmap:98 H264/90000\n"
            f"a=rtpmap:96 PS/90000\na=setup:{offered}\na=connection:new\ny=1340200002\n"
        )
        .replace(b"s=Play", b"s=Playback")
        .replace(b"t=0 0", b"t=100 200")
    )
    answer = build_gb_answer(
        offer,
        device_id="34020000001320000001",
        ip="10.0.0.9",
        port=15060,
        media_format="v/2/5/25/1/4096a///",
    )
    video = answer.media[0]
    assert video.setup == answered
    assert video.is_tcp
    assert video.formats == ["96"]
    assert video.direction == "sendonly"
    assert answer.session_name == "Playback"
    assert answer.timing == (100, 200)
    assert answer.effective_ssrc == "1340200002"
    assert answer.effective_format == "v/2/5/25/1/4096a///"


def test_answer_ssrc_override_and_errors() -> None:
    offer = parse(EXOSIP_OFFER)
    answer = build_gb_answer(offer, device_id="d", ip="1.1.1.1", port=2, ssrc="0200000999")
    assert answer.ssrc_int == 200000999

    no_ps = parse(minimal(media="m=video 5000 RTP/AVP 98\na=rtpmap:98 H264/90000\ny=1\n"))
    with pytest.raises(SdpError) as info:
        build_gb_answer(no_ps, device_id="d", ip="1.1.1.1", port=2)
    assert info.value.status_hint == 488

    no_y = parse(minimal(media="m=video 5000 RTP/AVP 96\na=rtpmap:96 PS/90000\n"))
    with pytest.raises(SdpError, match="no y= SSRC"):
        build_gb_answer(no_y, device_id="d", ip="1.1.1.1", port=2)


def test_frozen_model() -> None:
    sdp = parse(EXOSIP_OFFER)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sdp.session_name = "Playback"  # type: ignore[misc]
    changed = dataclasses.replace(sdp, session_name="Playback")
    assert b"s=Playback\r\n" in serialize(changed)


def test_hand_built_model_serialises() -> None:
    sdp = SessionDescription(
        version=0,
        origin=Origin("x", "1", "2", "IN", "IP4", "1.1.1.1"),
        session_name="Play",
        media=[MediaDescription("video", 5, None, "RTP/AVP", ["96"], ssrc="7")],
    )
    assert serialize(sdp) == crlf(
        "v=0\no=x 1 2 IN IP4 1.1.1.1\ns=Play\nt=0 0\nm=video 5 RTP/AVP 96\ny=7\n"
    )


# -- property tests ----------------------------------------------------------------------


@given(st.binary(max_size=400))
def test_fuzz_bytes_never_crash(body: bytes) -> None:
    try:
        parse(body)
    except SdpError:
        pass


_line_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=20
).map(str.strip)


@given(st.lists(st.tuples(st.sampled_from("aybfxic"), _line_text), max_size=12))
def test_fuzz_sdp_lines_never_crash(lines: list[tuple[str, str]]) -> None:
    body = minimal(extra="".join(f"{k}={v}\n" for k, v in lines))
    try:
        sdp = parse(body)
    except SdpError:
        return
    again = parse(serialize(sdp))
    assert serialize(again) == serialize(sdp)


@given(
    port=st.integers(0, 65535),
    ssrc=st.from_regex(r"[0-9]{1,10}", fullmatch=True),
    session=st.sampled_from(["Play", "Playback", "Download", "Talk"]),
    tcp=st.sampled_from([None, "active", "passive"]),
)
def test_fuzz_offer_round_trip(port: int, ssrc: str, session: str, tcp: str | None) -> None:
    offer = build_gb_offer(
        device_id="34020000002000000001",
        channel_id="34020000001320000001",
        ip="10.0.0.1",
        port=port,
        ssrc=ssrc,
        session=session,
        tcp=tcp,
    )
    body = serialize(offer)
    assert parse(body) == offer
    assert serialize(parse(body)) == body


@pytest.mark.parametrize(("text", "expected"), [
    ("1", ("streamnumber", 1)),
    ("0", ("streamnumber", 0)),
    ("stream:1", ("stream", 1)),
    ("STREAMPROFILE:1", ("streamprofile", 1)),
    ("streammode:sub", ("streamMode", 1)),
    ("streamMode:main", ("streamMode", 0)),
])
def test_parse_stream_choice(text: str, expected: tuple[str, int]) -> None:
    assert sdp.parse_stream_choice(text) == expected


@pytest.mark.parametrize("text", ["a b", "bogus:1", "stream:x", "stream:10", ""])
def test_parse_stream_choice_rejects(text: str) -> None:
    with pytest.raises(sdp.SdpError):
        sdp.parse_stream_choice(text)


def test_session_and_media_y_lines_survive_a_round_trip() -> None:
    """Found by fuzz/run.py sdp: a session-level y= was written after the m= section,
    where it read back as a second media-level y= (a duplicate, SdpError)."""
    body = crlf(
        "v=0\no=a 0 0 IN IP4 1.2.3.4\ns=Play\nc=IN IP4 1.2.3.4\nt=0 0\ny=0200000329\nf=v/2/5/25/1/4096a///\n"
        "m=video 30000 RTP/AVP 96\na=rtpmap:96 PS/90000\ny=0200000330\nf=v/2/4///a///\n"
    )
    first = sdp.parse(body)
    again = sdp.parse(sdp.serialize(first))
    assert (again.ssrc, again.format) == ("0200000329", "v/2/5/25/1/4096a///")
    assert (again.media[0].ssrc, again.media[0].format) == ("0200000330", "v/2/4///a///")
    assert sdp.serialize(again) == sdp.serialize(first)
