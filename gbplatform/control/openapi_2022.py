"""The OpenAPI paths of the GB/T 28181-2022 PTZ routes (``gbplatform.control.http_2022``).

``gbplatform.api.openapi`` adds ``SHAPES`` to its components, ``paths()`` to
its paths and ``home_position_get()`` as the GET of the home-position path
(whose POST is the 2016 HomePosition control). The operations are plain JSON
referring to the document's shared ``components.responses``, so this module
imports nothing from the document that imports it.
"""

from __future__ import annotations

from typing import Any, Final

from gbplatform.api import openapi_parts as parts
from gbplatform.control import shapes as control
from gbplatform.control import shapes_2022 as shapes

__all__ = ["SHAPES", "home_position_get", "paths"]

SHAPES: Final = (shapes.PrecisePtzBody, shapes.PtzPositionResult, shapes.HomePositionState, shapes.CruiseTrackList,
                 shapes.CruiseTrackDetail, shapes.TargetTrackBody, control.CommandResult)


_schema = parts.schema_ref
_response = parts.response_ref


def _json(schema: str, description: str, example: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": _schema(schema)}
    if example is not None:
        content["examples"] = {"answer": {"value": example}}
    return {"description": description, "content": {"application/json": content}}


_CHANNEL_ID: Final = {"name": "channel_id", "in": "path", "required": True, "schema": {"type": "string"},
                      "description": "The channel's GB/T 28181 ID (from the device's catalog)."}
_NUMBER: Final = {"name": "number", "in": "path", "required": True,
                  "schema": {"type": "integer", "minimum": 0, "maximum": 255},
                  "description": "The track's number, as `GET .../cruise-tracks` lists it (the A.3.5 cruise group)."}
_NOT_2022: Final = parts.error("The device speaks GB/T 28181-2016, which lacks this command "
                               "(`unsupported_by_device_dialect`).")
_ERRORS: Final = {"401": _response("Unauthorized"), "404": _response("ChannelNotFound"),
                  "409": _response("DeviceOffline"), "422": _NOT_2022, "502": _response("DeviceRejected"),
                  "504": _response("DeviceTimeout")}
_NOTE: Final = ("Sent to the device that owns the channel, with the channel's ID as `DeviceID`. A GB/T 28181-2022 "
                "command: 422 for a device that speaks 2016, before anything is sent; 504 when the device does not "
                "answer within `sip.query_timeout`.")

_DEVICE: Final = "34020000001320000001"
_CHANNEL: Final = "34020000001310000001"


def _op(op_id: str, summary: str, description: str, ok: dict[str, Any], *,
        params: list[dict[str, Any]] | None = None, body: str | None = None,
        examples: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": ["control"], "summary": summary,
                          "description": f"{description} {_NOTE}", "parameters": [_CHANNEL_ID, *(params or [])]}
    responses = {"200": ok, **_ERRORS}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _schema(body),
            "examples": {name: {"value": value} for name, value in (examples or {}).items()}}}}
    if body is not None or params:
        responses = {"400": _response("BadRequest"), **responses}
    op["responses"] = dict(sorted(responses.items()))
    return op


def _command_answer(command: str) -> dict[str, Any]:
    return _json("CommandResult", "The device's Result (§A.2.6.2).",
                 {"device_id": _DEVICE, "target_id": _CHANNEL, "command": command, "result": "OK"})


def home_position_get() -> dict[str, Any]:
    """GET of ``/channels/{channel_id}/home-position``: HomePositionQuery."""
    return _op("homePositionQuery", "The camera's home (watch) position (HomePositionQuery)",
               "A HomePositionQuery (GB/T 28181-2022 §A.2.4.10); the device's `HomePosition` (§A.2.6.12): "
               "whether it is on, the idle seconds before the camera returns, the preset it returns to. "
               "`POST` of the same path sets it (HomePosition, 2016).",
               _json("HomePositionState", "The device's answer.", {
                   "device_id": _DEVICE, "channel_id": _CHANNEL, "result": "OK", "enabled": True,
                   "reset_time": 60, "preset_index": 1}))


def paths(prefix: str) -> dict[str, Any]:
    """The 2022 PTZ paths under ``prefix`` (``/api/v1``), the home-position GET aside."""
    channel = f"{prefix}/channels/{{channel_id}}"
    return {
        f"{channel}/ptz/precise": {
            "post": _op("ptzPrecise", "Move the camera to an absolute pan, tilt and zoom (PTZPreciseCtrl)",
                        "`<PTZPreciseCtrl>` in a DeviceControl (GB/T 28181-2022 §A.2.3.1) with the values given "
                        "(at least one): pan 0-360 and tilt -90 to 90 degrees, zoom ratio 1 and up.",
                        _command_answer("PTZPreciseCtrl"), body="PrecisePtzBody", examples={
                            "all": {"pan": 90.0, "tilt": -15.5, "zoom": 4.0}, "panOnly": {"pan": 180}}),
        },
        f"{channel}/ptz/position": {
            "get": _op("ptzPosition", "The camera's precise position and field of view (PTZPosition)",
                       "A PTZPosition query (GB/T 28181-2022 §A.2.4.13); the device's pan, tilt, zoom, field "
                       "angles and farthest view distance (§A.2.6.15). Also published as a `ptz` event.",
                       _json("PtzPositionResult", "The device's answer.", {
                           "device_id": _DEVICE, "channel_id": _CHANNEL, "result": "OK", "pan": 90.0,
                           "tilt": -15.5, "zoom": 4.0, "horizontal_field_angle": 15.2, "vertical_field_angle": 8.6,
                           "max_view_distance": 200.0})),
        },
        f"{channel}/cruise-tracks": {
            "get": _op("cruiseTracks", "The camera's cruise tracks (CruiseTrackListQuery)",
                       "A CruiseTrackListQuery (GB/T 28181-2022 §A.2.4.11); each track's number and name "
                       "(§A.2.6.13). Tracks are built with `POST .../cruise` (A.3.5).",
                       _json("CruiseTrackList", "The device's answer.", {
                           "device_id": _DEVICE, "channel_id": _CHANNEL, "result": "OK", "sum_num": 1,
                           "items": [{"number": 1, "name": "Cruise 1"}]})),
        },
        f"{channel}/cruise-tracks/{{number}}": {
            "get": _op("cruiseTrack", "One cruise track's points (CruiseTrackQuery)",
                       "A CruiseTrackQuery (GB/T 28181-2022 §A.2.4.12) with the track's `Number`; its points: "
                       "preset, stay time, speed (§A.2.6.14).",
                       _json("CruiseTrackDetail", "The device's answer.", {
                           "device_id": _DEVICE, "channel_id": _CHANNEL, "result": "OK", "number": 1,
                           "name": "Cruise 1", "sum_num": 2, "points": [
                               {"preset_index": 3, "stay_time": 10, "speed": 5},
                               {"preset_index": 4, "stay_time": 10, "speed": 5}]}),
                       params=[_NUMBER]),
        },
        f"{channel}/target-track": {
            "post": _op("targetTrack", "Start or stop target tracking (TargetTrack)",
                        "`<TargetTrack>Auto|Manual|Stop</TargetTrack>` in a DeviceControl (GB/T 28181-2022 "
                        "§A.2.3.1), with `DeviceID2` (`linked_device_id`) and `TargetArea` when given; `manual` "
                        "needs `target_area`, which must lie in the picture.",
                        _command_answer("TargetTrack"), body="TargetTrackBody", examples={
                            "auto": {"mode": "auto"},
                            "manual": {"mode": "manual", "linked_device_id": "34020000001310000002",
                                       "target_area": {"length": 1920, "width": 1080, "mid_x": 960, "mid_y": 540,
                                                       "length_x": 200, "length_y": 400}},
                            "stop": {"mode": "stop"}}),
        },
    }
