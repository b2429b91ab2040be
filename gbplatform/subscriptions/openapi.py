"""The OpenAPI paths of ``/api/v1/devices/{id}/subscriptions`` (GB/T 28181-2016 §9.11), for
``gbplatform.api.openapi``."""

from __future__ import annotations

from typing import Any

from gbplatform.subscriptions import shapes

__all__ = ["SHAPES", "paths"]

SHAPES: tuple[Any, ...] = (shapes.DeviceSubscriptions, shapes.SubscriptionsBody)

_DEVICE_ID = {"name": "device_id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "The device's GB/T 28181 ID."}


def _r(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _ok() -> dict[str, Any]:
    return {"description": "The device's subscriptions.", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/DeviceSubscriptions"},
        "examples": {"subscriptions": {"value": shapes.SUBSCRIPTIONS_EXAMPLE}}}}}


_NOTE = ("The platform subscribes (RFC 6665 SUBSCRIBE, `Event: Catalog` for the catalog, `presence` for alarms and "
         "positions, a MANSCDP `<Query>` body) while the device is registered, refreshes at 80 % of the granted "
         "duration, re-subscribes after a `terminated` NOTIFY (with a back-off) and at once when the device "
         "registers again. Catalog NOTIFYs change the channels (ON/OFF/VLOST/DEFECT set their status, ADD/UPDATE/"
         "DEL add, update, delete them); every state change is a `subscription` event on `/api/v1/events`.")


def paths(prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}/devices/{{device_id}}/subscriptions": {
            "get": {
                "operationId": "deviceSubscriptions", "tags": ["devices"],
                "summary": "The device's subscriptions: catalog, alarm, mobile position, PTZ position",
                "description": "Each kind: whether it is wanted, its state (active/pending/failed/off), the "
                               "device's last answer, when it expires and the last NOTIFY. " + _NOTE,
                "parameters": [_DEVICE_ID],
                "responses": {"200": _ok(), "401": _r("Unauthorized"), "404": _r("NotFound")},
            },
            "put": {
                "operationId": "setDeviceSubscriptions", "tags": ["devices"],
                "summary": "Turn the device's subscriptions on or off, set the position interval",
                "description": "Stored for the device and applied at once: a kind turned on is subscribed, one "
                               "turned off is unsubscribed (`Expires: 0`); a new `position_interval` refreshes the "
                               "MobilePosition subscription with it. `null` goes back to the `[subscriptions]` "
                               "default. A device that is not registered is subscribed when it registers. "
                               "`ptz_position: true` on a GB/T 28181-2016 device is 422. " + _NOTE,
                "parameters": [_DEVICE_ID],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SubscriptionsBody"},
                    "examples": {
                        "catalogAndPositions": {"value": {"catalog": True, "alarm": False, "mobile_position": True,
                                                          "position_interval": 5}},
                        "backToDefaults": {"value": {"catalog": None, "alarm": None, "mobile_position": None,
                                                     "ptz_position": None, "position_interval": None}},
                    }}}},
                "responses": {
                    "200": _ok(), "400": _r("BadRequest"), "401": _r("Unauthorized"), "404": _r("NotFound"),
                    "422": {"description": "PTZPosition asked of a GB/T 28181-2016 device "
                                           "(`unsupported_by_device_dialect`).",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            },
        },
    }
