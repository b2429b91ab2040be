"""The API setting the GB/T 28181-2022 configuration types: ``PUT /api/v1/devices/<id>/config/<kind>``
(DeviceConfig, §A.2.3.2), one route per type of ``config2022.KINDS``.

``Config2022Routes`` is mounted into the root API (``gbplatform.api.app``).
Each route checks its body (400 naming the field), has
``ControlService.configure`` send the DeviceConfig (404 unknown device, 409
offline, 422 for a GB/T 28181-2016 device, 504 without an answer within
``sip.query_timeout``) and answers the device's ``Result`` (§A.2.6.3). A
configuration the device accepted is published on the event bus (kind
``device``, ``event`` ``configured``). Reading them back is
``GET /api/v1/devices/<id>/config?type=...`` (``gbplatform.control.http``).
"""

from __future__ import annotations

from klein import Klein
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated
from gbplatform.control import shapes
from gbplatform.control.config2022 import KINDS

__all__ = ["Config2022Routes"]


class Config2022Routes(Routes):
    """``/api/v1/devices/<id>/config/video-attribute``, ``record-plan``, ``alarm-record``, ``picture-mask``,
    ``frame-mirror``, ``alarm-report``, ``osd``."""

    app = Klein()

    async def _configure(self, request: Request, device_id: str, kind: str) -> bytes:
        spec = KINDS[kind]
        value = spec.build(schemas.parse_body(self._body(request), spec.body))
        answer = await self.platform.control.configure(device_id, **{spec.attr: value})
        if answer.result == "OK":
            self.platform.bus.publish("device", device_id=device_id, event="configured",
                                      config_type=spec.config_type)
        return self._json(request, shapes.CommandResult(device_id=answer.device_id, target_id=answer.target_id,
                                                        command=answer.command, result=answer.result))

    @app.route("/api/v1/devices/<device_id>/config/video-attribute", methods=["PUT"])
    @authenticated
    async def video_attribute(self, request: Request, device_id: str) -> bytes:
        return await self._configure(request, device_id, "video-attribute")

    @app.route("/api/v1/devices/<device_id>/config/record-plan", methods=["PUT"])
    @authenticated
    async def record_plan(self, request: Request, device_id: str) -> bytes:
        return await self._configure(request, device_id, "record-plan")

    @app.route("/api/v1/devices/<device_id>/config/alarm-record", methods=["PUT"])
    @authenticated
    async def alarm_record(self, request: Request, device_id: str) -> bytes:
        return await self._configure(request, device_id, "alarm-record")

    @app.route("/api/v1/devices/<device_id>/config/picture-mask", methods=["PUT"])
    @authenticated
    async def picture_mask(self, request: Request, device_id: str) -> bytes:
        return await self._configure(request, device_id, "picture-mask")

    @app.route("/api/v1/devices/<device_id>/config/frame-mirror", methods=["PUT"])
    @authenticated
    async def frame_mirror(self, request: Request, device_id: str) -> bytes:
        return await self._configure(request, device_id, "frame-mirror")

    @app.route("/api/v1/devices/<device_id>/config/alarm-report", methods=["PUT"])
    @authenticated
    async def alarm_report(self, request: Request, device_id: str) -> bytes:
        return await self._configure(request, device_id, "alarm-report")

    @app.route("/api/v1/devices/<device_id>/config/osd", methods=["PUT"])
    @authenticated
    async def osd(self, request: Request, device_id: str) -> bytes:
        return await self._configure(request, device_id, "osd")
