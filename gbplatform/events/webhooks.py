"""Webhooks: every event of the bus POSTed as JSON to the ``[webhooks]`` URLs.

Theory of operation
-------------------
Each URL has its own queue and sends one event at a time, oldest first, so a
receiver sees events in the order they happened. An event is ``Event.json()``
(the same object as the ``data:`` of ``GET /api/v1/events``), POSTed with
``Content-Type: application/json``, ``X-GBPlatform-Event: <kind>`` and
``X-GBPlatform-Delivery: <event id>`` (a receiver drops a repeat of an id it
has already handled: an answer lost on the way means a retry). With
``webhooks.secret`` set, ``X-GBPlatform-Signature: sha256=<hex>`` carries the
HMAC-SHA256 (RFC 2104) of the body under that key, which the receiver
recomputes.

Answers: 2xx is delivered. 5xx, 408 and 429 (RFC 9110 §15.5.9, RFC 6585 §4:
"try later"), a connection error or no answer within ``webhooks.timeout``
are retried after ``1, 2, 4 ... 60`` seconds (on the injected clock), up to
``webhooks.max_attempts`` attempts in all; then the event is given up
(``failed``) and the next one goes. Another 4xx is the receiver refusing
this event: not retried (``rejected``). While a URL is down its queue
grows up to ``webhooks.max_queue``; past it the oldest waiting event is
dropped (``dropped``), the log line throttled (``media.logthrottle``).
Nothing here ever waits on a receiver: the bus hands the event over and
returns.

``Webhooks`` is given a ``post(url, body, headers)`` that returns a
Deferred of the answer's status: ``AgentPoster`` in the platform (a Twisted
``Agent`` with a persistent ``HTTPConnectionPool`` and a connect timeout),
a fake in unit tests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from gbplatform import __version__
from gbplatform.app.config import WebhooksConfig
from gbplatform.core.clock import Clock, DelayedCallLike
from gbplatform.events.bus import Event, EventBus
from gbplatform.events.shapes import WebhookStats, WebhookTargetStats
from media.logthrottle import LogThrottle

__all__ = ["AgentPoster", "Poster", "Webhooks", "WebhooksService", "redact_url", "signature"]

log = Logger()

BACKOFF_FIRST: Final = 1.0  # seconds before the second attempt
BACKOFF_MAX: Final = 60.0
#: Statuses retried besides 5xx: 408 Request Timeout (RFC 9110 §15.5.9), 429 Too Many Requests (RFC 6585 §4).
RETRY_STATUSES: Final = frozenset({408, 429})
#: Bytes of a receiver's answer read (then discarded) before the connection is given back to the pool.
MAX_ANSWER_BYTES: Final = 64 * 1024

_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)[^/?#@]*@", re.IGNORECASE)


class Poster(Protocol):
    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        """POST ``body``; fires with the answer's status code, fails on a connection error or timeout."""


def signature(secret: str, body: bytes) -> str:
    """The ``X-GBPlatform-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 (RFC 2104) of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def redact_url(url: str) -> str:
    """``url`` with its user information (RFC 3986 §3.2.1: often a password) as ``***``."""
    return _USERINFO.sub(r"\1***@", url)


@dataclass
class _Target:
    url: str
    queue: deque[Event] = field(default_factory=deque)
    current: Event | None = None  # being sent, or waiting for its retry
    attempts: int = 0
    timer: DelayedCallLike | None = None
    pumping: bool = False
    delivered: int = 0
    failed: int = 0
    rejected: int = 0
    dropped: int = 0
    retries: int = 0
    last_status: int | None = None
    last_error: str | None = None
    last_success: float | None = None


class Webhooks:
    """Delivers the bus's events to the configured URLs (see the module docstring)."""

    def __init__(self, config: WebhooksConfig, clock: Clock, post: Poster) -> None:
        self.config = config
        self.clock = clock
        self.post = post
        self.types = frozenset(config.types) if config.types else None
        self.targets = [_Target(url) for url in config.urls]
        self._stop_listening: Callable[[], None] | None = None
        self._throttle = LogThrottle(10.0)
        self.running = False

    def start(self, bus: EventBus) -> None:
        if self.running:
            return
        self.running = True
        if self.targets:
            self._stop_listening = bus.listen(self.publish)
            log.info("webhooks: events ({types}) POSTed to {urls}", types=", ".join(sorted(self.types or ["all"])),
                     urls=", ".join(redact_url(t.url) for t in self.targets))

    def stop(self) -> None:
        """No more events; retries are cancelled (what was queued is lost with the process)."""
        self.running = False
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        for target in self.targets:
            if target.timer is not None and target.timer.active():
                target.timer.cancel()
            target.timer = None

    # -- queueing ------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """The bus listener: queue ``event`` for every URL (never waits)."""
        if self.types is not None and event.kind not in self.types:
            return
        for target in self.targets:
            if len(target.queue) >= self.config.max_queue:
                target.queue.popleft()
                target.dropped += 1
                self._log_throttled(target, "dropped",
                                    "webhook {url}: queue full ({max} events waiting); oldest event dropped",
                                    max=self.config.max_queue)
            target.queue.append(event)
            self._pump(target)

    def _pump(self, target: _Target) -> None:
        """Start the next event unless one is in flight or waiting for its retry."""
        if target.pumping:
            return  # an answer came synchronously inside _send: the outer loop goes on
        target.pumping = True
        try:
            while self.running and target.current is None and target.queue:
                target.current = target.queue.popleft()
                target.attempts = 0
                self._send(target)
        finally:
            target.pumping = False

    # -- sending -------------------------------------------------------------------------
    def _send(self, target: _Target) -> None:
        target.timer = None
        event = target.current
        if event is None or not self.running:
            return
        target.attempts += 1
        body = event.json()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"gbplatform/{__version__}",
            "X-GBPlatform-Event": event.kind,
            "X-GBPlatform-Delivery": str(event.id),
        }
        if self.config.secret:
            headers["X-GBPlatform-Signature"] = signature(self.config.secret, body)
        try:
            d = self.post(target.url, body, headers)
        except Exception as e:  # noqa: BLE001 - a poster that raises is one failed attempt, logged below
            self._failed(Failure(e), target, event)  # type: ignore[no-untyped-call]
            return
        d.addCallbacks(self._answered, self._failed, callbackArgs=(target, event), errbackArgs=(target, event))

    def _answered(self, status: int, target: _Target, event: Event) -> None:
        if target.current is not event:
            return
        target.last_status = status
        if 200 <= status < 300:
            target.delivered += 1
            target.last_success = self.clock.time()
            self._next(target)
        elif 400 <= status < 500 and status not in RETRY_STATUSES:
            target.rejected += 1
            target.last_error = f"HTTP {status}"
            self._log_throttled(target, "rejected", "webhook {url}: event {id} ({kind}) refused with HTTP {status}; "
                                "not retried", id=event.id, kind=event.kind, status=status)
            self._next(target)
        else:
            self._retry(target, event, f"HTTP {status}")

    def _failed(self, failure: Failure, target: _Target, event: Event) -> None:
        if target.current is not event:
            return
        error = failure.value
        if isinstance(error, CancelledError | DeferredTimeout):
            why = f"no answer within {self.config.timeout:g} s"
        else:
            why = str(error) or type(error).__name__
        self._retry(target, event, why)

    def _retry(self, target: _Target, event: Event, why: str) -> None:
        target.last_error = why
        if target.attempts >= self.config.max_attempts:
            target.failed += 1
            self._log_throttled(target, "failed", "webhook {url}: event {id} ({kind}) given up after {n} attempt(s): "
                                "{why}", id=event.id, kind=event.kind, n=target.attempts, why=why)
            self._next(target)
            return
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (target.attempts - 1))
        target.retries += 1
        self._log_throttled(target, "retry", "webhook {url}: event {id} ({kind}) attempt {n} failed: {why}; "
                            "again in {delay:g} s", id=event.id, kind=event.kind, n=target.attempts, why=why,
                            delay=delay)
        if self.running:
            target.timer = self.clock.call_later(delay, self._send, target)

    def _next(self, target: _Target) -> None:
        target.current = None
        target.attempts = 0
        self._pump(target)

    def _log_throttled(self, target: _Target, what: str, fmt: str, **fields: Any) -> None:
        n = self._throttle.hit((target.url, what), self.clock.seconds())
        if n:
            log.warn(fmt + " ({count} such since the last line)", url=redact_url(target.url), count=n, **fields)

    # -- stats ---------------------------------------------------------------------------
    def state(self) -> WebhookStats:
        return WebhookStats(
            types=sorted(self.types) if self.types is not None else [],
            targets=[WebhookTargetStats(
                url=redact_url(t.url), queued=len(t.queue), delivered=t.delivered, failed=t.failed,
                rejected=t.rejected, dropped=t.dropped, retries=t.retries, last_status=t.last_status,
                last_error=t.last_error, last_success=t.last_success,
            ) for t in self.targets],
        )


# -- the HTTP client -------------------------------------------------------------------------


@implementer(IBodyProducer)
class _Body:
    """A body known in full: written at once, with its Content-Length."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length: int | object = len(data) if data else UNKNOWN_LENGTH

    def startProducing(self, consumer: Any) -> Deferred[None]:  # an IConsumer  # noqa: N802 - Twisted's name
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass  # everything was written in startProducing

    def resumeProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass

    def stopProducing(self) -> None:  # noqa: N802 - Twisted's name
        pass


class _Drain(TwistedProtocol):
    """Reads an answer's body and drops it (so the connection can be reused), up to ``MAX_ANSWER_BYTES``."""

    def __init__(self, done: Deferred[None]) -> None:
        self.done = done
        self.read = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        self.read += len(data)
        if self.read > MAX_ANSWER_BYTES and self.transport is not None:
            # A receiver that answers without end is not worth a connection.
            producer: Any = self.transport
            if IPushProducer.providedBy(producer):
                producer.stopProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:  # noqa: N802 - Twisted's name
        if not self.done.called:
            self.done.callback(None)


class AgentPoster:
    """``Poster`` over a Twisted ``Agent``: persistent connections, a connect timeout, an answer timeout.

    The ``Agent`` and its connection pool are made at the first POST:
    ``twisted.web.client`` (0.5 MiB of idle RSS, measured) then loads only in a
    platform that has webhooks and an event to send (docs/performance.md
    "Memory").
    """

    def __init__(self, reactor: Any, timeout: float, *, agent: Any = None) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.pool: Any = None  # an HTTPConnectionPool, made with the agent
        self.agent: Any = agent  # an IAgent; tests give a fake one, else made on first use

    def _agent(self) -> Any:
        if self.agent is None:
            from twisted.web.client import Agent, HTTPConnectionPool

            self.pool = HTTPConnectionPool(self.reactor, persistent=True)  # type: ignore[no-untyped-call]
            self.pool.maxPersistentPerHost = 2
            self.pool.cachedConnectionTimeout = 120
            self.agent = Agent(self.reactor, connectTimeout=self.timeout, pool=self.pool)  # type: ignore[no-untyped-call]
        return self.agent

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> Deferred[int]:
        raw = Headers({k.encode("latin-1"): [v.encode("latin-1")] for k, v in headers.items()})
        d: Deferred[Any] = self._agent().request(b"POST", url.encode("utf-8"), raw,
                                                     cast(IBodyProducer, _Body(body)))

        def answered(response: Any) -> Deferred[int]:  # an IResponse
            done: Deferred[None] = Deferred(lambda _: getattr(drain.transport, "stopProducing", lambda: None)())
            drain = _Drain(done)
            response.deliverBody(drain)
            return done.addCallback(lambda _: int(response.code))

        d.addCallback(answered)
        # The whole exchange, headers and body: a receiver that accepts and then stalls is a failed attempt.
        d.addTimeout(self.timeout, self.reactor)
        return d

    def close(self) -> Deferred[None]:
        """Close the pooled connections (the platform is stopping); none if nothing was ever posted."""
        if self.pool is None:
            return succeed(None)
        d: Deferred[None] = self.pool.closeCachedConnections()
        return d


class WebhooksService(Service):
    """The webhooks in the platform's ``MultiService``: listening from start, pooled connections closed on stop."""

    name = "webhooks"

    def __init__(self, webhooks: Webhooks, bus: EventBus, poster: AgentPoster | None = None) -> None:
        self.webhooks = webhooks
        self.bus = bus
        self.poster = poster

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        super().startService()  # type: ignore[no-untyped-call]
        self.webhooks.start(self.bus)

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 - Twisted's name
        super().stopService()  # type: ignore[no-untyped-call]
        self.webhooks.stop()
        return self.poster.close() if self.poster is not None else None
