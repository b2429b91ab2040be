"""RFC 3261 §12 dialogs, sans-IO.

Theory of operation
-------------------
A dialog is the peer-to-peer relationship an INVITE (or SUBSCRIBE) sets up
between two user agents; it is identified by the Call-ID and the two tags
(RFC 3261 §12). This module keeps the dialog state of §12.1 — the sequence
numbers, the remote target, the route set — and builds in-dialog requests
from it (§12.2.1.1), checks in-dialog requests received (§12.2.2) and folds in
responses to our requests (§12.2.1.2, §13.2.2.4).

It sends nothing: ``new_request()`` and ``ack_for()`` return a ``Request``
without Via, which the caller passes to ``Endpoint.send_request()`` (BYE,
INFO, re-INVITE...) or ``Endpoint.send_stateless()`` (ACK of a 2xx, RFC 3261
§13.2.2.4), which add the Via with a fresh branch.

States and inputs (the table ``_TRANSITIONS``):

* ``provisional`` — a 101-199 response to a request of this dialog;
* ``established`` — a 2xx to the request that created the dialog (§13.2.2.4);
* ``rejected`` — a final >= 300 to that request: it ends an early dialog
  (§12.3), and a rejected re-INVITE leaves a confirmed one as it was (§14.1);
* ``gone`` — 481 or 408 to any in-dialog request (§12.2.1.2);
* ``bye`` — BYE sent or received (§15.1).

Errors: a malformed header of the peer raises ``SipParseError`` (from
``sip.headers``); a call that makes no sense on our side (a response without a
To tag given to ``from_uac``, BYE from the callee on an early dialog, a full
registry) raises ``LocalSipError``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from sip.errors import LocalSipError
from sip.headers import MAX_CSEQ, CSeq, NameAddr, contacts, from_header, to_header
from sip.message import Headers, Message, Request, Response
from sip.uri import SipUri

log = logging.getLogger(__name__)

# Methods whose 1xx-with-tag or 2xx creates a dialog (RFC 3261 §12.1, RFC 6665 §4.1.2.1).
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE"})

# Target refresh requests replace the remote target with their Contact
# (RFC 3261 §12.2, RFC 3311 §5.1 UPDATE, RFC 6665 §4.1.2.1/§4.2.1 SUBSCRIBE and NOTIFY).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})

# URI parts a Request-URI may not carry (RFC 3261 §19.1.1, table 1): stripped
# when a strict router's URI becomes the Request-URI (§12.2.1.1).
_NOT_IN_REQUEST_URI = ("method",)


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_TRANSITIONS: dict[tuple[DialogState, str], DialogState] = {
    (DialogState.EARLY, "provisional"): DialogState.EARLY,
    (DialogState.EARLY, "established"): DialogState.CONFIRMED,
    (DialogState.EARLY, "rejected"): DialogState.TERMINATED,
    (DialogState.EARLY, "gone"): DialogState.TERMINATED,
    (DialogState.EARLY, "bye"): DialogState.TERMINATED,
    (DialogState.CONFIRMED, "provisional"): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, "established"): DialogState.CONFIRMED,  # 2xx retransmission
    (DialogState.CONFIRMED, "rejected"): DialogState.CONFIRMED,  # failed re-INVITE, §14.1
    (DialogState.CONFIRMED, "gone"): DialogState.TERMINATED,
    (DialogState.CONFIRMED, "bye"): DialogState.TERMINATED,
    # Late responses (the 200 to our BYE, a retransmitted 2xx) change nothing.
    (DialogState.TERMINATED, "provisional"): DialogState.TERMINATED,
    (DialogState.TERMINATED, "established"): DialogState.TERMINATED,
    (DialogState.TERMINATED, "rejected"): DialogState.TERMINATED,
    (DialogState.TERMINATED, "gone"): DialogState.TERMINATED,
    (DialogState.TERMINATED, "bye"): DialogState.TERMINATED,
}


@dataclass(frozen=True)
class DialogId:
    """Call-ID, local tag and remote tag (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(eq=False)
class Dialog:
    """The state of one dialog (RFC 3261 §12.1).

    ``local_uri`` / ``remote_uri`` are the From / To values of the requests
    we send in it, as text with their tags. ``remote_target`` is the peer's
    Contact URI, ``route_set`` the Record-Route values in the order our
    requests must carry them as Route. ``contact`` is the Contact value we put
    in our requests (by default, the one of the request or response that
    created the dialog). ``remote_seq`` stays None until the peer sends a
    request (§12.1.2).
    """

    id: DialogId
    uac: bool
    method: str
    state: DialogState
    local_uri: str
    remote_uri: str
    local_seq: int
    remote_seq: int | None
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    secure: bool = False
    contact: str | None = None

    # -- creation ------------------------------------------------------
    @classmethod
    def from_uac(
        cls, request: Request, response: Response, *, contact: str | None = None
    ) -> Dialog:
        """Create the dialog of our ``request`` from a 1xx-with-tag or 2xx answer (RFC 3261 §12.1.2).

        The route set is the response's Record-Route list reversed, the
        remote target its Contact URI; the dialog is early for a 1xx and
        confirmed for a 2xx (§12.1). ``secure`` follows the SIPS
        Request-URI (§12.1.2; TLS itself is the transport's business).
        """
        if request.method not in DIALOG_CREATING:
            raise LocalSipError(f"{request.method} does not create a dialog")
        if not 100 < response.status < 300:
            raise LocalSipError(f"a {response.status} response does not create a dialog")
        if response.call_id != request.call_id or response.cseq != request.cseq:
            raise LocalSipError("the response does not answer this request")
        local = from_header(request)
        remote = to_header(response)
        if not local.tag:
            raise LocalSipError("our request has no From tag")
        if not remote.tag:
            raise LocalSipError("the response has no To tag: it creates no dialog (RFC 3261 §12.1)")
        if from_header(response).tag != local.tag:
            raise LocalSipError("the response's From tag is not the one of our request")
        target = _contact_uri(response)
        if target is None:
            # §12.1.2 requires a Contact in the 2xx; some cameras leave it out
            # of their provisional answers. The Request-URI still reaches them.
            log.info("no Contact in %s to %s; remote target is the Request-URI",
                     response.status, request.method)
            target = request.uri
        route_set = _route_set(response)
        route_set.reverse()
        if contact is None:
            contact = request.headers.get("Contact")
        return cls(
            id=DialogId(request.call_id, local.tag, remote.tag),
            uac=True,
            method=request.method,
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
            local_uri=request.headers.get("From") or "",
            remote_uri=response.headers.get("To") or "",
            local_seq=request.cseq[0],
            remote_seq=None,
            remote_target=target,
            route_set=route_set,
            secure=_is_sips(request.uri),
            contact=contact,
        )

    @classmethod
    def from_uas(
        cls, request: Request, response: Response, *, contact: str | None = None
    ) -> Dialog:
        """Create the dialog of a received ``request`` we answer with ``response`` (RFC 3261 §12.1.1).

        The route set is the request's Record-Route list in order, the remote
        target its Contact URI, the remote sequence number its CSeq; our local
        sequence number starts empty (0: our first request uses 1). A From
        without tag (RFC 2543 peers) gives an empty remote tag (§12.1.1).
        """
        if request.method not in DIALOG_CREATING:
            raise LocalSipError(f"{request.method} does not create a dialog")
        if not 100 < response.status < 300:
            raise LocalSipError(f"a {response.status} response does not create a dialog")
        if response.call_id != request.call_id or response.cseq != request.cseq:
            raise LocalSipError("the response does not answer this request")
        local = to_header(response)
        remote = from_header(request)
        if not local.tag:
            raise LocalSipError("our response has no To tag (RFC 3261 §12.1.1)")
        cseq = CSeq.parse(request.headers.get("CSeq") or "")
        target = _contact_uri(request)
        if target is None:
            # RFC 3261 §8.1.1.8 requires it; answer anyway and reach the caller at its From URI.
            log.info("%s without Contact; remote target is the From URI", request.method)
            target = remote.uri
        if contact is None:
            contact = response.headers.get("Contact")
        return cls(
            id=DialogId(request.call_id, local.tag, remote.tag or ""),
            uac=False,
            method=request.method,
            state=DialogState.EARLY if response.status < 200 else DialogState.CONFIRMED,
            local_uri=response.headers.get("To") or "",
            remote_uri=request.headers.get("From") or "",
            local_seq=0,
            remote_seq=cseq.number,
            remote_target=target,
            route_set=_route_set(request),
            secure=_is_sips(request.uri),
            contact=contact,
        )

    # -- sending -------------------------------------------------------
    def new_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """Build an in-dialog request with the next local CSeq (RFC 3261 §12.2.1.1).

        ACK of a 2xx comes from ``ack_for()`` and CANCEL from the INVITE
        itself (§9.1), so both are refused here. Sending BYE ends the dialog
        at once (§15.1.1); the callee may not send it on an early dialog (§15).
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise LocalSipError(f"{method} does not take a new CSeq; use ack_for() or the INVITE")
        if self.state is DialogState.TERMINATED:
            raise LocalSipError(f"dialog {self.id} is terminated")
        if method == "BYE" and not self.uac and self.state is DialogState.EARLY:
            raise LocalSipError("the callee must not send BYE on an early dialog (RFC 3261 §15)")
        if self.local_seq >= MAX_CSEQ:
            raise LocalSipError("local CSeq exhausted (RFC 3261 §8.1.1.5)")
        self.local_seq += 1
        req = self._build(method, self.local_seq, body, content_type, headers)
        if self.contact is not None:
            req.headers.add("Contact", self.contact)
        if method == "BYE":
            self._apply("bye")
        return req

    def ack_for(
        self,
        invite_cseq: int,
        *,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """Build the ACK of a 2xx to the INVITE numbered ``invite_cseq`` (RFC 3261 §13.2.2.4).

        It carries the INVITE's CSeq number with method ACK and leaves the
        local sequence number alone. ``Endpoint.send_stateless`` adds no
        Max-Forwards, so it is set here (§8.1.1.6).
        """
        if not 0 <= invite_cseq <= MAX_CSEQ:
            raise LocalSipError(f"bad INVITE CSeq {invite_cseq}")
        ack = self._build("ACK", invite_cseq, body, content_type, ())
        ack.headers.add("Max-Forwards", "70")
        return ack

    def _build(
        self,
        method: str,
        cseq: int,
        body: bytes,
        content_type: str | None,
        extra: Iterable[tuple[str, str]],
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        h = Headers()
        h.add("From", self.local_uri)
        h.add("To", self.remote_uri)
        h.add("Call-ID", self.id.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for route in routes:
            h.add("Route", route)
        if content_type is not None:
            h.add("Content-Type", content_type)
        for name, value in extra:
            h.add(name, value)
        return Request(headers=h, body=body, method=method, uri=uri)

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        """Request-URI and Route values (RFC 3261 §12.2.1.1).

        With a loose router first (``lr``) or no route set, the Request-URI is
        the remote target. A strict router first takes the Request-URI
        (stripped of what a Request-URI may not carry), and the remote target
        goes last in Route.
        """
        if not self.route_set:
            return self.remote_target, []
        first = SipUri.parse(NameAddr.parse(self.route_set[0]).uri)
        if "lr" in first.params:
            return self.remote_target, list(self.route_set)
        for name in _NOT_IN_REQUEST_URI:
            first.params.pop(name, None)
        first.headers = None
        return str(first), [*self.route_set[1:], f"<{self.remote_target}>"]

    # -- receiving -----------------------------------------------------
    def receive_request(self, req: Request) -> int | None:
        """Check an in-dialog request and update the dialog (RFC 3261 §12.2.2).

        Returns None when the request is acceptable (the caller goes on and
        answers it), or the status to answer: 481 when it is not in this
        dialog or the dialog is over, 500 when its CSeq is lower than the
        remote sequence number. A target refresh request with a Contact
        replaces the remote target; BYE terminates the dialog (the caller
        answers 200, §15.1.2). An ACK is never answered, so None is returned
        for it whatever happens.
        """
        cseq = CSeq.parse(req.headers.get("CSeq") or "")
        if not self.matches(req):
            return None if req.method == "ACK" else 481
        if req.method in ("ACK", "CANCEL"):
            # Same CSeq as the INVITE; not a new request in the sequence (§12.2.2).
            return None
        if self.state is DialogState.TERMINATED:
            return 481
        if self.remote_seq is not None and cseq.number < self.remote_seq:
            log.info("dialog %s: %s CSeq %d below %d, answering 500",
                     self.id, req.method, cseq.number, self.remote_seq)
            return 500
        target = _contact_uri(req) if req.method in TARGET_REFRESH else None
        self.remote_seq = cseq.number
        if target is not None:
            self.remote_target = target
        if req.method == "BYE":
            self._apply("bye")
        return None

    def update_from_response(self, response: Response) -> None:
        """Fold in a response to one of our requests in this dialog (RFC 3261 §12.1.2, §12.2.1.2).

        A 2xx to the creating request confirms an early dialog and, for the
        UAC, recomputes the route set from it (§13.2.2.4); a 1xx or 2xx to a
        target refresh request with a Contact replaces the remote target; 481
        or 408 ends the dialog (§12.2.1.2); a final failure of the creating
        request ends an early dialog (§12.3).
        """
        if not self.matches(response):
            raise LocalSipError(f"response does not belong to dialog {self.id}")
        cseq = CSeq.parse(response.headers.get("CSeq") or "")
        status = response.status
        if status < 200:
            event = "provisional" if status > 100 else ""
        elif status < 300:
            event = "established" if cseq.method == self.method else ""
        elif status in (408, 481):
            event = "gone"
        else:
            event = "rejected" if cseq.method == self.method else ""
        refreshes = cseq.method in TARGET_REFRESH and (
            200 <= status < 300 or (100 < status < 200 and self.state is DialogState.EARLY)
        )
        target = _contact_uri(response) if refreshes else None
        route_set = (
            _route_set(response)[::-1]
            if self.uac and event == "established" and self.state is DialogState.EARLY
            else None
        )
        if target is not None:
            self.remote_target = target
        if route_set is not None:
            self.route_set = route_set
        if event:
            self._apply(event)

    def matches(self, msg: Message) -> bool:
        """Whether ``msg`` belongs to this dialog (RFC 3261 §12.2.1.2, §12.2.2).

        A request from the peer has our tag in To and theirs in From; a
        response to our request has ours in From and theirs in To.
        """
        if msg.call_id != self.id.call_id:
            return False
        from_tag = from_header(msg).tag or ""
        to_tag = to_header(msg).tag or ""
        if isinstance(msg, Request):
            return to_tag == self.id.local_tag and from_tag == self.id.remote_tag
        return from_tag == self.id.local_tag and to_tag == self.id.remote_tag

    def _apply(self, event: str) -> None:
        new = _TRANSITIONS[(self.state, event)]
        if new is not self.state:
            log.debug("dialog %s: %s -> %s on %s", self.id, self.state.value, new.value, event)
        self.state = new

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED


class Dialogs:
    """The dialogs of a user agent, keyed by ``DialogId`` (RFC 3261 §12).

    Bounded: past ``max_dialogs`` entries ``add`` refuses with
    ``LocalSipError`` (the caller answers 503) rather than grow without limit.
    """

    def __init__(self, max_dialogs: int = 100_000) -> None:
        self.max_dialogs = max_dialogs
        self._by_id: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._by_id.values()))

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Dialog):
            return self._by_id.get(item.id) is item
        return item in self._by_id

    def add(self, dialog: Dialog) -> None:
        if dialog.id in self._by_id:
            raise LocalSipError(f"dialog {dialog.id} exists already")
        if len(self._by_id) >= self.max_dialogs:
            raise LocalSipError(f"too many dialogs ({self.max_dialogs})")
        self._by_id[dialog.id] = dialog

    def remove(self, dialog: Dialog | DialogId) -> None:
        """Forget a dialog; forgetting an unknown one is not an error (both ends may BYE)."""
        key = dialog.id if isinstance(dialog, Dialog) else dialog
        self._by_id.pop(key, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._by_id.get(dialog_id)

    def find_for_request(self, req: Request) -> Dialog | None:
        """The dialog of a request from a peer: local tag = To tag, remote = From tag (§12.2.2).

        A request without To tag is outside any dialog (§12.2.2 ends, §8.2).
        """
        local = to_header(req).tag
        if local is None:
            return None
        return self._by_id.get(DialogId(req.call_id, local, from_header(req).tag or ""))

    def find_for_response(self, resp: Response) -> Dialog | None:
        """The dialog of a response to our request: local tag = From tag, remote = To tag (§12.1.2)."""
        remote = to_header(resp).tag
        local = from_header(resp).tag
        if remote is None or local is None:
            return None
        return self._by_id.get(DialogId(resp.call_id, local, remote))


def _contact_uri(msg: Message) -> str | None:
    """The URI of the first Contact, checked to be a SIP URI, or None (RFC 3261 §12.1)."""
    values = contacts(msg)
    if not values:
        return None
    uri = values[0].uri
    SipUri.parse(uri)  # a remote target must be usable as a Request-URI
    return uri


def _route_set(msg: Message) -> list[str]:
    """Record-Route values in header order, each checked to be a name-addr (RFC 3261 §20.30)."""
    values = msg.headers.get_all("Record-Route")
    for value in values:
        SipUri.parse(NameAddr.parse(value).uri)
    return values


def _is_sips(uri: str) -> bool:
    return uri[:5].lower() == "sips:"


__all__ = [
    "DIALOG_CREATING",
    "TARGET_REFRESH",
    "Dialog",
    "DialogId",
    "DialogState",
    "Dialogs",
]
