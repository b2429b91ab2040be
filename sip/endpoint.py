"""The SIP endpoint: routes messages to transactions, sans-IO.

It owns every live transaction, matches incoming requests and responses to
them (RFC 3261 §17.1.3, §17.2.3), answers what the stack can answer by itself
(retransmissions, CANCEL, 400 for malformed requests), and hands the rest to
the transaction user as events. Bytes to send come out of ``take_output()`` as
``(bytes, Addr)``; the Twisted adapter writes them to the right socket or
connection.

Responses go back to the address the request came from (RFC 3581 ``rport``
and §18.2.2 ``received``), never to a Via host the packet did not come from:
GB/T 28181 devices usually sit behind NAT, and answering a Via host would let
anyone direct our traffic at a third party.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sip.errors import SipParseError
from sip.fastpath import KeepaliveRequest, match_keepalive
from sip.headers import top_via, validate_request
from sip.message import Message, Request, Response, make_response, split_list
from sip.parser import parse_datagram
from sip.transaction import (
    T1,
    AckTimedOut,
    ClientTransaction,
    ResponseReceived,
    ServerTransaction,
    State,
    TransactionEvent,
    TransactionTimedOut,
    client_key,
    server_key,
)

log = logging.getLogger(__name__)

Addr = tuple[str, str, int]
"""(transport "UDP" | "TCP", host, port) of a peer."""

_RELIABLE = frozenset({"TCP", "TLS", "WS", "WSS"})

KeepaliveHandler = Callable[[KeepaliveRequest, Addr, float], bool]
"""Takes a canonical keepalive (``sip.fastpath``) from a source at ``now``; True: answer it 200 here."""

# How long a keepalive answered on the fast path is remembered for its retransmissions: the life of
# a non-INVITE server transaction over UDP after its final response (RFC 3261 §17.2.2 timer J).
TIMER_J_UDP = 64 * T1


@dataclass(frozen=True)
class RequestReceived:
    """A new request for the transaction user; answer it with ``Endpoint.respond``.

    ``transaction`` is None for ACKs of 2xx responses, which belong to the
    dialog, not to a transaction (RFC 3261 §17.1.1.3, §13.2.2.4).
    """

    request: Request
    transaction: ServerTransaction | None
    source: Addr
    received_at: float


@dataclass(frozen=True)
class CancelReceived:
    """A CANCEL matched a pending INVITE, which was answered 487 (RFC 3261 §9.2)."""

    invite: ServerTransaction
    source: Addr


@dataclass(frozen=True)
class MessageDropped:
    """A message was not acted upon; ``reason`` says why (logged by the adapter)."""

    reason: str
    source: Addr


@dataclass(frozen=True)
class RequestUnanswered:
    """The transaction user sent no final response to a request in ``answer_timeout`` seconds.

    The client gave up at its timer F or B (64*T1, RFC 3261 §17.1.2.2,
    §17.1.1.2) by then; the adapter answers 500 and logs it, which also ends
    the server transaction, so a handler that forgets a request cannot leak
    transactions until the table is full.
    """

    transaction: ServerTransaction
    source: Addr


EndpointEvent = RequestReceived | CancelReceived | MessageDropped | RequestUnanswered | TransactionEvent


class Endpoint:
    """Transaction layer plus the stateless parts of a SIP user agent core."""

    def __init__(
        self,
        *,
        rng: random.Random,
        user_agent: str = "gbplatform",
        max_transactions: int = 100_000,
        answer_timeout: float = 64 * T1,
    ) -> None:
        self.rng = rng
        self.user_agent = user_agent
        self.max_transactions = max_transactions
        self.answer_timeout = answer_timeout
        # Server transactions by the time they must have a final response
        # (RequestUnanswered); answered ones are dropped when they reach the top.
        self._unanswered: list[tuple[float, int, ServerTransaction]] = []
        self.local: dict[str, tuple[str, int]] = {}
        self._server: dict[tuple[str, ...], ServerTransaction] = {}
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._dest: dict[int, Addr] = {}
        self._by_bytes: dict[tuple[bytes, Addr], ServerTransaction] = {}
        self._raw_of: dict[int, tuple[bytes, Addr]] = {}
        # INVITE server transactions that sent a 2xx, by (Call-ID, CSeq number):
        # the ACK of a 2xx has its own branch (RFC 3261 §17.1.1.3) and is
        # matched here to stop the 2xx retransmissions (§13.3.1.4).
        self._accepted: dict[tuple[str, int], ServerTransaction] = {}
        self._heap: list[tuple[float, int, ServerTransaction | ClientTransaction]] = []
        self._seq = 0
        self._out: list[tuple[bytes, Addr]] = []
        self.stats = {"received": 0, "sent": 0, "dropped": 0, "retransmissions": 0, "fast_keepalives": 0}
        # The keepalive fast path (``sip.fastpath``), off until the transaction user sets a handler.
        # Answered keepalives by server transaction key: (200 OK bytes, destination, end of timer J),
        # and the keys in answer order (timer J is the same for all, so the oldest end first).
        self.keepalive_handler: KeepaliveHandler | None = None
        self._answered: dict[tuple[str, ...], tuple[bytes, Addr, float]] = {}
        self._answered_order: deque[tuple[float, tuple[str, ...]]] = deque()

    # -- inputs ------------------------------------------------------------
    def receive_datagram(self, data: bytes, source: Addr, now: float) -> list[EndpointEvent]:
        """Parse and route one datagram; non-SIP datagrams are dropped silently.

        A UDP retransmission is byte-identical to the original request
        (RFC 3261 §17.1.2.2), so it is matched to its transaction before
        parsing: when a storm slows us down, peers retransmit, and absorbing
        those cheaply keeps the backlog from feeding on itself.
        """
        known = self._by_bytes.get((data, source))
        if known is not None and not known.terminated:
            self.stats["received"] += 1
            self.stats["retransmissions"] += 1
            known.receive_retransmission(known.request, now)
            self._after(known)
            return []
        if self.keepalive_handler is not None and source[0] == "UDP" and self._fast_keepalive(data, source, now):
            return []
        try:
            msg = parse_datagram(data)
        except SipParseError as e:
            return self._parse_failed(e, source, now)
        if msg is None:
            return []
        return self.receive_message(msg, source, now, raw=data)

    def _fast_keepalive(self, data: bytes, source: Addr, now: float) -> bool:
        """Answer a canonical keepalive without a transaction object (``sip.fastpath``); False: full path.

        It keeps what a non-INVITE server transaction over UDP does (RFC 3261
        §17.2.2): the handler sees the request once, a retransmission gets the
        same 200 OK until timer J ends, and a request a full-path transaction
        holds stays that transaction's. Only UDP: over TCP there are no
        retransmissions and the stream parser frames the messages.
        """
        self._expire_answered(now)
        ka = match_keepalive(data)
        if ka is None:
            return False
        answered = self._answered.get(ka.key)
        if answered is not None:
            self.stats["received"] += 1
            self.stats["retransmissions"] += 1
            self._emit(answered[0], answered[1])
            return True
        if ka.key in self._server:
            return False
        if self.transaction_count >= self.max_transactions:
            return False  # the full path answers 503
        assert self.keepalive_handler is not None
        try:
            taken = self.keepalive_handler(ka, source, now)
        except Exception:  # noqa: BLE001 - a handler's bug must not cost the device its answer
            log.exception("keepalive fast path failed for %s from %s: taking the full path", ka.device_id, source)
            return False
        if not taken:
            return False
        self.stats["received"] += 1
        self.stats["fast_keepalives"] += 1
        response = ka.response(source, self.new_tag(), self.user_agent)
        ends = now + TIMER_J_UDP
        self._answered[ka.key] = (response, source, ends)
        self._answered_order.append((ends, ka.key))
        self._emit(response, source)
        return True

    def _expire_answered(self, now: float) -> None:
        """Forget fast-path answers whose timer J has fired (RFC 3261 §17.2.2: Completed -> Terminated)."""
        order = self._answered_order
        while order and order[0][0] <= now:
            ends, key = order.popleft()
            answered = self._answered.get(key)
            if answered is not None and answered[2] == ends:
                del self._answered[key]

    def parse_failed(self, error: SipParseError, source: Addr, now: float) -> list[EndpointEvent]:
        """Report a parse error from a stream parser; answers 400 when possible."""
        return self._parse_failed(error, source, now)

    def _parse_failed(self, e: SipParseError, source: Addr, now: float) -> list[EndpointEvent]:
        self.stats["dropped"] += 1
        req = e.message if isinstance(e.message, Request) else None
        if req is not None and req.method != "ACK":
            self._answer_stateless(req, e.status_hint, source, e.reason)
        return [MessageDropped(f"unparsable message: {e.reason}", source)]

    def receive_message(
        self, msg: Message, source: Addr, now: float, *, raw: bytes | None = None
    ) -> list[EndpointEvent]:
        """Route a parsed message (from a datagram or a TCP stream)."""
        self.stats["received"] += 1
        if isinstance(msg, Response):
            return self._receive_response(msg, source, now)
        assert isinstance(msg, Request)
        try:
            validate_request(msg)
        except SipParseError as e:
            return self._parse_failed(e, source, now)
        self._stamp_via(msg, source)
        if msg.method == "CANCEL":
            return self._receive_cancel(msg, source, now)
        try:
            key = server_key(msg)
        except SipParseError as e:
            return self._parse_failed(e, source, now)
        answered = self._answered.get(key) if self._answered else None
        if answered is not None:
            # A retransmission of a keepalive the fast path answered that it could not match on its bytes
            # (the full path accepts more): the same final response, nothing processed twice (§17.2.2).
            self.stats["retransmissions"] += 1
            self._emit(answered[0], answered[1])
            return []
        tx = self._server.get(key)
        if tx is not None:
            self.stats["retransmissions"] += msg.method != "ACK"
            accepted = tx.state is State.ACCEPTED
            tx.receive_retransmission(msg, now)
            self._after(tx)
            if msg.method == "ACK" and accepted:
                # An ACK for a 2xx that reused the INVITE's branch still belongs
                # to the UAS core, not the transaction (RFC 3261 §13.3.1.4, §17).
                return [RequestReceived(msg, None, source, now)]
            return []
        if msg.method == "ACK":
            invite = self._accepted.get((msg.call_id, msg.cseq[0]))
            if invite is not None:
                invite.receive_retransmission(msg, now)
            return [RequestReceived(msg, None, source, now)]
        if self.transaction_count >= self.max_transactions:
            self._answer_stateless(msg, 503, source, "too many transactions")
            return [MessageDropped("transaction table full", source)]
        tx = ServerTransaction(msg, reliable=source[0] in _RELIABLE, now=now)
        self._server[tx.key] = tx
        self._dest[id(tx)] = source
        if raw is not None:
            self._by_bytes[(raw, source)] = tx
            self._raw_of[id(tx)] = (raw, source)
        heapq.heappush(self._unanswered, (now + self.answer_timeout, self._next_seq(), tx))
        if len(self._unanswered) > 2 * len(self._server) + 1024:
            # Answered entries leave when they reach the top; one request a handler is
            # still working on sits there, and a flood answered meanwhile piles up behind it.
            self._unanswered = [item for item in self._unanswered if self._awaits_answer(item[2])]
            heapq.heapify(self._unanswered)
        return [RequestReceived(msg, tx, source, now)]

    def _receive_cancel(self, cancel: Request, source: Addr, now: float) -> list[EndpointEvent]:
        key = server_key(cancel)
        existing = self._server.get(key)
        if existing is not None:
            self.stats["retransmissions"] += 1
            existing.receive_retransmission(cancel, now)
            self._after(existing)
            return []
        invite_key = (*key[:-1], "INVITE")
        invite = self._server.get(invite_key)
        cancel_tx = ServerTransaction(cancel, reliable=source[0] in _RELIABLE, now=now)
        self._dest[id(cancel_tx)] = source
        self._server[cancel_tx.key] = cancel_tx
        if invite is None:
            # Nothing to cancel, nothing to remember: a flood of these costs no memory.
            self.respond(cancel_tx, make_response(cancel, 481), now, stateless=True)
            return []
        if invite.last_response is not None and invite.last_response.status >= 200:
            # RFC 3261 §9.2: a CANCEL matching a transaction is answered 200
            # even when the final response has already gone; it has no effect.
            self.respond(cancel_tx, make_response(cancel, 200), now)
            return []
        self.respond(cancel_tx, make_response(cancel, 200), now)
        self.respond(invite, make_response(invite.request, 487, to_tag=self.new_tag()), now)
        return [CancelReceived(invite, source)]

    def _receive_response(self, resp: Response, source: Addr, now: float) -> list[EndpointEvent]:
        try:
            via = top_via(resp)
        except SipParseError as e:
            self.stats["dropped"] += 1
            return [MessageDropped(f"response with bad Via: {e.reason}", source)]
        tx = self._client.get(client_key(via.branch or "", resp.cseq[1]))
        if tx is None:
            self.stats["dropped"] += 1
            return [MessageDropped(f"stray response {resp.status} ({resp.cseq[1]})", source)]
        events = tx.receive(resp, now)
        self._after(tx)
        return list(events)

    # -- outputs -----------------------------------------------------------
    def send_request(self, req: Request, dest: Addr, now: float) -> ClientTransaction:
        """Start a client transaction for ``req`` towards ``dest``.

        A Via with a fresh branch is added (RFC 3261 §8.1.1.7) unless the
        caller already put one, as the ACK/CANCEL builders do.
        """
        if "Via" not in req.headers:
            host, port = self.local.get(dest[0], ("127.0.0.1", 5060))
            via = f"SIP/2.0/{dest[0]} {host}:{port};rport;branch={self.new_branch()}"
            req.headers._items.insert(0, ("Via", via))
        if "Max-Forwards" not in req.headers:
            req.headers.add("Max-Forwards", "70")
        if "User-Agent" not in req.headers:
            req.headers.add("User-Agent", self.user_agent)
        tx = ClientTransaction(req, reliable=dest[0] in _RELIABLE, now=now)
        self._client[tx.key] = tx
        self._dest[id(tx)] = dest
        self._after(tx)
        return tx

    def send_stateless(self, req: Request, dest: Addr) -> None:
        """Send a request outside any transaction: ACK for a 2xx (RFC 3261 §13.2.2.4)."""
        if "Via" not in req.headers:
            host, port = self.local.get(dest[0], ("127.0.0.1", 5060))
            req.headers._items.insert(
                0, ("Via", f"SIP/2.0/{dest[0]} {host}:{port};rport;branch={self.new_branch()}")
            )
        self._emit(req.serialize(), dest)

    def respond(self, tx: ServerTransaction, resp: Response, now: float, *, stateless: bool = False) -> None:
        """Send ``resp`` through the server transaction ``tx``.

        ``stateless``: the TU answered without keeping any state for the
        request and would answer a retransmission the same way (a refusal of a
        bad or unknown ID, a banned source, a challenge; OPTIONS). A final
        response to a non-INVITE request, or a non-2xx one to an INVITE, then
        ends the transaction at once instead of holding the request and
        response for timer J or H (32 s), so a flood of such requests costs no
        memory (RFC 3261 §8.2.7 stateless UAS, allowed when processing always
        gives the same response; ``ServerTransaction.send``). Its To tag is
        derived from the transaction key, so a retransmission gets the same
        bytes back (§8.2.7). Ignored for 1xx and for a 2xx to an INVITE.
        """
        if "User-Agent" not in resp.headers and "Server" not in resp.headers:
            resp.headers.add("User-Agent", self.user_agent)
        stateless = stateless and resp.status >= (300 if tx.invite else 200)
        if stateless:
            _stateless_to_tag(tx, resp)
        tx.send(resp, now, stateless=stateless)
        if tx.invite and tx.state is State.ACCEPTED:
            self._accepted[(tx.request.call_id, tx.request.cseq[0])] = tx
        self._after(tx)

    def destination(self, tx: ServerTransaction | ClientTransaction) -> Addr | None:
        return self._dest.get(id(tx))

    def take_output(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    # -- timers ------------------------------------------------------------
    def next_timer(self) -> float | None:
        answer_by = self._next_answer_deadline()
        if self._answered_order:  # a fast-path answer's timer J (it frees the entry when traffic stops)
            ends = self._answered_order[0][0]
            answer_by = ends if answer_by is None else min(answer_by, ends)
        while self._heap:
            at, _, tx = self._heap[0]
            nt = tx.next_timer()
            if nt is None or tx.terminated:
                heapq.heappop(self._heap)
                self._forget(tx)
                continue
            if nt != at:
                heapq.heapreplace(self._heap, (nt, self._next_seq(), tx))
                continue
            return at if answer_by is None else min(at, answer_by)
        return answer_by

    def _awaits_answer(self, tx: ServerTransaction) -> bool:
        return tx.state in (State.TRYING, State.PROCEEDING) and self._server.get(tx.key) is tx

    def _next_answer_deadline(self) -> float | None:
        while self._unanswered and not self._awaits_answer(self._unanswered[0][2]):
            heapq.heappop(self._unanswered)
        return self._unanswered[0][0] if self._unanswered else None

    def handle_timers(self, now: float) -> list[EndpointEvent]:
        events: list[EndpointEvent] = []
        self._expire_answered(now)
        while self._unanswered and self._unanswered[0][0] <= now:
            _, _, server_tx = heapq.heappop(self._unanswered)
            if self._awaits_answer(server_tx):
                source = self._dest.get(id(server_tx))
                if source is not None:
                    events.append(RequestUnanswered(server_tx, source))
        while self._heap and self._heap[0][0] <= now:
            _, _, tx = heapq.heappop(self._heap)
            nt = tx.next_timer()
            if nt is not None and nt <= now:
                events.extend(tx.handle_timer(now))
                self._collect(tx)
            if tx.terminated:
                self._forget(tx)
            elif (nt2 := tx.next_timer()) is not None:
                heapq.heappush(self._heap, (nt2, self._next_seq(), tx))
        return events

    @property
    def transaction_count(self) -> int:
        """Live transactions, the fast path's answered keepalives (each one in timer J) included."""
        return len(self._server) + len(self._client) + len(self._answered)

    # -- helpers -----------------------------------------------------------
    def new_branch(self) -> str:
        return f"z9hG4bK{self.rng.getrandbits(64):016x}"

    def new_tag(self) -> str:
        return f"{self.rng.getrandbits(32):08x}"

    def _answer_stateless(self, req: Request, status: int, source: Addr, reason: str) -> None:
        try:
            resp = make_response(req, status, to_tag=self.new_tag())
        except Exception:  # noqa: BLE001 - a request too broken to copy headers from
            log.warning("cannot answer %s from %s: %s", status, source, reason)
            return
        resp.headers.add("Warning", f'399 gbplatform "{_quote(reason)}"')
        self._emit(resp.serialize(), source)

    def _stamp_via(self, req: Request, source: Addr) -> None:
        """Record the real source in the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
        items = req.headers._items
        for i, (name, value) in enumerate(items):
            if name != "Via":
                continue
            first, sep, rest = _split_first(value)
            try:
                via = top_via(req)  # parsed (and memoised) by validate_request already
            except SipParseError:
                return
            changed = False
            if via.host != source[1]:
                via.params["received"] = source[1]
                changed = True
            if "rport" in via.params and via.params["rport"] is None:
                via.params["rport"] = str(source[2])
                via.params.setdefault("received", source[1])
                changed = True
            if changed:
                stamped = str(via)
                items[i] = (name, stamped + (sep + rest if sep else ""))
                req.memo[("Via", stamped)] = via
            return

    def _after(self, tx: ServerTransaction | ClientTransaction) -> None:
        self._collect(tx)
        nt = tx.next_timer()
        if tx.terminated:
            self._forget(tx)
        elif nt is not None:
            heapq.heappush(self._heap, (nt, self._next_seq(), tx))

    def _collect(self, tx: ServerTransaction | ClientTransaction) -> None:
        dest = self._dest.get(id(tx))
        for data in tx.take_output():
            if dest is not None:
                self._emit(data, dest)

    def _emit(self, data: bytes, dest: Addr) -> None:
        self.stats["sent"] += 1
        self._out.append((data, dest))

    def _forget(self, tx: ServerTransaction | ClientTransaction) -> None:
        if isinstance(tx, ServerTransaction):
            if self._server.get(tx.key) is tx:
                del self._server[tx.key]
            accepted_key = (tx.request.call_id, tx.request.cseq[0])
            if self._accepted.get(accepted_key) is tx:
                del self._accepted[accepted_key]
        elif self._client.get(tx.key) is tx:
            del self._client[tx.key]
        self._dest.pop(id(tx), None)
        raw = self._raw_of.pop(id(tx), None)
        if raw is not None and self._by_bytes.get(raw) is tx:
            del self._by_bytes[raw]

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def _split_first(value: str) -> tuple[str, str, str]:
    items = split_list(value)
    if len(items) <= 1:
        return value, "", ""
    return items[0], ", ", ", ".join(items[1:])


def _stateless_to_tag(tx: ServerTransaction, resp: Response) -> None:
    """Give ``resp`` a To tag that is the same for every copy of the request (RFC 3261 §8.2.7)."""
    to = tx.request.headers.get("To")
    if to is None or ";tag=" in to.replace(" ", "").lower():
        return  # in-dialog: the request's own tag is kept
    tag = hashlib.blake2b(repr(tx.key).encode(errors="surrogateescape"), digest_size=4).hexdigest()
    resp.headers.set("To", f"{to};tag={tag}")


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')[:120]


__all__ = [
    "Addr",
    "AckTimedOut",
    "CancelReceived",
    "Endpoint",
    "EndpointEvent",
    "MessageDropped",
    "RequestReceived",
    "RequestUnanswered",
    "ResponseReceived",
    "TransactionTimedOut",
]
