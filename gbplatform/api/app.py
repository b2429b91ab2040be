"""The HTTP admin API's root: a Klein app that mounts each domain package's routes.

The routes live with their domain (``gbplatform.api.routing.mount`` adds
their rules to this app's one URL map):

- ``gbplatform.devices.http``: devices, channels, catalog, info/status, trace, security bans;
- ``gbplatform.sessions.http``: play, stop, streams;
- ``gbplatform.outputs.http``: HTTP-FLV, HLS, snapshot;
- ``gbplatform.recording.http``: record plans and policies, recordings, storage, downloads, VOD;
- ``gbplatform.control.http``: PTZ, lens, presets, cruise, scan, aux of a channel;
- ``gbplatform.control.http_2022``: the GB/T 28181-2022 PTZ commands and queries of a channel;
- ``gbplatform.alarms.http``: alarms, their snapshots and the Alarm Query, positions and tracks;
- ``gbplatform.snapshots.http``: pictures devices take and upload (GB/T 28181-2022 SnapShotConfig).

This module keeps what is the API's as a whole: health, ``openapi.json``,
the access log and the error mapping. Every route is ``async def``: parse
(``schemas``) → service → serialize. Errors are mapped once, at the bottom
of the class, with ``@app.handle_errors``: domain errors carry their own
status and code, routing misses become JSON 404/405, and anything
unexpected is logged and answered with a bare 500 (no traceback leaves the
process). Client input never gets that far: a URL that is not UTF-8 is a
JSON 400 (``_Resource``), path integers past 64 bits a 400 naming the field
(``schemas.path_id``), and werkzeug's slash-merging redirect a relative
``Location``, never one built from the client's Host header.

Authentication is one bearer token (RFC 6750 §2.1) compared in constant
time (``gbplatform.api.routing.Web.authorize``); every route but
``GET /api/v1/health`` requires it, so a load balancer can probe the
platform without a secret. The health route touches neither the database
nor the devices: it must answer while the database is slow. The media
routes (live FLV/HLS/snapshot, VOD HLS/MP4) also take a playback token for
their channel (``gbplatform.auth.play_tokens``): what the URLs that
``play`` and the recording timeline answer carry, so a player opens them
as given and never holds the API token. The access log
(``access_log_line``) writes ``token=***`` in place of any token's value,
on every route.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any, cast

from klein import Klein
from klein.interfaces import IKleinRequest
from klein.resource import KleinResource
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter, IRequest
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import IntegerConverter, RequestRedirect
from zope.interface import provider

from gbplatform import __version__
from gbplatform.alarms.http import AlarmRoutes
from gbplatform.api import schemas, shapes
from gbplatform.api.routing import JSON_TYPE, Routes, Web, authenticated, mount
from gbplatform.api.routing import set_header as _set_header
from gbplatform.app.context import AppContext
from gbplatform.control.config_http import Config2022Routes
from gbplatform.control.http import ControlRoutes
from gbplatform.control.http_2022 import Ptz2022Routes
from gbplatform.control.http_maintenance import MaintenanceRoutes
from gbplatform.core.errors import DomainError
from gbplatform.db import queries as q
from gbplatform.devices.http import DeviceRoutes
from gbplatform.events.http import EventRoutes
from gbplatform.outputs.http import OutputRoutes
from gbplatform.recording.http import RecordingRoutes
from gbplatform.sessions.http import SessionRoutes
from gbplatform.snapshots.http import SnapshotRoutes
from gbplatform.subscriptions.http import SubscriptionRoutes

log = Logger()


def redact_token(uri: bytes) -> bytes:
    """``uri`` with the value of every ``token`` query parameter replaced by ``***``.

    The name is compared as the query parser reads it (percent-decoded,
    RFC 3986 §2.1), so ``%74oken=`` is caught too; other parameters stay.
    """
    head, sep, query = uri.partition(b"?")
    if not sep:
        return uri
    parts = []
    for part in query.split(b"&"):
        name, eq, _ = part.partition(b"=")
        if eq and urllib.parse.unquote_to_bytes(name.replace(b"+", b" ")).strip().lower() == b"token":
            part = name + b"=***"
        parts.append(part)
    return head + b"?" + b"&".join(parts)


class _Redacted:
    """The request as the access log sees it: URI and Referer without token values."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self.uri = redact_token(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    def getHeader(self, name: bytes) -> bytes | None:  # noqa: N802 - twisted.web's name
        value = self._request.getHeader(name)
        return redact_token(value) if value is not None and name.lower() == b"referer" else value


def _access_log_line(timestamp: str, request: Request) -> str:
    """Twisted's combined log line, minus tokens: players can only pass theirs as ``?token=``
    (RFC 6750 §2.3), and §5.3 of that RFC warns that URLs end up in logs."""
    line: str = combinedLogFormatter(timestamp, _Redacted(request))
    return line


access_log_line: Callable[[str, Request], str] = provider(IAccessLogFormatter)(_access_log_line)



# -- routing hardening (issue 8 items 5 and 6) ---------------------------------------

# Redirects are matched again under this name and only their path is kept:
# werkzeug builds the URL from the client's Host header.
_REDIRECT_HOST = "redirect.invalid"


class _Int64Converter(IntegerConverter):
    """``<int:...>`` that cannot fail on length.

    werkzeug's ``int()`` raises ValueError past 4,300 digits, during routing
    (a 500). A longer number becomes ``INT64_MAX + 1``, which the route's
    ``schemas.path_id`` refuses with a 400 naming the field.
    """

    def to_python(self, value: str) -> Any:
        if len(value) > 20:
            return schemas.INT64_MAX + 1
        return super().to_python(value)


class _Resource(KleinResource):
    """Klein's resource, answering a URL that is not UTF-8 with a JSON 400.

    Klein refuses such a URL itself, before routing and so before
    ``handle_errors``: a text/plain 400 and a logged traceback for one bad
    byte from a client.
    """

    def render(self, request: IRequest) -> Any:
        req = cast(Request, request)
        host: bytes = req.getRequestHostname()  # type: ignore[no-untyped-call]
        parts = (("host", host), ("path", b"/".join([*(req.prepath or []), *(req.postpath or [])])))
        for name, raw in parts:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                log.info("API {method}: refused a request whose {field} is not UTF-8",
                         method=req.method.decode("ascii", "replace"), field=name)
                req.setResponseCode(400)
                _set_header(req, b"Content-Type", JSON_TYPE)
                return schemas.dumps(schemas.to_json(schemas.error_json("invalid", f"{name}: is not UTF-8", name)))
        return super().render(request)


class _Klein(Klein):
    def __init__(self) -> None:
        super().__init__()
        self.url_map.converters["int"] = _Int64Converter

    def resource(self) -> KleinResource:
        return _Resource(self)



class Api(Routes):
    """``Api(platform).app.resource()`` is the whole API: ``/api/v1``, ``/live`` and ``/vod``."""

    app = _Klein()

    def __init__(self, platform: AppContext) -> None:
        super().__init__(Web(platform))
        self._openapi: bytes | None = None
        # The mounted route sets (``mount`` below), one per domain package.
        self.device_routes = DeviceRoutes(self.web)
        self.session_routes = SessionRoutes(self.web)
        self.output_routes = OutputRoutes(self.web)
        self.recording_routes = RecordingRoutes(self.web)
        self.control_routes = ControlRoutes(self.web)
        self.subscription_routes = SubscriptionRoutes(self.web)
        self.alarm_routes = AlarmRoutes(self.web)
        self.event_routes = EventRoutes(self.web)
        self.snapshot_routes = SnapshotRoutes(self.web)
        self.config2022_routes = Config2022Routes(self.web)
        self.ptz2022_routes = Ptz2022Routes(self.web)
        self.maintenance_routes = MaintenanceRoutes(self.web)

    @property
    def run_in_thread(self) -> Callable[..., Deferred[Any]]:
        """Blocking work where the platform has no worker pools; tests set a synchronous one."""
        return self.web.run_in_thread

    @run_in_thread.setter
    def run_in_thread(self, run: Callable[..., Deferred[Any]]) -> None:
        self.web.run_in_thread = run

    # -- platform --------------------------------------------------------------
    @app.route("/api/v1/health", methods=["GET"])
    async def health(self, request: Request) -> bytes:
        p = self.platform
        return self._json(request, shapes.Health(
            status="ok",
            version=__version__,
            uptime=round(max(0.0, p.clock.time() - p.started_at), 3),
            devices_online=p.devices.online_count(),
            sip=shapes.SipHealth(
                transactions=p.endpoint.transaction_count,
                stats=dict(p.endpoint.stats),
                registrar=dict(p.devices.stats),
                onboarding_backlog=p.queries.backlog,
                onboarding_in_flight=p.queries.in_flight,
                onboarding_limit=p.queries.limit,
            ),
            media=None if p.live is None else shapes.MediaHealth(
                streams=len(p.live.streams),
                ports=shapes.PortsHealth(capacity=p.live.ports.capacity, in_use=p.live.ports.in_use,
                                         available=p.live.ports.available),
            ),
        ))

    @app.route("/api/v1/openapi.json", methods=["GET"])
    @authenticated
    async def openapi(self, request: Request) -> bytes:
        if self._openapi is None:
            # Imported on first use: the document's builders are about 3 MiB the
            # platform need not hold until someone asks (docs/performance.md "Memory").
            from gbplatform.api.openapi import build_openapi

            self._openapi = schemas.dumps(build_openapi(__version__))
        return self._json(request, self._openapi)
    # -- errors, in the order Klein tries them --------------------------------------
    def _error(self, request: Request, status: int, code: str, message: str, field: str | None = None) -> bytes:
        return self._json(request, schemas.error_json(code, message, field), status)

    @app.handle_errors(DomainError)
    def domain_error(self, request: Request, failure: Failure) -> bytes:
        e = failure.value
        assert isinstance(e, DomainError)
        return self._error(request, e.status, e.code, e.message, getattr(e, "field", None))

    @app.handle_errors(q.DeviceNotFound)
    def device_not_found(self, request: Request, failure: Failure) -> bytes:
        return self._error(request, 404, "not_found", str(failure.value))

    @app.handle_errors(q.DeviceExists)
    def device_exists(self, request: Request, failure: Failure) -> bytes:
        return self._error(request, 409, "device_exists", str(failure.value))

    @app.handle_errors(NotFound)
    def route_not_found(self, request: Request, failure: Failure) -> bytes:
        return self._error(request, 404, "not_found", f"no route {request.path.decode('utf-8', 'replace')}")

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: Request, failure: Failure) -> bytes:
        e = failure.value
        assert isinstance(e, MethodNotAllowed)
        allowed = sorted(m for m in (e.valid_methods or ()) if m != "HEAD")
        _set_header(request, b"Allow", ", ".join(allowed).encode())
        method = request.method.decode("ascii", "replace")
        return self._error(request, 405, "method_not_allowed", f"{method} not allowed; use {', '.join(allowed)}")

    @app.handle_errors(HTTPException)
    def http_exception(self, request: Request, failure: Failure) -> bytes:
        # Other routing outcomes, e.g. werkzeug's redirect for merged slashes.
        e = failure.value
        assert isinstance(e, HTTPException)
        status = e.code or 400
        if isinstance(e, RequestRedirect):
            location = self._redirect_location(request)
            _set_header(request, b"Location", location)
            return self._error(request, status, "http_error", f"moved to {location.decode()}")
        return self._error(request, status, "http_error", e.description or e.name)

    def _redirect_location(self, request: Request) -> bytes:
        """The redirect's target as a relative reference (RFC 9110 §10.2.2).

        werkzeug puts the client's Host header in its absolute URL: an open
        redirect. The path is matched again under a fixed name and only the
        path is kept, never ``//...`` (a network-path reference, RFC 3986
        §4.2); the query is the request's own (werkzeug drops it).
        """
        mapper = cast(Any, IKleinRequest(request)).mapper
        adapter = self.app.url_map.bind(_REDIRECT_HOST, mapper.script_name, path_info=mapper.path_info,
                                        default_method=mapper.default_method, url_scheme="http")
        path = "/"
        try:
            adapter.match()
        except RequestRedirect as again:
            path = again.new_url.removeprefix(f"http://{_REDIRECT_HOST}")
        except HTTPException:
            log.info("API: redirect of {path} not reproduced; sent to /", path=mapper.path_info)
        query = request.uri.partition(b"?")[2]
        return b"/" + path.lstrip("/\\").encode() + (b"?" + query if query else b"")

    @app.handle_errors(Exception)
    def unexpected(self, request: Request, failure: Failure) -> bytes:
        log.failure("API {method} {path} failed", failure, method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("utf-8", "replace"))
        return self._error(request, 500, "internal_error", "internal error; see the platform log")

mount(Api.app, DeviceRoutes.app, "device_routes")
mount(Api.app, SessionRoutes.app, "session_routes")
mount(Api.app, OutputRoutes.app, "output_routes")
mount(Api.app, RecordingRoutes.app, "recording_routes")
mount(Api.app, ControlRoutes.app, "control_routes")
mount(Api.app, SubscriptionRoutes.app, "subscription_routes")
mount(Api.app, AlarmRoutes.app, "alarm_routes")
mount(Api.app, EventRoutes.app, "event_routes")
mount(Api.app, SnapshotRoutes.app, "snapshot_routes")
mount(Api.app, Config2022Routes.app, "config2022_routes")
mount(Api.app, Ptz2022Routes.app, "ptz2022_routes")
mount(Api.app, MaintenanceRoutes.app, "maintenance_routes")
