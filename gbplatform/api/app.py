"""The HTTP admin API: a Klein app over the platform's services.

Every route is ``async def``: parse (``schemas``) → service → serialize.
Errors are mapped once, at the bottom of the class, with
``@app.handle_errors``: domain errors carry their own status and code,
routing misses become JSON 404/405, and anything unexpected is logged and
answered with a bare 500 (no traceback leaves the process). Client input
never gets that far: a URL that is not UTF-8 is a JSON 400 (``_Resource``),
path integers past 64 bits a 400 naming the field (``schemas.path_id``),
and werkzeug's slash-merging redirect a relative ``Location``, never one
built from the client's Host header.

Authentication is one bearer token (RFC 6750 §2.1) compared in constant
time; every route but ``GET /api/v1/health`` requires it, so a load balancer
can probe the platform without a secret. The health route touches neither
the database nor the devices: it must answer while the database is slow.
The media routes (live FLV/HLS/snapshot, VOD HLS/MP4) also take a playback
token for their channel (``gbplatform.auth.play_tokens``): what the URLs that
``play`` and the recording timeline answer carry, so a player opens them as
given and never holds the API token. The access log (``access_log_line``)
writes ``token=***`` in place of any token's value, on every route.

Live video (GB/T 28181-2016 §9.2) has the play/stop/list routes under
``/api/v1`` and one media route outside it, ``GET /live/<channel>.flv``:
HTTP-FLV that players open directly, so it also takes the token as
``?token=`` (players cannot set headers). It starts the stream on demand,
answers ``video/x-flv`` without a Content-Length (chunked), attaches one
``FlvSink`` per connection (the GOP cache replays first, so playback starts
on a keyframe; with the cache off the sink waits for the next one), detaches it when the client goes away and finishes the
response when the stream ends.

``GET /api/v1/channels/<channel>/snapshot`` answers one JPEG of the
stream's latest keyframe (kept whether or not the GOP cache is on), starting
the stream on demand like the FLV route and waiting up to ``SNAPSHOT_WAIT``
seconds for a first keyframe. Decoding and
encoding run in a worker thread (the ``snapshot`` pool of ``gbplatform.core.workers``), never on the reactor.

HLS (RFC 8216) is ``GET /live/<channel>/index.m3u8`` and
``GET /live/<channel>/seg<n>.ts``, with the same token rules. The playlist
starts the stream on demand and attaches one shared ``HlsSegmenter`` per
stream, then waits up to ``HLS_WAIT`` seconds for a first segment. HLS
clients hold no connection, so the segmenter counts as a viewer while
playlist or segment requests keep coming: it is detached ``HLS_IDLE``
seconds after the last one, and the stream's idle teardown then applies.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from klein import Klein
from klein.interfaces import IKleinRequest
from klein.resource import KleinResource
from sqlalchemy.orm import Session
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter, IRequest
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import IntegerConverter, RequestRedirect
from zope.interface import provider

from gbplatform import __version__
from gbplatform.api import schemas
from gbplatform.api.openapi import build_openapi
from gbplatform.app.service import Platform
from gbplatform.auth.play_tokens import LIVE, VOD
from gbplatform.core.clock import DelayedCallLike
from gbplatform.core.errors import DeviceOffline, DomainError
from gbplatform.core.errors import NotFound as Missing
from gbplatform.db import queries as q
from gbplatform.recording import queries as rq
from gbplatform.recording.http import MP4_TYPE, RecordingOff
from gbplatform.recording.http import Spool as _Spool
from gbplatform.recording.http import byte_range as _byte_range
from gbplatform.recording.playback import (
    Cancelled,
    gop_ranges,
    interval_urls,
    remux_mp4,
    rtsp_vod_base,
    vod_playlist,
)
from gbplatform.sessions.live import LiveStream, LiveStreams
from media.flv import FlvSink
from media.frame import Frame
from media.hls import HlsSegmenter
from media.snapshot import SnapshotError, snapshot_jpeg

log = Logger()

JSON_TYPE = b"application/json; charset=utf-8"

FLV_TYPE = b"video/x-flv"

JPEG_TYPE = b"image/jpeg"

HLS_TYPE = b"application/vnd.apple.mpegurl"  # RFC 8216 §4
TS_TYPE = b"video/mp2t"

# The first segment is cut at the second keyframe: one GOP (often 1-2 s,
# GB/T 28181-2016 §9.2 sets no bound) after the first one arrives.
HLS_WAIT = 8.0
HLS_POLL = 0.1
# A client reloads the playlist every target duration (RFC 8216 §6.3.4);
# silence this long means it has gone, and the segmenter stops counting.
HLS_IDLE = 20.0

# A device sends a keyframe every GOP (often 1-2 s; GB/T 28181-2016 §9.2 sets
# no bound), so a fresh stream needs a few seconds for its first one.
SNAPSHOT_WAIT = 5.0
SNAPSHOT_POLL = 0.1

Handler = Callable[..., Awaitable[bytes | None]]


class MediaUnavailable(DomainError):
    """The platform runs without a media receiver (API: 503)."""

    status = 503
    code = "media_unavailable"


class NoKeyframe(DomainError):
    """The stream sent no keyframe within ``SNAPSHOT_WAIT`` (API: 503)."""

    status = 503
    code = "no_keyframe"


class NoSegment(DomainError):
    """The stream gave no HLS segment within ``HLS_WAIT`` (API: 503)."""

    status = 503
    code = "no_segment"


@dataclass
class _Hls:
    """One stream's shared segmenter and the timer that detaches it when unwatched."""

    stream: LiveStream
    segmenter: HlsSegmenter
    timer: DelayedCallLike | None = None
    on_closed: Callable[[LiveStream], None] | None = None


class BadPicture(DomainError):
    """The device's keyframe does not decode (API: 502)."""

    status = 502
    code = "bad_picture"


def authenticated(route: Handler) -> Handler:
    """Require the bearer token before running ``route``."""

    @functools.wraps(route)
    async def checked(self: Api, request: Request, **kwargs: Any) -> bytes | None:
        self.authorize(request)
        return await route(self, request, **kwargs)

    return checked


# Thin *_txn wrappers: the create/update ones unpack the parsed body; in the
# read ones the existence check and the read share one transaction, so "no
# such device" and "device without channels" cannot be confused.


def _create_txn(session: Session, device_id: str, changes: schemas.DeviceChanges, *, realm: str,
                at: dt.datetime) -> q.DeviceRecord:
    # Digest HA1 for the realm devices authenticate in (GB/T 28181-2016 §9.1.2.1).
    return q.create_device_txn(session, device_id, password=changes.password,
                               realm=realm if changes.password is not None else None, at=at, **changes.fields)


def _update_txn(session: Session, device_id: str, changes: schemas.DeviceChanges, *, realm: str,
                at: dt.datetime) -> q.DeviceRecord:
    return q.update_device_txn(session, device_id, password=changes.password,
                               realm=realm if changes.password is not None else None,
                               clear_password=changes.clear_password, at=at, **changes.fields)


def _channels_txn(session: Session, device_id: str, *, parent_id: str | None, offset: int,
                  limit: int) -> q.Page[q.ChannelRecord]:
    if q.get_device_txn(session, device_id) is None:
        raise q.DeviceNotFound(device_id)
    return q.list_channels_txn(session, device_id, offset=offset, limit=limit, parent_id=parent_id)


def _tree_txn(session: Session, device_id: str, *, platform_id: str) -> list[q.TreeNode]:
    if q.get_device_txn(session, device_id) is None:
        raise q.DeviceNotFound(device_id)
    return q.channel_tree_txn(session, device_id, platform_id=platform_id)


def _set_header(request: Request, name: bytes, value: bytes) -> None:
    request.responseHeaders.setRawHeaders(name, [value])


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


def _peer(request: Request) -> str:
    addr = request.getClientAddress()  # type: ignore[no-untyped-call]
    return f"{getattr(addr, 'host', addr)}:{getattr(addr, 'port', '')}"


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
                return schemas.dumps(schemas.error_json("invalid", f"{name}: is not UTF-8", name))
        return super().render(request)


class _Klein(Klein):
    def __init__(self) -> None:
        super().__init__()
        self.url_map.converters["int"] = _Int64Converter

    def resource(self) -> KleinResource:
        return _Resource(self)


class Api:
    """``Api(platform).app.resource()`` is the whole API under ``/api/v1``."""

    app = _Klein()

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._token = platform.api_token.encode()
        self._openapi: bytes | None = None
        # Tests swap in a synchronous runner: no threads in unit tests.
        self.run_in_thread: Callable[..., Deferred[Any]] = deferToThread
        self._hls: dict[str, _Hls] = {}

    def _blocking(self, kind: str) -> Callable[..., Deferred[Any]]:
        """The thread pool of ``kind`` (``gbplatform.core.workers``): a snapshot never queues behind
        downloads. A platform built without pools (unit tests) uses ``run_in_thread``."""
        workers = getattr(self.platform, "workers", None)
        return workers.runner(kind) if workers is not None else self.run_in_thread

    # -- helpers ---------------------------------------------------------------
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
            _set_header(request, b"WWW-Authenticate", b'Bearer realm="gbplatform"')
            raise schemas.Unauthorized("an Authorization: Bearer <token> header is required")
        scheme, _, token = header.partition(b" ")
        # compare_digest keeps the comparison time independent of where the
        # first wrong byte is; an empty configured token never matches.
        if scheme.lower() != b"bearer" or not self._token or not hmac.compare_digest(token.strip(), self._token):
            _set_header(request, b"WWW-Authenticate", b'Bearer realm="gbplatform", error="invalid_token"')
            raise schemas.Unauthorized("the bearer token is not valid")

    def _json(self, request: Request, obj: Any, status: int = 200) -> bytes:
        request.setResponseCode(status)
        _set_header(request, b"Content-Type", JSON_TYPE)
        _set_header(request, b"Cache-Control", b"no-store")
        return obj if isinstance(obj, bytes) else schemas.dumps(obj)

    def _body(self, request: Request) -> dict[str, Any]:
        content = request.content
        raw = content.read(schemas.MAX_BODY + 1) if content is not None else b""
        return schemas.parse_json_body(raw)

    def _at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.platform.clock.time(), dt.UTC)

    def _device_json(self, record: q.DeviceRecord) -> dict[str, Any]:
        p = self.platform
        return schemas.device_json(
            record, p.devices.live_info(record.device_id), now=p.clock.seconds(), wall=p.clock.time(),
            catalog=p.catalog.progress(record.device_id),
        )

    async def _record(self, device_id: str) -> q.DeviceRecord:
        record = await self.platform.db.run("get_device", q.get_device_txn, device_id)
        if record is None:
            raise q.DeviceNotFound(device_id)
        return record

    async def _require_online(self, device_id: str) -> None:
        """404 for an unknown device, 409 for a known one that is not registered."""
        if self.platform.devices.is_known(device_id):
            return
        await self._record(device_id)
        raise DeviceOffline(f"device {device_id} is not registered")

    # -- platform --------------------------------------------------------------
    @app.route("/api/v1/health", methods=["GET"])
    async def health(self, request: Request) -> bytes:
        p = self.platform
        return self._json(request, {
            "status": "ok",
            "version": __version__,
            "uptime": round(max(0.0, p.clock.time() - p.started_at), 3),
            "devices_online": p.devices.online_count(),
            "sip": {
                "transactions": p.endpoint.transaction_count,
                "stats": dict(p.endpoint.stats),
                "registrar": dict(p.devices.stats),
                "onboarding_backlog": p.queries.backlog,
            },
            "media": None if p.live is None else {
                "streams": len(p.live.streams),
                "ports": {"capacity": p.live.ports.capacity, "in_use": p.live.ports.in_use,
                          "available": p.live.ports.available},
            },
        })

    # -- security: digest-guessing bans (gbplatform/devices/auth_guard.py) --------------
    @app.route("/api/v1/security/bans", methods=["GET"])
    @authenticated
    async def list_bans(self, request: Request) -> bytes:
        p = self.platform
        now, wall = p.clock.seconds(), p.clock.time()
        items = [{
            "key": b.key, "kind": b.kind, "value": b.value, "failures": b.failures, "refused": b.refused,
            "since": schemas.iso_epoch(wall - b.banned_for), "until": schemas.iso_epoch(wall + b.remaining),
        } for b in p.devices.guard.bans(now)]
        return self._json(request, {"items": items, "stats": dict(p.devices.guard.stats)})

    @app.route("/api/v1/security/bans/<key>", methods=["DELETE"])
    @authenticated
    async def clear_ban(self, request: Request, key: str) -> bytes:
        if not self.platform.devices.guard.clear(key):
            raise Missing(f"no ban on {key[:80]!r}")
        log.info("ban on {key} lifted through the API", key=key)
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/openapi.json", methods=["GET"])
    @authenticated
    async def openapi(self, request: Request) -> bytes:
        if self._openapi is None:
            self._openapi = schemas.dumps(build_openapi(__version__))
        return self._json(request, self._openapi)

    # -- devices ---------------------------------------------------------------
    @app.route("/api/v1/devices", methods=["GET"])
    @authenticated
    async def list_devices(self, request: Request) -> bytes:
        query = schemas.parse_device_list(request.args)
        page = await self.platform.db.run(
            "list_devices", q.list_devices_txn, online=query.online, q=query.q,
            offset=query.paging.offset, limit=query.paging.limit,
        )
        return self._json(request, schemas.page_json(page, self._device_json))

    @app.route("/api/v1/devices", methods=["POST"])
    @authenticated
    async def create_device(self, request: Request) -> bytes:
        p = self.platform
        create = schemas.parse_device_create(self._body(request), strict_id=p.config.sip.strict_id)
        changes = create.changes
        record = await p.db.run("create_device", _create_txn, create.device_id, changes,
                                realm=p.config.sip.domain, at=self._at())
        # The registrar may have cached "unknown device" from an earlier REGISTER.
        p.devices.invalidate(create.device_id)
        log.info("device {device_id} added through the API", device_id=create.device_id)
        _set_header(request, b"Location", f"/api/v1/devices/{create.device_id}".encode())
        return self._json(request, self._device_json(record), 201)

    @app.route("/api/v1/devices/<device_id>", methods=["GET"])
    @authenticated
    async def get_device(self, request: Request, device_id: str) -> bytes:
        return self._json(request, self._device_json(await self._record(device_id)))

    @app.route("/api/v1/devices/<device_id>", methods=["PATCH"])
    @authenticated
    async def update_device(self, request: Request, device_id: str) -> bytes:
        p = self.platform
        changes = schemas.parse_device_patch(self._body(request))
        if changes.empty:
            record = await self._record(device_id)
        else:
            record = await p.db.run("update_device", _update_txn, device_id, changes,
                                    realm=p.config.sip.domain, at=self._at())
            p.devices.invalidate(device_id)
        return self._json(request, self._device_json(record))

    @app.route("/api/v1/devices/<device_id>", methods=["DELETE"])
    @authenticated
    async def delete_device(self, request: Request, device_id: str) -> bytes:
        p = self.platform
        await p.db.run("delete_device", q.delete_device_txn, device_id)
        p.devices.forget(device_id)
        p.catalog.forget(device_id)
        log.info("device {device_id} deleted through the API", device_id=device_id)
        request.setResponseCode(204)
        return b""

    # -- channels --------------------------------------------------------------
    @app.route("/api/v1/devices/<device_id>/channels", methods=["GET"])
    @authenticated
    async def list_channels(self, request: Request, device_id: str) -> bytes:
        query = schemas.parse_channel_list(request.args)
        page = await self.platform.db.run(
            "list_channels", _channels_txn, device_id, parent_id=query.parent_id,
            offset=query.paging.offset, limit=query.paging.limit,
        )
        return self._json(request, schemas.page_json(page, schemas.channel_json))

    @app.route("/api/v1/devices/<device_id>/channels/tree", methods=["GET"])
    @authenticated
    async def channel_tree(self, request: Request, device_id: str) -> bytes:
        roots = await self.platform.db.run(
            "channel_tree", _tree_txn, device_id, platform_id=self.platform.config.sip.id
        )
        return self._json(request, schemas.tree_bytes(device_id, roots))

    # -- catalog ---------------------------------------------------------------
    @app.route("/api/v1/devices/<device_id>/catalog/sync", methods=["POST"])
    @authenticated
    async def sync_catalog(self, request: Request, device_id: str) -> bytes:
        await self._require_online(device_id)
        session = self.platform.catalog.start(device_id)
        return self._json(request, schemas.catalog_progress_json(device_id, session.progress(), None), 202)

    @app.route("/api/v1/devices/<device_id>/catalog", methods=["GET"])
    @authenticated
    async def catalog_progress(self, request: Request, device_id: str) -> bytes:
        progress = self.platform.catalog.progress(device_id)
        record = await self.platform.db.run("get_device", q.get_device_txn, device_id)
        if record is None and progress is None:
            raise q.DeviceNotFound(device_id)
        return self._json(request, schemas.catalog_progress_json(device_id, progress, record))

    # -- live queries ------------------------------------------------------------
    async def _before_query(self, device_id: str) -> None:
        await self._require_online(device_id)
        # The registry row of a device that has just registered may still be
        # in the state writer's batch; DeviceInfo is stored on it.
        pending = self.platform.devices.writer.flush()
        if pending is not None:
            await pending

    @app.route("/api/v1/devices/<device_id>/info", methods=["GET"])
    @authenticated
    async def device_info(self, request: Request, device_id: str) -> bytes:
        await self._before_query(device_id)
        return self._json(request, await self.platform.queries.device_info(device_id))

    @app.route("/api/v1/devices/<device_id>/status", methods=["GET"])
    @authenticated
    async def device_status(self, request: Request, device_id: str) -> bytes:
        await self._before_query(device_id)
        return self._json(request, await self.platform.queries.device_status(device_id))

    @app.route("/api/v1/devices/<device_id>/trace", methods=["GET"])
    @authenticated
    async def device_trace(self, request: Request, device_id: str) -> bytes:
        # No registry lookup: a device that never managed to register has a
        # trace (its refused REGISTERs) but no row, and that is when it is needed.
        limit = schemas.parse_trace_limit(request.args)
        return self._json(request, schemas.trace_json(device_id, self.platform.trace.entries(device_id, limit)))

    # -- live video --------------------------------------------------------------
    def _live(self) -> LiveStreams:
        live = self.platform.live
        if live is None:
            raise MediaUnavailable("this platform has no media receiver")
        return live

    async def _play(self, channel_id: str) -> LiveStream:
        """The channel's running stream, or a new one (INVITE, GB/T 28181-2016 §9.2.2)."""
        live = self._live()
        stream = live.get(channel_id)
        if stream is not None and stream.state == "playing":
            return stream
        channel = await self.platform.db.run("get_channel", q.get_channel_txn, channel_id)
        if channel is None:
            raise Missing(f"channel {channel_id} not found")
        return await live.play(channel.device_id, channel_id)

    @app.route("/api/v1/channels/<channel_id>/play", methods=["POST"])
    @authenticated
    async def play(self, request: Request, channel_id: str) -> bytes:
        stream = await self._play(channel_id)
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
        if not host:
            addr = request.getHost()  # type: ignore[no-untyped-call]
            host = f"{addr.host}:{addr.port}"
        # Players open these as given and cannot set headers: they carry a playback
        # token for this channel's live media (RFC 6750 §2.3), never the API token.
        tokens = self.platform.play_tokens
        query = "?token=" + tokens.issue(LIVE, channel_id)
        urls = {
            "http_flv": f"http://{host}/live/{channel_id}.flv{query}",
            "hls": f"http://{host}/live/{channel_id}/index.m3u8{query}",
            "snapshot": f"http://{host}/api/v1/channels/{channel_id}/snapshot{query}",
        }
        rtsp_port = self.platform.config.media.rtsp_port
        if rtsp_port:
            # The RTSP server listens beside the API: same host name, its own port.
            hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            urls["rtsp"] = f"rtsp://{hostname}:{rtsp_port}/live/{channel_id}{query}"
        return self._json(request, {"stream": stream.to_json(self.platform.clock), "urls": urls,
                                    "expires_at": schemas.iso_epoch(tokens.expires_at())})

    @app.route("/api/v1/channels/<channel_id>/stop", methods=["POST"])
    @authenticated
    async def stop(self, request: Request, channel_id: str) -> bytes:
        if not self._live().stop(channel_id, "stopped through the API"):
            raise Missing(f"channel {channel_id} is not streaming")
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/streams", methods=["GET"])
    @authenticated
    async def list_streams(self, request: Request) -> bytes:
        live = self._live()
        items = [s.to_json(self.platform.clock) for _, s in sorted(live.streams.items())]
        return self._json(request, {"items": items})

    async def _keyframe(self, stream: LiveStream) -> Frame:
        """The stream's latest keyframe, polled on the clock for up to ``SNAPSHOT_WAIT``."""
        clock = self.platform.clock
        deadline = clock.seconds() + SNAPSHOT_WAIT
        while True:
            keyframe = stream.dispatcher.keyframe
            if keyframe is not None:
                return keyframe
            if stream.state != "playing":
                raise NoKeyframe(f"channel {stream.channel_id}: the stream ended ({stream.state}) "
                                 "before a keyframe")
            left = deadline - clock.seconds()
            if left <= 0:
                raise NoKeyframe(f"channel {stream.channel_id}: no keyframe within {SNAPSHOT_WAIT:g} s")
            tick: Deferred[None] = Deferred()
            call = clock.call_later(min(SNAPSHOT_POLL, left), tick.callback, None)
            try:
                await tick
            finally:
                # Klein cancels the route's Deferred when the client goes away.
                if call.active():
                    call.cancel()

    @app.route("/api/v1/channels/<channel_id>/snapshot", methods=["GET"])
    async def snapshot(self, request: Request, channel_id: str) -> bytes:
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        stream = await self._play(channel_id)
        frame = await self._keyframe(stream)
        try:
            jpeg: bytes = await self._blocking("snapshot")(snapshot_jpeg, frame)
        except SnapshotError as e:
            log.warn("channel {id}: no snapshot from its keyframe: {error}", id=channel_id, error=e)
            raise BadPicture(f"channel {channel_id}: the keyframe does not decode ({e})") from e
        request.setResponseCode(200)
        _set_header(request, b"Content-Type", JPEG_TYPE)
        _set_header(request, b"Cache-Control", b"no-store")
        return jpeg

    @app.route("/live/<channel_id>.flv", methods=["GET"])
    async def live_flv(self, request: Request, channel_id: str) -> bytes:
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        live = self._live()
        stream = await self._play(channel_id)
        request.setResponseCode(200)
        _set_header(request, b"Content-Type", FLV_TYPE)
        _set_header(request, b"Cache-Control", b"no-store")
        # Headers now: the FLV header only goes out with the first keyframe,
        # and a player should not time out on the status line meanwhile.
        request.write(b"")  # type: ignore[no-untyped-call]
        ended: Deferred[None] = Deferred()

        def closed(_: LiveStream) -> None:
            if not ended.called:
                ended.callback(None)

        sink = FlvSink(write=request.write, tracks=stream.dispatcher.tracks)
        stream.on_closed.append(closed)
        live.attach(stream, sink)
        log.info("channel {id}: HTTP-FLV viewer {peer} attached ({n} watching)", id=channel_id,
                 peer=_peer(request), n=stream.viewers)
        try:
            # Klein cancels this Deferred when the client disconnects.
            await ended
        finally:
            live.detach(stream, sink)
            if closed in stream.on_closed:
                stream.on_closed.remove(closed)
            log.info("channel {id}: HTTP-FLV viewer {peer} left ({n} watching)", id=channel_id,
                     peer=_peer(request), n=stream.viewers)
        return b""

    def _hls_touch(self, entry: _Hls) -> None:
        """Restart the countdown after which an unrequested segmenter stops being a viewer."""
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = self.platform.clock.call_later(HLS_IDLE, self._hls_drop, entry, "no HLS request")

    def _hls_drop(self, entry: _Hls, why: str) -> None:
        if self._hls.get(entry.stream.channel_id) is entry:
            del self._hls[entry.stream.channel_id]
        if entry.timer is not None and entry.timer.active():
            entry.timer.cancel()
        entry.timer = None
        if entry.stream.state == "playing" and entry.on_closed in entry.stream.on_closed:
            # A closing stream is running its callbacks: its list is not ours to change.
            entry.stream.on_closed.remove(entry.on_closed)
        live = self.platform.live
        if live is not None:
            live.detach(entry.stream, entry.segmenter)
        log.info("channel {id}: HLS output detached ({why})", id=entry.stream.channel_id, why=why)

    def _hls_for(self, stream: LiveStream) -> _Hls:
        """The stream's shared segmenter, attached as one viewer on first use."""
        entry = self._hls.get(stream.channel_id)
        if entry is not None and entry.stream is stream:
            return entry
        if entry is not None:
            self._hls_drop(entry, "the stream was replaced")
        entry = _Hls(stream, HlsSegmenter())
        self._hls[stream.channel_id] = entry

        def closed(_: LiveStream) -> None:
            self._hls_drop(entry, f"the stream ended ({stream.state})")

        entry.on_closed = closed
        stream.on_closed.append(closed)
        self._live().attach(stream, entry.segmenter)
        log.info("channel {id}: HLS output attached ({n} watching)", id=stream.channel_id, n=stream.viewers)
        return entry

    async def _first_segment(self, entry: _Hls) -> None:
        """Poll on the clock for up to ``HLS_WAIT`` until the playlist lists a segment."""
        clock = self.platform.clock
        deadline = clock.seconds() + HLS_WAIT
        while not entry.segmenter.segments:
            stream = entry.stream
            if stream.state != "playing":
                raise NoSegment(f"channel {stream.channel_id}: the stream ended ({stream.state}) "
                                "before a first HLS segment")
            left = deadline - clock.seconds()
            if left <= 0:
                raise NoSegment(f"channel {stream.channel_id}: no HLS segment within {HLS_WAIT:g} s")
            tick: Deferred[None] = Deferred()
            call = clock.call_later(min(HLS_POLL, left), tick.callback, None)
            try:
                await tick
            finally:
                if call.active():
                    call.cancel()

    @app.route("/live/<channel_id>/index.m3u8", methods=["GET"])
    async def live_hls(self, request: Request, channel_id: str) -> bytes:
        token = request.args.get(b"token", [None])[0]
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        stream = await self._play(channel_id)
        entry = self._hls_for(stream)
        self._hls_touch(entry)
        await self._first_segment(entry)
        # Players cannot set headers on segment requests either: the segment
        # URIs carry the playlist's own ?token= (RFC 6750 §2.3).
        suffix = "" if token is None else "?token=" + urllib.parse.quote(token.decode("utf-8", "replace"), safe="")
        request.setResponseCode(200)
        _set_header(request, b"Content-Type", HLS_TYPE)
        _set_header(request, b"Cache-Control", b"no-store")
        return entry.segmenter.playlist(suffix).encode("ascii")

    @app.route("/live/<channel_id>/seg<int:n>.ts", methods=["GET"])
    async def live_hls_segment(self, request: Request, channel_id: str, n: int) -> bytes:
        self.authorize(request, query_token=True, media=(LIVE, channel_id))
        entry = self._hls.get(channel_id)
        data = entry.segmenter.segment(n) if entry is not None else None
        if entry is None or data is None:
            raise Missing(f"channel {channel_id} has no HLS segment {n}")
        self._hls_touch(entry)
        request.setResponseCode(200)
        _set_header(request, b"Content-Type", TS_TYPE)
        return data

    # -- recording (issue 4) -------------------------------------------------------------
    def _recording(self) -> Any:
        rec = self.platform.recording
        if rec is None:
            raise RecordingOff("this platform does not record")
        return rec

    @app.route("/api/v1/record/plans", methods=["GET"])
    @authenticated
    async def list_record_plans(self, request: Request) -> bytes:
        items = await self.platform.db.run("list_plans", rq.list_plans_txn)
        return self._json(request, {"items": [schemas.plan_json(p) for p in items]})

    @app.route("/api/v1/record/plans", methods=["POST"])
    @authenticated
    async def create_record_plan(self, request: Request) -> bytes:
        body = schemas.parse_plan(self._body(request), partial=False)
        assert body.name is not None and body.schedule is not None
        plan = await self.platform.db.run("create_plan", rq.create_plan_txn, body.name, body.schedule, at=self._at())
        _set_header(request, b"Location", f"/api/v1/record/plans/{plan.id}".encode())
        self._record_changed()
        return self._json(request, schemas.plan_json(plan), 201)

    @app.route("/api/v1/record/plans/<int:plan_id>", methods=["GET"])
    @authenticated
    async def get_record_plan(self, request: Request, plan_id: int) -> bytes:
        plan_id = schemas.path_id("plan_id", plan_id)
        plan = await self.platform.db.run("get_plan", rq.get_plan_txn, plan_id)
        return self._json(request, schemas.plan_json(plan))

    @app.route("/api/v1/record/plans/<int:plan_id>", methods=["PUT"])
    @authenticated
    async def update_record_plan(self, request: Request, plan_id: int) -> bytes:
        plan_id = schemas.path_id("plan_id", plan_id)
        body = schemas.parse_plan(self._body(request), partial=True)
        plan = await self.platform.db.run("update_plan", rq.update_plan_txn, plan_id, name=body.name,
                                          schedule=body.schedule, at=self._at())
        self._record_changed()
        return self._json(request, schemas.plan_json(plan))

    @app.route("/api/v1/record/plans/<int:plan_id>", methods=["DELETE"])
    @authenticated
    async def delete_record_plan(self, request: Request, plan_id: int) -> bytes:
        plan_id = schemas.path_id("plan_id", plan_id)
        await self.platform.db.run("delete_plan", rq.delete_plan_txn, plan_id)
        request.setResponseCode(204)
        return b""

    def _record_changed(self) -> None:
        rec = self.platform.recording
        if rec is not None:
            rec.poke()

    def _channel_status(self, channel_id: str) -> dict[str, Any] | None:
        rec = self.platform.recording
        if rec is None:
            return None
        return next((c for c in rec.state()["channels"] if c["channel_id"] == channel_id), None)

    @app.route("/api/v1/channels/<channel_id>/record", methods=["GET"])
    @authenticated
    async def get_record_policy(self, request: Request, channel_id: str) -> bytes:
        policy = await self.platform.db.run("get_policy", rq.get_policy_txn, channel_id)
        return self._json(request, schemas.policy_json(policy, self._channel_status(channel_id)))

    @app.route("/api/v1/channels/<channel_id>/record", methods=["PUT"])
    @authenticated
    async def put_record_policy(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_policy(self._body(request))
        channel = await self.platform.db.run("get_channel", q.get_channel_txn, channel_id)
        if channel is None and body.mode != "off":
            raise Missing(f"channel {channel_id} not found")
        policy = await self.platform.db.run("put_policy", rq.put_policy_txn, channel_id, mode=body.mode,
                                            plan_id=body.plan_id, retention_days=body.retention_days, at=self._at())
        log.info("channel {id}: recording policy {mode}", id=channel_id, mode=body.mode)
        self._record_changed()
        return self._json(request, schemas.policy_json(policy, self._channel_status(channel_id)))

    @app.route("/api/v1/channels/<channel_id>/recordings", methods=["GET"])
    @authenticated
    async def channel_recordings(self, request: Request, channel_id: str) -> bytes:
        day = schemas.parse_day(request.args)
        result = await self._recording().timeline(channel_id, day)

        rtsp_base = rtsp_vod_base(request.getHeader(b"host"), self.platform.config.media.rtsp_port)

        token = self.platform.play_tokens.issue(VOD, channel_id)

        def urls(a: float, b: float) -> dict[str, str]:
            return interval_urls(channel_id, a, b, rtsp_base, token)

        return self._json(request, schemas.timeline_json(channel_id, day, result, urls))

    @app.route("/api/v1/storage", methods=["GET"])
    @authenticated
    async def storage_state(self, request: Request) -> bytes:
        return self._json(request, self._recording().state())

    @app.route("/api/v1/record/downloads", methods=["GET"])
    @authenticated
    async def list_downloads(self, request: Request) -> bytes:
        jobs = sorted(self._recording().downloads.values(), key=lambda j: j.id)
        return self._json(request, {"items": [schemas.download_json(j) for j in jobs]})

    async def _vod_ranges(self, request: Request, channel_id: str) -> tuple[float, float, list[Any]]:
        rec = self._recording()
        start, end = schemas.parse_time_range(request.args)
        segs = await self.platform.db.run("segments_between", rq.segments_between_txn, channel_id, start, end)
        ranges = gop_ranges(segs, start, end)
        if not ranges:
            raise Missing(f"channel {channel_id} has no recording between {schemas.iso_epoch(start)} and "
                          f"{schemas.iso_epoch(end)}")
        del rec
        return start, end, ranges

    @app.route("/vod/<channel_id>/index.m3u8", methods=["GET"])
    async def vod_hls(self, request: Request, channel_id: str) -> bytes:
        token = request.args.get(b"token", [None])[0]
        self.authorize(request, query_token=True, media=(VOD, channel_id))
        _, _, ranges = await self._vod_ranges(request, channel_id)
        suffix = "" if token is None else "?token=" + urllib.parse.quote(token.decode("utf-8", "replace"), safe="")
        playlist = vod_playlist(ranges, lambda seg: f"seg/{seg.id}.ts{suffix}")
        request.setResponseCode(200)
        _set_header(request, b"Content-Type", HLS_TYPE)
        _set_header(request, b"Cache-Control", b"no-store")
        return playlist.encode("ascii")

    @app.route("/vod/<channel_id>/seg/<int:segment_id>.ts", methods=["GET"])
    async def vod_segment(self, request: Request, channel_id: str, segment_id: int) -> bytes:
        self.authorize(request, query_token=True, media=(VOD, channel_id))
        rec = self._recording()
        segment_id = schemas.path_id("segment_id", segment_id)
        seg = await self.platform.db.run("get_segment", rq.get_segment_txn, segment_id)
        if seg is None or seg.channel_id != channel_id or seg.state == "open":
            raise Missing(f"channel {channel_id} has no recorded segment {segment_id}")
        first, last = _byte_range(request.getHeader(b"range"), seg.size)
        data: bytes = await self._blocking("vod")(rec.read, seg, first, last - first + 1)
        if (first, last) != (0, seg.size - 1):
            request.setResponseCode(206)
            _set_header(request, b"Content-Range", f"bytes {first}-{first + len(data) - 1}/{seg.size}".encode())
        else:
            request.setResponseCode(200)
        _set_header(request, b"Accept-Ranges", b"bytes")
        _set_header(request, b"Content-Type", TS_TYPE)
        return data

    @app.route("/vod/<channel_id>.mp4", methods=["GET"])
    async def vod_mp4(self, request: Request, channel_id: str) -> bytes:
        self.authorize(request, query_token=True, media=(VOD, channel_id))
        rec = self._recording()
        start, end, ranges = await self._vod_ranges(request, channel_id)
        total = sum(r.duration for r in ranges)
        # The remux writes to a spool file at disk speed and gives its thread
        # back; the client reads the spool at its own pace (issue 8, item 23).
        try:
            spool = _Spool(request, rec.call_from_thread)
        except OSError as e:
            log.error("download of {ch}: no spool file: {e}", ch=channel_id, e=e)
            raise RecordingOff(f"no room to build the download: {e}") from e
        job = rec.new_download(channel_id, start, end, total)
        request.setResponseCode(200)
        _set_header(request, b"Content-Type", MP4_TYPE)
        _set_header(request, b"Content-Disposition",
                    f'attachment; filename="{channel_id}-{int(ranges[0].start)}.mp4"'.encode())
        _set_header(request, b"X-Download-Id", str(job.id).encode())
        _set_header(request, b"X-Content-Duration", f"{total:.3f}".encode())
        request.write(b"")  # type: ignore[no-untyped-call]
        request.registerProducer(spool, True)  # type: ignore[no-untyped-call]
        gone = request.notifyFinish()
        gone.addErrback(lambda _: spool.cancel())
        workers = getattr(self.platform, "workers", None)
        forget = workers.on_stop(spool.cancel) if workers is not None else None

        def produce() -> None:  # on a remux thread
            try:
                remux_mp4(ranges, rec.read, spool.write, job.progress)
            finally:
                spool.end()

        try:
            await self._blocking("remux")(produce)
            await spool.drained()
            if spool.cancelled:
                raise Cancelled("the client went away")
            job.progress.state = "done"
        except (Cancelled, CancelledError):
            job.progress.state = "cancelled"
            log.info("download {id} of {ch}: the client went away", id=job.id, ch=channel_id)
        except Exception as e:  # noqa: BLE001 - headers are sent: log, record, end the response
            job.progress.state, job.progress.error = "failed", str(e)
            log.failure("download {id} of {ch} failed", id=job.id, ch=channel_id)
        finally:
            job.finished = self.platform.clock.time()
            if forget is not None:
                forget()
            request.unregisterProducer()  # type: ignore[no-untyped-call]
            spool.close()
        return b""

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
