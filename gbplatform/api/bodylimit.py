"""A ceiling on HTTP request bodies, enforced while they arrive.

Theory of operation
-------------------
``twisted.web`` stores a request body before any route runs: in memory up to
100 kB, past that in a temporary file, whatever its ``Content-Length`` or
however many chunks a chunked body (RFC 9112 §7.1) has. The routes read at
most what they accept (``schemas.MAX_BODY``, ``snapshot.max_bytes``), but only
once the whole body is there: a client could make the platform write 2 GB to
its temporary directory, and the snapshot upload route takes requests without
an API token (its session token is checked by the route, after the body).

``BoundedRequest`` refuses a body larger than the largest any route takes:
at once when ``Content-Length`` says so (nothing is stored), or as soon as the
chunks received pass it. The answer is 413 (RFC 9110 §15.5.14) with the API's
JSON error and ``Connection: close``; the connection is closed, since the rest
of the body is not read (RFC 9112 §9.6). One log line per refusal, throttled.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Final

import msgspec
from twisted.logger import Logger
from twisted.web.server import Request

from gbplatform.api import schemas
from media.logthrottle import LogThrottle

if TYPE_CHECKING:
    from gbplatform.app.config import Config

__all__ = ["BoundedRequest", "body_limit", "bounded_request"]

log = Logger()

#: Part headers and boundaries around a picture in a multipart upload (``gbplatform.snapshots.http``).
MULTIPART_SLACK: Final = 64 * 1024

_throttle = LogThrottle(10.0)


def body_limit(config: Config) -> int:
    """The largest body any route takes: a JSON body, or a picture upload in a multipart envelope."""
    return max(schemas.MAX_BODY, config.snapshot.max_bytes + MULTIPART_SLACK)


class BoundedRequest(Request):
    """A ``Request`` whose body may not exceed ``max_body`` bytes (see the module docstring)."""

    max_body: int = schemas.MAX_BODY
    _body_seen = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        self._body_seen = 0
        if length is not None and length > self.max_body:
            self._too_large(f"Content-Length {length}")
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self._refused:
            return  # the rest of a refused body: the connection is closing
        self._body_seen += len(data)
        if self._body_seen > self.max_body:
            self._too_large(f"over {self.max_body} bytes received")
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if self._refused:
            return  # answered 413 already; nothing is dispatched
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def _too_large(self, what: str) -> None:
        self._refused = True
        content = self.content
        self.content = io.BytesIO()  # what a closing request may still touch; nothing more is stored
        if content is not None:
            content.close()  # a temporary file of the chunks so far is deleted now
        channel: Any = self.channel
        peer = self.getClientAddress()  # type: ignore[no-untyped-call]
        times = _throttle.hit("body", _now(channel))
        if times:
            log.info("HTTP request body from {host} refused: {what}, the limit is {limit} bytes "
                     "({times} such refusal(s) since the last line)", host=getattr(peer, "host", "?"), what=what,
                     limit=self.max_body, times=times)
        if channel is None or channel.transport is None:
            return
        body = schemas.error_json("payload_too_large", f"request body over {self.max_body} bytes")
        data = msgspec.json.encode(body)
        channel.transport.write(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(data), data))
        channel.loseConnection()


def _now(channel: Any) -> float:
    """The site's reactor time (``Site(reactor=...)``), for the log throttle."""
    reactor = getattr(getattr(channel, "site", None), "reactor", None)
    seconds = getattr(reactor, "seconds", None)
    return float(seconds()) if callable(seconds) else 0.0


def bounded_request(max_body: int) -> type[BoundedRequest]:
    """A ``Site.requestFactory`` refusing bodies over ``max_body`` bytes."""
    return type("BoundedRequest", (BoundedRequest,), {"max_body": max_body})
