"""The signalling router: every SIP request, MANSCDP body and answer goes through here.

Theory of operation
-------------------
The transport adapter hands the endpoint's events to ``SipRouter.handle_events``
(transactions and retransmissions are the ``sip.endpoint`` core's business).
Services never see the endpoint's events; they register at wiring time
(``gbplatform.app.service``) in one of three registries and the router calls
them:

1. **By dialog** (RFC 3261 §12.2.2): a request with a To tag whose dialog
   (Call-ID, local tag, remote tag) a session registered with ``add_dialog``
   goes to that session's handler, for the methods it registered (BYE, INFO
   and NOTIFY by default). An in-dialog method nobody owns is answered 481.
2. **By SIP method**: ``on_request("REGISTER", handler)``; one handler per
   method. OPTIONS is answered here (RFC 3261 §11.2) with an ``Allow`` built
   from the registry, as is the 405 for a method nobody serves (§8.2.1).
   MESSAGE is the router's own handler (``handle_manscdp``). The
   subscriptions (``gbplatform.subscriptions``) register their dialogs for
   NOTIFY, serve NOTIFYs of no routed dialog (one that overtakes the
   SUBSCRIBE's 2xx, RFC 6665 §4.1.2.4; others are 481) and hand the bodies
   to ``handle_manscdp`` (§9.11: the same bodies, checks and listeners).
   INVITE and SUBSCRIBE are refused (603, 489) until a service registers for
   them.
3. **By MANSCDP (kind, CmdType)** (GB/T 28181-2016 §9.3, Annex A), matched
   case-insensitively as ``sip.manscdp`` decodes it (some devices send
   "catalog"). Before any of them runs, the router checks the sender once:
   the From user is a device ID (``_device_id_ok``, also done for REGISTER:
   ``on_request(..., from_device=True)``),
   the body is MANSCDP and decodes, the device is registered and the request
   comes from where it registered (``DeviceDirectory.speaks_for``: anyone can
   put a device's ID in a From header; refusals are logged throttled).

   - ``on_manscdp(kind, cmd, listener)``: several listeners per CmdType (an
     alarm goes to the event stream and to cascade). The router answers 200
     itself once the sender is validated, *before* the listeners run: a
     MESSAGE's 200 says "received" (§9.3.1), not "handled", and no listener
     can hold it up or answer twice. A listener that fails is logged and the
     others still run.
   - A Notify (other than the keepalive, which has its responder) spends
     one token of its device's budget first (``ratelimit.NotifyLimiter``,
     ``sip.notify_rate``/``sip.notify_burst``): past it the request is
     answered 503 with ``Retry-After``, statelessly, and nothing runs, so a
     device flooding alarms or positions cannot delay another's.
   - ``answer_manscdp(kind, cmd, responder)``: at most one per CmdType, for
     the message whose final response depends on the service. Only the
     keepalive (§9.6.1) has one: after a platform restart it is what brings a
     device back (200) or sends it to register again (404), which needs the
     registry, so it runs after the device-ID check and before the
     registered-address check, which the registrar does with the same
     ``may_speak_for`` rule. The canonical keepalive of a device online
     from its source does not come here at all: the endpoint answers it on
     the keepalive fast path (``sip.fastpath``,
     ``DeviceManager.fast_keepalive``; docs/architecture.md), and only what
     that path declines is routed.

Answers to the platform's own queries are correlated by SN in one place: a
Response whose (device, CmdType, SN) was registered with ``expect`` goes to
that correlation (``query`` waits for one answer; a Catalog sync keeps its
correlation open for the many MESSAGEs of a multi-part answer, §9.5.2), then
to the ``on_manscdp`` listeners of its CmdType, if any. A Response nothing
waits for and nobody listens to is acknowledged and dropped.

The router also builds and sends the platform's own requests
(``new_request``, ``send_request``, ``send_manscdp``, ``query``; ``ask`` for a
Control such as DeviceControl, whose Response is correlated the same way).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.app.config import SipConfig
from gbplatform.core.clock import Clock
from gbplatform.core.errors import DeviceOffline, DeviceRejected, DeviceTimeout
from gbplatform.core.ids import is_gb_id
from gbplatform.devices.registrar import NOT_FROM_HERE, DeviceLive
from gbplatform.signalling.ratelimit import NotifyLimiter
from sip import manscdp
from sip.dialog import DialogId
from sip.endpoint import (
    Addr,
    CancelReceived,
    Endpoint,
    EndpointEvent,
    MessageDropped,
    RequestReceived,
    RequestUnanswered,
)
from sip.gbid import is_loose_id
from sip.headers import from_header, to_header
from sip.message import Request, Response, make_response
from sip.transaction import (
    ClientTransaction,
    ResponseReceived,
    ServerTransaction,
    State,
    TransactionTimedOut,
)

log = Logger()

MANSCDP_TYPE = "Application/MANSCDP+xml"

# Requests that only make sense inside a dialog: without one they are 481
# (RFC 3261 §12.2.2). A session registers its dialog for these by default.
IN_DIALOG_METHODS = frozenset({"BYE", "INFO", "NOTIFY"})
# Methods understood but not served yet, and the refusal each gets: no media
# service answers a device's INVITE (voice broadcast, §9.12) and no
# subscription service a SUBSCRIBE (§9.11) until they register a handler.
NOT_SERVED = {"INVITE": 603, "SUBSCRIBE": 489}
# Handled by the endpoint (CANCEL, §9.2) or the dialog layer (ACK, §13.2.2.4).
_ALWAYS_ALLOWED = ("OPTIONS", "ACK", "CANCEL")
# The order methods are listed in Allow; others registered later follow, sorted.
_ALLOW_ORDER = ("REGISTER", "MESSAGE", "OPTIONS", "INVITE", "ACK", "BYE", "CANCEL", "INFO", "NOTIFY", "SUBSCRIBE")

RequestHandler = Callable[[Request, ServerTransaction, Addr], None]
ManscdpListener = Callable[[str, manscdp.ManscdpMessage], None]
ManscdpResponder = Callable[[Request, ServerTransaction, Addr, str, manscdp.ManscdpMessage], None]


class SipTimeout(Exception):
    """A client transaction timed out (RFC 3261 §17.1.2.2 timer F)."""


class DeviceDirectory(Protocol):
    """What the router asks the registrar before a device's request reaches a service."""

    @property
    def config(self) -> SipConfig: ...

    @property
    def stats(self) -> dict[str, int]: ...

    def log_refusal(self, kind: str, fmt: str, **fields: Any) -> None: ...
    def charset_of(self, device_id: str) -> str: ...
    def is_known(self, device_id: str) -> bool: ...
    def speaks_for(self, device_id: str, source: Addr) -> bool: ...
    def live_info(self, device_id: str) -> DeviceLive | None: ...
    def refused_stranger(self, what: str, device_id: str, registered: Addr, source: Addr) -> None: ...
    def touch(self, device_id: str, source: Addr, charset: str) -> None: ...
    def address_of(self, device_id: str) -> Addr | None: ...


@dataclass
class Correlation:
    """Responses of one (device, CmdType, SN) routed to ``listener`` until ``close()``.

    GB/T 28181-2016 §9.5: a Response carries the SN of the Query it answers.
    """

    key: tuple[str, str, int]
    listener: Callable[[manscdp.ManscdpMessage], None]
    _table: dict[tuple[str, str, int], Correlation] = field(repr=False)

    @property
    def sn(self) -> int:
        return self.key[2]

    @property
    def open(self) -> bool:
        return self._table.get(self.key) is self

    def close(self) -> None:
        if self.open:
            del self._table[self.key]


def _manscdp_key(kind: str, cmd_type: str) -> tuple[str, str]:
    # Case-insensitive as sip.manscdp's decoder: some devices answer "catalog".
    return kind.lower(), cmd_type.lower()


class SipRouter:
    """Routes SIP events to the services registered for them; sends the platform's requests."""

    def __init__(
        self,
        *,
        platform_id: str,
        domain: str,
        endpoint: Endpoint,
        clock: Clock,
        rng: random.Random,
        query_timeout: float = 10.0,
    ) -> None:
        self.platform_id = platform_id
        self.domain = domain
        self.endpoint = endpoint
        self.clock = clock
        self.rng = rng
        self.query_timeout = query_timeout
        self._devices: DeviceDirectory | None = None
        self.flush: Callable[[], None] = lambda: None
        self._methods: dict[str, RequestHandler] = {}
        self._device_methods: set[str] = set()  # whose From must be a device ID (MESSAGE: handle_manscdp)
        self._dialogs: dict[DialogId, tuple[RequestHandler, frozenset[str]]] = {}
        self._listeners: dict[tuple[str, str], list[ManscdpListener]] = {}
        self._responders: dict[tuple[str, str], ManscdpResponder] = {}
        self._correlations: dict[tuple[str, str, int], Correlation] = {}
        self._pending: dict[int, Deferred[Response]] = {}
        # INVITE senders that must see 1xx: CANCEL waits for one (RFC 3261 §9.1).
        self._provisional: dict[int, Callable[[Response], None]] = {}
        self._cseq = itertools.count(1)
        self._sn = itertools.count(rng.randrange(1, 100_000))
        # Per-device Notify budget, built from the registrar's sip config on first use (it is wired later).
        self.notify_limiter: NotifyLimiter | None = None

    @property
    def devices(self) -> DeviceDirectory:
        """The registrar, which vouches for devices; set once while wiring (it needs the router first)."""
        if self._devices is None:
            raise RuntimeError("SipRouter.devices is not wired (gbplatform.app.service does it)")
        return self._devices

    @devices.setter
    def devices(self, devices: DeviceDirectory) -> None:
        self._devices = devices

    # -- registries ------------------------------------------------------------
    def on_request(self, method: str, handler: RequestHandler, *, from_device: bool = False) -> None:
        """Serve ``method`` (one handler per method); it answers through ``respond``.

        ``from_device``: the From user must be a device ID, checked here
        before ``handler`` runs (REGISTER, GB/T 28181-2016 §9.1; Annex D).
        """
        method = method.upper()
        if method in self._methods or method in ("MESSAGE", "OPTIONS"):
            raise ValueError(f"{method} is served already")
        self._methods[method] = handler
        if from_device:
            self._device_methods.add(method)

    def on_manscdp(self, kind: str, cmd_type: str, listener: ManscdpListener) -> None:
        """Give ``listener(device_id, msg)`` every validated MESSAGE of (kind, CmdType).

        Several listeners per CmdType are called in registration order; the
        MESSAGE was answered 200 before (see the module docstring).
        """
        self._listeners.setdefault(_manscdp_key(kind, cmd_type), []).append(listener)

    def answer_manscdp(self, kind: str, cmd_type: str, responder: ManscdpResponder) -> None:
        """Let ``responder(req, tx, source, device_id, msg)`` give the final response itself (keepalive only)."""
        key = _manscdp_key(kind, cmd_type)
        if key in self._responders:
            raise ValueError(f"{kind} {cmd_type} is answered already")
        self._responders[key] = responder

    def add_dialog(self, dialog_id: DialogId, handler: RequestHandler,
                   methods: frozenset[str] = IN_DIALOG_METHODS) -> None:
        """Route requests of ``methods`` in the dialog ``dialog_id`` to ``handler`` (RFC 3261 §12.2.2)."""
        self._dialogs[dialog_id] = (handler, methods)

    def remove_dialog(self, dialog_id: DialogId) -> None:
        """Stop routing the dialog: later requests in it are 481. Unknown IDs are ignored (both ends may BYE)."""
        self._dialogs.pop(dialog_id, None)

    def expect(self, device_id: str, cmd_type: str, sn: int,
               listener: Callable[[manscdp.ManscdpMessage], None]) -> Correlation:
        """Route Responses of ``device_id`` with ``cmd_type`` and ``sn`` to ``listener`` until closed (§9.5)."""
        key = (device_id, cmd_type.lower(), sn)
        correlation = Correlation(key, listener, self._correlations)
        self._correlations[key] = correlation
        return correlation

    def allow(self) -> str:
        """The ``Allow`` header value: every method something here serves (RFC 3261 §20.5)."""
        served = set(self._methods) | {"MESSAGE"} | set(_ALWAYS_ALLOWED) | IN_DIALOG_METHODS | set(NOT_SERVED)
        ordered = [m for m in _ALLOW_ORDER if m in served]
        return ", ".join(ordered + sorted(served - set(_ALLOW_ORDER)))

    # -- event dispatch ----------------------------------------------------
    def handle_events(self, events: list[EndpointEvent]) -> None:
        for event in events:
            try:
                self._handle(event)
            except Exception:  # noqa: BLE001 - one bad event must not drop the others
                log.failure("handling SIP event {event!r} failed", event=event)
                if isinstance(event, RequestReceived) and event.transaction is not None:
                    self._answer_500(event.request, event.transaction)

    def _answer_500(self, req: Request, tx: ServerTransaction) -> None:
        """Give a request no handler answered its final response (RFC 3261 §8.2.6)."""
        if tx.state not in (State.TRYING, State.PROCEEDING):
            return
        try:
            self.respond(tx, make_response(req, 500, to_tag=self.endpoint.new_tag()))
        except Exception:  # noqa: BLE001 - a request too broken to copy headers from
            log.failure("answering 500 to {method} failed", method=req.method)

    def _handle(self, event: EndpointEvent) -> None:
        if isinstance(event, RequestReceived):
            self.request_received(event)
        elif isinstance(event, RequestUnanswered):
            tx = event.transaction
            log.error(
                "{method} from {peer} unanswered after {timeout:g} s: answering 500 (a handler lost it)",
                method=tx.request.method, peer=_peer(event.source), timeout=self.endpoint.answer_timeout,
            )
            self._answer_500(tx.request, tx)
        elif isinstance(event, ResponseReceived):
            if event.response.status >= 200:
                self._provisional.pop(id(event.transaction), None)
                d = self._pending.pop(id(event.transaction), None)
                if d is not None:
                    d.callback(event.response)
            elif (hook := self._provisional.get(id(event.transaction))) is not None:
                hook(event.response)
        elif isinstance(event, TransactionTimedOut):
            self._provisional.pop(id(event.transaction), None)
            d = self._pending.pop(id(event.transaction), None)
            if d is not None:
                d.errback(SipTimeout(f"no answer to {event.transaction.method}"))
        elif isinstance(event, MessageDropped):
            if self._devices is not None:
                self._devices.log_refusal("dropped", "SIP message from {peer} dropped: {reason}",
                                         peer=_peer(event.source), reason=event.reason)
        elif isinstance(event, CancelReceived):
            log.info("INVITE cancelled by {peer}", peer=_peer(event.source))

    def request_received(self, event: RequestReceived) -> None:
        req, tx, source = event.request, event.transaction, event.source
        if tx is None:  # ACK for a 2xx: dialogs are the sessions' business
            return
        method = req.method
        to_tag = to_header(req).tag if self._dialogs else None
        if to_tag is not None:  # only a request inside a dialog has one (RFC 3261 §12.2)
            owner = self._dialogs.get(DialogId(req.call_id, to_tag, from_header(req).tag or ""))
            if owner is not None and method in owner[1]:
                owner[0](req, tx, source)
                return
        if method in self._device_methods and not self._device_id_ok(req, tx, source):
            return
        if method == "MESSAGE":
            self.handle_manscdp(req, tx, source)
        elif (handler := self._methods.get(method)) is not None:
            handler(req, tx, source)
        elif method == "OPTIONS":
            # The same answer for everyone, no state: scanners (svmap) send OPTIONS by the thousand.
            self._refuse(req, tx, 200, headers=[("Allow", self.allow())])
        elif method in IN_DIALOG_METHODS:
            self._refuse(req, tx, 481)  # no dialog of ours (RFC 3261 §12.2.2)
        elif method in NOT_SERVED:
            self._refuse(req, tx, NOT_SERVED[method])
        else:
            self._refuse(req, tx, 405, headers=[("Allow", self.allow())])

    def _refuse(self, req: Request, tx: ServerTransaction, status: int, reason: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> None:
        # Refusals keep no transaction state: a flood of them must cost no memory (issue 8).
        self.respond(tx, make_response(req, status, reason, to_tag=self.endpoint.new_tag(), headers=headers or []),
                     stateless=True)

    def _device_id_ok(self, req: Request, tx: ServerTransaction, source: Addr) -> bool:
        """Check the From user of a device's request once, before any service sees it.

        A device is named by a 20-digit code (GB/T 28181-2016 Annex D; with
        ``sip.strict_id`` off, the same loose form the API admits:
        ``sip.gbid.LOOSE_ID_PATTERN``). The header is decoded with surrogate escapes, so a user with
        non-UTF-8 bytes would otherwise reach the registry and fail there.
        """
        user = from_header(req).user or ""  # From itself was validated by the endpoint
        if self.devices.config.strict_id:
            ok = is_gb_id(user)
        else:
            ok = is_loose_id(user)
        if not ok:
            if req.method == "REGISTER":
                self.devices.stats["rejected"] += 1
            # Once per interval with a count: forged REGISTERs come 20,000 a second.
            self.devices.log_refusal(f"bad_id {req.method}", "{method} from {peer} refused: bad device ID {id!r}",
                                     method=req.method, peer=_peer(source), id=user)
            self._refuse(req, tx, 403, "Invalid Device ID")
        return ok

    def handle_manscdp(self, req: Request, tx: ServerTransaction, source: Addr) -> None:
        """A request with a MANSCDP body (GB/T 28181-2016 §9.3): check the sender once, then route the body.

        The MESSAGE handler; a subscription's dialog gives its NOTIFYs here too
        (§9.11: the same bodies, the same checks, the same listeners).
        """
        if not self._device_id_ok(req, tx, source):
            return
        device_id = from_header(req).user or ""
        if "manscdp" not in req.content_type:
            self._refuse(req, tx, 415, headers=[("Accept", MANSCDP_TYPE)])
            return
        charset = self.devices.charset_of(device_id)
        try:
            msg = manscdp.decode(req.body, default_charset=charset)
        except manscdp.ManscdpError as e:
            log.info("bad MANSCDP body from {device}: {reason}", device=device_id, reason=str(e))
            self._refuse(req, tx, 400, headers=[("Warning", f'399 gbplatform "{str(e)[:100]}"')])
            return
        key = _manscdp_key(msg.kind, msg.cmd_type)
        responder = self._responders.get(key)
        if responder is not None:
            responder(req, tx, source, device_id, msg)
            return
        if not self.devices.is_known(device_id):
            self._refuse(req, tx, 403, "Not Registered")
            return
        if not self.devices.speaks_for(device_id, source):
            # Answers, alarms and catalogs are accepted only from where the
            # device registered: anyone can put its ID in a From header.
            live = self.devices.live_info(device_id)
            assert live is not None
            self.devices.refused_stranger(f"{msg.kind} {msg.cmd_type}", device_id, live.addr, source)
            self._refuse(req, tx, 403, "Not Registered", headers=[NOT_FROM_HERE])
            return
        if msg.kind == "Notify" and not self._notify_allowed(req, tx, device_id, msg):
            return
        self.devices.touch(device_id, source, msg.charset)
        self.respond(tx, make_response(req, 200, to_tag=self.endpoint.new_tag()))
        self._dispatch(device_id, key, msg)

    def _notify_allowed(self, req: Request, tx: ServerTransaction, device_id: str,
                        msg: manscdp.ManscdpMessage) -> bool:
        """The device's Notify rate (``gbplatform.signalling.ratelimit``): past ``sip.notify_rate``, 503 with
        ``Retry-After`` (RFC 3261 §21.5.4, §20.33), stateless like the other refusals, counted and logged
        once per interval per device."""
        if self.notify_limiter is None:
            cfg = self.devices.config
            self.notify_limiter = NotifyLimiter(cfg.notify_rate, cfg.notify_burst)
        now = self.clock.seconds()
        if self.notify_limiter.allow(device_id, now):
            return True
        stats = self.devices.stats
        stats["notify_rate_limited"] = stats.get("notify_rate_limited", 0) + 1
        self.devices.log_refusal(f"notify_rate {device_id}",
                                 "Notify {cmd} from {device} refused: over sip.notify_rate", cmd=msg.cmd_type,
                                 device=device_id)
        wait = self.notify_limiter.retry_after(device_id, now)
        self._refuse(req, tx, 503, "Notify Rate Exceeded", headers=[("Retry-After", str(wait))])
        return False

    def _dispatch(self, device_id: str, key: tuple[str, str], msg: manscdp.ManscdpMessage) -> None:
        delivered = False
        if key[0] == "response":
            correlation = self._correlations.get((device_id, key[1], msg.sn))
            if correlation is not None:
                delivered = True
                self._call(msg, correlation.listener, msg)
        listeners = self._listeners.get(key, ())
        for listener in listeners:
            self._call(msg, listener, device_id, msg)
        if delivered or listeners:
            return
        if key[0] == "response":
            log.debug("unsolicited {cmd} response from {device} (SN {sn})", cmd=msg.cmd_type, device=device_id,
                      sn=msg.sn)
        else:
            log.info("{kind} {cmd} from {device} acknowledged", kind=msg.kind, cmd=msg.cmd_type, device=device_id)

    @staticmethod
    def _call(msg: manscdp.ManscdpMessage, listener: Callable[..., None], *args: Any) -> None:
        try:
            listener(*args)
        except Exception:  # noqa: BLE001 - one failing listener must not starve the others
            log.failure("{kind} {cmd} listener {listener!r} failed", kind=msg.kind, cmd=msg.cmd_type,
                        listener=listener)

    # -- responses ------------------------------------------------------------
    def respond(self, tx: ServerTransaction, resp: Response, *, stateless: bool = False) -> None:
        """Answer through ``tx``; ``stateless`` for a refusal that kept no state (``Endpoint.respond``)."""
        self.endpoint.respond(tx, resp, self.clock.seconds(), stateless=stateless)
        self.flush()

    # -- outbound requests -------------------------------------------------
    def new_request(self, method: str, device_id: str, dest: Addr, *, body: bytes = b"", content_type: str | None = None) -> Request:
        """A request to a device (GB/T 28181-2016 §9.3.2: From is the platform, To the device)."""
        host, port = self.endpoint.local.get(dest[0], ("127.0.0.1", 5060))
        req = Request(method=method, uri=f"sip:{device_id}@{dest[1]}:{dest[2]}")
        h = req.headers
        h.add("From", f"<sip:{self.platform_id}@{self.domain}>;tag={self.endpoint.new_tag()}")
        h.add("To", f"<sip:{device_id}@{self.domain}>")
        h.add("Call-ID", f"{self.rng.getrandbits(64):016x}@{host}")
        h.add("CSeq", f"{next(self._cseq) % 2_000_000_000 + 1} {method}")
        h.add("Contact", f"<sip:{self.platform_id}@{host}:{port}>")
        if content_type:
            h.add("Content-Type", content_type)
        req.body = body
        return req

    def send_request(
        self, req: Request, dest: Addr, *, on_provisional: Callable[[Response], None] | None = None
    ) -> Deferred[Response]:
        """Send ``req`` in a client transaction; fires with the final response.

        ``on_provisional`` is called with each 1xx before it (an INVITE's
        sender may CANCEL only after one, RFC 3261 §9.1).
        """
        d: Deferred[Response] = Deferred()
        tx: ClientTransaction = self.endpoint.send_request(req, dest, self.clock.seconds())
        self._pending[id(tx)] = d
        if on_provisional is not None:
            self._provisional[id(tx)] = on_provisional
        self.flush()
        return d

    def next_sn(self) -> int:
        return next(self._sn) % 1_000_000_000

    async def send_manscdp(self, device_id: str, body: bytes) -> None:
        """MESSAGE a MANSCDP body to a registered device; raise unless it answers 2xx."""
        dest = self.devices.address_of(device_id)
        if dest is None:
            raise DeviceOffline(f"device {device_id} is not registered")
        req = self.new_request("MESSAGE", device_id, dest, body=body, content_type=MANSCDP_TYPE)
        try:
            resp = await self.send_request(req, dest)
        except SipTimeout:
            raise DeviceTimeout(f"device {device_id} did not answer the MESSAGE") from None
        if resp.status >= 300:
            raise DeviceRejected(f"device {device_id} answered {resp.status} {resp.reason}")

    async def send_query(self, device_id: str, cmd_type: str, sn: int, *, extra: dict[str, str] | None = None,
                         target_id: str | None = None) -> None:
        """MESSAGE a Query (GB/T 28181-2016 §A.2.4) in the device's charset; its answers go to ``expect``."""
        charset = self.devices.charset_of(device_id)
        body = manscdp.encode_query(cmd_type, sn, target_id or device_id, charset=charset, extra=extra)
        await self.send_manscdp(device_id, body)

    async def query(
        self,
        device_id: str,
        cmd_type: str,
        *,
        extra: dict[str, str] | None = None,
        timeout: float | None = None,
        target_id: str | None = None,
    ) -> manscdp.ManscdpMessage:
        """Send a Query and wait for the device's Response with the same SN (§9.5)."""

        def query_body(sn: int, charset: str) -> bytes:
            return manscdp.encode_query(cmd_type, sn, target_id or device_id, charset=charset, extra=extra)

        return await self.ask(device_id, cmd_type, query_body, timeout=timeout)

    async def ask(
        self,
        device_id: str,
        cmd_type: str,
        body: Callable[[int, str], bytes],
        *,
        timeout: float | None = None,
    ) -> manscdp.ManscdpMessage:
        """MESSAGE ``body(sn, charset)`` (a Query or a Control) and wait for the device's
        Response of ``cmd_type`` with the same SN (GB/T 28181-2016 §9.3, §9.5)."""
        sn = self.next_sn()
        d: Deferred[manscdp.ManscdpMessage] = Deferred()
        wait = timeout if timeout is not None else self.query_timeout

        def answered(msg: manscdp.ManscdpMessage) -> None:
            correlation.close()
            if timer.active():
                timer.cancel()
            d.callback(msg)

        def expire() -> None:
            if correlation.open:
                correlation.close()
                d.errback(DeviceTimeout(f"device {device_id} did not answer {cmd_type} in {wait:g} s"))

        correlation = self.expect(device_id, cmd_type, sn, answered)
        timer = self.clock.call_later(wait, expire)

        def send_failed(failure: Failure) -> None:
            # The MESSAGE itself failed (offline, 4xx, timer F): that is the
            # query's outcome, unless the answer or query_timeout came first.
            if not correlation.open:
                log.info("{cmd} MESSAGE to {device} failed after the query ended: {err}", cmd=cmd_type,
                         device=device_id, err=failure.getErrorMessage())
                return
            correlation.close()
            if timer.active():
                timer.cancel()
            d.errback(failure)

        # Not awaited before the answer: a device that never answers the
        # MESSAGE must time out after query_timeout, not after timer F (32 s).
        async def send() -> None:  # in the device's charset; a body that fails to build fails the ask
            await self.send_manscdp(device_id, body(sn, self.devices.charset_of(device_id)))

        sending = ensureDeferred(send())
        sending.addErrback(send_failed)
        return await d


def _peer(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}:{addr[2]}"
