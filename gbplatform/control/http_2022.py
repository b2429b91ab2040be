"""The API of the GB/T 28181-2022 PTZ commands: precise PTZ, PTZ position, home position query,
cruise tracks and target tracking of a channel (§A.2.3.1, §A.2.4.10-13).

``Ptz2022Routes`` is mounted into the root API (``gbplatform.api.app``) next
to ``ControlRoutes``. Each route parses its body (``shapes_2022``) and has
``Ptz2022Service`` send the command to the channel's device; the answer is
the device's Result or data. Errors: 400 naming the field, 404 unknown
channel, 409 device offline, 422 the device speaks GB/T 28181-2016, 504 no
answer within ``sip.query_timeout``.
"""

from __future__ import annotations

from klein import Klein
from msgspec import UNSET
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, Web, authenticated
from gbplatform.control import shapes
from gbplatform.control import shapes_2022 as shapes22
from gbplatform.control.ptz2022 import Ptz2022Service
from gbplatform.control.service import CommandAnswer
from sip import manscdp

__all__ = ["Ptz2022Routes"]

_MODES = {"auto": manscdp.TargetTrackMode.AUTO, "manual": manscdp.TargetTrackMode.MANUAL,
          "stop": manscdp.TargetTrackMode.STOP}


def _command_result(answer: CommandAnswer) -> shapes.CommandResult:
    return shapes.CommandResult(device_id=answer.device_id, target_id=answer.target_id, command=answer.command,
                                result=answer.result)


def target_area(body: shapes22.TargetTrackBody) -> manscdp.TargetArea | None:
    """The TargetArea of ``body``: required for a manual track, and inside the picture (400 naming
    ``target_area``, the message naming the value, as for a nested field msgspec refuses)."""
    if body.target_area is UNSET:
        if body.mode == "manual":
            raise schemas.ValidationError("target_area", "is required for manual tracking")
        return None
    box = body.target_area
    for name, value, limit in (("mid_x", box.mid_x, box.length), ("length_x", box.length_x, box.length),
                               ("mid_y", box.mid_y, box.width), ("length_y", box.length_y, box.width)):
        if value > limit:
            raise schemas.ValidationError("target_area", f"{name} lies outside the picture (length x width)")
    return manscdp.TargetArea(length=box.length, width=box.width, mid_x=box.mid_x, mid_y=box.mid_y,
                              length_x=box.length_x, length_y=box.length_y)


class Ptz2022Routes(Routes):
    """``/api/v1/channels/<id>/ptz/precise``, ``ptz/position``, ``home-position`` (GET),
    ``cruise-tracks``, ``cruise-tracks/<number>``, ``target-track``."""

    app = Klein()

    def __init__(self, web: Web) -> None:
        super().__init__(web)
        self.ptz2022 = Ptz2022Service(self.platform.control, self.platform.bus)

    @app.route("/api/v1/channels/<channel_id>/ptz/precise", methods=["POST"])
    @authenticated
    async def ptz_precise(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes22.PrecisePtzBody)
        pan, tilt, zoom = (None if v is UNSET else v for v in (body.pan, body.tilt, body.zoom))
        if pan is None and tilt is None and zoom is None:
            raise schemas.ValidationError("pan", "give at least one of pan, tilt, zoom")
        answer = await self.ptz2022.precise(channel_id, pan=pan, tilt=tilt, zoom=zoom)
        return self._json(request, _command_result(answer))

    @app.route("/api/v1/channels/<channel_id>/ptz/position", methods=["GET"])
    @authenticated
    async def ptz_position(self, request: Request, channel_id: str) -> bytes:
        answer = await self.ptz2022.position(channel_id)
        p = answer.position
        return self._json(request, shapes22.PtzPositionResult(
            device_id=answer.device_id, channel_id=answer.channel_id, result=answer.result, pan=p.pan, tilt=p.tilt,
            zoom=p.zoom, horizontal_field_angle=p.horizontal_field_angle, vertical_field_angle=p.vertical_field_angle,
            max_view_distance=p.max_view_distance))

    @app.route("/api/v1/channels/<channel_id>/home-position", methods=["GET"])
    @authenticated
    async def home_position_query(self, request: Request, channel_id: str) -> bytes:
        answer = await self.ptz2022.home_position(channel_id)
        home = answer.home
        return self._json(request, shapes22.HomePositionState(
            device_id=answer.device_id, channel_id=answer.channel_id, result=answer.result,
            enabled=None if home is None else home.is_enabled,
            reset_time=None if home is None else home.reset_time,
            preset_index=None if home is None else home.preset_index))

    @app.route("/api/v1/channels/<channel_id>/cruise-tracks", methods=["GET"])
    @authenticated
    async def cruise_tracks(self, request: Request, channel_id: str) -> bytes:
        answer = await self.ptz2022.cruise_tracks(channel_id)
        return self._json(request, shapes22.CruiseTrackList(
            device_id=answer.device_id, channel_id=answer.channel_id, result=answer.result, sum_num=answer.sum_num,
            items=[shapes22.CruiseTrackItem(number=t.number, name=t.name) for t in answer.tracks]))

    @app.route("/api/v1/channels/<channel_id>/cruise-tracks/<int:number>", methods=["GET"])
    @authenticated
    async def cruise_track(self, request: Request, channel_id: str, number: int) -> bytes:
        if not 0 <= number <= 255:
            raise schemas.ValidationError("number", "must be a cruise track number between 0 and 255")
        answer = await self.ptz2022.cruise_track(channel_id, number)
        return self._json(request, shapes22.CruiseTrackDetail(
            device_id=answer.device_id, channel_id=answer.channel_id, result=answer.result, number=answer.number,
            name=answer.name, sum_num=answer.sum_num,
            points=[shapes22.CruisePointItem(preset_index=p.preset_index, stay_time=p.stay, speed=p.speed)
                    for p in answer.points]))

    @app.route("/api/v1/channels/<channel_id>/target-track", methods=["POST"])
    @authenticated
    async def target_track(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes22.TargetTrackBody)
        area = target_area(body)
        linked = None if body.linked_device_id is UNSET else body.linked_device_id
        answer = await self.ptz2022.target_track(channel_id, _MODES[body.mode], linked_device_id=linked, area=area)
        return self._json(request, _command_result(answer))
