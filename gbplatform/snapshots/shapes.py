"""API shapes of device snapshot upload (GB/T 28181-2022 SnapShotConfig, UploadSnapShotFinished).

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import Meta

from gbplatform.api.shapes import OptTime, Page, Shape, Time

__all__ = ["SESSION_EXAMPLE", "SNAPSHOT_PAGE_EXAMPLE", "DeviceSnapshot", "DeviceSnapshotPage", "SnapshotRequestBody",
           "SnapshotSession", "SnapshotUploaded"]

SessionState = Literal["waiting", "uploading", "finished", "expired"]


class SnapshotRequestBody(Shape, forbid_unknown_fields=True):
    """How many pictures the device takes and how far apart (SnapShotConfig SnapNum, Interval)."""

    count: Annotated[int, Meta(ge=1, le=10, description="Pictures to take, 1-10 (SnapNum).")] = 1
    interval: Annotated[int, Meta(ge=1, le=3600, description="Seconds between pictures (Interval).")] = 1


class SnapshotSession(Shape):
    """A snapshot session: what was asked, what the device uploaded, whether it said it finished.

    ``state``: ``waiting`` (nothing uploaded yet), ``uploading`` (some pictures in),
    ``finished`` (UploadSnapShotFinished received), ``expired`` (neither all uploads nor the
    notification came within ``snapshot.upload_timeout`` after the last picture was due).
    ``count`` and ``interval`` are null for a session only known from its stored pictures
    (after a restart).
    """

    session_id: str
    device_id: str
    channel_id: str
    state: SessionState
    count: int | None
    interval: int | None
    received: Annotated[int, Meta(ge=0, description="Pictures uploaded and stored.")]
    file_ids: Annotated[list[str], Meta(description="SnapShotFileIDs the device listed when it finished.")]
    created_at: OptTime
    expires_at: OptTime
    finished_at: OptTime
    snapshots_url: Annotated[str, Meta(description="The channel's list of uploaded snapshots.")]


class DeviceSnapshot(Shape):
    """One picture a device uploaded; ``url`` is its JPEG (bearer token, or `?token=` the API token)."""

    id: int
    device_id: str
    channel_id: str
    session_id: str
    seq: Annotated[int, Meta(ge=1, description="Order of the upload in its session (1: first taken).")]
    file_id: str
    size: Annotated[int, Meta(ge=0)]
    received_at: Time
    finished: Annotated[bool, Meta(description="The device sent UploadSnapShotFinished for its session.")]
    url: str


class DeviceSnapshotPage(Page):
    """Uploaded snapshots of a channel, newest first."""

    items: list[DeviceSnapshot]


class SnapshotUploaded(Shape):
    """What a device's upload is answered (201)."""

    id: int
    session_id: str
    seq: int
    file_id: str
    size: int


SESSION_EXAMPLE: Final = {
    "session_id": "5f0c1e9a7b3d4c2a8e6f1a2b3c4d5e6f", "device_id": "34020000001320000001",
    "channel_id": "34020000001310000001", "state": "waiting", "count": 2, "interval": 1, "received": 0,
    "file_ids": [], "created_at": "2026-12-05T10:00:00.000Z", "expires_at": "2026-12-05T10:05:01.000Z",
    "finished_at": None, "snapshots_url": "/api/v1/channels/34020000001310000001/device-snapshots",
}
SNAPSHOT_PAGE_EXAMPLE: Final = {
    "items": [{"id": 2, "device_id": "34020000001320000001", "channel_id": "34020000001310000001",
               "session_id": "5f0c1e9a7b3d4c2a8e6f1a2b3c4d5e6f", "seq": 2,
               "file_id": "3402000000131000000120261205100001", "size": 48213,
               "received_at": "2026-12-05T10:00:01.200Z", "finished": True,
               "url": "/api/v1/device-snapshots/2.jpg"}],
    "total": 2, "offset": 0, "limit": 1,
}
