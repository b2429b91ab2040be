"""``ControlService``: front-end device control of a channel (GB/T 28181-2016 §9.3.2, Annex A.3).

Theory of operation
-------------------
An operator controls a *channel*; the command goes to the *device* that owns
it (the channel's row in the registry: an NVR channel's PTZ goes to the NVR),
as a ``DeviceControl`` MESSAGE whose ``DeviceID`` is the channel (§A.2.3.1).
The body carries the 8-byte A.3 command (``sip.ptz``) and
``Info/ControlPriority``. The device acknowledges the MESSAGE (200) and then
answers with a ``Response`` carrying ``Result`` and the same SN (§9.3.2);
the router correlates it (``SipRouter.ask``) and gives up after
``sip.query_timeout`` (``DeviceTimeout``, 504). A device that is not
registered is refused at once (``DeviceOffline``, 409).

The other DeviceControl commands (TeleBoot, RecordCmd, GuardCmd, AlarmCmd,
IFameCmd, DragZoomIn/Out, HomePosition, §A.2.3.1) go the same way through
``control``: their fields are declared once in ``sip.manscdp.control`` and
a route names them; a device-wide one (``device=True``) is addressed to a
registered device, not a channel.

Configuration goes the same way: ``configure`` sends a DeviceConfig
(§A.2.3.2) answered by ``Result`` (§A.2.6.3), and once it is OK applies a
new heartbeat interval/count to the device's presence
(``DeviceManager.set_basic_param``, as onboarding does with ConfigDownload);
``config`` asks ConfigDownload (§A.2.4.7) for one ``ConfigType``.

A move may carry a duration: after it the platform sends PTZ stop itself,
on the injected clock, so a move does not run on when the operator's
browser tab closes. One stop is pending per channel; a later move or stop
of the channel (``move``) cancels it, and a move answered after a later one
was sent arms none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.core.clock import Clock, DelayedCallLike
from gbplatform.core.errors import DeviceOffline, DeviceRejected, UnsupportedByDialect
from gbplatform.core.errors import NotFound as Missing
from gbplatform.db import queries as q
from gbplatform.db.database import Database
from gbplatform.devices.registrar import DeviceManager
from gbplatform.signalling.router import SipRouter
from sip import manscdp, ptz
from sip.manscdp.config import DEVICE_CONFIG

__all__ = ["CONTROL_PRIORITY", "CommandAnswer", "ConfigAnswer", "ControlAnswer", "ControlService",
           "PresetAnswer"]

log = Logger()

CONTROL_PRIORITY = 5
"""``Info/ControlPriority`` sent with every PTZCmd (§A.2.3.1.1: 1 is the highest, 5 the lowest)."""


@dataclass(frozen=True)
class ControlAnswer:
    """What the device answered one command: its ``Result`` (``OK``/``ERROR``) and the bytes sent."""

    device_id: str
    channel_id: str
    result: str | None
    ptz_cmd: str


@dataclass(frozen=True)
class CommandAnswer:
    """What the device answered a DeviceControl other than PTZCmd: its ``Result`` and the element sent."""

    device_id: str
    target_id: str
    command: str
    result: str | None


@dataclass(frozen=True)
class PresetAnswer:
    """The device's presets of a channel (PresetQuery, §A.2.6.11)."""

    device_id: str
    channel_id: str
    result: str | None
    presets: tuple[manscdp.Preset, ...]


@dataclass(frozen=True)
class ConfigAnswer:
    """The device's configuration of one ``ConfigType`` (ConfigDownload, §A.2.6.8)."""

    device_id: str
    config_type: str
    result: str | None
    basic_param: manscdp.BasicParam | None
    video_param_opt: manscdp.VideoParamOpt | None
    svac: dict[str, str] | None  # the SVAC config asked for, its leaves by path
    config_2022: manscdp.Config2022 | None = None  # the answer's GB/T 28181-2022 types (None before 2022)


class ControlService:
    """Sends A.3 commands, the other DeviceControl commands and PresetQuery to the device owning a
    channel, or to a device."""

    def __init__(self, *, router: SipRouter, devices: DeviceManager, db: Database, clock: Clock) -> None:
        self.router = router
        self.devices = devices
        self.db = db
        self.clock = clock
        self._stops: dict[str, DelayedCallLike] = {}  # channel -> the pending stop of a timed move
        self._turns: dict[str, int] = {}  # channel -> moves sent, so an older move arms no stop

    async def owner(self, channel_id: str) -> str:
        """The device to address for ``channel_id``: 404 unknown, 409 not registered.

        A channel row names its device; a device ID that is not a channel
        (an IPC addressed as itself) is its own owner.
        """
        channel = await self.db.run("get_channel", q.get_channel_txn, channel_id)
        if channel is not None:
            device_id = channel.device_id
        elif await self.db.run("get_device", q.get_device_txn, channel_id) is not None:
            device_id = channel_id
        else:
            raise Missing(f"channel {channel_id} not found")
        if not self.devices.is_known(device_id):
            raise DeviceOffline(f"device {device_id} is not registered")
        return device_id

    async def device(self, device_id: str) -> str:
        """``device_id`` if it is a registered device: 404 unknown (a channel is not a device), 409 offline."""
        if await self.db.run("get_device", q.get_device_txn, device_id) is None:
            raise Missing(f"device {device_id} not found")
        if not self.devices.is_known(device_id):
            raise DeviceOffline(f"device {device_id} is not registered")
        return device_id

    def require_2022(self, device_id: str, command: str) -> None:
        """422 (``UnsupportedByDialect``) when ``device_id`` speaks GB/T 28181-2016: ``command`` is a 2022 one."""
        version = self.devices.gb_version(device_id)
        if version != "2022":
            raise UnsupportedByDialect(
                f"{command} is a GB/T 28181-2022 command; device {device_id} speaks GB/T 28181-{version} "
                f"(set its dialect with PUT /api/v1/devices/{device_id}/dialect if it is a 2022 device)")

    async def control(self, target_id: str, command: str, *, device: bool = False,
                      **values: object) -> CommandAnswer:
        """A DeviceControl of ``values`` (declared in ``sip.manscdp.control``) addressed to
        ``target_id``, a device (``device``) or a channel sent to its owner (§A.2.3.1, §9.3.2).

        ``command`` names the element sent, for the answer and the log.
        """
        device_id = await (self.device(target_id) if device else self.owner(target_id))
        return await self.send_control(device_id, target_id, command, **values)

    async def send_control(self, device_id: str, target_id: str, command: str, **values: object) -> CommandAnswer:
        """``control`` once the registered ``device_id`` addressing ``target_id`` is known."""

        def body(sn: int, charset: str) -> bytes:
            return manscdp.encode_device_command(sn, target_id, charset=charset, **values)

        result = await self._ask_control(device_id, body)
        log.info("{target_id}: {command} answered {result}", target_id=target_id, command=command, result=result)
        return CommandAnswer(device_id, target_id, command, result)

    async def iframe(self, channel_id: str) -> CommandAnswer:
        """Ask the channel for an I-frame (§A.2.3.1.7 ``<IFameCmd>Send</IFameCmd>``) in its device's
        spelling: ``IFrameCmd`` for firmware that knows only that one (``PUT /devices/{id}/dialect``)."""
        device_id = await self.owner(channel_id)
        element = self.devices.iframe_element(device_id)
        field = "iframe_cmd_variant" if element == "IFrameCmd" else "iframe_cmd"
        return await self.send_control(device_id, channel_id, element, **{field: "Send"})

    async def _ask_control(self, device_id: str, body: Callable[[int, str], bytes]) -> str | None:
        answer = await self.router.ask(device_id, "DeviceControl", body)
        if not isinstance(answer, manscdp.Response):
            raise DeviceRejected(f"device {device_id} sent an unexpected DeviceControl answer")
        return answer.result

    async def command(self, channel_id: str, cmd: ptz.PtzCmd) -> ControlAnswer:
        """Send ``cmd`` to the channel's device and return its Result (§9.3.2)."""
        return await self._send(await self.owner(channel_id), channel_id, cmd)

    async def _send(self, device_id: str, channel_id: str, cmd: ptz.PtzCmd) -> ControlAnswer:
        wire = ptz.to_hex(cmd)

        def body(sn: int, charset: str) -> bytes:
            return manscdp.encode_device_control(sn, channel_id, wire, priority=CONTROL_PRIORITY, charset=charset)

        result = await self._ask_control(device_id, body)
        log.info("channel {channel_id}: PTZCmd {cmd} answered {result}", channel_id=channel_id, cmd=wire,
                 result=result)
        return ControlAnswer(device_id, channel_id, result, wire)

    async def move(self, channel_id: str, action: str, speed: int, duration_ms: int | None = None) -> ControlAnswer:
        """Pan, tilt, zoom or stop (§A.3.2); with ``duration_ms`` a stop follows on the clock."""
        cmd = ptz.move(action, speed)  # a bad action or speed fails before anything is cancelled
        device_id = await self.owner(channel_id)
        self._cancel_stop(channel_id)
        turn = self._turns[channel_id] = self._turns.get(channel_id, 0) + 1
        try:
            return await self._send(device_id, channel_id, cmd)
        finally:
            # Armed even when the answer failed or timed out: the device may be moving anyway.
            # Not when a later move of the channel was sent meanwhile: it owns the stop.
            if duration_ms is not None and action != "stop" and self._turns.get(channel_id) == turn:
                self._stops[channel_id] = self.clock.call_later(duration_ms / 1000, self._timed_stop, channel_id)

    def _cancel_stop(self, channel_id: str) -> None:
        pending = self._stops.pop(channel_id, None)
        if pending is not None and pending.active():
            pending.cancel()

    def _timed_stop(self, channel_id: str) -> None:
        self._stops.pop(channel_id, None)
        d = ensureDeferred(self.command(channel_id, ptz.move("stop")))
        d.addErrback(self._stop_failed, channel_id)

    @staticmethod
    def _stop_failed(failure: Failure, channel_id: str) -> None:
        log.warn("channel {channel_id}: the timed PTZ stop failed: {err}", channel_id=channel_id,
                 err=failure.getErrorMessage())

    def pending_stop(self, channel_id: str) -> bool:
        """Whether a timed move of the channel still waits for its stop."""
        pending = self._stops.get(channel_id)
        return pending is not None and pending.active()

    async def presets(self, channel_id: str) -> PresetAnswer:
        """PresetQuery (§A.2.4.9) of the channel, answered by its device (§A.2.6.11)."""
        device_id = await self.owner(channel_id)

        def body(sn: int, charset: str) -> bytes:
            return manscdp.encode_query("PresetQuery", sn, channel_id, charset=charset)

        answer = await self.router.ask(device_id, "PresetQuery", body)
        if not isinstance(answer, manscdp.PresetQueryResponse):
            raise DeviceRejected(f"device {device_id} sent an unexpected PresetQuery answer")
        return PresetAnswer(device_id, channel_id, answer.result, answer.presets)

    async def config(self, device_id: str, config_type: str) -> ConfigAnswer:
        """ConfigDownload (§A.2.4.7) of one ``ConfigType`` of a registered device (§A.2.6.8); a
        GB/T 28181-2022 type (``manscdp.CONFIG_TYPES_2022``) only of a 2022 device (422 otherwise)."""
        await self.device(device_id)
        if config_type in manscdp.CONFIG_TYPES_2022:
            self.require_2022(device_id, f"ConfigDownload {config_type}")
        answer = await self.router.query(device_id, "ConfigDownload", extra={"ConfigType": config_type})
        if not isinstance(answer, manscdp.ConfigDownloadResponse):
            raise DeviceRejected(f"device {device_id} sent an unexpected ConfigDownload answer")
        svac = {"SVACEncodeConfig": answer.svac_encode_config,
                "SVACDecodeConfig": answer.svac_decode_config}.get(config_type)
        return ConfigAnswer(device_id, config_type, answer.result, answer.basic_param, answer.video_param_opt, svac,
                            answer)

    async def configure(self, device_id: str, **values: object) -> CommandAnswer:
        """DeviceConfig (§A.2.3.2) of a registered device, answered by ``Result`` (§A.2.6.3).

        ``values`` are DeviceConfig attributes (``basic_param=BasicParam(...)``,
        ``osd_config=OsdConfig(...)``, ...; None ones are left out); the
        answer's ``command`` names the elements sent. A part that is not a
        GB/T 28181-2016 type (``manscdp.CONFIG_TYPES``) goes only to a 2022
        device (422).

        Once the device answers OK, a new HeartBeatInterval/Count is applied to
        its presence at once, as when ConfigDownload reports it (§A.2.6.8):
        the device keeps alive on the new schedule from now on.
        """
        given = {attr: value for attr, value in values.items() if value is not None}
        tags = {spec.attr: spec.tag for spec in DEVICE_CONFIG.fields if not isinstance(spec, manscdp.Extra)}
        unknown = sorted(set(given) - set(tags))
        if unknown or not given:
            raise TypeError(f"DeviceConfig has no part {unknown[0]!r}" if unknown else "DeviceConfig of nothing")
        await self.device(device_id)
        for attr in given:
            if tags[attr] not in manscdp.CONFIG_TYPES:  # every part but the 2016 ones is a 2022 one
                self.require_2022(device_id, f"DeviceConfig {tags[attr]}")
        command = "/".join(tags[attr] for attr in given)
        basic_param = given.get("basic_param")

        def body(sn: int, charset: str) -> bytes:
            return manscdp.encode_device_config(sn, device_id, charset=charset, **given)

        answer = await self.router.ask(device_id, "DeviceConfig", body)
        if not isinstance(answer, manscdp.Response):
            raise DeviceRejected(f"device {device_id} sent an unexpected DeviceConfig answer")
        log.info("{device_id}: DeviceConfig {command} answered {result}", device_id=device_id, command=command,
                 result=answer.result)
        if answer.result == "OK" and isinstance(basic_param, manscdp.BasicParam) and (
                basic_param.heart_beat_interval is not None or basic_param.heart_beat_count is not None):
            self.devices.set_basic_param(device_id, basic_param.heart_beat_interval, basic_param.heart_beat_count)
        return CommandAnswer(device_id, device_id, command, answer.result)
