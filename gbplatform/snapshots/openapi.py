"""The OpenAPI paths of device snapshot upload (GB/T 28181-2022 SnapShotConfig), merged by
``gbplatform.api.openapi.build_openapi``; the components come from ``shapes`` like every other."""

from __future__ import annotations

from typing import Any, Final

from gbplatform.api import openapi_parts as parts
from gbplatform.api.schemas import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT
from gbplatform.snapshots import shapes

__all__ = ["SHAPES", "snapshot_paths"]

SHAPES: Final = (shapes.SnapshotRequestBody, shapes.SnapshotSession, shapes.DeviceSnapshotPage,
                 shapes.SnapshotUploaded)

_PREFIX = "/api/v1"
_CHANNEL_ID = {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "The channel's GB/T 28181 ID (from the device's catalog)."}
_SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64},
               "description": "The session ID the request answered (the SnapShotConfig `SessionID`)."}


_ref = parts.ref


def _json(schema: str, description: str, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": _ref("schemas", schema)}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}}


_error = parts.error


_query = parts.query


_UPLOAD_NOTE = (
    "Where the device uploads each picture: the `UploadURL` of the SnapShotConfig, which carries the session's "
    "upload token (`?token=`; `Authorization: Bearer <upload token>` is accepted too). No API token. The body is "
    "the JPEG itself (`image/jpeg`, or any type) or a `multipart/form-data` form whose first file part is the "
    "JPEG. The picture's name is the `file_id` query parameter, else the part's file name without `.jpg`, else "
    "the platform's; the device's UploadSnapShotFinished list names unnamed pictures later. Refusals are logged "
    "(throttled).")

_UPLOAD_OP: Final[dict[str, Any]] = {
    "tags": ["snapshots"],
    "security": [],
    "parameters": [_SESSION_ID,
                   _query("token", {"type": "string"}, "The session's upload token (from the UploadURL)."),
                   _query("file_id", {"type": "string", "maxLength": 128},
                          "The device's SnapShotFileID of this picture (letters, digits, `_.-`).")],
    "requestBody": {"required": True, "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}},
    }},
    "responses": {
        "201": _json("SnapshotUploaded", "Stored.", {"id": 7, "session_id": "5f0c1e9a7b3d4c2a8e6f1a2b3c4d5e6f",
                                                      "seq": 1, "file_id": "5f0c1e9a7b3d4c2a8e6f1a2b3c4d5e6f-1",
                                                      "size": 48213}),
        "400": _error("A multipart body without a file part (`bad_upload`)."),
        "403": _error("The token is not the session's (`invalid_token`)."),
        "404": _error("No such session (`not_found`)."),
        "409": _error("The session already has its `count` pictures (`session_full`)."),
        "410": _error("The session expired (`session_expired`)."),
        "413": _error("Larger than `snapshot.max_bytes` (`too_large`)."),
        "415": _error("Not a JPEG: it must start with FFD8 and end with FFD9 (`not_jpeg`)."),
        "507": _error("The picture could not be written (`storage_failed`)."),
    },
}


def snapshot_paths() -> dict[str, Any]:
    """The paths of ``gbplatform.snapshots.http``."""
    channel = f"{_PREFIX}/channels/{{channel_id}}/device-snapshots"
    unauthorized = _ref("responses", "Unauthorized")
    return {
        channel: {
            "post": {
                "operationId": "requestDeviceSnapshots", "tags": ["snapshots"],
                "summary": "Have the device take pictures and upload them (GB/T 28181-2022 SnapShotConfig)",
                "description": (
                    "Opens a snapshot session and sends the channel's device a DeviceConfig with `SnapShotConfig` "
                    "(`SnapNum` = count, `Interval`, `UploadURL`, `SessionID`). Once the device answers OK the "
                    "session is answered (202, `Location` its URL); the device then uploads each JPEG to "
                    "`/api/v1/snapshot-uploads/{session_id}` and ends with UploadSnapShotFinished. Each step is a "
                    "`snapshot` event. GB/T 28181-2022 only: 422 for a 2016 device."),
                "parameters": [_CHANNEL_ID],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("schemas", "SnapshotRequestBody"),
                    "examples": {"one": {"value": {"count": 1}}, "burst": {"value": {"count": 3, "interval": 2}}},
                }}},
                "responses": {
                    "202": _json("SnapshotSession", "The device accepted; the session, `waiting`.",
                                 shapes.SESSION_EXAMPLE),
                    "400": _ref("responses", "BadRequest"), "401": unauthorized,
                    "404": _ref("responses", "ChannelNotFound"), "409": _ref("responses", "DeviceOffline"),
                    "422": _error("The device speaks GB/T 28181-2016 (`unsupported_by_device_dialect`)."),
                    "502": _error("The device answered with a SIP error or `Result` ERROR (`device_rejected`)."),
                    "504": _ref("responses", "DeviceTimeout"),
                },
            },
            "get": {
                "operationId": "listDeviceSnapshots", "tags": ["snapshots"],
                "summary": "Pictures the channel's device uploaded, newest first",
                "parameters": [_CHANNEL_ID,
                               _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "Items to skip."),
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT,
                                                "default": DEFAULT_PAGE_LIMIT}, "Page size.")],
                "responses": {
                    "200": _json("DeviceSnapshotPage", "OK", shapes.SNAPSHOT_PAGE_EXAMPLE),
                    "400": _ref("responses", "BadRequest"), "401": unauthorized,
                    "404": _error("No such channel and no pictures of it (`not_found`)."),
                },
            },
        },
        f"{_PREFIX}/device-snapshots/{{snapshot_id}}.jpg": {
            "get": {
                "operationId": "getDeviceSnapshot", "tags": ["snapshots"],
                "summary": "One uploaded picture",
                "parameters": [
                    {"name": "snapshot_id", "in": "path", "required": True,
                     "schema": {"type": "integer", "minimum": 1}, "description": "The picture's `id`."},
                    _query("token", {"type": "string"},
                           "The API token, for clients that cannot send `Authorization` (RFC 6750 §2.3)."),
                ],
                "responses": {
                    "200": {"description": "The JPEG as the device uploaded it.",
                            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                    "400": _ref("responses", "BadRequest"), "401": unauthorized,
                    "404": _error("No such picture, or its file is gone (`not_found`)."),
                },
            },
        },
        f"{_PREFIX}/snapshot-sessions/{{session_id}}": {
            "get": {
                "operationId": "getSnapshotSession", "tags": ["snapshots"],
                "summary": "A snapshot session's state: waiting, uploading, finished or expired",
                "parameters": [_SESSION_ID],
                "responses": {
                    "200": _json("SnapshotSession", "OK", {**shapes.SESSION_EXAMPLE, "state": "finished",
                                                           "received": 2,
                                                           "file_ids": ["3402000000131000000120261205100000",
                                                                        "3402000000131000000120261205100001"],
                                                           "finished_at": "2026-12-05T10:00:02.000Z"}),
                    "401": unauthorized,
                    "404": _error("No such session (`not_found`)."),
                },
            },
        },
        f"{_PREFIX}/snapshot-uploads/{{session_id}}": {
            "post": {**_UPLOAD_OP, "operationId": "uploadDeviceSnapshot",
                     "summary": "A device uploads one picture of a session (POST)", "description": _UPLOAD_NOTE},
            "put": {**_UPLOAD_OP, "operationId": "putDeviceSnapshot",
                    "summary": "A device uploads one picture of a session (PUT)", "description": _UPLOAD_NOTE},
        },
    }
