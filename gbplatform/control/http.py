"""The device-control API: PTZ, lens, presets, cruise, scan and aux of a channel (GB/T 28181-2016 A.3);
reboot, device recording, guard, alarm reset, I-frame, drag zoom and home position (§A.2.3.1);
device configuration (DeviceConfig §A.2.3.2, ConfigDownload §A.2.4.7).

``ControlRoutes`` is mounted into the root API (``gbplatform.api.app``).
Each route parses its body (``shapes``), builds the A.3 command
(``sip.ptz``) and has ``ControlService`` send it to the channel's device;
the answer is the device's Result. Errors: 400 naming the field, 404 for an
unknown channel, 409 when its device is offline, 504 when it does not
answer within ``sip.query_timeout``.
"""

from __future__ import annotations

from klein import Klein
from msgspec import UNSET, UnsetType
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated
from gbplatform.control import config2022, shapes
from gbplatform.control.service import (
    CommandAnswer,
    ConfigAnswer,
    ControlAnswer,
    ControlService,
)
from sip import manscdp, ptz

__all__ = ["ControlRoutes"]

_PRESET_CODES = {"set": ptz.PRESET_SET, "call": ptz.PRESET_CALL, "delete": ptz.PRESET_DELETE}
_CRUISE_CODES = {"add_point": ptz.CRUISE_ADD, "delete_point": ptz.CRUISE_DELETE, "set_speed": ptz.CRUISE_SPEED,
                 "set_dwell": ptz.CRUISE_DWELL, "start": ptz.CRUISE_START}
_SCAN_LIMITS = {"start": 0, "set_left": 1, "set_right": 2}  # §A.3.6 byte 6 of 0x89


def _result(answer: ControlAnswer) -> shapes.ControlResult:
    return shapes.ControlResult(device_id=answer.device_id, channel_id=answer.channel_id, result=answer.result,
                                ptz_cmd=answer.ptz_cmd)


def _command_result(answer: CommandAnswer) -> shapes.CommandResult:
    return shapes.CommandResult(device_id=answer.device_id, target_id=answer.target_id, command=answer.command,
                                result=answer.result)


def _config_result(answer: ConfigAnswer) -> shapes.DeviceConfigResult:
    bp, vp = answer.basic_param, answer.video_param_opt
    return shapes.DeviceConfigResult(
        device_id=answer.device_id, config_type=answer.config_type, result=answer.result,
        basic_param=None if bp is None else shapes.BasicParamConfig(
            name=bp.name, device_id=bp.device_id, sip_server_id=bp.sip_server_id, sip_server_ip=bp.sip_server_ip,
            sip_server_port=bp.sip_server_port, domain_name=bp.domain_name, expiration=bp.expiration,
            heartbeat_interval=bp.heart_beat_interval, heartbeat_count=bp.heart_beat_count,
            position_capability=bp.position_capability, longitude=bp.longitude, latitude=bp.latitude),
        video_param_opt=None if vp is None else shapes.VideoParamOptConfig(
            download_speed=vp.download_speed, resolution=vp.resolution),
        svac=answer.svac,
        **config2022.results(answer.config_2022),
    )


def _opt(value: int | UnsetType) -> int | None:
    return None if value is UNSET else value


def _opt_str(value: str | UnsetType) -> str | None:
    return None if value is UNSET else value


def cruise_command(body: shapes.CruiseBody) -> ptz.PtzCmd:
    """The A.3.5 command of ``body``; the field a cruise action needs is required (400 naming it)."""
    if body.action == "stop":  # A.3 has no cruise stop: devices end a cruise on PTZ stop
        return ptz.move("stop")
    code = _CRUISE_CODES[body.action]
    if body.action in ("add_point", "delete_point"):
        if body.point is UNSET:
            raise schemas.ValidationError("point", f"is required for {body.action}")
        return ptz.cruise(code, body.group, body.point)
    if body.action in ("set_speed", "set_dwell"):
        if body.value is UNSET:
            raise schemas.ValidationError("value", f"is required for {body.action}")
        return ptz.cruise(code, body.group, body.value)
    return ptz.cruise(code, body.group)


def scan_command(body: shapes.ScanBody) -> ptz.PtzCmd:
    """The A.3.6 command of ``body``; stop is PTZ stop, as for a cruise."""
    if body.action == "stop":
        return ptz.move("stop")
    if body.action == "set_speed":
        if body.value is UNSET:
            raise schemas.ValidationError("value", "is required for set_speed")
        return ptz.scan(ptz.SCAN_SPEED, body.group, body.value)
    return ptz.scan(ptz.SCAN, body.group, _SCAN_LIMITS[body.action])


class ControlRoutes(Routes):
    """``/api/v1/channels/<id>/ptz``, ``lens``, ``presets``, ``cruise``, ``scan``, ``aux``, ``device-record``,
    ``iframe``, ``dragzoom``, ``home-position``, ``guard``; ``/api/v1/devices/<id>/reboot``, ``guard``, ``alarm/reset``,
    ``config``, ``config/basic``, ``config/video``."""

    app = Klein()

    @property
    def control(self) -> ControlService:
        return self.platform.control

    @app.route("/api/v1/channels/<channel_id>/ptz", methods=["POST"])
    @authenticated
    async def ptz(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.PtzBody)
        duration = None if body.duration_ms is UNSET else body.duration_ms
        return self._json(request, _result(await self.control.move(channel_id, body.action, body.speed, duration)))

    @app.route("/api/v1/channels/<channel_id>/lens", methods=["POST"])
    @authenticated
    async def lens(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.LensBody)
        return self._json(request, _result(await self.control.command(channel_id, ptz.lens(body.action, body.speed))))

    @app.route("/api/v1/channels/<channel_id>/presets", methods=["GET"])
    @authenticated
    async def presets(self, request: Request, channel_id: str) -> bytes:
        answer = await self.control.presets(channel_id)
        return self._json(request, shapes.PresetList(
            device_id=answer.device_id, channel_id=answer.channel_id, result=answer.result,
            items=[shapes.PresetItem(preset_id=p.preset_id, name=p.preset_name) for p in answer.presets],
        ))

    @app.route("/api/v1/channels/<channel_id>/presets/<int:index>", methods=["POST"])
    @authenticated
    async def preset(self, request: Request, channel_id: str, index: int) -> bytes:
        if not 1 <= index <= 255:
            raise schemas.ValidationError("index", "must be a preset number between 1 and 255")
        body = schemas.parse_body(self._body(request), shapes.PresetBody)
        cmd = ptz.preset(_PRESET_CODES[body.action], index)
        return self._json(request, _result(await self.control.command(channel_id, cmd)))

    @app.route("/api/v1/channels/<channel_id>/cruise", methods=["POST"])
    @authenticated
    async def cruise(self, request: Request, channel_id: str) -> bytes:
        cmd = cruise_command(schemas.parse_body(self._body(request), shapes.CruiseBody))
        return self._json(request, _result(await self.control.command(channel_id, cmd)))

    @app.route("/api/v1/channels/<channel_id>/scan", methods=["POST"])
    @authenticated
    async def scan(self, request: Request, channel_id: str) -> bytes:
        cmd = scan_command(schemas.parse_body(self._body(request), shapes.ScanBody))
        return self._json(request, _result(await self.control.command(channel_id, cmd)))

    @app.route("/api/v1/channels/<channel_id>/aux", methods=["POST"])
    @authenticated
    async def aux(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.AuxBody)
        return self._json(request, _result(await self.control.command(channel_id, ptz.aux(body.switch, body.on))))

    @app.route("/api/v1/devices/<device_id>/reboot", methods=["POST"])
    @authenticated
    async def reboot(self, request: Request, device_id: str) -> bytes:
        answer = await self.control.control(device_id, "TeleBoot", device=True, tele_boot="Boot")
        return self._json(request, _command_result(answer))

    @app.route("/api/v1/channels/<channel_id>/device-record", methods=["POST"])
    @authenticated
    async def device_record(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.DeviceRecordBody)
        cmd = "Record" if body.record else "StopRecord"
        return self._json(request, _command_result(await self.control.control(channel_id, cmd, record_cmd=cmd)))

    @app.route("/api/v1/devices/<device_id>/guard", methods=["POST"])
    @authenticated
    async def guard(self, request: Request, device_id: str) -> bytes:
        return await self._guard(request, device_id, device=True)

    @app.route("/api/v1/channels/<channel_id>/guard", methods=["POST"])
    @authenticated
    async def channel_guard(self, request: Request, channel_id: str) -> bytes:
        return await self._guard(request, channel_id, device=False)

    async def _guard(self, request: Request, target_id: str, *, device: bool) -> bytes:
        """GuardCmd SetGuard/ResetGuard (§A.2.3.1.4) to a device, or to a channel (an alarm input) through
        the device that owns it, its ID as ``DeviceID``."""
        body = schemas.parse_body(self._body(request), shapes.GuardBody)
        cmd = "SetGuard" if body.armed else "ResetGuard"
        answer = await self.control.control(target_id, cmd, device=device, guard_cmd=cmd)
        return self._json(request, _command_result(answer))

    @app.route("/api/v1/devices/<device_id>/alarm/reset", methods=["POST"])
    @authenticated
    async def alarm_reset(self, request: Request, device_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.AlarmResetBody)
        method, kind = _opt(body.method), _opt(body.type)
        info = None if method is None and kind is None else manscdp.ControlInfo(alarm_method=method, alarm_type=kind)
        answer = await self.control.control(device_id, "ResetAlarm", device=True, alarm_cmd="ResetAlarm", info=info)
        return self._json(request, _command_result(answer))

    @app.route("/api/v1/channels/<channel_id>/iframe", methods=["POST"])
    @authenticated
    async def iframe(self, request: Request, channel_id: str) -> bytes:
        return self._json(request, _command_result(await self.control.iframe(channel_id)))

    @app.route("/api/v1/channels/<channel_id>/dragzoom", methods=["POST"])
    @authenticated
    async def dragzoom(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.DragZoomBody)
        for name, value, limit in (("mid_x", body.mid_x, body.length), ("length_x", body.length_x, body.length),
                                   ("mid_y", body.mid_y, body.width), ("length_y", body.length_y, body.width)):
            if value > limit:
                raise schemas.ValidationError(name, "lies outside the picture (length x width)")
        box = manscdp.DragZoom(length=body.length, width=body.width, mid_x=body.mid_x, mid_y=body.mid_y,
                               length_x=body.length_x, length_y=body.length_y)
        if body.direction == "in":
            answer = await self.control.control(channel_id, "DragZoomIn", drag_zoom_in=box)
        else:
            answer = await self.control.control(channel_id, "DragZoomOut", drag_zoom_out=box)
        return self._json(request, _command_result(answer))

    @app.route("/api/v1/devices/<device_id>/config", methods=["GET"])
    @authenticated
    async def config(self, request: Request, device_id: str) -> bytes:
        asked = schemas.str_arg(request.args, "type", 32) or manscdp.CONFIG_TYPES[0]
        config_type = config2022.canonical_type(asked)  # any case: devices and docs spell them variously
        if config_type is None:
            raise schemas.ValidationError("type", "must be one of "
                                          f"{', '.join((*manscdp.CONFIG_TYPES, *manscdp.CONFIG_TYPES_2022))}")
        return self._json(request, _config_result(await self.control.config(device_id, config_type)))

    @app.route("/api/v1/devices/<device_id>/config/basic", methods=["PUT"])
    @authenticated
    async def config_basic(self, request: Request, device_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.BasicConfigBody)
        if all(v is UNSET for v in (body.name, body.expiration, body.heartbeat_interval, body.heartbeat_count)):
            raise schemas.ValidationError("name", "give at least one of name, expiration, heartbeat_interval, "
                                                  "heartbeat_count")
        param = manscdp.BasicParam(name=_opt_str(body.name), expiration=_opt(body.expiration),
                                   heart_beat_interval=_opt(body.heartbeat_interval),
                                   heart_beat_count=_opt(body.heartbeat_count))
        return self._json(request, _command_result(await self.control.configure(device_id, basic_param=param)))

    @app.route("/api/v1/devices/<device_id>/config/video", methods=["PUT"])
    @authenticated
    async def config_video(self, request: Request, device_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.VideoConfigBody)
        if body.download_speed is UNSET and body.resolution is UNSET:
            raise schemas.ValidationError("download_speed", "give at least one of download_speed, resolution")
        option = manscdp.VideoParamOpt(download_speed=_opt_str(body.download_speed),
                                       resolution=_opt_str(body.resolution))
        return self._json(request, _command_result(await self.control.configure(device_id, video_param_opt=option)))

    @app.route("/api/v1/channels/<channel_id>/home-position", methods=["POST"])
    @authenticated
    async def home_position(self, request: Request, channel_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.HomePositionBody)
        home = manscdp.HomePosition(enabled=int(body.enabled), reset_time=body.reset_time,
                                    preset_index=body.preset_index)
        answer = await self.control.control(channel_id, "HomePosition", home_position=home)
        return self._json(request, _command_result(answer))
