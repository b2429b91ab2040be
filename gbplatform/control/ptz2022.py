"""``Ptz2022Service``: the PTZ commands GB/T 28181-2022 adds, sent to the device owning a channel.

Theory of operation
-------------------
Like the 2016 commands (``ControlService``), each one is addressed to the
channel, with the channel's ID as ``DeviceID``, and sent to the device that
owns it (404 unknown channel, 409 device not registered). These commands
exist only in GB/T 28181-2022: before anything is sent,
``ControlService.require_2022`` refuses a device that speaks 2016 (422), since
such a device answers an unknown command with nothing and the operator would
wait ``sip.query_timeout`` for a 504 that explains nothing.

- ``precise`` sends ``PTZPreciseCtrl`` (DeviceControl, §A.2.3.1) and
  ``target_track`` sends ``TargetTrack``; both are answered by ``Result``
  (§A.2.6.2, ``CommandAnswer``).
- ``position`` asks ``PTZPosition`` (§A.2.4.13, answered §A.2.6.15) and
  publishes what the device answered as a ``ptz`` event on the bus;
  ``home_position`` asks ``HomePositionQuery`` (§A.2.4.10, §A.2.6.12);
  ``cruise_tracks`` asks ``CruiseTrackListQuery`` (§A.2.4.11, §A.2.6.13) and
  ``cruise_track`` ``CruiseTrackQuery`` with the track's ``Number``
  (§A.2.4.12, §A.2.6.14). A query's answer is the Response with its SN
  (``SipRouter.ask``); the two list answers may come in several MESSAGEs
  with that SN, gathered until they hold the ``SumNum`` announced
  (``_ask_parts``). 504 when none comes within ``sip.query_timeout``.

Angles the device answers that are not finite numbers (``NaN``, ``inf``) are
logged and reported as unknown (None): they cannot be sent as JSON numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.control.service import CommandAnswer, ControlService
from gbplatform.core.clock import DelayedCallLike
from gbplatform.core.errors import DeviceRejected, DeviceTimeout
from gbplatform.events.bus import EventBus
from sip import manscdp

__all__ = ["CruiseTrackAnswer", "CruiseTracksAnswer", "HomePositionAnswer", "PositionAnswer", "Ptz2022Service"]

log = Logger()

R = TypeVar("R", bound=manscdp.Response)

_DECIMALS = 4  # angles and ratios are sent to 1/10000: no float noise (0.30000000000000004) on the wire
LIST_REST = 1.0
"""Seconds without a further part after which a list answered short of its ``SumNum`` is taken as it came."""


@dataclass(frozen=True)
class PositionAnswer:
    """The device's PTZPosition answer (§A.2.6.15)."""

    device_id: str
    channel_id: str
    result: str | None
    position: manscdp.PtzPosition


@dataclass(frozen=True)
class HomePositionAnswer:
    """The device's HomePositionQuery answer (§A.2.6.12); ``home`` None when it carried none."""

    device_id: str
    channel_id: str
    result: str | None
    home: manscdp.HomePositionInfo | None


@dataclass(frozen=True)
class CruiseTracksAnswer:
    """The device's CruiseTrackListQuery answer (§A.2.6.13)."""

    device_id: str
    channel_id: str
    result: str | None
    sum_num: int
    tracks: tuple[manscdp.CruiseTrack, ...]


@dataclass(frozen=True)
class CruiseTrackAnswer:
    """The device's CruiseTrackQuery answer (§A.2.6.14)."""

    device_id: str
    channel_id: str
    result: str | None
    number: int | None
    name: str | None
    sum_num: int
    points: tuple[manscdp.CruisePoint, ...]


def _wire(value: float | None) -> float | None:
    # + 0.0 turns -0.0 into 0.0, which a device reads the same but an operator need not wonder about.
    return None if value is None else round(value, _DECIMALS) + 0.0


def _finite(channel_id: str, name: str, value: float | None) -> float | None:
    if value is None or math.isfinite(value):
        return value
    log.info("channel {channel_id}: PTZPosition {name} is {value}; reported as unknown", channel_id=channel_id,
             name=name, value=value)
    return None


class Ptz2022Service:
    """Sends the GB/T 28181-2022 PTZ commands and queries through ``ControlService``'s routing."""

    def __init__(self, control: ControlService, bus: EventBus | None = None) -> None:
        self.control = control
        self.bus = bus

    async def _owner_2022(self, channel_id: str, command: str) -> str:
        """The device owning ``channel_id`` (404, 409), if it speaks GB/T 28181-2022 (422 otherwise)."""
        device_id = await self.control.owner(channel_id)
        self.control.require_2022(device_id, command)
        return device_id

    async def _ask(self, device_id: str, cmd_type: str, body: Callable[[int, str], bytes],
                   expected: type[R]) -> R:
        answer = await self.control.router.ask(device_id, cmd_type, body)
        if not isinstance(answer, expected):
            raise DeviceRejected(f"device {device_id} sent an unexpected {cmd_type} answer")
        return answer

    async def _ask_parts(self, device_id: str, cmd_type: str, body: Callable[[int, str], bytes],
                         expected: type[R], count: Callable[[R], tuple[int, int]]) -> list[R]:
        """MESSAGE ``body`` and gather the Responses with its SN until they hold the ``SumNum`` the first one
        announced: like Catalog (§9.5.2), a list answer may be split over several MESSAGEs, each with the
        query's SN. ``count(part)`` is ``(items in it, SumNum)``.

        Without any answer within ``sip.query_timeout``: ``DeviceTimeout``. A list still short of its
        ``SumNum`` is taken as it came once ``LIST_REST`` seconds pass without a further part (or at the
        timeout), with a log line: a device that miscounts must not cost the tracks it did send.
        """
        router = self.control.router
        clock = router.clock
        sn = router.next_sn()
        d: Deferred[list[R]] = Deferred()
        parts: list[R] = []
        rest: list[DelayedCallLike] = []

        def finish(error: Exception | None = None) -> None:
            correlation.close()
            for timer in (deadline, *rest):
                if timer.active():
                    timer.cancel()
            if error is None:
                d.callback(parts)
            else:
                d.errback(error)

        def short() -> None:
            if correlation.open:
                got, total = sum(count(p)[0] for p in parts), count(parts[0])[1]
                log.info("{device_id}: {cmd} answered {got} of the {total} items announced; taken as sent",
                         device_id=device_id, cmd=cmd_type, got=got, total=total)
                finish()

        def answered(msg: manscdp.ManscdpMessage) -> None:
            if not isinstance(msg, expected):
                finish(DeviceRejected(f"device {device_id} sent an unexpected {cmd_type} answer"))
                return
            parts.append(msg)
            if sum(count(p)[0] for p in parts) >= count(parts[0])[1]:
                finish()
                return
            for timer in rest:
                if timer.active():
                    timer.cancel()
            rest[:] = [clock.call_later(LIST_REST, short)]

        def expire() -> None:
            if not correlation.open:
                return
            if parts:
                short()
            else:
                finish(DeviceTimeout(f"device {device_id} did not answer {cmd_type} in {router.query_timeout:g} s"))

        def send_failed(failure: Failure) -> None:
            # The MESSAGE itself failed (offline, 4xx, timer F): that is the query's outcome, unless it ended.
            if not correlation.open:
                log.info("{cmd} MESSAGE to {device} failed after the query ended: {err}", cmd=cmd_type,
                         device=device_id, err=failure.getErrorMessage())
                return
            error = failure.value
            finish(error if isinstance(error, Exception) else DeviceRejected(failure.getErrorMessage()))

        correlation = router.expect(device_id, cmd_type, sn, answered)
        deadline = clock.call_later(router.query_timeout, expire)

        async def send() -> None:  # in the device's charset, as SipRouter.ask sends
            await router.send_manscdp(device_id, body(sn, router.devices.charset_of(device_id)))

        ensureDeferred(send()).addErrback(send_failed)
        return await d

    async def _device_control(self, channel_id: str, command: str, **values: object) -> CommandAnswer:
        device_id = await self._owner_2022(channel_id, command)

        def body(sn: int, charset: str) -> bytes:
            return manscdp.encode_device_command(sn, channel_id, charset=charset, **values)

        answer = await self._ask(device_id, "DeviceControl", body, manscdp.Response)
        log.info("channel {channel_id}: {command} answered {result}", channel_id=channel_id, command=command,
                 result=answer.result)
        return CommandAnswer(device_id, channel_id, command, answer.result)

    async def precise(self, channel_id: str, *, pan: float | None = None, tilt: float | None = None,
                      zoom: float | None = None) -> CommandAnswer:
        """PTZPreciseCtrl (§A.2.3.1): move to ``pan``/``tilt`` degrees and ``zoom`` ratio, those given."""
        if pan is None and tilt is None and zoom is None:
            raise ValueError("PTZPreciseCtrl needs at least one of pan, tilt, zoom")
        target = manscdp.PtzPrecise(pan=_wire(pan), tilt=_wire(tilt), zoom=_wire(zoom))
        return await self._device_control(channel_id, "PTZPreciseCtrl", ptz_precise_ctrl=target)

    async def target_track(self, channel_id: str, mode: manscdp.TargetTrackMode, *,
                           linked_device_id: str | None = None,
                           area: manscdp.TargetArea | None = None) -> CommandAnswer:
        """TargetTrack (§A.2.3.1): ``mode`` with ``DeviceID2`` and ``TargetArea`` when given."""
        return await self._device_control(channel_id, "TargetTrack", target_track=mode, device_id2=linked_device_id,
                                          target_area=area)

    async def position(self, channel_id: str) -> PositionAnswer:
        """PTZPosition (§A.2.4.13) of the channel, answered by its device (§A.2.6.15)."""
        device_id = await self._owner_2022(channel_id, "PTZPosition")
        answer = await self._ask(device_id, "PTZPosition", self._query("PTZPosition", channel_id),
                                 manscdp.PtzPositionResponse)
        raw = answer.position
        position = manscdp.PtzPosition(
            pan=_finite(channel_id, "Pan", raw.pan), tilt=_finite(channel_id, "Tilt", raw.tilt),
            zoom=_finite(channel_id, "Zoom", raw.zoom),
            horizontal_field_angle=_finite(channel_id, "HorizontalFieldAngle", raw.horizontal_field_angle),
            vertical_field_angle=_finite(channel_id, "VerticalFieldAngle", raw.vertical_field_angle),
            max_view_distance=_finite(channel_id, "MaxViewDistance", raw.max_view_distance),
        )
        if self.bus is not None:
            self.bus.publish("ptz", device_id=device_id, channel_id=channel_id, source="query", pan=position.pan,
                             tilt=position.tilt, zoom=position.zoom,
                             horizontal_field_angle=position.horizontal_field_angle,
                             vertical_field_angle=position.vertical_field_angle,
                             max_view_distance=position.max_view_distance)
        return PositionAnswer(device_id, channel_id, answer.result, position)

    async def home_position(self, channel_id: str) -> HomePositionAnswer:
        """HomePositionQuery (§A.2.4.10) of the channel, answered by its device (§A.2.6.12)."""
        device_id = await self._owner_2022(channel_id, "HomePositionQuery")
        answer = await self._ask(device_id, "HomePositionQuery", self._query("HomePositionQuery", channel_id),
                                 manscdp.HomePositionResponse)
        return HomePositionAnswer(device_id, channel_id, answer.result, answer.home)

    async def cruise_tracks(self, channel_id: str) -> CruiseTracksAnswer:
        """CruiseTrackListQuery (§A.2.4.11) of the channel, answered by its device (§A.2.6.13)."""
        device_id = await self._owner_2022(channel_id, "CruiseTrackListQuery")
        parts = await self._ask_parts(device_id, "CruiseTrackListQuery", self._query("CruiseTrackListQuery", channel_id),
                                      manscdp.CruiseTrackListResponse, lambda p: (len(p.tracks), p.sum_num))
        first = parts[0]
        return CruiseTracksAnswer(device_id, channel_id, first.result, first.sum_num,
                                  tuple(chain.from_iterable(p.tracks for p in parts)))

    async def cruise_track(self, channel_id: str, number: int) -> CruiseTrackAnswer:
        """CruiseTrackQuery (§A.2.4.12) of track ``number``, answered by its device (§A.2.6.14)."""
        device_id = await self._owner_2022(channel_id, "CruiseTrackQuery")
        parts = await self._ask_parts(device_id, "CruiseTrackQuery",
                                      self._query("CruiseTrackQuery", channel_id, Number=str(number)),
                                      manscdp.CruiseTrackResponse, lambda p: (len(p.points), p.sum_num))
        first = parts[0]
        return CruiseTrackAnswer(device_id, channel_id, first.result, first.number, first.name, first.sum_num,
                                 tuple(chain.from_iterable(p.points for p in parts)))

    @staticmethod
    def _query(cmd_type: str, channel_id: str, **extra: str) -> Callable[[int, str], bytes]:
        def body(sn: int, charset: str) -> bytes:
            return manscdp.encode_query(cmd_type, sn, channel_id, charset=charset, extra=extra or None)

        return body
