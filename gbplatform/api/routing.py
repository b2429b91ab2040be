"""What every package's HTTP routes share: ``Routes``, ``authenticated`` and ``mount``.

Each domain package declares its routes on its own ``Klein`` app, as methods
of a ``Routes`` subclass (``gbplatform/devices/http.py``,
``sessions/http.py``, ``outputs/http.py``, ``recording/http.py``). The root
``gbplatform.api.app.Api`` mounts them with ``mount``: their rules join the
root's one URL map, so routing, ``405`` with its ``Allow`` list, the
64-bit ``<int:>`` converter and ``@app.handle_errors`` behave for them
exactly as for the root's own routes. (A Klein ``branch=True`` sub-resource
would not do: several packages share the ``/api/v1/channels/<id>/`` prefix,
and a sub-app's errors would not reach the root's handlers.)

``Web`` is the one object the route sets share: the context, the API token,
and the thread runner that unit tests replace (``Api.run_in_thread``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Concatenate

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.shapes import Shape
from gbplatform.core.clock import utc_datetime

if TYPE_CHECKING:
    from gbplatform.app.context import AppContext

__all__ = ["JSON_TYPE", "Routes", "Web", "authenticated", "mount", "set_header"]

JSON_TYPE = b"application/json; charset=utf-8"


def set_header(request: Request, name: bytes, value: bytes) -> None:
    request.responseHeaders.setRawHeaders(name, [value])


class Web:
    """The context, the API token check and the blocking-work runner, shared by every route set."""

    def __init__(self, platform: AppContext) -> None:
        self.platform = platform
        self._token = platform.api_token.encode()
        # Tests swap in a synchronous runner: no threads in unit tests.
        self.run_in_thread: Callable[..., Deferred[Any]] = deferToThread

    def authorize(self, request: Request, *, query_token: bool = False, media: tuple[str, str] | None = None) -> None:
        """Check the bearer token (RFC 6750 §2.1), or with ``query_token`` also
        ``?token=`` (RFC 6750 §2.3) for media URLs that players open. On a media
        route, ``media`` is ``(scope, channel_id)`` and a playback token for it
        (``gbplatform.auth.play_tokens``) is as good as the API token."""
        header = request.getHeader(b"authorization")
        if query_token and b"token" in request.args and not header:
            header = b"Bearer " + request.args[b"token"][0]
        if header and media is not None:
            scheme, _, given = header.partition(b" ")
            if scheme.lower() == b"bearer" and self.platform.play_tokens.verify(
                    given.strip().decode("ascii", "replace"), *media):
                return
        if not header:
            set_header(request, b"WWW-Authenticate", b'Bearer realm="gbplatform"')
            raise schemas.Unauthorized("an Authorization: Bearer <token> header is required")
        scheme, _, token = header.partition(b" ")
        # compare_digest keeps the comparison time independent of where the
        # first wrong byte is; an empty configured token never matches.
        if scheme.lower() != b"bearer" or not self._token or not hmac.compare_digest(token.strip(), self._token):
            set_header(request, b"WWW-Authenticate", b'Bearer realm="gbplatform", error="invalid_token"')
            raise schemas.Unauthorized("the bearer token is not valid")

    def blocking(self, kind: str) -> Callable[..., Deferred[Any]]:
        """The thread pool of ``kind`` (``gbplatform.core.workers``): a snapshot never queues behind
        downloads. A platform built without pools (unit tests) uses ``run_in_thread``."""
        workers = self.platform.workers
        return workers.runner(kind) if workers is not None else self.run_in_thread


class Routes:
    """A package's route set: its handlers are methods; ``self.platform`` is the context."""

    app: Klein  # each subclass declares its own

    def __init__(self, web: Web) -> None:
        self.web = web
        self.platform = web.platform

    def authorize(self, request: Request, *, query_token: bool = False, media: tuple[str, str] | None = None) -> None:
        self.web.authorize(request, query_token=query_token, media=media)

    def _blocking(self, kind: str) -> Callable[..., Deferred[Any]]:
        return self.web.blocking(kind)

    def _json(self, request: Request, obj: Shape | bytes, status: int = 200) -> bytes:
        """The one place a route's answer becomes JSON. A response is built as its shape
        (``gbplatform.api.shapes``; typed so, a plain dict does not pass mypy), so what is sent
        is what the OpenAPI component declares; ``bytes`` are sent as they are (the OpenAPI
        document, the streamed channel tree)."""
        if not isinstance(obj, (Shape, bytes)):
            raise TypeError(f"a response is built as its shape, not sent as a {type(obj).__name__}")
        request.setResponseCode(status)
        set_header(request, b"Content-Type", JSON_TYPE)
        set_header(request, b"Cache-Control", b"no-store")
        return obj if isinstance(obj, bytes) else schemas.dumps(schemas.to_json(obj))

    def _body(self, request: Request) -> dict[str, Any]:
        content = request.content
        raw = content.read(schemas.MAX_BODY + 1) if content is not None else b""
        return schemas.parse_json_body(raw)

    def _at(self) -> dt.datetime:
        return utc_datetime(self.platform.clock.time())


Handler = Callable[Concatenate[Any, Request, ...], Awaitable[bytes | None]]


def authenticated(route: Handler) -> Handler:
    """Require the bearer token before running ``route``."""

    @functools.wraps(route)
    async def checked(self: Routes, request: Request, **kwargs: Any) -> bytes | None:
        self.authorize(request)
        return await route(self, request, **kwargs)

    return checked


def mount(root: Klein, routes: Klein, attr: str) -> None:
    """Add ``routes``' rules to ``root``'s URL map; each runs on the root instance's ``attr``.

    Klein finds an endpoint's ``segment_count`` on its handler (it moves
    that many path segments to ``prepath``): the delegate carries the
    mounted handler's.
    """
    for rule in routes.url_map.iter_rules():
        if rule.endpoint in root.endpoints:
            raise ValueError(f"route {rule.endpoint!r} ({rule.rule}) is already mounted")
        handler = routes.endpoints[rule.endpoint]

        def delegate(api: Any, request: Any, *args: Any, _handler: Any = handler, **kwargs: Any) -> Any:
            return _handler(getattr(api, attr), request, *args, **kwargs)

        delegate.segment_count = handler.segment_count  # type: ignore[attr-defined]
        root.endpoints[rule.endpoint] = delegate
        root.url_map.add(rule.empty())
