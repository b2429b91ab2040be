"""The OpenAPI paths of alarms and mobile positions (``gbplatform.alarms.http``), merged by
``gbplatform.api.openapi.build_openapi``; the components come from ``shapes`` like every other."""

from __future__ import annotations

from typing import Any, Final

from gbplatform.alarms import shapes
from gbplatform.api import openapi_parts as parts
from gbplatform.api.schemas import DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT

__all__ = ["SHAPES", "paths"]

SHAPES: Final = (shapes.Alarm, shapes.AlarmPage, shapes.AlarmPurgeResult, shapes.AlarmQueryBody,
                 shapes.AlarmQueryResult, shapes.AlarmSettingsBody, shapes.AlarmSettings, shapes.PositionList,
                 shapes.Track)

_DEVICE_ID = {"name": "device_id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "The device's GB/T 28181 ID."}
_CHANNEL_ID = {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "The channel's GB/T 28181 ID (from the device's catalog), or a device's."}
_ALARM_ID = {"name": "alarm_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1},
             "description": "The alarm's `id`."}
_TIME = {"type": "string", "format": "date-time"}
_TIME_NOTE = "ISO 8601 (naive: UTC) or epoch seconds."


_ref = parts.ref


def _json(schema: str, description: str, example: Any) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("schemas", schema), "example": example}}}


_error = parts.error


_query = parts.query


def _op(op_id: str, summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        description: str = "", body: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": ["alarms"], "summary": summary}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _ref("schemas", body[0]),
            "examples": {name: {"value": value} for name, value in body[1].items()}}}}
    responses = {**responses, "401": _ref("responses", "Unauthorized")}
    if params or body:
        responses["400"] = _ref("responses", "BadRequest")
    op["responses"] = dict(sorted(responses.items()))
    return op


_PAGE_EXAMPLE: Final = {"items": [shapes.ALARM_EXAMPLE], "total": 1, "offset": 0, "limit": DEFAULT_PAGE_LIMIT,
                        "next_cursor": None}
_POSITION_EXAMPLE: Final = {
    "device_id": "34020000001320000001", "items": [{
        "device_id": "34020000001320000001", "channel_id": "34020000001320000001",
        "time": "2026-12-05T08:30:05.000Z", "received_at": "2026-12-05T08:30:05.120Z", "longitude": 116.398,
        "latitude": 39.91, "speed": 32.5, "direction": 45.0, "altitude": None}]}


def paths(prefix: str) -> dict[str, Any]:
    """The paths of ``gbplatform.alarms.http``."""
    device = f"{prefix}/devices/{{device_id}}"
    return {
        f"{prefix}/alarms": {
            "get": _op(
                "listAlarms", "Alarms devices reported or answered, newest received first", {
                    "200": _json("AlarmPage", "One page", _PAGE_EXAMPLE)},
                params=[
                    _query("device_id", {"type": "string"}, "The device that reported them."),
                    _query("channel_id", {"type": "string"}, "Their source (the alarm's DeviceID)."),
                    _query("start", _TIME, f"Received at or after. {_TIME_NOTE}"),
                    _query("end", _TIME, f"Received before. {_TIME_NOTE}"),
                    _query("priority", {"type": "integer", "minimum": 1, "maximum": 4}, "AlarmPriority."),
                    _query("method", {"type": "integer", "minimum": 1, "maximum": 7}, "AlarmMethod."),
                    _query("type", {"type": "integer", "minimum": 0}, "Info/AlarmType."),
                    _query("cursor", {"type": "integer", "minimum": 1},
                           "The previous page's `next_cursor`: alarms older than that one."),
                    _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "Items to skip."),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT,
                                     "default": DEFAULT_PAGE_LIMIT}, "Page size."),
                ],
                description="Alarms are stored as they arrive (Notify Alarm, GB/T 28181-2016 §9.4, §A.2.5.5, by "
                            "MESSAGE or a subscription's NOTIFY) and from the Alarm Query. Each is also an "
                            "`alarm` event on `/api/v1/events`."),
            "delete": _op(
                "purgeAlarms", "Delete the alarms received before a time, with their snapshots", {
                    "200": _json("AlarmPurgeResult", "How many were deleted", {"deleted": 120})},
                params=[_query("before", _TIME, f"Delete alarms received before this. {_TIME_NOTE}", required=True)],
                description="Retention does this every hour for alarms older than `alarms.retention_days`."),
        },
        f"{prefix}/alarms/{{alarm_id}}": {
            "get": _op("getAlarm", "One alarm", {"200": _json("Alarm", "The alarm", shapes.ALARM_EXAMPLE),
                                                 "404": _error("No such alarm (`not_found`).")},
                       params=[_ALARM_ID]),
        },
        f"{prefix}/alarms/{{alarm_id}}/snapshot.jpg": {
            "get": _op(
                "getAlarmSnapshot", "The snapshot taken on the alarm", {
                    "200": {"description": "The JPEG.",
                            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                    "404": _error("No such alarm, no snapshot of it (`message` says why one failed), or its file "
                                  "is gone (`not_found`).")},
                params=[_ALARM_ID, _query("token", {"type": "string"},
                                          "The API token, for an `<img>` that cannot send `Authorization` "
                                          "(RFC 6750 §2.3).")],
                description="Taken when snapshot-on-alarm is on for the alarm's channel "
                            "(`PUT /api/v1/channels/{channel_id}/alarm-settings`, else `alarms.snapshot`)."),
        },
        f"{device}/alarms/query": {
            "post": _op(
                "queryDeviceAlarms", "Ask the device for its alarm history (Alarm Query)", {
                    "200": _json("AlarmQueryResult", "What it answered, stored", {
                        "device_id": "34020000001320000001", "result": "OK", "sum_num": 1, "complete": True,
                        "items": [{**shapes.ALARM_EXAMPLE, "source": "query", "snapshot_url": None}]}),
                    "404": _ref("responses", "NotFound"), "409": _ref("responses", "DeviceOffline"),
                    "502": _ref("responses", "DeviceRejected"), "504": _ref("responses", "DeviceTimeout")},
                params=[_DEVICE_ID],
                body=("AlarmQueryBody", {"all": {}, "urgentVideo": {
                    "start_priority": 1, "end_priority": 2, "method": "5", "start": "2026-12-01T00:00:00Z",
                    "end": "2026-12-05T00:00:00Z"}}),
                description="A Query Alarm (GB/T 28181-2016 §A.2.4.5) to the device; its answer (one or several "
                            "MESSAGEs, `SumNum`/`AlarmList`, §9.5) is stored (`source` `query`; an alarm already "
                            "stored from an earlier query is not stored twice). 504 when nothing comes within "
                            "`sip.query_timeout`; `complete` false when only part did."),
        },
        f"{device}/position": {
            "get": _op("devicePosition", "The latest mobile position of the device and of each of its channels", {
                "200": _json("PositionList", "Latest per source", _POSITION_EXAMPLE),
                "404": _ref("responses", "NotFound")}, params=[_DEVICE_ID],
                description="From the MobilePosition notifications it sent (GB/T 28181-2016 §9.10, §A.2.5.6)."),
        },
        f"{device}/track": {
            "get": _op(
                "deviceTrack", "The device's positions in a time range as GeoJSON", {
                    "200": _json("Track", "An RFC 7946 FeatureCollection", shapes.example_track()),
                    "404": _ref("responses", "NotFound")},
                params=[_DEVICE_ID,
                        _query("start", _TIME, f"From (the device's Time). {_TIME_NOTE}", required=True),
                        _query("end", _TIME, f"Until, excluded. {_TIME_NOTE}", required=True),
                        _query("channel_id", {"type": "string"}, "Only this source; default every source."),
                        _query("limit", {"type": "integer", "minimum": 2, "maximum": shapes.MAX_TRACK_LIMIT,
                                         "default": shapes.DEFAULT_TRACK_LIMIT},
                               "Most points per source: a longer track is thinned evenly, its last point kept."),
                        _query("points", {"type": "boolean", "default": False}, "Add a Point per position.")],
                description="Per source a LineString (`[longitude, latitude]`) with per-point `times`, "
                            "`speeds`, `directions`, `altitudes` in its properties; a source with one position is "
                            "a Point."),
        },
        f"{prefix}/channels/{{channel_id}}/alarm-settings": {
            "put": _op(
                "setAlarmSettings", "Snapshot on the channel's alarms: on, off, or the default", {
                    "200": _json("AlarmSettings", "The setting and what applies",
                                 {"channel_id": "34020000001340000001", "snapshot": True, "effective": True}),
                    "404": _ref("responses", "ChannelNotFound")},
                params=[_CHANNEL_ID],
                body=("AlarmSettingsBody", {"on": {"snapshot": True}, "off": {"snapshot": False},
                                            "default": {"snapshot": None}}),
                description="On: every alarm whose source is this channel gets a snapshot of it (its live stream "
                            "is started if none runs), kept with the alarm. null: `alarms.snapshot` applies."),
        },
    }
