"""The device side of GB/T 28181: registration, keepalive and answering queries, sans-IO.

Theory of operation
-------------------
A GB/T 28181 device (an IPC, an NVR, or a platform registering upward to its
superior in a cascade, §9.1 and §5.4) keeps one registration with its SIP
server and proves it is alive with keepalive MESSAGEs (§9.6). A
``RegistrationSession`` is that client as a state machine without I/O: the
caller feeds it the clock (``now``), the final answers to the REGISTERs it
asked to send (by ``token``; ``None`` for a transaction timeout, RFC 3261
§17.1.2.2 timer F) and the outcome of each keepalive; it returns REGISTER
requests to send (``take_requests()``), events (``take_events()``) and the
next instant it needs the clock (``next_timer()``, then ``handle_timer(now)``).
The caller owns the transactions, the sockets and the keepalive body, so the
device simulator and the cascade client share this file and differ only in
what they say in their MESSAGEs.

Registration::

    start ──► REGISTER (no auth) ──401──► REGISTER (Authorization) ──200──► registered
                  ▲        │                         │ 401 (not stale)        │
                  │        └─403/4xx/5xx/timeout─────┴──► failure ──back-off──┤
                  └──────────── keepalive 403/404, N keepalives lost ◄────────┤
                                refresh at 0.8 x granted Expires (last nonce) ◄┘

- A refresh keeps the Call-ID and raises the CSeq (RFC 3261 §10.2.4) and
  reuses the last challenge's nonce with the next ``nc`` (RFC 2617 §3.2.2,
  §3.3), so a registrar accepting it answers 200 without a new 401.
- A ``stale=true`` 401 is answered again at once (RFC 2617 §3.2.1), at most
  ``max_stale_retries`` times in one attempt.
- A non-stale 401 to credentials computed from a challenge of the same
  attempt means the password is wrong: a failure.
- 423 Interval Too Brief asks again with the registrar's Min-Expires
  (RFC 3261 §10.2.8), which becomes what later attempts ask for.
- After a failure the next attempt waits ``RetryPolicy.delay()``: a base per
  kind of failure (refused, no answer), times ``factor`` per failure in a
  row, capped at ``cap``. A success resets the count.
- A keepalive answered 403/404 (the server restarted or forgot us; the set
  is ``reregister_statuses``, a cascade to a platform that answers 401 may
  add it) starts a new registration with a new Call-ID at once; so do
  ``keepalive_max_misses`` keepalives in a row without an answer (GB/T
  28181-2016 §9.6.1: the server declares a device offline after the same
  number of lost heartbeats).
- ``pause()`` is a device gone silent: no timers but ``expire``, which ends
  the registration at its granted end; ``resume()`` comes back with a
  keepalive if still registered, else with a new attempt.
- ``unregister()`` sends Expires: 0 (RFC 3261 §10.2.2) and reports
  ``Unregistered(ok)``.

Vendor habits the eXosip devices show on the wire (two unauthenticated
REGISTERs, then the answer to the *first* nonce; numeric Call-IDs) are
options of ``RegistrationConfig``, so a peer that needs them can be mimicked.

``QueryAnswers`` is the other half of a device: a registry of answer
builders by MANSCDP CmdType (matched case-insensitively, as the decoder
does) and ``answer_message()``, which turns an incoming MESSAGE into the
status to send and the MESSAGE bodies to send back (GB/T 28181-2016 §9.5.1).
``invite_refusal()`` and ``answer_invite()`` do the same for a Play INVITE
around an SDP answer hook (§9.2.2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from sip import manscdp, ptz, sdp
from sip.auth import AuthError, authorization_for, parse_auth_header
from sip.dialog import Dialog
from sip.errors import LocalSipError, SipParseError
from sip.headers import NameAddr, expires_value
from sip.message import Request, Response, make_response
from sip.uri import SipUri

if TYPE_CHECKING:
    # Sans-IO: randomness comes from the caller's injected generator.
    import random

__all__ = [
    "MANSCDP_TYPE",
    "Deregistered",
    "InviteAnswer",
    "KeepaliveDue",
    "KeepaliveFailed",
    "MessageAnswer",
    "MessageFactory",
    "NatKeepaliveDue",
    "OutgoingRegister",
    "PtzFrontEnd",
    "control_command",
    "QueryAnswerer",
    "QueryAnswers",
    "QueryInterceptor",
    "Registered",
    "RegistrationConfig",
    "RegistrationFailed",
    "RegistrationSession",
    "RegistrationState",
    "RetryPolicy",
    "SdpAnswerer",
    "UaEvent",
    "Unregistered",
    "answer_invite",
    "invite_refusal",
]

log = logging.getLogger(__name__)

MANSCDP_TYPE = "Application/MANSCDP+xml"


# -- configuration -------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before the next REGISTER attempt after a failure."""

    # After a refusal: 403, a wrong password, 4xx/5xx.
    rejected: float = 30.0
    # After a REGISTER that got no answer at all.
    no_answer: float = 5.0
    # Each failure in a row multiplies the wait by this (1.0: a fixed wait).
    factor: float = 2.0
    cap: float = 600.0

    def delay(self, base: float, failures_in_row: int) -> float:
        """``base * factor ** (failures_in_row - 1)``, at most ``cap``."""
        exponent = max(0, failures_in_row - 1)
        try:
            wait = base * self.factor**exponent
        except OverflowError:
            wait = math.inf
        return min(self.cap, wait)


@dataclass(frozen=True)
class RegistrationConfig:
    """Who registers where, and how often it refreshes and keeps alive."""

    user: str  # the 20-digit device (or platform) ID: username, From and To user
    domain: str  # From/To host: the SIP domain (GB/T 28181-2016 §9.1.2.1)
    registrar_uri: str  # Request-URI and digest uri
    password: str
    expires: int = 3600
    user_agent: str | None = None
    keepalive_interval: float = 60.0
    keepalive_max_misses: int = 3
    # Keepalive answers meaning "the server forgot us": register again at once.
    reregister_statuses: frozenset[int] = frozenset({403, 404})
    # A NAT keepalive (the eXosip STUN binding request) every so often; None: none.
    nat_keepalive_interval: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    refresh_fraction: float = 0.8
    max_stale_retries: int = 3
    # eXosip: numeric Call-ID and From tag ("Call-ID: 764726777").
    numeric_ids: bool = False
    # eXosip: two unauthenticated REGISTERs, then the answer to the FIRST nonce.
    double_unauth_register: bool = False
    # Appended to every REGISTER (pjsua's Allow).
    extra_headers: tuple[tuple[str, str], ...] = ()


class RegistrationState(StrEnum):
    STOPPED = "stopped"
    REGISTERING = "registering"
    REGISTERED = "registered"
    BACKING_OFF = "backing-off"
    PAUSED = "paused"
    UNREGISTERING = "unregistering"


# -- outputs -------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingRegister:
    """A REGISTER to send; hand its final answer back with ``handle_answer(token, …)``."""

    request: Request
    token: int


@dataclass(frozen=True)
class Registered:
    """A 2xx to REGISTER (first or refresh); ``expires`` as granted (RFC 3261 §10.2.4)."""

    expires: int


@dataclass(frozen=True)
class Deregistered:
    """The registration ended on our side: a failure, a new registration, or expiry."""

    reason: str


@dataclass(frozen=True)
class RegistrationFailed:
    """An attempt failed; the next starts in ``retry_in`` seconds unless stopped or paused."""

    reason: str
    status: int | None
    retry_in: float
    failures_in_row: int


@dataclass(frozen=True)
class Unregistered:
    """The answer to ``unregister()``: ``ok`` when the registrar agreed."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class KeepaliveDue:
    """Send a keepalive MESSAGE now (GB/T 28181-2016 §9.6); report it with ``keepalive_answered``."""


@dataclass(frozen=True)
class NatKeepaliveDue:
    """Send a NAT keepalive (e.g. a STUN binding request, RFC 5389 §6) now."""


@dataclass(frozen=True)
class KeepaliveFailed:
    """A keepalive was refused (``status``) or lost (``None``)."""

    status: int | None
    misses: int
    registering_again: bool


UaEvent = (
    Registered
    | Deregistered
    | RegistrationFailed
    | Unregistered
    | KeepaliveDue
    | NatKeepaliveDue
    | KeepaliveFailed
)


# -- registration --------------------------------------------------------------


class RegistrationSession:
    """One registration of one user with one registrar; see the module docstring.

    ``contact`` returns the Contact URI to register (it may change once a TCP
    connection is up); ``call_id_host`` the host written after the Call-ID's
    ``@``, by default the Contact's host.
    """

    def __init__(
        self,
        config: RegistrationConfig,
        rng: random.Random,
        contact: Callable[[], str],
        call_id_host: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self._rng = rng
        self._contact = contact
        self._call_id_host = call_id_host or self._contact_host
        self.registered = False
        self.paused = False
        self.stopped = True
        self.registered_until = 0.0
        self._deadlines: dict[str, float] = {}
        self._requests: list[OutgoingRegister] = []
        self._events: list[UaEvent] = []
        # RFC 3261 §10.2: one Call-ID per registration, CSeq rising.
        self._call_id = ""
        self._from_tag = ""
        self._cseq = 0
        self._attempt = 0
        self._attempt_expires = 0
        # What we ask for; raised by a 423 Min-Expires (RFC 3261 §10.2.8).
        self._wanted_expires = config.expires
        self._unauth_sent = 0
        self._fresh_auth_sent = False
        self._stale_retries = 0
        self._first_challenge: list[str] | None = None
        self._challenges: list[str] | None = None
        self._auth_header = "Authorization"
        self._nc = 0
        self._failures_in_row = 0
        self._refresh_at = 0.0
        self._misses = 0
        self._unregistering = False

    # -- outputs ---------------------------------------------------------------
    def take_requests(self) -> list[OutgoingRegister]:
        out, self._requests = self._requests, []
        return out

    def take_events(self) -> list[UaEvent]:
        out, self._events = self._events, []
        return out

    def next_timer(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    @property
    def backing_off(self) -> bool:
        return "retry" in self._deadlines

    @property
    def state(self) -> RegistrationState:
        """Where the session is, for a status page (the cascade's upper platforms)."""
        if self._unregistering:
            return RegistrationState.UNREGISTERING
        if self.stopped:
            return RegistrationState.STOPPED
        if self.paused:
            return RegistrationState.PAUSED
        if self.registered:
            return RegistrationState.REGISTERED
        if self.backing_off:
            return RegistrationState.BACKING_OFF
        return RegistrationState.REGISTERING

    # -- inputs ----------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin a fresh registration (new Call-ID)."""
        self.stopped = False
        self._new_registration(now, "starting")

    def pause(self, now: float) -> None:
        """Go silent: only the registration's own end stays armed."""
        if self.paused:
            return
        self.paused = True
        self._deadlines.clear()
        if self.registered:
            self._deadlines["expire"] = max(now, self.registered_until)

    def resume(self, now: float) -> None:
        """Come back: a keepalive at once if still registered, else a new attempt."""
        if not self.paused:
            return
        self.paused = False
        self._deadlines.pop("expire", None)
        if self.stopped:
            return
        if self.registered and now < self.registered_until:
            self._keepalive(now)
            self._arm_running_timers(now)
        else:
            self._begin_attempt(self._wanted_expires, now)

    def unregister(self, now: float) -> bool:
        """Stop, and remove the binding with Expires: 0 (RFC 3261 §10.2.2).

        Returns False when there is nothing to remove (never sent, or the last
        attempt failed); else ``Unregistered`` follows (once, however often
        this is called meanwhile).
        """
        self.stopped = True
        backing_off = self.backing_off
        self._deadlines.clear()
        if self._cseq == 0 or (backing_off and not self.registered):
            self._set_registered(False, "stopped")
            return False
        if not self._unregistering:
            self._unregistering = True
            self._begin_attempt(0, now)
        return True

    def handle_timer(self, now: float) -> None:
        """Run every deadline that is due, earliest first."""
        while True:
            due = [(at, name) for name, at in self._deadlines.items() if at <= now]
            if not due:
                return
            _, name = min(due)
            del self._deadlines[name]
            if name in ("retry", "refresh"):
                self._begin_attempt(self._wanted_expires, now)
            elif name == "keepalive":
                self._keepalive(now)
            elif name == "nat":
                self._nat_keepalive(now)
            elif name == "expire":
                # RFC 3261 §10.2.1: the binding ran out while we were silent.
                self._set_registered(False, "expired")

    def handle_answer(self, token: int, resp: Response | None, now: float) -> None:
        """The final answer to the REGISTER sent with ``token``; ``None``: timed out."""
        if token != self._attempt:
            return  # a newer attempt superseded this one
        if resp is None:
            self._register_failed("no answer", None, self.config.retry.no_answer, now)
        elif resp.status in (401, 407):
            self._on_challenge(resp, now)
        elif 200 <= resp.status < 300:
            self._on_registered(resp, now)
        elif resp.status == 423 and self._attempt_expires and self._retry_min_expires(resp):
            return
        else:
            if resp.status == 403:
                self._challenges = None
            self._register_failed(
                f"{resp.status} {resp.reason}", resp.status, self.config.retry.rejected, now
            )

    def keepalive_answered(self, status: int | None, now: float) -> None:
        """The final status of a keepalive MESSAGE; ``None``: lost (GB/T 28181-2016 §9.6)."""
        if self.stopped or not self.registered:
            return
        if status is not None and 200 <= status < 300:
            self._misses = 0
            return
        if status in self.config.reregister_statuses:
            # The server restarted or forgot us: register again at once.
            self._events.append(KeepaliveFailed(status, self._misses, True))
            self._new_registration(now, f"keepalive answered {status}")
            return
        self._misses += 1
        again = self._misses >= self.config.keepalive_max_misses
        self._events.append(KeepaliveFailed(status, self._misses, again))
        if again:
            self._new_registration(now, f"{self._misses} keepalives lost")

    # -- registration ----------------------------------------------------------
    def _new_registration(self, now: float, reason: str) -> None:
        rng = self._rng
        if self.config.numeric_ids:
            self._call_id = str(rng.randrange(10**8, 2**31))
            self._from_tag = str(rng.randrange(10**8, 2**31))
        else:
            self._call_id = f"{rng.getrandbits(64):016x}@{self._call_id_host()}"
            self._from_tag = f"{rng.getrandbits(32):08x}"
        self._cseq = 0
        self._challenges = None
        self._set_registered(False, reason)
        self._cancel("keepalive", "nat", "refresh")
        self._begin_attempt(self._wanted_expires, now)

    def _contact_host(self) -> str:
        try:
            return SipUri.parse(self._contact()).host
        except SipParseError:
            return "invalid"

    def _begin_attempt(self, expires: int, now: float) -> None:
        self._attempt += 1
        self._attempt_expires = expires
        self._unauth_sent = 0
        self._fresh_auth_sent = False
        self._stale_retries = 0
        self._first_challenge = None
        self._cancel("retry", "refresh")
        authorization: str | None = None
        if self._challenges is not None:
            # Refresh with the last nonce (RFC 2617 §3.3: a nonce may be reused).
            self._nc += 1
            try:
                authorization = self._authorize(self._challenges)
            except AuthError:
                self._challenges = None
        self._send_register(authorization)

    def _send_register(self, authorization: str | None) -> None:
        if authorization is None:
            self._unauth_sent += 1
        self._requests.append(OutgoingRegister(self._register_request(authorization), self._attempt))

    def _register_request(self, authorization: str | None) -> Request:
        """REGISTER shaped like the eXosip/pjsua devices in the wire logs (§9.1.2.1)."""
        cfg = self.config
        self._cseq += 1
        req = Request(method="REGISTER", uri=cfg.registrar_uri)
        h = req.headers
        h.add("From", f"<sip:{cfg.user}@{cfg.domain}>;tag={self._from_tag}")
        h.add("To", f"<sip:{cfg.user}@{cfg.domain}>")
        h.add("Call-ID", self._call_id)
        h.add("CSeq", f"{self._cseq} REGISTER")
        h.add("Contact", f"<{self._contact()}>")
        if authorization is not None:
            h.add(self._auth_header, authorization)
        h.add("Max-Forwards", "70")
        if cfg.user_agent is not None:
            h.add("User-Agent", cfg.user_agent)
        h.add("Expires", str(self._attempt_expires))
        for name, value in cfg.extra_headers:
            h.add(name, value)
        return req

    def _authorize(self, challenges: Sequence[str]) -> str:
        """Answer the first challenge we can (RFC 8760 §2.4: several may be offered)."""
        error: AuthError | None = None
        for value in challenges:
            try:
                return authorization_for(
                    value, method="REGISTER", uri=self.config.registrar_uri,
                    username=self.config.user, password=self.config.password,
                    rng=self._rng, nc=max(1, self._nc),
                )
            except AuthError as e:
                error = e
        raise error or AuthError("no challenge")

    def _retry_min_expires(self, resp: Response) -> bool:
        """RFC 3261 §10.2.8: 423 Interval Too Brief: ask again for Min-Expires."""
        try:
            minimum = expires_value(resp.headers.get("Min-Expires"))
        except SipParseError:
            return False
        if minimum is None or minimum <= self._attempt_expires:
            return False
        self._attempt_expires = self._wanted_expires = minimum
        authorization = None
        if self._challenges is not None:
            self._nc += 1
            authorization = self._authorize(self._challenges)
        self._send_register(authorization)
        return True

    def _on_challenge(self, resp: Response, now: float) -> None:
        """RFC 3261 §22.2: answer a 401/407 with credentials, once per fresh challenge."""
        name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        retry = self.config.retry.rejected
        challenges = resp.headers.get_all(name)
        if not challenges:
            self._register_failed(f"{resp.status} without {name}", resp.status, retry, now)
            return
        if _is_stale(challenges):
            self._stale_retries += 1
            if self._stale_retries > self.config.max_stale_retries:
                self._register_failed("stale nonce loop", resp.status, retry, now)
                return
        elif self._fresh_auth_sent:
            self._challenges = None
            self._register_failed("credentials rejected", resp.status, retry, now)
            return
        self._auth_header = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        if (
            self.config.double_unauth_register
            and self._unauth_sent == 1
            and self._first_challenge is None
        ):
            # eXosip asks again without credentials, then answers the first nonce.
            self._first_challenge = challenges
            self._send_register(None)
            return
        chosen = self._first_challenge or challenges
        self._first_challenge = None
        self._challenges = chosen
        self._nc = 1
        try:
            authorization = self._authorize(chosen)
        except AuthError as e:
            self._register_failed(f"cannot answer the challenge: {e}", resp.status, retry, now)
            return
        self._fresh_auth_sent = True
        self._send_register(authorization)

    def _on_registered(self, resp: Response, now: float) -> None:
        if self._attempt_expires == 0:
            self._set_registered(False, "unregistered")
            self._finish_unregister(True, "")
            return
        granted = self._granted_expires(resp)
        self._failures_in_row = 0
        self.registered_until = now + granted
        self._refresh_at = now + max(1.0, granted * self.config.refresh_fraction)
        self._misses = 0
        self._events.append(Registered(granted))
        self.registered = True
        self._arm_running_timers(now)

    def _granted_expires(self, resp: Response) -> int:
        """Expires granted by the registrar (RFC 3261 §10.2.4), else what we asked."""
        try:
            value = expires_value(resp.headers.get("Expires"))
            if value is None:
                for contact in resp.headers.get_all("Contact"):
                    param = NameAddr.parse(contact).params.get("expires")
                    if param is not None:
                        value = expires_value(param)
                        break
        except SipParseError as e:
            log.info("%s: bad Expires in 200 (%s); keeping %d",
                     self.config.user, e.reason, self._attempt_expires)
            value = None
        return value if value else self._attempt_expires

    def _register_failed(self, reason: str, status: int | None, base: float, now: float) -> None:
        if self._attempt_expires == 0:
            self._set_registered(False, "unregister failed")
            self._finish_unregister(False, reason)
            return
        self._failures_in_row += 1
        retry_in = self.config.retry.delay(base, self._failures_in_row)
        self._events.append(RegistrationFailed(reason, status, retry_in, self._failures_in_row))
        self._set_registered(False, reason)
        self._cancel("keepalive", "nat", "refresh")
        if not self.stopped and not self.paused:  # resume() registers again itself
            self._deadlines["retry"] = now + retry_in

    def _finish_unregister(self, ok: bool, reason: str) -> None:
        if self._unregistering:
            self._unregistering = False
            self._events.append(Unregistered(ok, reason))

    def _set_registered(self, value: bool, reason: str) -> None:
        if value == self.registered:
            return
        self.registered = value
        if not value:
            self._events.append(Deregistered(reason))

    def _arm_running_timers(self, now: float) -> None:
        if self.stopped:
            return
        if self.paused:
            self._deadlines["expire"] = max(now, self.registered_until)
            return
        self._deadlines["refresh"] = max(now, self._refresh_at)
        self._deadlines.setdefault("keepalive", now + self.config.keepalive_interval)
        nat = self.config.nat_keepalive_interval
        if nat is not None:
            self._deadlines.setdefault("nat", now + nat)

    def _cancel(self, *names: str) -> None:
        for name in names:
            self._deadlines.pop(name, None)

    # -- keepalive -------------------------------------------------------------
    def _keepalive(self, now: float) -> None:
        if self.stopped or self.paused or not self.registered:
            return
        self._deadlines["keepalive"] = now + self.config.keepalive_interval
        self._events.append(KeepaliveDue())

    def _nat_keepalive(self, now: float) -> None:
        interval = self.config.nat_keepalive_interval
        if self.stopped or self.paused or interval is None:
            return
        self._deadlines["nat"] = now + interval
        self._events.append(NatKeepaliveDue())


def _is_stale(challenges: Sequence[str]) -> bool:
    """RFC 2617 §3.2.1: ``stale=true`` asks for the same credentials with the new nonce."""
    for value in challenges:
        try:
            _, params = parse_auth_header(value)
        except AuthError as e:
            log.info("unparsable challenge %r: %s", value[:80], e)
            continue
        if params.get("stale", "").lower() == "true":
            return True
    return False


# -- requests of our own ---------------------------------------------------------


class MessageFactory:
    """Out-of-dialog MANSCDP MESSAGEs from ``config.user`` to its server (GB/T 28181-2016 §9.5, §9.6).

    Each MESSAGE is a transaction of its own (RFC 3428 §4): a new Call-ID and
    From tag, CSeq rising across them; ``next_sn()`` numbers the bodies.
    ``request_class`` lets a simulated vendor serialise its own way.
    """

    def __init__(
        self,
        config: RegistrationConfig,
        rng: random.Random,
        call_id_host: Callable[[], str],
        request_class: type[Request] = Request,
    ) -> None:
        self.config = config
        self._rng = rng
        self._call_id_host = call_id_host
        self._request_class = request_class
        self._cseq = 0
        self._sn = 0

    def next_sn(self) -> int:
        self._sn += 1
        return self._sn

    def message(self, body: bytes, content_type: str = MANSCDP_TYPE) -> Request:
        cfg, rng = self.config, self._rng
        self._cseq += 1
        req = self._request_class(method="MESSAGE", uri=cfg.registrar_uri)
        h = req.headers
        tag = str(rng.randrange(10**8, 2**31)) if cfg.numeric_ids else f"{rng.getrandbits(32):08x}"
        h.add("From", f"<sip:{cfg.user}@{cfg.domain}>;tag={tag}")
        h.add("To", f"<{cfg.registrar_uri}>")
        if cfg.numeric_ids:
            h.add("Call-ID", str(rng.randrange(10**8, 2**31)))
        else:
            h.add("Call-ID", f"{rng.getrandbits(64):016x}@{self._call_id_host()}")
        h.add("CSeq", f"{self._cseq} MESSAGE")
        h.add("Content-Type", content_type)
        h.add("Max-Forwards", "70")
        if cfg.user_agent is not None:
            h.add("User-Agent", cfg.user_agent)
        req.body = body
        return req


# -- answering the server's requests ---------------------------------------------

QueryAnswerer = Callable[[manscdp.ManscdpMessage], list[bytes]]
# Answers the messages of a CmdType it knows (a DeviceControl element of its own) and None for the others.
QueryInterceptor = Callable[[manscdp.ManscdpMessage], list[bytes] | None]


@dataclass(frozen=True)
class MessageAnswer:
    """What to do with a MESSAGE: reply ``status`` (with ``headers``), then send ``bodies``."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    bodies: tuple[bytes, ...] = ()
    message: manscdp.ManscdpMessage | None = None
    reason: str = ""


class QueryAnswers:
    """Answer builders by MANSCDP CmdType, matched case-insensitively (GB/T 28181-2016 §9.5)."""

    def __init__(self) -> None:
        self._answerers: dict[str, QueryAnswerer] = {}
        self._interceptors: dict[str, list[QueryInterceptor]] = {}

    def register(self, cmd_type: str, answerer: QueryAnswerer) -> None:
        """Answer queries of ``cmd_type`` with ``answerer(query)``: the response bodies."""
        key = cmd_type.lower()
        if key in self._answerers:
            raise ValueError(f"an answerer for {cmd_type!r} is already registered")
        self._answerers[key] = answerer

    def intercept(self, cmd_type: str, interceptor: QueryInterceptor) -> None:
        """Try ``interceptor(query)`` first for ``cmd_type``: its bodies when it returns a list, the registered
        answerer's when it returns None. One CmdType, several owners: DeviceControl carries the 2016 commands
        and the GB/T 28181-2022 ones, each family answered by its own module."""
        self._interceptors.setdefault(cmd_type.lower(), []).append(interceptor)

    def __contains__(self, cmd_type: object) -> bool:
        return isinstance(cmd_type, str) and cmd_type.lower() in self._answerers

    def answer(self, query: manscdp.ManscdpMessage) -> list[bytes]:
        """The bodies answering ``query``; none for a CmdType nobody answers."""
        for interceptor in self._interceptors.get(query.cmd_type.lower(), ()):
            bodies = interceptor(query)
            if bodies is not None:
                return bodies
        answerer = self._answerers.get(query.cmd_type.lower())
        return [] if answerer is None else answerer(query)

    def answer_message(self, req: Request, default_charset: str) -> MessageAnswer:
        """GB/T 28181-2016 §9.5.1: 200 a MANSCDP MESSAGE, then answer a Query (or a Control,
        §9.3.2) in MESSAGEs of our own.

        415 (with Accept) for another content type, 400 for a body that does
        not decode; notifications and responses get their 200 and no bodies.
        """
        if "manscdp" not in req.content_type:
            return MessageAnswer(415, (("Accept", MANSCDP_TYPE),), reason="not MANSCDP")
        try:
            msg = manscdp.decode(req.body, default_charset=default_charset)
        except manscdp.ManscdpError as e:
            return MessageAnswer(400, reason=str(e))
        if msg.kind not in ("Query", "Control"):
            return MessageAnswer(200, message=msg)
        return MessageAnswer(200, bodies=tuple(self.answer(msg)), message=msg)


def control_command(msg: manscdp.DeviceControl) -> str | None:
    """The command a DeviceControl carries, as the device logs it: ``PTZCmd``, ``TeleBoot``, the text of
    RecordCmd, GuardCmd and AlarmCmd (``Record``, ``SetGuard``, ``ResetAlarm``...), ``IFameCmd``,
    ``DragZoomIn``, ``DragZoomOut`` or ``HomePosition`` (GB/T 28181-2016 §A.2.3.1), and the GB/T 28181-2022
    elements by name (``PTZPreciseCtrl``, ``TargetTrack``, ``FormatSDCard``, ``DeviceUpgrade``); None when empty."""
    if msg.ptz_cmd is not None:
        return "PTZCmd"
    for text in (msg.record_cmd, msg.guard_cmd, msg.alarm_cmd):
        if text is not None:
            return text
    named = (("TeleBoot", msg.tele_boot), ("IFameCmd", msg.iframe), ("DragZoomIn", msg.drag_zoom_in),
             ("DragZoomOut", msg.drag_zoom_out), ("HomePosition", msg.home_position),
             ("FormatSDCard", msg.format_sd_card), ("DeviceUpgrade", msg.device_upgrade),
             ("PTZPreciseCtrl", msg.ptz_precise_ctrl), ("TargetTrack", msg.target_track))
    return next((name for name, value in named if value is not None), None)


class PtzFrontEnd:
    """A device's front end as its answers show it (GB/T 28181-2016 §9.3, §A.2.3.1, Annex A.3).

    Answers ``DeviceControl`` with ``Result`` OK (ERROR for a PTZCmd that is
    not 8 well-formed bytes, or a command it does not know), records every
    PTZCmd it received (``received``: target channel and the 16 hex digits,
    bounded) and every other command (``commands``: target and
    ``control_command``), keeps the presets set and deleted per channel and
    answers ``PresetQuery`` from them (§A.2.6.11), and keeps the state the
    other commands set: ``guard`` and ``recording`` per target, ``home`` the
    home position per channel, ``boots`` the TeleBoots (the simulated device
    does not restart). ``register(answers)`` installs both answerers.
    """

    MAX_RECEIVED = 1000

    def __init__(self, charset: Callable[[], str]) -> None:
        self._charset = charset  # asked per answer: a simulator's charset quirk may change it
        self.received: list[tuple[str, str]] = []
        self.commands: list[tuple[str, str]] = []
        self.presets: dict[str, dict[int, str]] = {}
        self.guard: dict[str, bool] = {}
        self.recording: dict[str, bool] = {}
        self.home: dict[str, manscdp.HomePosition] = {}
        self.boots = 0

    def register(self, answers: QueryAnswers) -> None:
        answers.register("DeviceControl", self.device_control)
        answers.register("PresetQuery", self.preset_query)

    def device_control(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """The Response to a DeviceControl (§A.2.6.2); an empty one gets none."""
        if not isinstance(msg, manscdp.DeviceControl):
            return []
        if msg.ptz_cmd is None:
            return self._other_command(msg)
        self.received.append((msg.device_id, msg.ptz_cmd.upper()))
        del self.received[:-self.MAX_RECEIVED]
        try:
            cmd = ptz.decode(msg.ptz_cmd)
        except ptz.PtzCmdError as e:
            log.info("PTZCmd %r refused: %s", msg.ptz_cmd, e)
            return self._result(msg, "ERROR")
        presets = self.presets.setdefault(msg.device_id, {})
        if cmd.code == ptz.PRESET_SET:
            presets[cmd.data2] = f"Preset {cmd.data2}"
        elif cmd.code == ptz.PRESET_DELETE:
            presets.pop(cmd.data2, None)
        return self._result(msg, "OK")

    def _other_command(self, msg: manscdp.DeviceControl) -> list[bytes]:
        command = control_command(msg)
        if command is None:
            return []
        self.commands.append((msg.device_id, command))
        del self.commands[:-self.MAX_RECEIVED]
        target = msg.device_id
        if command in ("Record", "StopRecord"):
            self.recording[target] = command == "Record"
        elif command in ("SetGuard", "ResetGuard"):
            self.guard[target] = command == "SetGuard"
        elif command == "HomePosition" and msg.home_position is not None:
            self.home[target] = msg.home_position
        elif command == "TeleBoot":
            self.boots += 1
        elif command not in ("ResetAlarm", "IFameCmd", "DragZoomIn", "DragZoomOut"):
            return self._result(msg, "ERROR")
        return self._result(msg, "OK")

    def _result(self, msg: manscdp.ManscdpMessage, result: str) -> list[bytes]:
        return [manscdp.encode_control_response(msg.sn, msg.device_id, result=result, charset=self._charset())]

    def preset_query(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """The PresetQuery answer (§A.2.6.11): the presets of the channel queried."""
        presets = self.presets.get(msg.device_id, {})
        items = [manscdp.Preset(preset_id=str(i), preset_name=name) for i, name in sorted(presets.items())]
        return [manscdp.encode_preset_query_response(msg.sn, msg.device_id, items, charset=self._charset())]


# -- answering INVITE ----------------------------------------------------------

# Builds our SDP answer to an offer; raises sdp.SdpError (→ 488) or
# OSError/ValueError (→ 500, cannot serve media).
SdpAnswerer = Callable[[sdp.SessionDescription], sdp.SessionDescription]


@dataclass(frozen=True)
class InviteAnswer:
    """The final answer to an INVITE: a 200 ``response`` and its dialog, else a ``status``."""

    status: int
    response: Response | None = None
    dialog: Dialog | None = None
    reason: str = ""


def invite_refusal(
    req: Request, *, active_calls: Container[str], sessions: int, max_sessions: int
) -> InviteAnswer | None:
    """Refuse before any provisional answer, or ``None`` to go on (GB/T 28181-2016 §9.2.2).

    A re-INVITE (RFC 3261 §14.2; the To has a tag) leaves the session as it
    is: 488 within a known call, 481 otherwise. Beyond ``max_sessions``: 486.
    """
    if ";tag=" in (req.headers.get("To") or "").replace(" ", ""):
        return InviteAnswer(488 if req.call_id in active_calls else 481, reason="re-INVITE")
    if sessions >= max_sessions:
        return InviteAnswer(486, reason="busy")
    return None


def answer_invite(
    req: Request,
    *,
    answer_sdp: SdpAnswerer,
    contact: str,
    new_tag: Callable[[], str],
    headers: Sequence[tuple[str, str]] = (),
) -> InviteAnswer:
    """Answer a Play offer with ``answer_sdp(offer)`` in a 200 (GB/T 28181-2016 §9.2.2).

    An offer the hook refuses with ``SdpError``: 488; one it cannot serve
    (``OSError``/``ValueError``): 500. The 200 comes with its UAS dialog
    (RFC 3261 §12.1.1); a request that cannot make one: 400. Only the 200
    carries a ``response``; the caller builds the others.
    """
    try:
        offer = sdp.parse(req.body)
        answer = answer_sdp(offer)
    except sdp.SdpError as e:
        return InviteAnswer(488, reason=e.reason)
    except (OSError, ValueError) as e:
        return InviteAnswer(500, reason=str(e))
    resp = make_response(req, 200, to_tag=new_tag(), headers=[
        ("Contact", f"<{contact}>"), ("Content-Type", "application/sdp"), *headers,
    ], body=answer.serialize())
    try:
        dialog = Dialog.from_uas(req, resp)
    except (SipParseError, LocalSipError) as e:
        return InviteAnswer(400, reason=str(e))
    return InviteAnswer(200, resp, dialog)
