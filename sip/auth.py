"""HTTP Digest authentication for SIP (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).

Theory of operation
-------------------
Server side, ``DigestServer.challenge()`` builds a ``WWW-Authenticate`` value
whose nonce is stateless::

    nonce = hex(issued_at, 12) + hex(random, 8) + hex(HMAC-SHA256(secret, realm|issued_at|random))[:32]

so any process holding the secret can check a nonce it never stored, and a
nonce stays good for ``nonce_ttl`` seconds across as many challenges as a
device provokes: eXosip devices send two unauthenticated REGISTERs and then
answer the *first* challenge (see the eXosip wire log). ``verify()`` checks an
``Authorization`` value and returns an ``AuthResult``: ``ok``; ``stale`` when
the digest is right but the nonce has aged out (RFC 2617 §3.2.1: re-challenge
with ``stale=true`` so the device retries without asking its user); or ``bad``
with a ``reason``. The ``uri`` parameter is hashed exactly as the client sent
it: vendors disagree about which URI to put there (Request-URI, To, the
registrar's address), and RFC 2617 §3.2.2's URI check buys nothing over TLS
or in GB deployments.

Client side, ``authorization_for()`` answers a challenge (the device simulator
and the upward cascade registration use it).

Stored credentials are HA1 = H(username:realm:password) per algorithm, looked
up through a callback, so a password database may keep either HA1s or
passwords. ``-sess`` variants (RFC 2617 §3.2.2.2) derive their session HA1
from that stored one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sip.errors import RemoteSipError

if TYPE_CHECKING:
    # Sans-IO: randomness comes from the caller's injected generator.
    import random

log = logging.getLogger(__name__)

__all__ = [
    "AuthError",
    "AuthFailure",
    "AuthResult",
    "AuthStatus",
    "DigestServer",
    "authorization_for",
    "digest_response",
    "format_authorization",
    "format_challenge",
    "ha1",
    "parse_auth_header",
]

# Longest header value we parse; a real Digest header is a few hundred bytes.
MAX_HEADER_LENGTH = 8192

# A nonce from a peer whose clock runs ahead of ours by up to this is accepted.
MAX_CLOCK_SKEW = 30.0

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
ALGORITHMS = ("MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS")
# How each algorithm is spelled on the wire (RFC 7616 §3.3).
_WIRE_NAMES = {
    "MD5": "MD5",
    "MD5-SESS": "MD5-sess",
    "SHA-256": "SHA-256",
    "SHA-256-SESS": "SHA-256-sess",
}

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
)
_WS = " \t\r\n"
_NONCE_RE = re.compile(r"([0-9a-f]{12})([0-9a-f]{8})([0-9a-f]{32})")


class AuthError(RemoteSipError, ValueError):
    """An authentication header cannot be parsed or used (RFC 3261 §25.1, RFC 7235 §2.1)."""

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason, status_hint)


# -- header syntax -------------------------------------------------------------


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split a Digest header value into ``(scheme, params)`` (RFC 3261 §25.1, RFC 7235 §2.1).

    ``scheme`` is returned as sent (compare it case-insensitively); parameter
    names are lower-cased; quoted strings lose their quotes and ``\\``
    escapes, and may contain commas. Whitespace around ``=`` and ``,`` and empty
    list elements are tolerated. Raises ``AuthError`` for anything else: no
    scheme, an unterminated quote, a parameter without ``=``, a repeated name.
    """
    if len(value) > MAX_HEADER_LENGTH:
        raise AuthError(f"authentication header too long ({len(value)} chars)")
    pos = _skip(value, 0, _WS)
    start = pos
    while pos < len(value) and value[pos] in _TOKEN_CHARS:
        pos += 1
    scheme = value[start:pos]
    if not scheme:
        raise AuthError(f"no authentication scheme in {value[:60]!r}")
    if pos < len(value) and value[pos] not in _WS:
        raise AuthError(f"bad character {value[pos]!r} after scheme {scheme!r}")
    params: dict[str, str] = {}
    pos = _skip(value, pos, _WS + ",")
    while pos < len(value):
        start = pos
        while pos < len(value) and value[pos] in _TOKEN_CHARS:
            pos += 1
        name = value[start:pos].lower()
        if not name:
            raise AuthError(f"expected a parameter name at offset {pos} of {value[:60]!r}")
        pos = _skip(value, pos, _WS)
        if pos >= len(value) or value[pos] != "=":
            raise AuthError(f"parameter {name!r} has no '=' value")
        pos = _skip(value, pos + 1, _WS)
        if pos < len(value) and value[pos] == '"':
            param, pos = _quoted_string(value, pos)
        else:
            param, pos = _bare_value(value, pos, name)
        if name in params:
            raise AuthError(f"parameter {name!r} given twice")
        params[name] = param
        pos = _skip(value, pos, _WS)
        if pos < len(value) and value[pos] != ",":
            raise AuthError(f"expected ',' after parameter {name!r}, got {value[pos]!r}")
        pos = _skip(value, pos, _WS + ",")
    return scheme, params


def _skip(value: str, pos: int, chars: str) -> int:
    while pos < len(value) and value[pos] in chars:
        pos += 1
    return pos


def _quoted_string(value: str, pos: int) -> tuple[str, int]:
    """RFC 3261 §25.1 quoted-string starting at the opening quote; returns (text, end)."""
    out: list[str] = []
    pos += 1
    while pos < len(value):
        char = value[pos]
        if char == "\\":
            if pos + 1 >= len(value):
                break
            out.append(value[pos + 1])
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    raise AuthError("unterminated quoted string in authentication header")


def _bare_value(value: str, pos: int, name: str) -> tuple[str, int]:
    """An unquoted value: a token, leniently anything up to ``,`` or whitespace.

    Some devices send ``uri=sip:...`` or ``nonce=abc==`` unquoted; those are
    kept rather than refused.
    """
    start = pos
    while pos < len(value) and value[pos] not in _WS + ',"':
        pos += 1
    if pos == start:
        raise AuthError(f"parameter {name!r} has an empty value")
    return value[start:pos], pos


def _quote(text: str) -> str:
    """RFC 3261 §25.1 quoted-string with ``\\`` and ``"`` escaped."""
    if any(ord(c) < 0x20 and c != "\t" for c in text):
        raise ValueError(f"control character in header parameter {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format(scheme: str, params: Iterable[tuple[str, str, bool]]) -> str:
    parts = [f"{name}={_quote(v) if quoted else v}" for name, v, quoted in params]
    return f"{scheme} " + ", ".join(parts)


def format_challenge(
    realm: str,
    nonce: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    opaque: str | None = None,
    stale: bool = False,
    domain: str | None = None,
) -> str:
    """A ``WWW-Authenticate``/``Proxy-Authenticate`` value (RFC 2617 §3.2.1, RFC 7616 §3.3).

    ``qop`` is the quoted option list, e.g. ``"auth"``. ``stale`` is written
    only when true: absent means false (RFC 2617 §3.2.1), and the eXosip-era
    challenge shape in the wire logs has no ``stale`` at all.
    """
    params: list[tuple[str, str, bool]] = [("realm", realm, True)]
    if domain is not None:
        params.append(("domain", domain, True))
    params.append(("nonce", nonce, True))
    if opaque is not None:
        params.append(("opaque", opaque, True))
    if stale:
        params.append(("stale", "true", False))
    params.append(("algorithm", algorithm, False))
    if qop is not None:
        params.append(("qop", qop, True))
    return _format("Digest", params)


def format_authorization(
    *,
    username: str,
    realm: str,
    nonce: str,
    uri: str,
    response: str,
    algorithm: str = "MD5",
    cnonce: str | None = None,
    opaque: str | None = None,
    qop: str | None = None,
    nc: str | None = None,
) -> str:
    """An ``Authorization``/``Proxy-Authorization`` value (RFC 3261 §22.4, RFC 2617 §3.2.2).

    Parameter order and quoting follow eXosip: ``qop`` and ``nc`` unquoted.
    """
    params: list[tuple[str, str, bool]] = [
        ("username", username, True),
        ("realm", realm, True),
        ("nonce", nonce, True),
        ("uri", uri, True),
        ("response", response, True),
        ("algorithm", algorithm, False),
    ]
    if cnonce is not None:
        params.append(("cnonce", cnonce, True))
    if opaque is not None:
        params.append(("opaque", opaque, True))
    if qop is not None:
        params.append(("qop", qop, False))
    if nc is not None:
        params.append(("nc", nc, False))
    return _format("Digest", params)


# -- digest computation --------------------------------------------------------


def _normalise_algorithm(algorithm: str) -> str:
    name = algorithm.strip().upper()
    if name not in ALGORITHMS:
        raise AuthError(f"unsupported digest algorithm {algorithm!r}")
    return name


def _base(algorithm: str) -> str:
    return algorithm.removesuffix("-SESS")


def _hash(algorithm: str, text: str) -> str:
    return _HASHES[_base(algorithm)](text.encode("utf-8"))


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) as lower-case hex (RFC 2617 §3.2.2.2, RFC 7616 §3.4.2).

    For a ``-sess`` algorithm this is the stored, nonce-independent part;
    ``digest_response`` derives the session HA1 from it.
    """
    return _hash(_normalise_algorithm(algorithm), f"{username}:{realm}:{password}")


def digest_response(
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1; SHA-256 per RFC 8760).

    Without ``qop``: H(HA1:nonce:HA2) (the RFC 2069 form eXosip devices use).
    With ``qop=auth``/``auth-int``: H(HA1:nonce:nc:cnonce:qop:HA2), where
    ``nc`` is hashed as sent (8 hex digits). HA2 = H(method:uri), plus
    ``:H(body)`` for auth-int.
    """
    algo = _normalise_algorithm(algorithm)
    key = ha1_hex.lower()
    if algo.endswith("-SESS"):
        if cnonce is None:
            raise AuthError(f"{algo} needs a cnonce")
        key = _hash(algo, f"{key}:{nonce}:{cnonce}")
    if qop is None:
        ha2 = _hash(algo, f"{method}:{uri}")
        return _hash(algo, f"{key}:{nonce}:{ha2}")
    qop = qop.lower()
    if qop == "auth":
        ha2 = _hash(algo, f"{method}:{uri}")
    elif qop == "auth-int":
        ha2 = _hash(algo, f"{method}:{uri}:{_HASHES[_base(algo)](body)}")
    else:
        raise AuthError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise AuthError(f"qop={qop} needs nc and cnonce")
    return _hash(algo, f"{key}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# -- server --------------------------------------------------------------------


class AuthStatus(StrEnum):
    OK = "ok"
    STALE = "stale"
    BAD = "bad"


class AuthFailure(StrEnum):
    UNKNOWN_USER = "unknown user"
    WRONG_RESPONSE = "wrong response"
    BAD_NONCE = "bad nonce"
    REALM_MISMATCH = "realm mismatch"
    UNSUPPORTED_ALGORITHM = "unsupported algorithm"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class AuthResult:
    """Outcome of ``DigestServer.verify``.

    ``reason`` is set when ``status`` is BAD; ``detail`` is a human-readable
    line for the log; ``username`` is whatever the client claimed, if parsed.
    """

    status: AuthStatus
    reason: AuthFailure | None = None
    username: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK

    @property
    def stale(self) -> bool:
        return self.status is AuthStatus.STALE


Ha1Lookup = Callable[[str, str], str | None]


class DigestServer:
    """The registrar/UAS side of RFC 3261 §22.4 Digest with stateless nonces.

    ``secret`` keys the nonce HMAC; processes sharing it accept each other's
    nonces. ``algorithms`` are offered/accepted names (``MD5``, ``SHA-256``,
    and their ``-sess`` forms). With ``qop=True`` the challenge carries
    ``qop="auth"`` and answers must use it (RFC 2617 §3.2.2).
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_ttl: float = 300.0,
        algorithms: Iterable[str] = ("MD5",),
        qop: bool = False,
    ) -> None:
        if not secret:
            raise ValueError("DigestServer needs a non-empty secret")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(_normalise_algorithm(a) for a in algorithms)
        if not self.algorithms:
            raise ValueError("DigestServer needs at least one algorithm")
        self.qop = qop
        self._secret = secret

    def make_nonce(self, now: float, rng: random.Random) -> str:
        """A nonce carrying its issue time and an HMAC over it (RFC 2617 §3.2.1)."""
        issued = max(0, int(now)) & 0xFFFFFFFFFFFF
        salt = rng.getrandbits(32)
        stamp = f"{issued:012x}{salt:08x}"
        return stamp + self._mac(stamp)

    def _mac(self, stamp: str) -> str:
        message = f"{self.realm}|{stamp}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since ``nonce`` was issued, or None when it is not one of ours."""
        match = _NONCE_RE.fullmatch(nonce)
        if match is None:
            return None
        stamp = match.group(1) + match.group(2)
        if not hmac.compare_digest(self._mac(stamp), match.group(3)):
            return None
        return now - int(match.group(1), 16)

    def challenge(
        self, now: float, rng: random.Random, *, stale: bool = False, algorithm: str = "MD5"
    ) -> str:
        """A ``WWW-Authenticate`` value for a 401 (RFC 3261 §22.4, RFC 2617 §3.2.1)."""
        algo = _normalise_algorithm(algorithm)
        if algo not in self.algorithms:
            raise ValueError(f"algorithm {algorithm!r} not configured ({self.algorithms})")
        return format_challenge(
            self.realm,
            self.make_nonce(now, rng),
            algorithm=_WIRE_NAMES[algo],
            qop="auth" if self.qop else None,
            stale=stale,
        )

    def challenges(self, now: float, rng: random.Random, *, stale: bool = False) -> list[str]:
        """One challenge per configured algorithm, strongest first (RFC 8760 §2.4)."""
        order = sorted(self.algorithms, key=lambda a: not a.startswith("SHA"))
        return [self.challenge(now, rng, stale=stale, algorithm=a) for a in order]

    def verify(
        self,
        authorization_value: str,
        method: str,
        now: float,
        ha1_lookup: Ha1Lookup,
        *,
        body: bytes = b"",
    ) -> AuthResult:
        """Check an ``Authorization`` value (RFC 3261 §22.4, RFC 2617 §3.2.2).

        ``ha1_lookup(username, algorithm)`` returns the stored HA1 for the base
        algorithm (``MD5`` or ``SHA-256``) or None for an unknown user. The
        ``uri`` parameter is hashed as sent and never compared to the
        Request-URI (vendors differ). ``body`` is only used for qop=auth-int.
        """
        try:
            scheme, params = parse_auth_header(authorization_value)
        except AuthError as exc:
            return self._bad(AuthFailure.MALFORMED, None, str(exc))
        username = params.get("username")
        if scheme.lower() != "digest":
            return self._bad(AuthFailure.MALFORMED, username, f"scheme {scheme!r} is not Digest")
        missing = [p for p in ("username", "realm", "nonce", "uri", "response") if p not in params]
        if username is None or missing:
            return self._bad(AuthFailure.MALFORMED, username, f"missing {', '.join(missing)}")
        try:
            algorithm = _normalise_algorithm(params.get("algorithm", "MD5"))
        except AuthError as exc:
            return self._bad(AuthFailure.UNSUPPORTED_ALGORITHM, username, str(exc))
        if algorithm not in self.algorithms:
            return self._bad(
                AuthFailure.UNSUPPORTED_ALGORITHM, username, f"{algorithm} not accepted here"
            )
        if params["realm"] != self.realm:
            return self._bad(
                AuthFailure.REALM_MISMATCH, username, f"realm {params['realm']!r} != {self.realm!r}"
            )
        qop = params.get("qop")
        if qop is None and self.qop:
            return self._bad(AuthFailure.MALFORMED, username, "qop=auth was offered but not used")
        if qop is not None and qop.lower() not in ("auth", "auth-int"):
            return self._bad(AuthFailure.MALFORMED, username, f"unsupported qop {qop!r}")
        if qop is not None and ("nc" not in params or "cnonce" not in params):
            return self._bad(AuthFailure.MALFORMED, username, "qop without nc/cnonce")
        if algorithm.endswith("-SESS") and "cnonce" not in params:
            return self._bad(AuthFailure.MALFORMED, username, f"{algorithm} without cnonce")
        age = self.nonce_age(params["nonce"], now)
        if age is None or age < -MAX_CLOCK_SKEW:
            return self._bad(AuthFailure.BAD_NONCE, username, f"nonce {params['nonce'][:64]!r}")
        stored = ha1_lookup(username, _base(algorithm))
        if stored is None:
            return self._bad(AuthFailure.UNKNOWN_USER, username, f"no credentials for {username!r}")
        expected = digest_response(
            stored,
            params["nonce"],
            method,
            params["uri"],
            algorithm=algorithm,
            qop=qop,
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            body=body,
        )
        # Bytes: compare_digest refuses non-ASCII str, and the response is peer input.
        given = params["response"].lower().encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(expected.encode(), given):
            return self._bad(AuthFailure.WRONG_RESPONSE, username, "response does not match")
        if age > self.nonce_ttl:
            # RFC 2617 §3.2.1: stale only when the digest itself was right.
            log.info("stale nonce from %s (%.0f s old)", username, age)
            return AuthResult(AuthStatus.STALE, None, username, f"nonce {age:.0f} s old")
        return AuthResult(AuthStatus.OK, None, username)

    @staticmethod
    def _bad(reason: AuthFailure, username: str | None, detail: str) -> AuthResult:
        log.info("digest auth failed for %s: %s (%s)", username, reason, detail)
        return AuthResult(AuthStatus.BAD, reason, username, detail)


# -- client --------------------------------------------------------------------


def authorization_for(
    challenge_value: str,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    rng: random.Random,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The ``Authorization`` value answering a ``WWW-Authenticate`` challenge (RFC 3261 §22.4).

    MD5, SHA-256 (RFC 8760) and their ``-sess`` forms; qop=auth preferred over
    auth-int, no qop when none is offered (RFC 2617 §3.2.2). The ``cnonce``
    comes from ``rng``. Raises ``AuthError`` for a challenge it cannot answer.
    """
    scheme, params = parse_auth_header(challenge_value)
    if scheme.lower() != "digest":
        raise AuthError(f"cannot answer a {scheme!r} challenge")
    if "realm" not in params or "nonce" not in params:
        raise AuthError("challenge lacks realm or nonce")
    realm, nonce = params["realm"], params["nonce"]
    algorithm = params.get("algorithm", "MD5")
    algo = _normalise_algorithm(algorithm)
    qop: str | None = None
    if "qop" in params:
        offered = [q.strip().lower() for q in params["qop"].split(",")]
        if "auth" in offered:
            qop = "auth"
        elif "auth-int" in offered:
            qop = "auth-int"
        else:
            raise AuthError(f"no supported qop in {params['qop']!r}")
    cnonce = f"{rng.getrandbits(64):016x}" if qop or algo.endswith("-SESS") else None
    nc_text = f"{nc:08x}" if qop else None
    response = digest_response(
        ha1(username, realm, password, algo),
        nonce,
        method,
        uri,
        algorithm=algo,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    return format_authorization(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response,
        algorithm=algorithm,
        cnonce=cnonce,
        opaque=params.get("opaque"),
        qop=qop,
        nc=nc_text,
    )
