"""Tests for sip.auth: Digest syntax, computation, the stateless-nonce server and the client."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip.auth import (
    AuthError,
    AuthFailure,
    AuthResult,
    AuthStatus,
    DigestServer,
    authorization_for,
    digest_response,
    format_authorization,
    format_challenge,
    ha1,
    parse_auth_header,
)

REALM = "3402000000"
SECRET = b"test secret shared by the cluster"
PASSWORD = "12345678"
PASSWORDS = {"34020000001320000001": PASSWORD, "34020000001320000020": PASSWORD}

# From /work/shared/vectors/sip-wire/exosip-device-udp.log (third REGISTER).
EXOSIP_CHALLENGE = (
    'Digest realm="3402000000", nonce="ba0a9d5e3e5ab9d632167ad5bd9ad6d5", algorithm=MD5'
)
EXOSIP_AUTHORIZATION = (
    'Digest username="34020000001320000001", realm="3402000000", '
    'nonce="ba0a9d5e3e5ab9d632167ad5bd9ad6d5", uri="sip:34020000002000000001@127.0.0.1:5060", '
    'response="ea45a17d040c128bb60f43186f1b3fa7", algorithm=MD5'
)
# From /work/shared/vectors/sip-wire/pjsua2-device.log (second REGISTER).
PJSUA2_AUTHORIZATION = (
    'Digest username="34020000001320000020", realm="3402000000", '
    'nonce="d2125b7c29f0751eefb0b0fe2efa567b", uri="sip:34020000002000000001@127.0.0.1:5066", '
    'response="53cdda6575e2912186f34fd31bf5af3e", algorithm=MD5'
)


def lookup(username: str, algorithm: str) -> str | None:
    password = PASSWORDS.get(username)
    return None if password is None else ha1(username, REALM, password, algorithm)


def server(**kwargs: object) -> DigestServer:
    return DigestServer(REALM, SECRET, **kwargs)  # type: ignore[arg-type]


def answer(challenge: str, *, username: str = "34020000001320000001", **kwargs: object) -> str:
    args: dict[str, object] = {
        "method": "REGISTER",
        "uri": "sip:34020000002000000001@3402000000",
        "username": username,
        "password": PASSWORD,
        "rng": random.Random(7),
    }
    args.update(kwargs)
    return authorization_for(challenge, **args)  # type: ignore[arg-type]


# -- RFC and wire vectors --------------------------------------------------------------


def test_rfc2617_mufasa_vector() -> None:
    # RFC 2617 §3.5.
    key = ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response(
        key,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_sha256_vector() -> None:
    # RFC 7616 §3.9.1 (the SHA-256 response; same inputs as RFC 2617's example).
    key = ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256")
    response = digest_response(
        key,
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "GET",
        "/dir/index.html",
        algorithm="SHA-256",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


@pytest.mark.parametrize("header", [EXOSIP_AUTHORIZATION, PJSUA2_AUTHORIZATION])
def test_device_vectors_check_with_password_12345678(header: str) -> None:
    scheme, params = parse_auth_header(header)
    assert scheme == "Digest"
    key = ha1(params["username"], params["realm"], PASSWORD, params["algorithm"])
    assert digest_response(key, params["nonce"], "REGISTER", params["uri"]) == params["response"]


def test_client_reproduces_exosip_authorization_exactly() -> None:
    header = authorization_for(
        EXOSIP_CHALLENGE,
        method="REGISTER",
        uri="sip:34020000002000000001@127.0.0.1:5060",
        username="34020000001320000001",
        password=PASSWORD,
        rng=random.Random(0),
    )
    assert header == EXOSIP_AUTHORIZATION


def test_exosip_header_structure_against_our_server() -> None:
    digest = server()
    rng = random.Random(1)
    challenge = digest.challenge(1000.0, rng)
    _, params = parse_auth_header(challenge)
    assert set(params) == {"realm", "nonce", "algorithm"}
    header = answer(challenge, uri="sip:34020000002000000001@127.0.0.1:5060")
    assert list(parse_auth_header(header)[1]) == list(parse_auth_header(EXOSIP_AUTHORIZATION)[1])
    assert digest.verify(header, "REGISTER", 1001.0, lookup).ok


def test_foreign_nonce_is_bad_nonce() -> None:
    # The stub's nonce in the wire log carries no HMAC of ours.
    result = server().verify(EXOSIP_AUTHORIZATION, "REGISTER", 0.0, lookup)
    assert result.status is AuthStatus.BAD
    assert result.reason is AuthFailure.BAD_NONCE


# -- header syntax ------------------------------------------------------------------------


def test_parse_quoted_escapes_commas_case_and_whitespace() -> None:
    scheme, params = parse_auth_header(
        '  digest  Realm = "a, \\"b\\" \\\\c" ,, NONCE="n",algorithm=SHA-256 , qop="auth,auth-int",'
    )
    assert scheme == "digest"
    assert params == {
        "realm": 'a, "b" \\c',
        "nonce": "n",
        "algorithm": "SHA-256",
        "qop": "auth,auth-int",
    }


def test_parse_lenient_unquoted_values() -> None:
    _, params = parse_auth_header("Digest uri=sip:1@2:5060, nonce=abc==, nc=00000001")
    assert params == {"uri": "sip:1@2:5060", "nonce": "abc==", "nc": "00000001"}


def test_parse_scheme_only() -> None:
    assert parse_auth_header("Digest") == ("Digest", {})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "no authentication scheme in ''"),
        ('"Digest"', "no authentication scheme in '\"Digest\"'"),
        ("Digest realm", "parameter 'realm' has no '=' value"),
        ('Digest realm="abc', "unterminated quoted string in authentication header"),
        ('Digest realm="abc\\', "unterminated quoted string in authentication header"),
        ("Digest realm=", "parameter 'realm' has an empty value"),
        ("Digest realm=a, realm=b", "parameter 'realm' given twice"),
        ('Digest realm="a" nonce="b"', "expected ',' after parameter 'realm', got 'n'"),
        ("Digest =x", "expected a parameter name at offset 7 of 'Digest =x'"),
        ("Digest, realm=a", "bad character ',' after scheme 'Digest'"),
        ("Digest realm=a b", "expected ',' after parameter 'realm', got 'b'"),
    ],
)
def test_parse_garbage_raises_auth_error(value: str, message: str) -> None:
    with pytest.raises(AuthError) as info:
        parse_auth_header(value)
    assert str(info.value) == message
    assert info.value.status_hint == 400


def test_parse_rejects_huge_header() -> None:
    with pytest.raises(AuthError, match="too long"):
        parse_auth_header("Digest realm=" + "a" * 10000)


def test_format_challenge_round_trips() -> None:
    value = format_challenge(
        'we"ird\\realm',
        "abc",
        algorithm="SHA-256",
        qop="auth",
        opaque="o",
        stale=True,
        domain="sip:x",
    )
    assert value == (
        'Digest realm="we\\"ird\\\\realm", domain="sip:x", nonce="abc", opaque="o", '
        'stale=true, algorithm=SHA-256, qop="auth"'
    )
    assert parse_auth_header(value) == (
        "Digest",
        {
            "realm": 'we"ird\\realm',
            "domain": "sip:x",
            "nonce": "abc",
            "opaque": "o",
            "stale": "true",
            "algorithm": "SHA-256",
            "qop": "auth",
        },
    )


def test_format_refuses_control_characters() -> None:
    with pytest.raises(ValueError):
        format_challenge("a\r\nInjected: 1", "n")


def test_format_authorization_with_qop() -> None:
    value = format_authorization(
        username="u",
        realm="r",
        nonce="n",
        uri="sip:x",
        response="f",
        cnonce="c",
        opaque="o",
        qop="auth",
        nc="00000001",
    )
    assert value.endswith('algorithm=MD5, cnonce="c", opaque="o", qop=auth, nc=00000001')


# -- computation ---------------------------------------------------------------------------


def test_ha1_algorithms() -> None:
    assert ha1("u", "r", "p") == ha1("u", "r", "p", "md5")
    assert len(ha1("u", "r", "p", "SHA-256")) == 64
    assert ha1("u", "r", "p", "MD5-sess") == ha1("u", "r", "p", "MD5")
    with pytest.raises(AuthError, match="unsupported digest algorithm 'SHA-1'"):
        ha1("u", "r", "p", "SHA-1")


def test_digest_response_argument_errors() -> None:
    key = ha1("u", "r", "p")
    with pytest.raises(AuthError, match="needs nc and cnonce"):
        digest_response(key, "n", "REGISTER", "sip:x", qop="auth")
    with pytest.raises(AuthError, match="unsupported qop"):
        digest_response(key, "n", "REGISTER", "sip:x", qop="auth-conf", nc="1", cnonce="c")
    with pytest.raises(AuthError, match="needs a cnonce"):
        digest_response(key, "n", "REGISTER", "sip:x", algorithm="MD5-sess")


def test_auth_int_hashes_the_body() -> None:
    key = ha1("u", "r", "p")
    a = digest_response(key, "n", "MESSAGE", "sip:x", qop="auth-int", nc="1", cnonce="c", body=b"a")
    b = digest_response(key, "n", "MESSAGE", "sip:x", qop="auth-int", nc="1", cnonce="c", body=b"b")
    assert a != b


# -- server ---------------------------------------------------------------------------------


def test_nonce_valid_across_three_challenges() -> None:
    digest = server()
    rng = random.Random(42)
    challenges = [digest.challenge(1000.0 + i, rng) for i in range(3)]
    nonces = {parse_auth_header(c)[1]["nonce"] for c in challenges}
    assert len(nonces) == 3
    # eXosip answers the first challenge after the third 401.
    first = answer(challenges[0])
    assert digest.verify(first, "REGISTER", 1003.0, lookup) == AuthResult(
        AuthStatus.OK, None, "34020000001320000001"
    )
    assert digest.verify(answer(challenges[2]), "REGISTER", 1003.0, lookup).ok


def test_nonce_valid_in_another_process_sharing_the_secret() -> None:
    challenge = server().challenge(50.0, random.Random(3))
    assert server().verify(answer(challenge), "REGISTER", 60.0, lookup).ok
    other = DigestServer(REALM, b"another secret")
    assert other.verify(answer(challenge), "REGISTER", 60.0, lookup).reason is AuthFailure.BAD_NONCE


def test_stale_after_ttl_then_rechallenge() -> None:
    digest = server(nonce_ttl=300.0)
    rng = random.Random(5)
    header = answer(digest.challenge(1000.0, rng))
    assert digest.verify(header, "REGISTER", 1300.0, lookup).ok
    result = digest.verify(header, "REGISTER", 1300.5, lookup)
    assert result.stale and not result.ok
    assert result.reason is None
    again = digest.challenge(1300.5, rng, stale=True)
    assert parse_auth_header(again)[1]["stale"] == "true"
    assert digest.verify(answer(again), "REGISTER", 1301.0, lookup).ok


def test_stale_nonce_with_wrong_password_is_wrong_response() -> None:
    digest = server(nonce_ttl=10.0)
    header = answer(digest.challenge(0.0, random.Random(1)), password="nope")
    assert digest.verify(header, "REGISTER", 100.0, lookup).reason is AuthFailure.WRONG_RESPONSE


def test_tampered_nonce_is_bad() -> None:
    digest = server()
    challenge = digest.challenge(1000.0, random.Random(9))
    nonce = parse_auth_header(challenge)[1]["nonce"]
    # Move the timestamp forward to dodge the ttl: the HMAC no longer matches.
    forged_nonce = f"{int(nonce[:12], 16) + 10_000:012x}" + nonce[12:]
    forged = answer(challenge.replace(nonce, forged_nonce))
    result = digest.verify(forged, "REGISTER", 11000.0, lookup)
    assert result.status is AuthStatus.BAD
    assert result.reason is AuthFailure.BAD_NONCE


def test_nonce_from_the_future_is_bad() -> None:
    digest = server()
    header = answer(digest.challenge(5000.0, random.Random(9)))
    assert digest.verify(header, "REGISTER", 1000.0, lookup).reason is AuthFailure.BAD_NONCE


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda h: h.replace(
                'username="34020000001320000001"', 'username="34020000001320000099"'
            ),
            AuthFailure.UNKNOWN_USER,
        ),
        (
            lambda h: h.replace('realm="3402000000"', 'realm="4401000000"'),
            AuthFailure.REALM_MISMATCH,
        ),
        (
            lambda h: h.replace("algorithm=MD5", "algorithm=SHA-256"),
            AuthFailure.UNSUPPORTED_ALGORITHM,
        ),
        (
            lambda h: h.replace("algorithm=MD5", "algorithm=SHA-1"),
            AuthFailure.UNSUPPORTED_ALGORITHM,
        ),
        (lambda h: h.replace("Digest ", "Basic "), AuthFailure.MALFORMED),
        (lambda h: h.replace('uri="', 'url="'), AuthFailure.MALFORMED),
        (lambda h: h[:-10], AuthFailure.MALFORMED),
        (lambda h: h + ", qop=auth", AuthFailure.MALFORMED),
        (lambda h: h + ", qop=auth-conf, nc=00000001, cnonce=x", AuthFailure.MALFORMED),
        (lambda h: "garbage", AuthFailure.MALFORMED),
        (lambda h: "", AuthFailure.MALFORMED),
    ],
)
def test_bad_authorizations(mutate: object, reason: AuthFailure) -> None:
    digest = server()
    header = answer(digest.challenge(0.0, random.Random(2)))
    result = digest.verify(mutate(header), "REGISTER", 1.0, lookup)  # type: ignore[operator]
    assert result.status is AuthStatus.BAD
    assert result.reason is reason
    assert result.detail


def test_non_ascii_response_is_wrong_response_not_a_crash() -> None:
    digest = server()
    header = answer(digest.challenge(0.0, random.Random(2)))
    _, params = parse_auth_header(header)
    odd = header.replace(params["response"], "\u4e2d\ud800")
    assert digest.verify(odd, "REGISTER", 1.0, lookup).reason is AuthFailure.WRONG_RESPONSE


def test_wrong_password_and_wrong_method() -> None:
    digest = server()
    challenge = digest.challenge(0.0, random.Random(2))
    assert digest.verify(answer(challenge, password="x"), "REGISTER", 1.0, lookup).reason is (
        AuthFailure.WRONG_RESPONSE
    )
    assert (
        digest.verify(answer(challenge), "INVITE", 1.0, lookup).reason is AuthFailure.WRONG_RESPONSE
    )


def test_uri_is_hashed_as_sent_not_compared() -> None:
    digest = server()
    challenge = digest.challenge(0.0, random.Random(2))
    for uri in ("sip:3402000000", "sip:34020000002000000001@10.0.0.1:5060;transport=udp"):
        assert digest.verify(answer(challenge, uri=uri), "REGISTER", 1.0, lookup).ok


def test_uppercase_response_hex_accepted() -> None:
    digest = server()
    header = answer(digest.challenge(0.0, random.Random(2)))
    _, params = parse_auth_header(header)
    upper = header.replace(params["response"], params["response"].upper())
    assert digest.verify(upper, "REGISTER", 1.0, lookup).ok


def test_sha256_round_trip() -> None:
    digest = server(algorithms=("SHA-256", "MD5"))
    rng = random.Random(11)
    challenges = digest.challenges(0.0, rng)
    assert [parse_auth_header(c)[1]["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
    header = answer(challenges[0])
    params = parse_auth_header(header)[1]
    assert params["algorithm"] == "SHA-256"
    assert len(params["response"]) == 64
    assert digest.verify(header, "REGISTER", 1.0, lookup).ok
    assert digest.verify(answer(challenges[1]), "REGISTER", 1.0, lookup).ok


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_qop_auth_round_trip(algorithm: str) -> None:
    digest = server(algorithms=(algorithm,), qop=True)
    challenge = digest.challenge(0.0, random.Random(4), algorithm=algorithm)
    assert parse_auth_header(challenge)[1]["qop"] == "auth"
    header = answer(challenge, nc=3)
    params = parse_auth_header(header)[1]
    assert params["qop"] == "auth"
    assert params["nc"] == "00000003"
    assert len(params["cnonce"]) == 16
    assert digest.verify(header, "REGISTER", 1.0, lookup).ok
    # qop offered but the client answered RFC 2069 style: refused.
    plain = answer(challenge.replace(', qop="auth"', ""))
    assert digest.verify(plain, "REGISTER", 1.0, lookup).reason is AuthFailure.MALFORMED


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_sess_round_trip(algorithm: str) -> None:
    digest = server(algorithms=(algorithm,), qop=True)
    challenge = digest.challenge(0.0, random.Random(4), algorithm=algorithm)
    assert f"algorithm={algorithm}" in challenge
    assert digest.verify(answer(challenge), "REGISTER", 1.0, lookup).ok


def test_auth_int_round_trip() -> None:
    digest = server(qop=True)
    challenge = digest.challenge(0.0, random.Random(4)).replace('qop="auth"', 'qop="auth-int"')
    header = answer(challenge, method="MESSAGE", body=b"<xml/>")
    assert parse_auth_header(header)[1]["qop"] == "auth-int"
    assert digest.verify(header, "MESSAGE", 1.0, lookup, body=b"<xml/>").ok
    assert not digest.verify(header, "MESSAGE", 1.0, lookup, body=b"<other/>").ok


def test_server_configuration_errors() -> None:
    with pytest.raises(ValueError):
        DigestServer(REALM, b"")
    with pytest.raises(ValueError):
        DigestServer(REALM, SECRET, algorithms=())
    with pytest.raises(AuthError):
        DigestServer(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(ValueError, match="not configured"):
        server().challenge(0.0, random.Random(1), algorithm="SHA-256")


def test_nonce_is_deterministic_for_a_seeded_rng() -> None:
    a = server().challenge(123.0, random.Random(8))
    b = server().challenge(123.0, random.Random(8))
    assert a == b
    nonce = parse_auth_header(a)[1]["nonce"]
    assert len(nonce) == 52 and all(c in "0123456789abcdef" for c in nonce)


# -- client -----------------------------------------------------------------------------------


def test_client_echoes_opaque_and_rejects_unusable_challenges() -> None:
    header = answer('Digest realm="r", nonce="n", opaque="xyz"')
    assert parse_auth_header(header)[1]["opaque"] == "xyz"
    for challenge, message in [
        ('Basic realm="r"', "cannot answer a 'Basic' challenge"),
        ('Digest realm="r"', "challenge lacks realm or nonce"),
        ('Digest realm="r", nonce="n", algorithm=SHA-1', "unsupported digest algorithm 'SHA-1'"),
        ('Digest realm="r", nonce="n", qop="auth-conf"', "no supported qop in 'auth-conf'"),
        ('Digest realm="r", nonce="n', "unterminated quoted string in authentication header"),
    ]:
        with pytest.raises(AuthError) as info:
            answer(challenge)
        assert str(info.value) == message


# -- property tests ----------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_fuzz_parse_auth_header_never_crashes(value: str) -> None:
    try:
        scheme, params = parse_auth_header(value)
    except AuthError:
        return
    assert scheme
    assert all(name == name.lower() for name in params)


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10)
_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t中文"),
    max_size=30,
)


@given(st.dictionaries(_names, _values, max_size=8))
def test_fuzz_quoted_params_round_trip(params: dict[str, str]) -> None:
    value = "Digest " + ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in params.items()
    )
    assert parse_auth_header(value) == ("Digest", params)


@given(st.text(max_size=200), st.text(max_size=30))
def test_fuzz_verify_never_crashes(value: str, method: str) -> None:
    result = server().verify(value, method or "REGISTER", 0.0, lookup)
    assert result.status is AuthStatus.BAD
