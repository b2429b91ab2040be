"""The device snapshot API (GB/T 28181-2022 §9.14): ask a channel's device for pictures, receive its
uploads, list and serve them.

``SnapshotRoutes`` is mounted into the root API (``gbplatform.api.app``):

- ``POST /api/v1/channels/<id>/device-snapshots`` ``{"count", "interval"}``: 202 and the session;
- ``GET /api/v1/channels/<id>/device-snapshots``: the channel's pictures, newest first, paged;
- ``GET /api/v1/device-snapshots/<id>.jpg``: one picture;
- ``GET /api/v1/snapshot-sessions/<session>``: a session's state;
- ``POST|PUT /api/v1/snapshot-uploads/<session>?token=``: where the device uploads, with no API
  token: the session's upload token is its credential (``DeviceSnapshots.check_upload``).
"""

from __future__ import annotations

from typing import Final

from klein import Klein
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.bodylimit import MULTIPART_SLACK
from gbplatform.api.routing import Routes, authenticated, set_header
from gbplatform.core.errors import DomainError, NotFound
from gbplatform.db import queries as q
from gbplatform.snapshots import shapes, store
from gbplatform.snapshots.service import BadUpload, DeviceSnapshots, PictureTooLarge, UploadSession
from gbplatform.snapshots.store import SnapshotRow

__all__ = ["SnapshotRoutes", "multipart_file"]

JPEG_TYPE: Final = b"image/jpeg"
_FILE_ID_ARGS: Final = (b"file_id", b"fileid", b"FileID", b"SnapShotFileID", b"name")


class SnapshotsUnavailable(DomainError):
    status = 503
    code = "snapshots_unavailable"


def _param(header: str, name: str) -> str | None:
    """A ``name=value`` parameter of a header value (RFC 9110 §5.6.6), quoted or not."""
    for part in header.split(";")[1:]:
        key, eq, value = part.strip().partition("=")
        if eq and key.strip().lower() == name:
            value = value.strip()
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return None


def multipart_file(body: bytes, content_type: str) -> tuple[bytes, str | None]:
    """The picture of a multipart/form-data upload (RFC 7578) and its file name: the first part with a
    file name, an ``image/*`` type or JPEG bytes. 400 when there is none."""
    boundary = _param(content_type, "boundary")
    if not boundary or len(boundary) > 200:  # RFC 2046 §5.1.1: 1-70 characters; vendors exceed it a little
        raise BadUpload("multipart upload without a boundary")
    for raw in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if raw.startswith(b"--"):  # the closing delimiter
            break
        head, sep, data = raw.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        data = data.removesuffix(b"\r\n")
        filename = _param(headers.get("content-disposition", ""), "filename")
        if filename is not None or headers.get("content-type", "").lower().startswith("image/") \
                or data.startswith(b"\xff\xd8"):
            return data, filename
    raise BadUpload("the multipart upload has no file part")


def _file_id(request: Request, filename: str | None) -> str | None:
    """The name the device gave the picture: a query parameter, else the file name without ``.jpg``."""
    for name in _FILE_ID_ARGS:
        values = request.args.get(name)
        if values:
            return str(values[0].decode("utf-8", "replace"))
    if filename:
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        return base[:-4] if base.lower().endswith((".jpg", ".jpe")) else base.removesuffix(".jpeg")
    return None


def session_json(session: UploadSession) -> shapes.SnapshotSession:
    return shapes.SnapshotSession(
        session_id=session.session_id, device_id=session.device_id, channel_id=session.channel_id,
        state=session.state,  # type: ignore[arg-type]  # one of the Literal's values by construction
        count=session.count, interval=session.interval, received=session.received,
        file_ids=list(session.file_ids), created_at=schemas.iso_epoch(session.created_at),
        expires_at=schemas.iso_epoch(session.expires_at), finished_at=schemas.iso_epoch(session.finished_at),
        snapshots_url=f"/api/v1/channels/{session.channel_id}/device-snapshots",
    )


def _stored_session_json(session_id: str, rows: list[SnapshotRow]) -> shapes.SnapshotSession:
    """A session of an earlier run, as its stored pictures show it: finished, or expired."""
    first = rows[0]
    finished = any(r.finished for r in rows)
    return shapes.SnapshotSession(
        session_id=session_id, device_id=first.device_id, channel_id=first.channel_id,
        state="finished" if finished else "expired", count=None, interval=None, received=len(rows),
        file_ids=[r.file_id for r in rows] if finished else [], created_at=schemas.iso(min(r.received_at for r in rows)),
        expires_at=None, finished_at=None,
        snapshots_url=f"/api/v1/channels/{first.channel_id}/device-snapshots",
    )


def snapshot_json(row: SnapshotRow) -> shapes.DeviceSnapshot:
    return shapes.DeviceSnapshot(
        id=row.id, device_id=row.device_id, channel_id=row.channel_id, session_id=row.session_id, seq=row.seq,
        file_id=row.file_id, size=row.size, received_at=schemas.iso(row.received_at), finished=row.finished,
        url=f"/api/v1/device-snapshots/{row.id}.jpg",
    )


def _peer(request: Request) -> str:
    addr = request.getClientAddress()  # type: ignore[no-untyped-call]
    return f"{getattr(addr, 'host', '?')}:{getattr(addr, 'port', '?')}"


class SnapshotRoutes(Routes):
    """See the module docstring."""

    app = Klein()

    @property
    def snapshots(self) -> DeviceSnapshots:
        service = self.platform.snapshots
        if service is None:
            raise SnapshotsUnavailable("device snapshots are not available on this platform")
        return service

    @app.route("/api/v1/channels/<channel_id>/device-snapshots", methods=["POST"])
    @authenticated
    async def request_snapshots(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.SnapshotRequestBody)
        session = await self.snapshots.request(channel_id, body.count, body.interval)
        set_header(request, b"Location", f"/api/v1/snapshot-sessions/{session.session_id}".encode())
        return self._json(request, session_json(session), 202)

    @app.route("/api/v1/channels/<channel_id>/device-snapshots", methods=["GET"])
    @authenticated
    async def list_snapshots(self, request: Request, channel_id: str) -> bytes:
        paging = schemas.parse_paging(request.args)
        rows, total = await self.platform.db.run("list_device_snapshots", store.list_snapshots_txn, channel_id,
                                                 offset=paging.offset, limit=paging.limit)
        if not total and await self.platform.db.run("get_channel", q.get_channel_txn, channel_id) is None \
                and await self.platform.db.run("get_device", q.get_device_txn, channel_id) is None:
            raise NotFound(f"channel {channel_id} not found")
        return self._json(request, shapes.DeviceSnapshotPage(items=[snapshot_json(r) for r in rows], total=total,
                                                             offset=paging.offset, limit=paging.limit))

    @app.route("/api/v1/device-snapshots/<int:snapshot_id>.jpg", methods=["GET"])
    async def picture(self, request: Request, snapshot_id: int) -> bytes:
        # ``?token=`` with the API token too: an <img> cannot send Authorization (RFC 6750 §2.3).
        self.authorize(request, query_token=True)
        _, data = await self.snapshots.picture(schemas.path_id("snapshot_id", snapshot_id))
        request.setResponseCode(200)
        set_header(request, b"Content-Type", JPEG_TYPE)
        set_header(request, b"Cache-Control", b"private, max-age=86400")  # a stored picture never changes
        return data

    @app.route("/api/v1/snapshot-sessions/<session_id>", methods=["GET"])
    @authenticated
    async def session(self, request: Request, session_id: str) -> bytes:
        live = self.snapshots.sessions.get(session_id)
        if live is not None:
            return self._json(request, session_json(live))
        rows = await self.snapshots.session_rows(session_id) if len(session_id) <= 64 else []
        if not rows:
            raise NotFound(f"no snapshot session {session_id[:64]}")
        return self._json(request, _stored_session_json(session_id, rows))

    @app.route("/api/v1/snapshot-uploads/<session_id>", methods=["POST", "PUT"])
    async def upload(self, request: Request, session_id: str) -> bytes:
        service = self.snapshots
        peer = _peer(request)
        token_values = request.args.get(b"token")
        token = token_values[0].decode("utf-8", "replace") if token_values else None
        header = request.getHeader(b"authorization")
        if token is None and header and header[:7].lower() == b"bearer ":
            token = header[7:].strip().decode("utf-8", "replace")
        service.check_upload(session_id, token, peer)  # refused before the body is read
        content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
        multipart = content_type.lower().startswith("multipart/")
        limit = service.config.max_bytes + (MULTIPART_SLACK if multipart else 0)
        content = request.content
        raw = content.read(limit + 1) if content is not None else b""
        if len(raw) > limit:
            raise service.refuse(PictureTooLarge(f"the upload is larger than {service.config.max_bytes} bytes "
                                                  "(snapshot.max_bytes)"), session_id, peer)
        filename = None
        if multipart:
            try:
                raw, filename = multipart_file(raw, content_type)
            except BadUpload as e:
                raise service.refuse(e, session_id, peer) from None
        row = await service.accept(session_id, token, raw, file_id=_file_id(request, filename), peer=peer)
        return self._json(request, shapes.SnapshotUploaded(id=row.id, session_id=row.session_id, seq=row.seq,
                                                           file_id=row.file_id, size=row.size), 201)
