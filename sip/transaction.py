"""RFC 3261 §17 transactions, sans-IO.

Theory of operation
-------------------
A transaction is a small state machine fed with messages and timer expiries;
it answers with bytes to send (``take_output()``) and events for the
transaction user. It never reads a clock: every input carries ``now`` and
``next_timer()`` says when it next wants ``handle_timer(now)``.

Timer names and states follow RFC 3261 §17.1.1 (client INVITE: Calling,
Proceeding, Completed; timers A, B, D), §17.1.2 (client non-INVITE: Trying,
Proceeding, Completed; E, F, K), §17.2.1 (server INVITE: Proceeding,
Completed, Confirmed; G, H, I) with the Accepted state and timer L of
RFC 6026 §7.1 so that 2xx retransmissions are absorbed, and §17.2.2 (server
non-INVITE: Trying, Proceeding, Completed; J). Over a reliable transport
(TCP) the retransmission timers are not armed and the wait timers are zero
(§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).

An input a state does not expect (a stray retransmission, a late response)
is absorbed, never an exception: the peer's retransmissions are normal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sip.headers import top_via
from sip.message import Request, Response

T1 = 0.5
T2 = 4.0
T4 = 5.0
PROCEEDING_LIMIT = 180.0


class State(Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


# -- events for the transaction user ----------------------------------------


@dataclass(frozen=True)
class ResponseReceived:
    """A response passed up by a client transaction (§17.1.1.2, §17.1.2.2)."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True)
class TransactionTimedOut:
    """Timer B or F fired: the peer never answered (§17.1.1.2, §17.1.2.2)."""

    transaction: ClientTransaction


@dataclass(frozen=True)
class AckTimedOut:
    """Timer H fired: a final non-2xx response to an INVITE was never acknowledged (§17.2.1)."""

    transaction: ServerTransaction


TransactionEvent = ResponseReceived | TransactionTimedOut | AckTimedOut


def server_key(req: Request) -> tuple[str, ...]:
    """Key matching a request to a server transaction (RFC 3261 §17.2.3).

    ACK and CANCEL of an INVITE share the INVITE's branch; ACK is matched to
    the INVITE transaction, CANCEL gets its own (its method differs). Requests
    without the magic cookie fall back to the RFC 2543 fields.
    """
    via = top_via(req)
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch or ""
    if branch.startswith("z9hG4bK"):
        return (branch, via.host, str(via.port or ""), method)
    from_tag = ""
    from_value = req.headers.get("From") or ""
    if ";tag=" in from_value:
        from_tag = from_value.split(";tag=", 1)[1].split(";")[0]
    return ("2543", req.call_id, from_tag, str(req.cseq[0]), via.host, str(via.port or ""), method)


def client_key(branch: str, method: str) -> tuple[str, str]:
    """Key matching a response to a client transaction (RFC 3261 §17.1.3)."""
    return (branch, "INVITE" if method == "ACK" else method)


class _Base:
    def __init__(self, reliable: bool) -> None:
        self.reliable = reliable
        self.state = State.TERMINATED
        self._out: list[bytes] = []
        self._timers: dict[str, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def take_output(self) -> list[bytes]:
        """Bytes to send to the peer since the last call."""
        out, self._out = self._out, []
        return out

    def next_timer(self) -> float | None:
        return min(self._timers.values()) if self._timers else None

    def _arm(self, name: str, at: float) -> None:
        self._timers[name] = at

    def _disarm(self, *names: str) -> None:
        for name in names:
            self._timers.pop(name, None)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._timers.clear()

    def _due(self, now: float) -> list[str]:
        return sorted((n for n, at in self._timers.items() if at <= now), key=self._timers.__getitem__)


class ClientTransaction(_Base):
    """INVITE and non-INVITE client transactions (RFC 3261 §17.1)."""

    def __init__(self, request: Request, *, reliable: bool, now: float) -> None:
        super().__init__(reliable)
        self.request = request
        self.method = request.method
        self.branch = top_via(request).branch or ""
        self.key = client_key(self.branch, self.method)
        self.invite = request.method == "INVITE"
        self.last_response: Response | None = None
        self._encoded = request.serialize()
        self._interval = T1
        self._ack: bytes | None = None
        self.state = State.CALLING if self.invite else State.TRYING
        self._out.append(self._encoded)
        if not reliable:
            self._arm("A" if self.invite else "E", now + T1)
        self._arm("B" if self.invite else "F", now + 64 * T1)

    def receive(self, response: Response, now: float) -> list[TransactionEvent]:
        """Feed a response whose branch matched this transaction."""
        status = response.status
        if self.state is State.TERMINATED:
            return []
        if self.invite:
            return self._receive_invite(response, status, now)
        if self.state in (State.TRYING, State.PROCEEDING):
            self.last_response = response
            if status < 200:
                self.state = State.PROCEEDING
                return [ResponseReceived(self, response)]
            self.state = State.COMPLETED
            self._disarm("E", "F")
            self._encoded = b""  # no more retransmissions of the request
            self.request.memo.clear()
            if self.reliable:
                self._terminate()
            else:
                self._arm("K", now + T4)
            return [ResponseReceived(self, response)]
        return []  # retransmitted final response in Completed: absorbed

    def _receive_invite(self, response: Response, status: int, now: float) -> list[TransactionEvent]:
        if self.state in (State.CALLING, State.PROCEEDING):
            self.last_response = response
            self._disarm("A")
            if status < 200:
                # §17.1.1.2: Timer B runs in Calling only; once the peer says it is
                # working on the INVITE the TU decides when to CANCEL. A 3-minute
                # bound (Timer C of §16.6) still ends a transaction it forgot.
                self._arm("B", now + PROCEEDING_LIMIT)
                self.state = State.PROCEEDING
                return [ResponseReceived(self, response)]
            if status < 300:
                # §17.1.1.2 (RFC 6026 §8.4 "Accepted"): 2xx goes up, the TU sends ACK.
                self.state = State.ACCEPTED
                self._disarm("B")
                self._arm("M", now + 64 * T1)
                return [ResponseReceived(self, response)]
            self.state = State.COMPLETED
            self._disarm("B")
            self._ack = self._build_ack(response).serialize()
            self._out.append(self._ack)
            if self.reliable:
                self._terminate()
            else:
                self._arm("D", now + 32.0)
            return [ResponseReceived(self, response)]
        if self.state is State.COMPLETED and status >= 300 and self._ack is not None:
            self._out.append(self._ack)  # the ACK was lost: send it again
            return []
        if self.state is State.ACCEPTED and 200 <= status < 300:
            return [ResponseReceived(self, response)]  # 2xx retransmission: the TU re-ACKs
        return []

    def _build_ack(self, response: Response) -> Request:
        """ACK for a non-2xx final response (RFC 3261 §17.1.1.3)."""
        req = self.request
        ack = Request(method="ACK", uri=req.uri)
        via = req.headers.get_all("Via")[0]
        ack.headers.add("Via", via)
        for name in ("Route",):
            for value in req.headers.get_all(name):
                ack.headers.add(name, value)
        for name in ("From", "Call-ID"):
            ack.headers.add(name, req.headers.get(name) or "")
        ack.headers.add("To", response.headers.get("To") or req.headers.get("To") or "")
        ack.headers.add("CSeq", f"{req.cseq[0]} ACK")
        ack.headers.add("Max-Forwards", "70")
        return ack

    def handle_timer(self, now: float) -> list[TransactionEvent]:
        events: list[TransactionEvent] = []
        for name in self._due(now):
            if name not in self._timers:
                continue
            if name in ("A", "E"):
                self._out.append(self._encoded)
                if name == "A":
                    self._interval *= 2
                else:
                    # §17.1.2.2: E doubles up to T2 (and is T2 in Proceeding).
                    self._interval = T2 if self.state is State.PROCEEDING else min(self._interval * 2, T2)
                self._arm(name, now + self._interval)
            elif name in ("B", "F"):
                self._terminate()
                events.append(TransactionTimedOut(self))
            elif name in ("D", "K", "M"):
                self._terminate()
        return events


class ServerTransaction(_Base):
    """INVITE and non-INVITE server transactions (RFC 3261 §17.2)."""

    def __init__(self, request: Request, *, reliable: bool, now: float) -> None:
        super().__init__(reliable)
        self.request = request
        self.key = server_key(request)
        self.invite = request.method == "INVITE"
        self.state = State.PROCEEDING if self.invite else State.TRYING
        self.last_response: Response | None = None
        self._encoded_response: bytes | None = None
        self._interval = T1

    def send(self, response: Response, now: float, *, stateless: bool = False) -> None:
        """Send a response from the TU (§17.2.1, §17.2.2).

        ``stateless``: the TU answered without keeping any state and will
        answer a retransmission the same way (RFC 3261 §8.2.7). A final
        response to a non-INVITE request then ends the transaction at once
        instead of waiting for timer J, and so does a non-2xx final response to
        an INVITE, without timer G retransmissions or waiting for the ACK
        (§17.2.1): the client retransmits the INVITE until a response arrives,
        and its ACK, matching nothing, is absorbed by the endpoint. A 2xx to an
        INVITE always keeps its transaction (RFC 6026 §7.1).
        """
        if self.state in (State.TERMINATED, State.CONFIRMED, State.COMPLETED):
            return
        if self.state is State.ACCEPTED and not 200 <= response.status < 300:
            return
        self.last_response = response
        self._encoded_response = response.serialize()
        self._out.append(self._encoded_response)
        status = response.status
        if status < 200:
            if not self.invite:
                self.state = State.PROCEEDING
            return
        if self.invite:
            if status < 300:
                # RFC 6026 §7.1: Accepted, absorbing INVITE retransmissions
                # and re-sending the 2xx until the ACK (timer L).
                self.state = State.ACCEPTED
                if not self.reliable:
                    self._arm("G2xx", now + T1)
                self._arm("L", now + 64 * T1)
            elif stateless:
                self._terminate()
            else:
                self.state = State.COMPLETED
                if not self.reliable:
                    self._arm("G", now + T1)
                self._arm("H", now + 64 * T1)
        else:
            self.state = State.COMPLETED
            # Only the encoded response is needed to answer retransmissions for
            # the next 32 s; the parsed forms would keep thousands of objects
            # alive for the cyclic GC to walk during a registration storm.
            self.request.memo.clear()
            response.memo.clear()
            if self.reliable or stateless:
                self._terminate()
            else:
                self._arm("J", now + 64 * T1)

    def receive_retransmission(self, request: Request, now: float) -> None:
        """A request that matched this transaction: absorb it (§17.2.1, §17.2.2)."""
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._disarm("G", "H")
                if self.reliable:
                    self._terminate()
                else:
                    self._arm("I", now + T4)
            elif self.state is State.ACCEPTED:
                self._disarm("G2xx")
            return
        if self._encoded_response is not None and self.state in (
            State.PROCEEDING,
            State.COMPLETED,
            State.ACCEPTED,
        ):
            self._out.append(self._encoded_response)

    def handle_timer(self, now: float) -> list[TransactionEvent]:
        events: list[TransactionEvent] = []
        for name in self._due(now):
            if name not in self._timers:
                continue
            if name in ("G", "G2xx") and self._encoded_response is not None:
                self._out.append(self._encoded_response)
                self._interval = min(self._interval * 2, T2)
                self._arm(name, now + self._interval)
            elif name == "H":
                self._terminate()
                events.append(AckTimedOut(self))
            elif name in ("I", "J", "L"):
                self._terminate()
        return events
