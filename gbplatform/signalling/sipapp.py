"""SIP events to services: the controller between the endpoint and the application.

``SipApp.handle_events`` is given the endpoint's events by the transport
adapter and dispatches them with ``isinstance``: REGISTER to the device
manager, MESSAGE bodies (MANSCDP, GB/T 28181-2016 §9.3–§9.5, Annex A) to the
keepalive, query and catalog handlers, responses to the Deferreds of the
requests we sent. It also builds the requests the platform sends to devices.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.core.clock import Clock
from gbplatform.core.errors import DeviceOffline, DeviceRejected, DeviceTimeout
from gbplatform.core.ids import is_gb_id
from gbplatform.db.queries import MAX_ID_LENGTH
from gbplatform.devices.registrar import NOT_FROM_HERE
from sip import manscdp
from sip.endpoint import (
    Addr,
    CancelReceived,
    Endpoint,
    EndpointEvent,
    MessageDropped,
    RequestReceived,
    RequestUnanswered,
)
from sip.headers import from_header
from sip.message import Request, Response, make_response
from sip.transaction import (
    ClientTransaction,
    ResponseReceived,
    ServerTransaction,
    State,
    TransactionTimedOut,
)

if TYPE_CHECKING:
    from gbplatform.devices.registrar import DeviceManager

log = Logger()

MANSCDP_TYPE = "Application/MANSCDP+xml"
# Non-strict device IDs (sip.strict_id off): printable ASCII without spaces,
# as long as the registry's column (db.queries.MAX_ID_LENGTH).
_LOOSE_ID = re.compile(rf"[!-~]{{1,{MAX_ID_LENGTH}}}")
ALLOW = "REGISTER, MESSAGE, OPTIONS, INVITE, ACK, BYE, CANCEL, INFO, NOTIFY, SUBSCRIBE"


class SipTimeout(Exception):
    """A client transaction timed out (RFC 3261 §17.1.2.2 timer F)."""


@dataclass
class _Waiter:
    deferred: Deferred[Any]
    timer: Any


class SipApp:
    """Dispatches SIP events and sends the platform's requests."""

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
        self.devices: DeviceManager | None = None
        self.flush: Callable[[], None] = lambda: None
        # In-dialog requests (BYE, INFO) go to the service owning the dialog.
        self.on_in_dialog: Callable[[Request, Any], bool] | None = None
        self._pending: dict[int, Deferred[Response]] = {}
        # INVITE senders that must see 1xx: CANCEL waits for one (RFC 3261 §9.1).
        self._provisional: dict[int, Callable[[Response], None]] = {}
        self._answers: dict[tuple[str, str, int], _Waiter] = {}
        self._response_hooks: dict[str, Callable[[str, manscdp.ManscdpMessage], bool]] = {}
        self._cseq = itertools.count(1)
        self._sn = itertools.count(rng.randrange(1, 100_000))

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
            if self.devices is not None:
                self.devices.log_refusal("dropped", "SIP message from {peer} dropped: {reason}",
                                         peer=_peer(event.source), reason=event.reason)
        elif isinstance(event, CancelReceived):
            log.info("INVITE cancelled by {peer}", peer=_peer(event.source))

    def request_received(self, event: RequestReceived) -> None:
        req, tx = event.request, event.transaction
        if tx is None:  # ACK for a 2xx: dialogs are the live-video layer's business
            return
        method = req.method
        if method in ("REGISTER", "MESSAGE") and not self._device_id_ok(req, tx, event.source):
            return
        if method == "REGISTER":
            assert self.devices is not None
            self.devices.handle_register(req, tx, event.source)
        elif method == "MESSAGE":
            self._handle_message(req, tx, event.source)
        elif method == "OPTIONS":
            # The same answer for everyone, no state: scanners (svmap) send OPTIONS by the thousand.
            self.respond(tx, make_response(req, 200, to_tag=self.endpoint.new_tag(), headers=[("Allow", ALLOW)]),
                         stateless=True)
        elif method in ("INVITE", "SUBSCRIBE"):
            # No media or subscription service is wired to answer a device's
            # INVITE (voice broadcast) or a SUBSCRIBE yet: refuse clearly.
            self.respond(tx, make_response(req, 603 if method == "INVITE" else 489, to_tag=self.endpoint.new_tag()),
                         stateless=True)
        elif method in ("BYE", "INFO", "NOTIFY"):
            if self.on_in_dialog is not None and self.on_in_dialog(req, tx):
                return
            self.respond(tx, make_response(req, 481, to_tag=self.endpoint.new_tag()), stateless=True)
        else:
            self.respond(tx, make_response(req, 405, to_tag=self.endpoint.new_tag(), headers=[("Allow", ALLOW)]),
                         stateless=True)

    def _device_id_ok(self, req: Request, tx: Any, source: Addr) -> bool:
        """Check the From user of a device's request once, before any service sees it.

        A device is named by a 20-digit code (GB/T 28181-2016 Annex D; any
        printable ASCII up to the registry's length with ``sip.strict_id``
        off). The header is decoded with surrogate escapes, so a user with
        non-UTF-8 bytes would otherwise reach the registry and fail there.
        """
        assert self.devices is not None
        user = from_header(req).user or ""  # From itself was validated by the endpoint
        if self.devices.config.strict_id:
            ok = is_gb_id(user)
        else:
            ok = _LOOSE_ID.fullmatch(user) is not None
        if not ok:
            if req.method == "REGISTER":
                self.devices.stats["rejected"] += 1
            # Once per interval with a count: forged REGISTERs come 20,000 a second.
            self.devices.log_refusal(f"bad_id {req.method}", "{method} from {peer} refused: bad device ID {id!r}",
                                     method=req.method, peer=_peer(source), id=user)
            self.respond(tx, make_response(req, 403, "Invalid Device ID", to_tag=self.endpoint.new_tag()),
                         stateless=True)
        return ok

    def _handle_message(self, req: Request, tx: Any, source: Addr) -> None:
        assert self.devices is not None
        device_id = from_header(req).user or ""  # checked by _device_id_ok
        if "manscdp" not in req.content_type:
            self.respond(tx, make_response(req, 415, to_tag=self.endpoint.new_tag(), headers=[("Accept", MANSCDP_TYPE)]),
                         stateless=True)
            return
        charset = self.devices.charset_of(device_id)
        try:
            msg = manscdp.decode(req.body, default_charset=charset)
        except manscdp.ManscdpError as e:
            log.info("bad MANSCDP body from {device}: {reason}", device=device_id, reason=str(e))
            resp = make_response(req, 400, to_tag=self.endpoint.new_tag())
            resp.headers.add("Warning", f'399 gbplatform "{str(e)[:100]}"')
            self.respond(tx, resp, stateless=True)
            return
        if isinstance(msg, manscdp.Keepalive) or (msg.kind == "Notify" and msg.cmd_type.lower() == "keepalive"):
            self.devices.handle_keepalive(req, tx, source, device_id, msg)
            return
        if not self.devices.is_known(device_id):
            self.respond(tx, make_response(req, 403, "Not Registered", to_tag=self.endpoint.new_tag()), stateless=True)
            return
        if not self.devices.speaks_for(device_id, source):
            # Answers, alarms and catalogs are accepted only from where the
            # device registered: anyone can put its ID in a From header.
            live = self.devices.live_info(device_id)
            assert live is not None
            self.devices.refused_stranger(f"{msg.kind} {msg.cmd_type}", device_id, live.addr, source)
            self.respond(tx, make_response(req, 403, "Not Registered", to_tag=self.endpoint.new_tag(),
                                           headers=[NOT_FROM_HERE]), stateless=True)
            return
        self.devices.touch(device_id, source, msg.charset)
        self.respond(tx, make_response(req, 200, to_tag=self.endpoint.new_tag()))
        if msg.kind == "Response":
            # CmdType is decoded case-insensitively (sip.manscdp), so it is
            # routed that way too: some devices answer "catalog".
            hook = self._response_hooks.get(msg.cmd_type.lower())
            if hook is not None and hook(device_id, msg):
                return
            waiter = self._answers.pop((device_id, msg.cmd_type.lower(), msg.sn), None)
            if waiter is None:
                log.debug("unsolicited {cmd} response from {device}", cmd=msg.cmd_type, device=device_id)
                return
            if waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.callback(msg)
        else:
            log.info("{kind} {cmd} from {device} acknowledged", kind=msg.kind, cmd=msg.cmd_type, device=device_id)

    # -- responses ------------------------------------------------------------
    def respond(self, tx: Any, resp: Response, *, stateless: bool = False) -> None:
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

    def on_response(self, cmd_type: str, hook: Callable[[str, manscdp.ManscdpMessage], bool]) -> None:
        """Route Responses of ``cmd_type`` to ``hook`` (Catalog is answered in many parts)."""
        self._response_hooks[cmd_type.lower()] = hook

    async def send_manscdp(self, device_id: str, body: bytes) -> None:
        """MESSAGE a MANSCDP body to a registered device; raise unless it answers 2xx."""
        assert self.devices is not None
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
        assert self.devices is not None
        sn = self.next_sn()
        d: Deferred[manscdp.ManscdpMessage] = Deferred()
        key = (device_id, cmd_type.lower(), sn)
        wait = timeout if timeout is not None else self.query_timeout

        def expire() -> None:
            waiter = self._answers.pop(key, None)
            if waiter is not None:
                waiter.deferred.errback(DeviceTimeout(f"device {device_id} did not answer {cmd_type} in {wait:g} s"))

        self._answers[key] = _Waiter(d, self.clock.call_later(wait, expire))
        charset = self.devices.charset_of(device_id)
        body = manscdp.encode_query(cmd_type, sn, target_id or device_id, charset=charset, extra=extra)

        def send_failed(failure: Failure) -> None:
            # The MESSAGE itself failed (offline, 4xx, timer F): that is the
            # query's outcome, unless the answer or query_timeout came first.
            waiter = self._answers.pop(key, None)
            if waiter is None:
                log.info("{cmd} MESSAGE to {device} failed after the query ended: {err}", cmd=cmd_type,
                         device=device_id, err=failure.getErrorMessage())
                return
            if waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(failure)

        # Not awaited before the answer: a device that never answers the
        # MESSAGE must time out after query_timeout, not after timer F (32 s).
        ensureDeferred(self.send_manscdp(device_id, body)).addErrback(send_failed)
        return await d


def _peer(addr: Addr) -> str:
    return f"{addr[0]}:{addr[1]}:{addr[2]}"
