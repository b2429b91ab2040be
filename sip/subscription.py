"""The subscriber side of one RFC 6665 subscription, sans-IO.

Theory of operation
-------------------
GB/T 28181-2016 §9.11 has the platform subscribe to a device's catalog,
alarms and mobile position (2022 adds the PTZ position): a SUBSCRIBE with an
``Event`` package, an ``Expires`` and a MANSCDP ``<Query>`` body; the device
answers 200 and sends NOTIFYs with the same bodies a MESSAGE would carry.
``Subscription`` is the state of one of them, between the platform and one
device. It reads and sends nothing itself: the caller feeds it ``now``, the
final responses to the requests it asked to send and the NOTIFYs of its
dialog, and takes from it the requests to send (``SendRequest``), the dialog
to route or stop routing (``DialogOpened``/``DialogClosed``) and the state
changes to report (``StateChanged``). ``next_timer()`` says when to call
``on_timer``.

The rules, and where they come from:

* The initial SUBSCRIBE is out of any dialog; its 2xx creates the dialog
  (RFC 6665 §4.1.2.1), and so does a NOTIFY that comes first: the 2xx may be
  overtaken or lost (§4.1.2.4). Each subscription has its own Call-ID, so a
  NOTIFY is matched by Call-ID and our From tag.
* ``Subscription-State`` (§4.1.3) drives the state: ``active`` and
  ``pending`` carry ``expires``, which may shorten what the 2xx granted
  (§4.1.2.3); ``terminated`` ends the dialog with a ``reason`` (§4.2.2):
  ``deactivated`` and ``timeout`` (or none) ask for a new subscription at
  once, ``probation`` and ``giveup`` after ``retry-after`` (else the back-off),
  ``rejected``, ``noresource`` and ``invariant`` forbid one: the state stays
  ``failed`` until ``restart`` (the device registered again).
* A refresh is an in-dialog SUBSCRIBE sent at ``refresh_ratio`` (80 %) of the
  granted duration (§4.1.2.2). 481 or 408 to it, or no answer, means the
  subscription is gone (§4.1.2.2, RFC 3261 §12.2.1.2): a new one is sent. Any
  other failure leaves the subscription valid until it expires; the refresh is
  tried again with the back-off until then. 423 with ``Min-Expires`` is
  retried at once with that duration (RFC 3261 §10.2.8 applied to §4.1.2.1).
* A final failure of the initial SUBSCRIBE (a 489 Bad Event from a device
  without the package, a 403...) or no answer at all makes the state
  ``failed`` with the status and reason; it is retried after a back-off
  doubling from ``backoff_base`` to ``backoff_max``, reset once a subscription
  is accepted.
* ``stop`` unsubscribes: an in-dialog SUBSCRIBE with ``Expires: 0``
  (§4.1.2.3). The dialog stays routed for ``linger`` seconds so the device's
  final ``terminated`` NOTIFY is answered 200, not 481.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from sip.dialog import Dialog, DialogId, DialogState
from sip.errors import LocalSipError, SipParseError
from sip.headers import CSeq, NameAddr, _parse_params, expires_value, from_header, to_header
from sip.message import Headers, Request, Response
from sip.uri import SipUri

__all__ = [
    "API_STATES",
    "DialogClosed",
    "DialogOpened",
    "SendRequest",
    "StateChanged",
    "SubscribeTarget",
    "Subscription",
    "SubscriptionOutput",
    "SubscriptionState",
    "parse_subscription_state",
]

MANSCDP_TYPE: Final = "Application/MANSCDP+xml"

# The states of ``Subscription.state`` and how the API shows each (active / pending / failed / off).
API_STATES: Final[dict[str, str]] = {
    "off": "off",
    "subscribing": "pending",  # the initial SUBSCRIBE is out, no answer yet
    "pending": "pending",  # the device said Subscription-State: pending (RFC 6665 §4.1.3)
    "active": "active",
    "failed": "failed",
    "unsubscribing": "off",  # Expires: 0 sent, the final NOTIFY awaited
}

# terminated reasons after which a new subscription is sent at once, after a delay, or never (RFC 6665 §4.2.2).
_RETRY_AT_ONCE: Final = frozenset({None, "deactivated", "timeout"})
_RETRY_LATER: Final = frozenset({"probation", "giveup"})
# Any other reason (rejected, noresource, invariant, unknown ones) forbids a new attempt until restart().

# Our requests' kinds, for the responses fed back.
_INITIAL, _REFRESH, _UNSUBSCRIBE = "initial", "refresh", "unsubscribe"


@dataclass(frozen=True)
class SubscriptionState:
    """A parsed ``Subscription-State`` header (RFC 6665 §4.1.3)."""

    state: str  # active | pending | terminated (lower case)
    reason: str | None = None
    expires: int | None = None
    retry_after: int | None = None


def parse_subscription_state(value: str | None) -> SubscriptionState:
    """Parse ``Subscription-State``; raises ``SipParseError`` when absent or malformed.

    RFC 6665 §4.1.3: every NOTIFY carries one; the value is case-insensitive
    (§8.4: ``substate-value``), and devices write ``Active`` as often as ``active``.
    """
    if value is None or not value.strip():
        raise SipParseError("NOTIFY without Subscription-State (RFC 6665 §4.1.3)")
    head, sep, rest = value.partition(";")
    state = head.strip().lower()
    if state not in ("active", "pending", "terminated"):
        raise SipParseError(f"unknown Subscription-State {head.strip()!r}")
    params = _parse_params(sep + rest, "Subscription-State") if sep else {}
    reason = params.get("reason")
    return SubscriptionState(
        state=state,
        reason=reason.lower() if reason else None,
        expires=expires_value(params.get("expires")) if "expires" in params else None,
        retry_after=expires_value(params.get("retry-after")) if "retry-after" in params else None,
    )


@dataclass(frozen=True)
class SubscribeTarget:
    """Where and how to subscribe: the device's URI, our From/To/Contact, the ``Event`` package, the body.

    ``body`` is called for each SUBSCRIBE (a new SN each time, GB/T 28181-2016 §A.2.4).
    """

    request_uri: str
    from_uri: str  # our AOR, without tag
    to_uri: str  # the device's AOR
    contact: str  # our Contact value
    event: str
    expires: int
    body: Callable[[], bytes]
    user_agent: str | None = None


@dataclass(frozen=True)
class SendRequest:
    """Send ``request`` (without Via) to the device; feed its final response back with ``token``."""

    token: int
    request: Request


@dataclass(frozen=True)
class DialogOpened:
    """Route in-dialog requests of ``dialog_id`` (the NOTIFYs) to this subscription."""

    dialog_id: DialogId


@dataclass(frozen=True)
class DialogClosed:
    """Stop routing ``dialog_id``: later requests in it are 481."""

    dialog_id: DialogId


@dataclass(frozen=True)
class StateChanged:
    """The subscription's state, the last answer's status and reason, changed."""

    state: str
    status: int | None
    reason: str | None


SubscriptionOutput = SendRequest | DialogOpened | DialogClosed | StateChanged


@dataclass
class Subscription:
    """One subscription of the platform to one device's event package; see the module docstring."""

    rng: random.Random
    refresh_ratio: float = 0.8
    backoff_base: float = 5.0
    backoff_max: float = 300.0
    linger: float = 32.0  # RFC 3261 timer F: the final NOTIFY may take as long to arrive
    state: str = "off"
    status: int | None = None  # the last answer: a response status, or 200 for a NOTIFY
    reason: str | None = None
    expires_at: float | None = None  # when the granted subscription ends (the caller's clock)
    last_notify_at: float | None = None
    wanted: bool = False
    target: SubscribeTarget | None = None
    dialog: Dialog | None = None
    failures: int = 0  # failed attempts in a row, for the back-off
    _initial: Request | None = None
    _tag: str = ""
    _cseq: int = 0
    _pending_expires: int = 0
    _refresh_at: float | None = None
    _retry_at: float | None = None
    _linger_until: float | None = None
    _expires_override: int | None = None  # Min-Expires from a 423
    _sent: dict[int, tuple[str, Request]] = field(default_factory=dict)
    _tokens: int = 0
    _out: list[SubscriptionOutput] = field(default_factory=list)

    # -- inputs from the caller ----------------------------------------------
    def start(self, now: float, target: SubscribeTarget) -> None:
        """Subscribe with ``target``: at once when not subscribed; an active one is refreshed with it
        (a new body, e.g. another position interval, goes in the refresh, RFC 6665 §4.1.2.2)."""
        self.wanted = True
        self.target = target
        self._expires_override = None
        if self.state in ("active", "pending") and self.dialog is not None and not self.dialog.terminated:
            self._send_refresh(now)
        elif self.state != "subscribing":
            self.failures = 0
            self._send_initial(now)

    def restart(self, now: float, target: SubscribeTarget | None = None) -> None:
        """The device registered again: whatever it had is gone with its reboot; subscribe anew at once."""
        if target is not None:
            self.target = target
        if self.target is None:
            return
        self.wanted = True
        self.failures = 0
        self._expires_override = None
        self._drop_dialog()
        self._send_initial(now)

    def stop(self, now: float, *, unsubscribe: bool = True) -> None:
        """Not wanted any more: unsubscribe (``Expires: 0``) when a dialog exists and ``unsubscribe``,
        else just forget it."""
        self.wanted = False
        self._refresh_at = self._retry_at = None
        self.expires_at = None
        if unsubscribe and self.dialog is not None and not self.dialog.terminated:
            try:
                req = self._in_dialog(self.dialog, 0)
            except LocalSipError as e:
                self._drop_dialog()
                self._set("off", None, f"unsubscribe not sent: {e}")
                return
            self._send(_UNSUBSCRIBE, req)
            self._linger_until = now + self.linger
            self._set("unsubscribing", self.status, "unsubscribing")
            return
        self._drop_dialog()
        # An initial SUBSCRIBE still out: its 2xx, if one comes, is answered by an unsubscribe.
        self._set("off", self.status, "unsubscribed" if unsubscribe else self.reason)

    def on_response(self, token: int, resp: Response | None, now: float) -> None:
        """The final response to the request sent with ``token``, or None when none came (timer F)."""
        sent = self._sent.pop(token, None)
        if sent is None:
            return
        kind, req = sent
        if kind == _INITIAL:
            self._initial_answered(req, resp, now)
        elif kind == _REFRESH:
            self._refresh_answered(resp, now)
        elif self.dialog is not None and (resp is None or resp.status >= 300):
            # The device does not know the subscription (481) or is gone: no NOTIFY will come.
            self._drop_dialog()
            self._linger_until = None

    def matches_initial(self, req: Request) -> bool:
        """Whether a NOTIFY outside any routed dialog belongs to our initial SUBSCRIBE (RFC 6665 §4.1.2.4)."""
        initial = self._initial
        return (initial is not None and self.dialog is None and req.call_id == initial.call_id
                and to_header(req).tag == self._tag)

    def on_notify(self, req: Request, now: float) -> int | None:
        """A NOTIFY of this subscription; returns the status to answer it with when not 200, None for 200.

        Raises nothing for a peer's mistakes: a NOTIFY without (or with a
        malformed) Subscription-State is 400 (RFC 6665 §4.1.3), one out of
        sequence 500 (RFC 3261 §12.2.2).
        """
        try:
            sub_state = parse_subscription_state(req.headers.get("Subscription-State"))
        except SipParseError:
            return 400
        if self.dialog is None:
            if not self.matches_initial(req):
                return 481
            try:
                self.dialog = self._dialog_from_notify(req)
            except (SipParseError, LocalSipError):
                return 400
            self._out.append(DialogOpened(self.dialog.id))
        else:
            try:
                refused = self.dialog.receive_request(req)
            except SipParseError:
                return 400  # a malformed CSeq or Contact (RFC 3261 §8.2.2: the request is answered, not dropped)
            if refused is not None:
                return refused
        self.last_notify_at = now
        if self.state in ("unsubscribing", "off") or not self.wanted:
            if sub_state.state == "terminated":
                self._drop_dialog()
                self._linger_until = None
                if self.state == "unsubscribing":
                    self._set("off", self.status, "unsubscribed")
            return None
        if sub_state.state == "terminated":
            self._terminated(now, sub_state)
            return None
        granted = sub_state.expires
        if granted is not None and granted > 0:
            self._granted(now, granted)
        elif self.expires_at is None and self.target is not None:
            self._granted(now, self._requested_expires())
        self.failures = 0
        self._retry_at = None
        self._set(sub_state.state, 200, "NOTIFY " + sub_state.state)
        return None

    def on_timer(self, now: float) -> None:
        """Do what is due at ``now``: refresh, notice an expiry, retry, stop lingering."""
        if self._linger_until is not None and now >= self._linger_until:
            self._linger_until = None
            self._drop_dialog()
            if self.state == "unsubscribing":
                self._set("off", self.status, "unsubscribed")
        if self.expires_at is not None and now >= self.expires_at and self.state in ("active", "pending"):
            # No refresh succeeded before the end (RFC 6665 §4.1.2.2): the subscription is over.
            self._drop_dialog()
            self.expires_at = self._refresh_at = None
            self.failures += 1
            self._set("failed", self.status, "expired without a successful refresh")
            self._send_initial(now)
            return
        if self._refresh_at is not None and now >= self._refresh_at and self.state in ("active", "pending"):
            self._refresh_at = None
            self._send_refresh(now)
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self.wanted and self.state == "failed":
                self._send_initial(now)

    def next_timer(self) -> float | None:
        due = [t for t in (self._refresh_at, self._retry_at, self._linger_until) if t is not None]
        if self.expires_at is not None and self.state in ("active", "pending"):
            due.append(self.expires_at)
        return min(due) if due else None

    def take_outputs(self) -> list[SubscriptionOutput]:
        out, self._out = self._out, []
        return out

    @property
    def api_state(self) -> str:
        return API_STATES[self.state]

    @property
    def awaiting(self) -> bool:
        """A request of ours is out without its final response (fed back through ``on_response``)."""
        return bool(self._sent)

    @property
    def idle(self) -> bool:
        """Nothing left to do: not wanted, no dialog, no answer awaited, no timer; the caller may drop it."""
        return not self.wanted and self.dialog is None and not self._sent and self.next_timer() is None

    # -- internals -----------------------------------------------------------
    def _requested_expires(self) -> int:
        assert self.target is not None
        return self._expires_override or self.target.expires

    def _set(self, state: str, status: int | None, reason: str | None) -> None:
        # A change of state or of the answer's status is reported; a refresh that changes only the reason
        # ("OK", "NOTIFY active") is not: one subscription must not report twice per refresh.
        changed = (state, status) != (self.state, self.status)
        self.state, self.status, self.reason = state, status, reason
        if changed:
            self._out.append(StateChanged(state, status, reason))

    def _send(self, kind: str, req: Request) -> None:
        self._tokens += 1
        self._sent[self._tokens] = (kind, req)
        self._out.append(SendRequest(self._tokens, req))

    def _headers(self, expires: int) -> list[tuple[str, str]]:
        assert self.target is not None
        headers = [("Event", self.target.event), ("Expires", str(expires)), ("Accept", MANSCDP_TYPE)]
        if self.target.user_agent:
            headers.append(("User-Agent", self.target.user_agent))
        return headers

    def _send_initial(self, now: float) -> None:
        """A new SUBSCRIBE outside any dialog (RFC 6665 §4.1.2.1): new Call-ID, new From tag."""
        target = self.target
        assert target is not None
        self._drop_dialog()
        self._refresh_at = self._retry_at = None
        self.expires_at = None
        self._tag = f"{self.rng.getrandbits(32):08x}"
        self._cseq = self.rng.randrange(1, 10_000)
        expires = self._requested_expires()
        host = _host_of(target.contact)
        h = Headers()
        h.add("From", f"<{target.from_uri}>;tag={self._tag}")
        h.add("To", f"<{target.to_uri}>")
        h.add("Call-ID", f"{self.rng.getrandbits(64):016x}@{host}")
        h.add("CSeq", f"{self._cseq} SUBSCRIBE")
        h.add("Contact", target.contact)
        for name, value in self._headers(expires):
            h.add(name, value)
        h.add("Content-Type", MANSCDP_TYPE)
        req = Request(headers=h, body=target.body(), method="SUBSCRIBE", uri=target.request_uri)
        self._initial = req
        self._pending_expires = expires
        self._send(_INITIAL, req)
        if self.state != "subscribing":
            self._set("subscribing", self.status, self.reason)

    def _in_dialog(self, dialog: Dialog, expires: int) -> Request:
        assert self.target is not None
        return dialog.new_request("SUBSCRIBE", body=self.target.body(), content_type=MANSCDP_TYPE,
                                  headers=self._headers(expires))

    def _send_refresh(self, now: float) -> None:
        dialog = self.dialog
        if dialog is None or dialog.terminated:
            self._send_initial(now)
            return
        expires = self._requested_expires()
        try:
            req = self._in_dialog(dialog, expires)
        except LocalSipError:
            self._send_initial(now)
            return
        self._pending_expires = expires
        self._send(_REFRESH, req)

    def _initial_answered(self, req: Request, resp: Response | None, now: float) -> None:
        if req is not self._initial:
            return  # an older attempt's answer: a newer SUBSCRIBE replaced it
        if not self.wanted:
            # stop() came while the SUBSCRIBE was out: end what the device accepted.
            if resp is not None and 200 <= resp.status < 300 and self.dialog is None:
                try:
                    dialog = Dialog.from_uac(req, resp)
                except (LocalSipError, SipParseError):
                    return
                self._send(_UNSUBSCRIBE, self._in_dialog(dialog, 0))
            return
        if resp is None:
            if self.dialog is not None and self.state in ("active", "pending"):
                return  # a NOTIFY established it already; the lost 2xx changes nothing (RFC 6665 §4.1.2.4)
            self._failed(now, 408, "no answer to SUBSCRIBE")
            return
        if resp.status == 423 and self._min_expires(resp):
            self._send_initial(now)
            return
        if resp.status >= 300:
            self._failed(now, resp.status, resp.reason, retry_after=_retry_after(resp))
            return
        if self.dialog is None:
            try:
                self.dialog = Dialog.from_uac(req, resp)
            except (LocalSipError, SipParseError) as e:
                self._failed(now, resp.status, f"unusable {resp.status}: {e}")
                return
            self._out.append(DialogOpened(self.dialog.id))
        elif self.dialog.matches(resp):
            self.dialog.update_from_response(resp)
        self._accepted(now, resp)

    def _refresh_answered(self, resp: Response | None, now: float) -> None:
        if not self.wanted or self.state not in ("active", "pending"):
            return
        if resp is not None and self.dialog is not None and self.dialog.matches(resp):
            self.dialog.update_from_response(resp)
        if resp is None or resp.status in (408, 481):
            # The device no longer has the subscription (RFC 6665 §4.1.2.2): start a new one.
            status = 408 if resp is None else resp.status
            self._drop_dialog()
            self.failures += 1
            self._set("failed", status, "refresh: " + ("no answer" if resp is None else resp.reason))
            self._send_initial(now)
            return
        if resp.status == 423 and self._min_expires(resp):
            self._send_refresh(now)
            return
        if resp.status >= 300:
            # Still valid until it expires: try the refresh again before then.
            self.failures += 1
            self.status, self.reason = resp.status, f"refresh: {resp.reason}"
            self._out.append(StateChanged(self.state, self.status, self.reason))
            retry = now + self._backoff()
            self._refresh_at = min(retry, self.expires_at) if self.expires_at is not None else retry
            return
        self._accepted(now, resp)

    def _accepted(self, now: float, resp: Response) -> None:
        """A 2xx to our SUBSCRIBE: the granted duration is its Expires (RFC 6665 §4.1.2.1), else what we asked."""
        try:
            granted = expires_value(resp.headers.get("Expires"))
        except SipParseError:
            granted = None
        if granted is None:
            granted = self._pending_expires
        if granted == 0:
            # A 2xx granting nothing: the device ends it at once (its terminated NOTIFY follows).
            self._failed(now, resp.status, "the device granted Expires: 0")
            return
        self._granted(now, granted)
        self.failures = 0
        self._retry_at = None
        # A NOTIFY may have said "pending" (authorisation awaited, RFC 6665 §4.1.3): keep it.
        self._set("pending" if self.state == "pending" else "active", resp.status, resp.reason)

    def _granted(self, now: float, seconds: int) -> None:
        """The subscription lasts ``seconds`` from now: the latest 2xx Expires or NOTIFY ``expires`` says so
        (RFC 6665 §4.1.2.3); it is refreshed at ``refresh_ratio`` of it.

        A notifier may shorten the duration asked for, never lengthen it (RFC 6665 §4.2.1.1): more than we
        asked is read as what we asked, so a device answering ``expires=4294967295`` is still refreshed
        and a subscription it forgot is noticed."""
        if self.target is not None:
            seconds = min(seconds, self._requested_expires())
        self.expires_at = now + seconds
        self._refresh_at = now + seconds * self.refresh_ratio

    def _terminated(self, now: float, sub_state: SubscriptionState) -> None:
        self._drop_dialog()
        self.expires_at = self._refresh_at = None
        reason = sub_state.reason
        self.failures += 1
        text = f"terminated: {reason}" if reason else "terminated"
        if reason in _RETRY_AT_ONCE:
            # The first time at once (a timeout is routine); back off when it keeps happening.
            delay = 0.0 if self.failures <= 1 else self._backoff()
        elif reason in _RETRY_LATER:
            delay = self._retry_delay(sub_state.retry_after)
        else:
            self._set("failed", 200, text)
            return
        self._set("failed", 200, text)
        if delay <= 0:
            self._send_initial(now)
        else:
            self._retry_at = now + delay

    def _failed(self, now: float, status: int, reason: str, *, retry_after: int | None = None) -> None:
        self._drop_dialog()
        self.expires_at = self._refresh_at = None
        self.failures += 1
        self._set("failed", status, reason)
        self._retry_at = now + self._retry_delay(retry_after)

    def _retry_delay(self, retry_after: int | None) -> float:
        """The device's ``retry-after`` (RFC 6665 §4.1.3, RFC 3261 §20.33), at most ``backoff_max``: a device
        asking for days (or 2^32 s) must not leave the subscription failed until then; else the back-off."""
        if retry_after is None:
            return self._backoff()
        return float(min(retry_after, self.backoff_max))

    def _backoff(self) -> float:
        return float(min(self.backoff_max, self.backoff_base * 2.0 ** max(0, self.failures - 1)))

    def _min_expires(self, resp: Response) -> bool:
        """423 Interval Too Brief: ask again with its Min-Expires, once (RFC 3261 §10.2.8)."""
        try:
            minimum = expires_value(resp.headers.get("Min-Expires"))
        except SipParseError:
            return False
        if minimum is None or minimum <= self._requested_expires() or self._expires_override is not None:
            return False
        self._expires_override = minimum
        return True

    def _drop_dialog(self) -> None:
        if self.dialog is not None:
            self._out.append(DialogClosed(self.dialog.id))
            self.dialog = None

    def _dialog_from_notify(self, notify: Request) -> Dialog:
        """The dialog a NOTIFY creates before the 2xx to our SUBSCRIBE (RFC 6665 §4.1.2.4)."""
        initial = self._initial
        assert initial is not None
        remote = from_header(notify)
        if not remote.tag:
            raise SipParseError("NOTIFY without From tag")
        contact = notify.headers.get("Contact")
        target = NameAddr.parse(contact).uri if contact else from_header(notify).uri
        SipUri.parse(target)
        cseq = CSeq.parse(notify.headers.get("CSeq") or "")
        return Dialog(
            id=DialogId(initial.call_id, self._tag, remote.tag),
            uac=True,
            method="SUBSCRIBE",
            state=DialogState.CONFIRMED,
            local_uri=initial.headers.get("From") or "",
            remote_uri=notify.headers.get("From") or "",
            local_seq=initial.cseq[0],
            remote_seq=cseq.number,
            remote_target=target,
            contact=initial.headers.get("Contact"),
        )


def _retry_after(resp: Response) -> int | None:
    """A failure's Retry-After seconds (RFC 3261 §20.33), None when absent or unreadable."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    head = value.split(";", 1)[0].split("(", 1)[0].strip()
    try:
        return expires_value(head)  # ASCII digits, capped: a "²" or 5,000 digits is unreadable, not a crash
    except SipParseError:
        return None


def _host_of(contact: str) -> str:
    try:
        return SipUri.parse(NameAddr.parse(contact).uri).host
    except SipParseError:
        return "gbplatform"
