"""API shapes of alarms and mobile positions (GB/T 28181-2016 §9.4, §9.10, §A.2.5.5, §A.2.5.6).

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import MAX_PAGE_LIMIT, OptTime, Shape, Time

__all__ = [
    "ALARM_EXAMPLE",
    "Alarm",
    "AlarmPage",
    "AlarmPurgeResult",
    "AlarmQueryBody",
    "AlarmQueryResult",
    "AlarmSettings",
    "AlarmSettingsBody",
    "GeoLineString",
    "GeoPoint",
    "Position",
    "PositionList",
    "Track",
    "TrackFeature",
    "TrackProperties",
]

MAX_TRACK_LIMIT: Final = 10_000
DEFAULT_TRACK_LIMIT: Final = 1_000

Priority = Annotated[int, Meta(ge=1, le=4, description="AlarmPriority (§A.2.5.5): 1 first-level (most urgent) to 4.")]
Method = Annotated[int, Meta(ge=1, le=7, description=(
    "AlarmMethod (§A.2.5.5): 1 phone, 2 device, 3 SMS, 4 GPS, 5 video analysis, 6 device fault, 7 other."))]

ALARM_EXAMPLE: Final[dict[str, Any]] = {
    "id": 42, "device_id": "34020000001320000001", "channel_id": "34020000001340000001", "priority": 1,
    "method": 5, "type": 2, "event_type": 1, "time": "2026-12-05T08:30:00Z",
    "received_at": "2026-12-05T08:30:00.412Z", "longitude": 116.397, "latitude": 39.909,
    "description": "motion detected", "source": "notify", "snapshot_url": "/api/v1/alarms/42/snapshot.jpg",
    "snapshot_error": None,
}


class Alarm(Shape):
    """One alarm: ``device_id`` the device that reported it, ``channel_id`` its source (the alarm's
    DeviceID: the device itself or one of its channels)."""

    id: int
    device_id: str
    channel_id: str
    priority: Annotated[int | None, Meta(description="1-4; null when the device sent none or nonsense.")]
    method: Annotated[int | None, Meta(description="1-7 (AlarmMethod).")]
    type: Annotated[int | None, Meta(description="Info/AlarmType: its meaning depends on the method.")]
    event_type: Annotated[int | None, Meta(description="Info/AlarmTypeParam/EventType (video alarms: 1 start, 2 end).")]
    time: Annotated[OptTime, Meta(description="The device's AlarmTime, in UTC (read in record.timezone).")]
    received_at: Time
    longitude: float | None
    latitude: float | None
    description: str | None
    source: Annotated[str, Meta(description="`notify` (reported) or `query` (answered to the Alarm Query).")]
    snapshot_url: Annotated[str | None, Meta(description="The JPEG taken on the alarm, when there is one.")]
    snapshot_error: Annotated[str | None, Meta(description="Why a snapshot that was asked for is missing.")]


class AlarmPage(Shape):
    """Alarms, newest received first; ``next_cursor`` (an id) as ``cursor`` gives the next page, stable while
    new alarms arrive."""

    items: list[Alarm]
    total: Annotated[int, Meta(ge=0, description="Alarms matching the filters.")]
    offset: Annotated[int, Meta(ge=0)]
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE_LIMIT)]
    next_cursor: int | None


class AlarmPurgeResult(Shape):
    deleted: Annotated[int, Meta(ge=0, description="Alarms deleted, with their snapshots.")]


class AlarmQueryBody(Shape, forbid_unknown_fields=True):
    """The Alarm Query's conditions (§A.2.4.5); all optional."""

    start_priority: Priority | UnsetType = UNSET
    end_priority: Priority | UnsetType = UNSET
    method: Annotated[str, Meta(pattern=r"^[1-7](/[1-7])*$", description=(
        "AlarmMethod(s), several joined by `/` (`1/2`)."), examples=["5"])] | UnsetType = UNSET
    type: Annotated[int, Meta(ge=0, le=9999, description="AlarmType.")] | UnsetType = UNSET
    start: Annotated[Time, Meta(description="ISO 8601 (naive: UTC).")] | UnsetType = UNSET
    end: Annotated[Time, Meta(description="ISO 8601 (naive: UTC).")] | UnsetType = UNSET


class AlarmQueryResult(Shape):
    """The device's answer to the Alarm Query and the alarms stored from it."""

    device_id: str
    result: str | None
    sum_num: Annotated[int, Meta(description="SumNum: how many alarms the device said it has.")]
    complete: Annotated[bool, Meta(description="false: fewer items than SumNum came before sip.query_timeout.")]
    items: list[Alarm]


class AlarmSettingsBody(Shape, forbid_unknown_fields=True):
    snapshot: Annotated[bool | None, Meta(description="Snapshot on alarm; null: the default (alarms.snapshot).")]


class AlarmSettings(Shape):
    channel_id: str
    snapshot: Annotated[bool | None, Meta(description="The channel's own setting; null: none.")]
    effective: Annotated[bool, Meta(description="What applies: the setting, else alarms.snapshot.")]


class Position(Shape):
    """One mobile position (§A.2.5.6) of the device or one of its channels (``channel_id``)."""

    device_id: str
    channel_id: str
    time: Annotated[Time, Meta(description="The device's Time in UTC (received_at when it sent none).")]
    received_at: Time
    longitude: float
    latitude: float
    speed: Annotated[float | None, Meta(description="km/h.")]
    direction: Annotated[float | None, Meta(description="Degrees clockwise from north.")]
    altitude: Annotated[float | None, Meta(description="Metres.")]


class PositionList(Shape):
    """The latest position of each source of the device (itself, its channels)."""

    device_id: str
    items: list[Position]


class GeoLineString(Shape, tag_field="type", tag="LineString"):
    """RFC 7946 §3.1.4: ``[longitude, latitude]`` positions in order."""

    coordinates: list[list[float]]


class GeoPoint(Shape, tag_field="type", tag="Point"):
    """RFC 7946 §3.1.2."""

    coordinates: list[float]


class TrackProperties(Shape):
    """A line's properties list one value per point, in order (``times``...); a point's its own."""

    device_id: str
    channel_id: str
    times: list[str] | UnsetType = UNSET
    speeds: list[float | None] | UnsetType = UNSET
    directions: list[float | None] | UnsetType = UNSET
    altitudes: list[float | None] | UnsetType = UNSET
    time: str | UnsetType = UNSET
    speed: float | None | UnsetType = UNSET
    direction: float | None | UnsetType = UNSET
    altitude: float | None | UnsetType = UNSET


class TrackFeature(Shape, tag_field="type", tag="Feature"):
    geometry: GeoLineString | GeoPoint
    properties: TrackProperties


class Track(Shape, tag_field="type", tag="FeatureCollection"):
    """An RFC 7946 FeatureCollection: per source a LineString of its track (a Point when it has one
    position), plus a Point per position with ``points=true``."""

    features: list[TrackFeature]
    total: Annotated[int, Meta(description="Positions in the range; above `limit` per source the line is thinned.")]


def example_track() -> dict[str, Any]:
    """The OpenAPI example of ``Track``."""
    example: dict[str, Any] = msgspec.to_builtins(Track(features=[TrackFeature(
        geometry=GeoLineString(coordinates=[[116.397, 39.909], [116.398, 39.910]]),
        properties=TrackProperties(device_id="34020000001320000001", channel_id="34020000001320000001",
                                   times=["2026-12-05T08:30:00Z", "2026-12-05T08:30:05Z"], speeds=[30.0, 32.5],
                                   directions=[45.0, 45.0], altitudes=[None, None]),
    )], total=2))
    return example
