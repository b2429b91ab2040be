"""The OpenAPI paths of the device-maintenance routes (``gbplatform.control.http_maintenance``).

``gbplatform.api.openapi`` adds ``SHAPES`` to its components and ``paths()``
to its paths; the operations are written as plain JSON here (references to the
document's shared ``components.responses``), so this module imports nothing
from the document that imports it.
"""

from __future__ import annotations

from typing import Any, Final

from gbplatform.api import openapi_parts as parts
from gbplatform.control import shapes as control
from gbplatform.control import shapes_maintenance as shapes

__all__ = ["SHAPES", "paths"]

SHAPES: Final = (shapes.SdCardList, shapes.UpgradeBody, shapes.UpgradeState, control.CommandResult)


_schema = parts.schema_ref
_response = parts.response_ref


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _schema(schema)}}}


_error = parts.error


_DEVICE_ID: Final = {"name": "device_id", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "The device's GB/T 28181 ID."}
_INDEX: Final = {"name": "index", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 0, "maximum": 255},
                 "description": "The card's `ID`, as `GET .../sdcards` lists it."}
_NOT_2022: Final = _error("The device speaks GB/T 28181-2016, which lacks this command "
                          "(`unsupported_by_device_dialect`).")
_LIVE: Final = {"404": _response("NotFound"), "409": _response("DeviceOffline"), "422": _NOT_2022,
                "502": _response("DeviceRejected"), "504": _response("DeviceTimeout"),
                "401": _response("Unauthorized")}
_NOTE: Final = ("A GB/T 28181-2022 command: 422 for a device that speaks 2016; 504 when the device does not "
                "answer within `sip.query_timeout`.")


def _op(op_id: str, summary: str, description: str, responses: dict[str, Any], *,
        params: list[dict[str, Any]] | None = None, body: str | None = None,
        examples: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "tags": ["control"], "summary": summary,
                          "description": description, "parameters": [_DEVICE_ID, *(params or [])]}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _schema(body),
            "examples": {name: {"value": value} for name, value in (examples or {}).items()}}}}
    if body is not None or params:
        responses = {"400": _response("BadRequest"), **responses}
    op["responses"] = dict(sorted(responses.items()))
    return op


def paths(prefix: str) -> dict[str, Any]:
    """The maintenance paths under ``prefix`` (``/api/v1``)."""
    device = f"{prefix}/devices/{{device_id}}"
    return {
        f"{device}/sdcards": {
            "get": _op("listSdCards", "The device's SD cards and their status (SDCardStatus)",
                       "An SDCardStatus query (GB/T 28181-2022 §A.2.4); each card's status (formatted, "
                       "unformatted, formatting with its progress, abnormal), capacity and free space as the "
                       f"device answers (§A.2.6). {_NOTE}",
                       {"200": _json("SdCardList", "The device's answer."), **_LIVE}),
        },
        f"{device}/sdcards/{{index}}/format": {
            "post": _op("formatSdCard", "Format one of the device's SD cards (FormatSDCard)",
                        "`<FormatSDCard>index</FormatSDCard>` in a DeviceControl (GB/T 28181-2022 §A.2.3.1); the "
                        "answer is the device's `Result`. The format then runs on the device: the card shows "
                        f"`formatting` with its `format_progress` in `GET .../sdcards`. {_NOTE}",
                        {"200": _json("CommandResult", "The device's Result."), **_LIVE}, params=[_INDEX]),
        },
        f"{device}/upgrade": {
            "post": _op("startUpgrade", "Upgrade the device's firmware (DeviceUpgrade)",
                        "A DeviceControl `DeviceUpgrade` (GB/T 28181-2022 §A.2.3.1) with a new `SessionID`: the "
                        "device downloads `file_url` itself and later sends DeviceUpgradeResult (§A.2.5), which "
                        "ends the session `done` (the device's DeviceInfo is then asked again, so its firmware "
                        "is the new one) or `failed` with its reason; without a result within "
                        "`control.upgrade_timeout` it is `failed`. 202 once the device accepted it; 200 with "
                        "state `failed` when it answered ERROR. Each state change is an `upgrade` event. "
                        f"{_NOTE}",
                        {"202": _json("UpgradeState", "The device accepted the upgrade: `upgrading`."),
                         "200": _json("UpgradeState", "The device refused it: `failed`, with the reason."),
                         **_LIVE,
                         "409": _error("The device is not registered (`device_offline`), or an upgrade of it is "
                                       "still running (`conflict`).")},
                        body="UpgradeBody", examples={
                            "http": {"firmware": "V5.7.3", "file_url": "http://192.0.2.10/firmware/ipc-v5.7.3.bin",
                                     "manufacturer": "Hikvision"},
                            "ftp": {"firmware": "V2.1.0", "file_url": "ftp://fw:secret@192.0.2.10/nvr-2.1.0.bin"}}),
            "get": _op("getUpgrade", "The device's latest firmware upgrade and its state",
                       "The latest upgrade session started since the platform started (kept in memory, bounded), "
                       "whatever the device's state now.",
                       {"200": _json("UpgradeState", "The latest upgrade."),
                        "404": _error("No such device, or no upgrade of it known (`not_found`)."),
                        "401": _response("Unauthorized")}),
        },
    }
