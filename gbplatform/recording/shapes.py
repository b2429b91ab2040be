"""API shapes of recording: plans, policies, the timeline, storage and downloads.

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import NO_CONTROL, OptStr, OptTime, Shape, Time

__all__ = [
    "RECORD_MODES",
    "DownloadList",
    "RecordPlan",
    "RecordPlanBody",
    "RecordPlanList",
    "RecordPolicy",
    "RecordPolicyBody",
    "RecordSegment",
    "RecordTimeline",
    "StorageState",
]

RECORD_MODES: Final = ("off", "continuous", "plan")
RecordMode = Literal["off", "continuous", "plan"]
INT64_MAX: Final = 2**63 - 1
MAX_RETENTION_DAYS: Final = 36500
_HHMM: Final = "^([01][0-9]|2[0-4]):[0-5][0-9]$"


class ScheduleWindow(Shape):
    weekday: Annotated[int, Meta(ge=0, le=6, description="0 Monday … 6 Sunday.")]
    start: Annotated[str, Meta(pattern=_HHMM, examples=["08:00"])]
    end: Annotated[str, Meta(pattern=_HHMM, examples=["24:00"])]


class RecordPlanBody(Shape, forbid_unknown_fields=True):
    """POST needs both fields; PUT changes the ones given."""

    name: Annotated[str, Meta(max_length=128, pattern=NO_CONTROL)] | UnsetType = UNSET
    # Checked by recording.schedule.parse_schedule (its messages say which window is wrong).
    schedule: list[ScheduleWindow] | UnsetType = UNSET


class RecordPolicyBody(Shape, forbid_unknown_fields=True):
    mode: RecordMode
    plan_id: Annotated[Annotated[int, Meta(ge=1, le=INT64_MAX)] | None, Meta(description="Required with mode plan.")
                       ] = None
    retention_days: Annotated[
        Annotated[int, Meta(ge=0, le=MAX_RETENTION_DAYS)] | None,
        Meta(description="Days this channel's footage is kept (0: forever); null: record.retention_days."),
    ] = None


POLICY_MESSAGES: Final = {
    "mode": f"must be one of {', '.join(RECORD_MODES)}",
    "plan_id": "must be a plan id (a positive integer) or null",
    "retention_days": f"must be an integer 0-{MAX_RETENTION_DAYS} (0: forever) or null",
}


class RecordPlan(Shape):
    id: int
    name: str
    schedule: list[ScheduleWindow]
    created_at: Time
    updated_at: Time


class RecordPlanList(Shape):
    items: list[RecordPlan]


class RecordingStatus(Shape):
    """Live recording state of a channel while the manager records it."""

    channel_id: str
    device_id: OptStr
    recording: Annotated[bool, Meta(description="Its live stream is playing.")]
    segment: Annotated[OptStr, Meta(description="Key of the segment being written.")]
    dropped_frames: int
    error: OptStr


class RecordPolicy(Shape):
    channel_id: str
    mode: RecordMode
    plan_id: int | None
    retention_days: int | None
    updated_at: OptTime
    status: RecordingStatus | None


class RecordSegment(Shape):
    id: int
    start: Time
    end: OptTime
    size: int
    backend: Literal["local", "s3"]
    state: Literal["open", "closed", "uploaded"]
    local: bool
    has_audio: bool
    keyframes: int


class Span(Shape):
    start: Time
    end: Time
    seconds: float


class RecordUrls(Shape):
    """Each carries a playback token for this channel's recordings (`&token=`), valid for api.play_token_ttl:
    play them as given."""

    hls: str
    mp4: str
    rtsp: Annotated[str, Meta(extra_json_schema={"format": "uri"},
                              description="RTSP VOD (Range/Scale); present when media.rtsp_port is set.")
                    ] | UnsetType = UNSET


class Interval(Span):
    urls: RecordUrls


class RecordTimeline(Shape):
    channel_id: str
    date: Annotated[str, Meta(extra_json_schema={"format": "date"})]
    start: Time
    end: Time
    recorded_seconds: float
    intervals: list[Interval]
    gaps: list[Span]
    segments: list[RecordSegment]


class StorageBackend(Shape, kw_only=True):
    """A storage backend; the ``local`` one has the path, disk and write-queue fields, ``s3`` the bucket and
    upload ones."""

    name: Literal["local", "s3"]
    healthy: bool
    used_bytes: int
    segments: int
    path: str | UnsetType = UNSET
    error: OptStr | UnsetType = UNSET
    free_bytes: int | None | UnsetType = UNSET
    total_bytes: int | None | UnsetType = UNSET
    queue_bytes: int | UnsetType = UNSET
    queue_frames: int | UnsetType = UNSET
    queue_limit: int | UnsetType = UNSET
    dropped_frames: int | UnsetType = UNSET
    written_bytes: int | UnsetType = UNSET
    write_errors: int | UnsetType = UNSET
    bucket: str | UnsetType = UNSET
    upload_backlog: int | UnsetType = UNSET
    uploaded: int | UnsetType = UNSET
    uploaded_bytes: int | UnsetType = UNSET
    upload_failures: int | UnsetType = UNSET


class Retention(Shape):
    days: Annotated[int, Meta(description="record.retention_days (0: forever).")]
    quota_bytes: Annotated[int, Meta(description="record.quota_bytes (0: no quota).")]
    min_free_bytes: Annotated[int, Meta(description="record.min_free_bytes.")]
    deleted_segments: int
    deleted_bytes: int


class Recovery(Shape):
    """What crash recovery at start found."""

    repaired: Annotated[int, Meta(description="Segments left open by a crash, closed with their torn bytes cut.")]
    adopted: Annotated[int, Meta(description="Segment files without a row, indexed again.")]
    unindexed: Annotated[list[str], Meta(description="Files not named as this platform names recordings "
                                                     "(left alone, not indexed).")]


class StorageState(Shape):
    ready: Annotated[bool, Meta(description="Crash recovery at start has finished.")]
    backend: Literal["local", "s3"]
    segment_seconds: float
    backends: list[StorageBackend]
    channels: list[RecordingStatus]
    retention: Retention
    recovery: Recovery


class Download(Shape):
    id: int
    channel_id: str
    start: Time
    end: Time
    state: Literal["running", "done", "failed", "cancelled"]
    total_seconds: float
    done_seconds: float
    percent: float
    bytes: int
    error: OptStr


class DownloadList(Shape):
    items: list[Download]
