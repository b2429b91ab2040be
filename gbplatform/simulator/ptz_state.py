"""The simulated camera head: where each channel's PTZ points, as the GB/T 28181-2022 queries report it.

Theory of operation
-------------------
``sip.useragent.PtzFrontEnd`` answers the 2016 DeviceControl commands and
keeps their state (presets by name, home position, guard...). ``PtzState``
adds what the 2022 commands and queries need, per channel (the ``DeviceID``
of the command):

- a *head* (pan 0-360 degrees, tilt -90 to 90, zoom ratio 1 to
  ``MAX_ZOOM``). A PTZCmd move (A.3.2) sets it turning at a rate
  proportional to the speed bytes (``MAX_PAN_RATE`` degrees/s at 255,
  ``MAX_ZOOM_RATE`` ratio/s at zoom speed 15) until the next command; the
  position is integrated on the simulator's clock whenever it is needed,
  pan wrapping round, tilt and zoom stopping at their limits. PTZPreciseCtrl
  (§A.2.3.1) stops it and sets the values given.
- preset positions: A.3.4 set stores the head's position, call restores it,
  delete forgets it (the names stay ``PtzFrontEnd``'s).
- cruise tracks: A.3.5 add point appends the preset to the group's track,
  delete point removes it (point 0: the whole track), speed and dwell set the
  track's (12 bits, applied to each of its points), start moves the head to
  the first point's preset.
- the target-tracking mode (TargetTrack, §A.2.3.1) with its linked camera
  and box.

It answers PTZPosition (§A.2.6.15: the head, its field of view from a 60
degree lens at zoom 1, its view distance growing with the zoom),
HomePositionQuery (§A.2.6.12: what the 2016 HomePosition control set,
``Enabled`` 0 before), CruiseTrackListQuery and CruiseTrackQuery
(§A.2.6.13-14; ERROR for a track that does not exist). ``register``
installs the answerers and, on DeviceControl, an interceptor that answers
the 2022 elements and watches PTZCmd before ``PtzFrontEnd`` answers it.
The edition (a 2016 device refuses these) is ``DialectAnswers``' business.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from twisted.logger import Logger

from sip import manscdp, ptz
from sip.useragent import PtzFrontEnd, QueryAnswers

__all__ = ["MAX_PAN_RATE", "MAX_TILT_RATE", "MAX_ZOOM", "MAX_ZOOM_RATE", "CruiseGroup", "Head", "PtzState",
           "TargetTracking"]

log = Logger()

MAX_PAN_RATE: Final = 60.0  # degrees/s at pan speed 255 (A.3.2 byte 5)
MAX_TILT_RATE: Final = 40.0  # degrees/s at tilt speed 255 (byte 6)
MAX_ZOOM_RATE: Final = 4.0  # zoom ratio/s at zoom speed 15 (byte 7's high nibble)
MAX_ZOOM: Final = 30.0
WIDE_HFOV: Final = 60.0  # degrees at zoom 1; 16:9 picture
WIDE_VFOV: Final = 2 * math.degrees(math.atan(math.tan(math.radians(WIDE_HFOV / 2)) * 9 / 16))
WIDE_VIEW_DISTANCE: Final = 50.0  # metres seen at zoom 1
DEFAULT_STAY: Final = 5  # seconds at a cruise point before a dwell time is set (A.3.5 0x87)
DEFAULT_SPEED: Final = 16  # cruise speed before one is set (0x86)


@dataclass
class Head:
    """One channel's pan/tilt/zoom and the rates it turns at since ``since`` (simulator seconds)."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 1.0
    pan_rate: float = 0.0
    tilt_rate: float = 0.0
    zoom_rate: float = 0.0
    since: float = 0.0

    def at(self, now: float) -> tuple[float, float, float]:
        """Pan, tilt and zoom at ``now``: the rates integrated, pan wrapped, tilt and zoom at their limits."""
        dt = max(0.0, now - self.since)
        return ((self.pan + self.pan_rate * dt) % 360.0,
                min(90.0, max(-90.0, self.tilt + self.tilt_rate * dt)),
                min(MAX_ZOOM, max(1.0, self.zoom + self.zoom_rate * dt)))

    def settle(self, now: float, *, stop: bool = True) -> None:
        """Take the position at ``now`` as the new start; ``stop`` ends the motion."""
        self.pan, self.tilt, self.zoom = self.at(now)
        self.since = now
        if stop:
            self.pan_rate = self.tilt_rate = self.zoom_rate = 0.0

    def place(self, pan: float, tilt: float, zoom: float) -> None:
        self.pan, self.tilt, self.zoom = pan % 360.0, min(90.0, max(-90.0, tilt)), min(MAX_ZOOM, max(1.0, zoom))


@dataclass
class CruiseGroup:
    """A cruise track (A.3.5): its presets in order, the speed and the stay set for its points."""

    points: list[int] = field(default_factory=list)
    speed: int = DEFAULT_SPEED
    stay: int = DEFAULT_STAY


@dataclass(frozen=True)
class TargetTracking:
    """The last TargetTrack (§A.2.3.1): the mode, the linked camera and the box, as sent."""

    mode: manscdp.TargetTrackMode
    linked_device_id: str | None
    area: manscdp.TargetArea | None


def _clean(value: float | None, low: float, high: float) -> bool:
    return value is None or (math.isfinite(value) and low <= value <= high)


class PtzState:
    """The 2022 PTZ state of a simulated device's channels, next to its ``PtzFrontEnd`` (module docstring)."""

    MAX_TARGETS = 1000  # channels with a head: a platform naming random DeviceIDs must not grow it for ever

    def __init__(self, front: PtzFrontEnd, now: Callable[[], float], charset: Callable[[], str],
                 label: Callable[[bytes], bytes] = lambda body: body) -> None:
        self.front = front
        self._now = now
        self._charset = charset  # asked per answer: a simulator's charset quirk may change it
        self._label = label
        self.heads: dict[str, Head] = {}
        self.preset_positions: dict[str, dict[int, tuple[float, float, float]]] = {}
        self.cruises: dict[str, dict[int, CruiseGroup]] = {}
        self.tracking: dict[str, TargetTracking] = {}

    def register(self, answers: QueryAnswers) -> None:
        """Answer the four 2022 queries; see DeviceControl first for PTZPreciseCtrl, TargetTrack, PTZCmd."""
        answers.intercept("DeviceControl", self.device_control)
        answers.register("PTZPosition", self.ptz_position)
        answers.register("HomePositionQuery", self.home_position_query)
        answers.register("CruiseTrackListQuery", self.cruise_track_list_query)
        answers.register("CruiseTrackQuery", self.cruise_track_query)

    # -- state ---------------------------------------------------------------
    def head(self, target: str) -> Head:
        head = self.heads.get(target)
        if head is None:
            if len(self.heads) >= self.MAX_TARGETS:
                self.heads.pop(next(iter(self.heads)))
            head = self.heads[target] = Head(since=self._now())
        return head

    def position(self, target: str) -> manscdp.PtzPosition:
        """What PTZPosition answers for ``target`` now (§A.2.6.15)."""
        pan, tilt, zoom = self.head(target).at(self._now())
        half = math.radians(WIDE_HFOV / 2)
        hfov = 2 * math.degrees(math.atan(math.tan(half) / zoom))
        vfov = 2 * math.degrees(math.atan(math.tan(math.radians(WIDE_VFOV / 2)) / zoom))
        return manscdp.PtzPosition(pan=round(pan, 2), tilt=round(tilt, 2), zoom=round(zoom, 2),
                                   horizontal_field_angle=round(hfov, 2), vertical_field_angle=round(vfov, 2),
                                   max_view_distance=round(WIDE_VIEW_DISTANCE * zoom, 1))

    # -- DeviceControl ---------------------------------------------------------
    def device_control(self, msg: manscdp.ManscdpMessage) -> list[bytes] | None:
        """Answer PTZPreciseCtrl and TargetTrack; follow a PTZCmd and leave its answer to ``PtzFrontEnd``."""
        if not isinstance(msg, manscdp.DeviceControl):
            return None
        if msg.ptz_precise_ctrl is not None:
            return self._precise(msg, msg.ptz_precise_ctrl)
        if msg.target_track is not None:
            return self._target_track(msg, msg.target_track)
        if msg.ptz_cmd is not None:
            try:
                cmd = ptz.decode(msg.ptz_cmd)
            except ptz.PtzCmdError:
                return None  # PtzFrontEnd records it and answers ERROR
            self._follow(msg.device_id, cmd)
        return None

    def _result(self, msg: manscdp.ManscdpMessage, result: str) -> list[bytes]:
        return [self._label(manscdp.encode_control_response(msg.sn, msg.device_id, result=result,
                                                            charset=self._charset()))]

    def _precise(self, msg: manscdp.DeviceControl, target: manscdp.PtzPrecise) -> list[bytes]:
        self.front.commands.append((msg.device_id, "PTZPreciseCtrl"))
        del self.front.commands[:-self.front.MAX_RECEIVED]
        given = (target.pan, target.tilt, target.zoom)
        if all(v is None for v in given) or not (
                _clean(target.pan, 0, 360) and _clean(target.tilt, -90, 90) and _clean(target.zoom, 1, MAX_ZOOM)):
            log.info("PTZPreciseCtrl for {target} refused: pan {pan}, tilt {tilt}, zoom {zoom}",
                     target=msg.device_id, pan=target.pan, tilt=target.tilt, zoom=target.zoom)
            return self._result(msg, "ERROR")
        head = self.head(msg.device_id)
        head.settle(self._now())
        pan, tilt, zoom = head.pan, head.tilt, head.zoom
        head.place(pan if target.pan is None else target.pan, tilt if target.tilt is None else target.tilt,
                   zoom if target.zoom is None else target.zoom)
        log.info("PTZPreciseCtrl for {target}: pan {pan}, tilt {tilt}, zoom {zoom}", target=msg.device_id,
                 pan=head.pan, tilt=head.tilt, zoom=head.zoom)
        return self._result(msg, "OK")

    def _target_track(self, msg: manscdp.DeviceControl, mode: manscdp.TargetTrackMode) -> list[bytes]:
        self.front.commands.append((msg.device_id, "TargetTrack"))
        del self.front.commands[:-self.front.MAX_RECEIVED]
        if mode is manscdp.TargetTrackMode.MANUAL and msg.target_area is None:
            log.info("TargetTrack Manual for {target} refused: no TargetArea", target=msg.device_id)
            return self._result(msg, "ERROR")
        if len(self.tracking) >= self.MAX_TARGETS and msg.device_id not in self.tracking:
            self.tracking.pop(next(iter(self.tracking)))
        self.tracking[msg.device_id] = TargetTracking(mode, msg.device_id2, msg.target_area)
        log.info("TargetTrack for {target}: {mode} (linked {linked})", target=msg.device_id, mode=mode.value,
                 linked=msg.device_id2)
        return self._result(msg, "OK")

    def _follow(self, target: str, cmd: ptz.PtzCmd) -> None:
        """What a well-formed PTZCmd does to the head, presets and cruise tracks (A.3.2, A.3.4, A.3.5)."""
        now = self._now()
        code = cmd.code
        if code & 0xC0 == 0:  # A.3.2: bits 7-6 = 00, a move or stop
            head = self.head(target)
            head.settle(now)
            pan = (1 if code & ptz.RIGHT else -1 if code & ptz.LEFT else 0) * MAX_PAN_RATE * cmd.data1 / 255
            tilt = (1 if code & ptz.UP else -1 if code & ptz.DOWN else 0) * MAX_TILT_RATE * cmd.data2 / 255
            zoom = (1 if code & ptz.ZOOM_IN else -1 if code & ptz.ZOOM_OUT else 0) * MAX_ZOOM_RATE * cmd.data3 / 15
            head.pan_rate, head.tilt_rate, head.zoom_rate = pan, tilt, zoom
        elif code in (ptz.PRESET_SET, ptz.PRESET_CALL, ptz.PRESET_DELETE):
            self._preset(target, code, cmd.data2, now)
        elif ptz.CRUISE_ADD <= code <= ptz.CRUISE_START:
            self._cruise(target, cmd, now)

    def _preset(self, target: str, code: int, index: int, now: float) -> None:
        positions = self.preset_positions.setdefault(target, {})
        head = self.head(target)
        if code == ptz.PRESET_SET:
            positions[index] = head.at(now)
        elif code == ptz.PRESET_DELETE:
            positions.pop(index, None)
        elif index in positions:
            head.settle(now)
            head.place(*positions[index])

    def _cruise(self, target: str, cmd: ptz.PtzCmd, now: float) -> None:
        groups = self.cruises.setdefault(target, {})
        number = cmd.data1
        if cmd.code == ptz.CRUISE_ADD:
            groups.setdefault(number, CruiseGroup()).points.append(cmd.data2)
        elif cmd.code == ptz.CRUISE_DELETE:
            group = groups.get(number)
            if cmd.data2 == 0 or group is None:
                groups.pop(number, None)
            elif cmd.data2 in group.points:
                group.points.remove(cmd.data2)
        elif cmd.code in (ptz.CRUISE_SPEED, ptz.CRUISE_DWELL):
            value = cmd.data2 | (cmd.data3 << 8)  # 12 bits: low 8 in byte 6, high 4 in byte 7
            group = groups.setdefault(number, CruiseGroup())
            if cmd.code == ptz.CRUISE_SPEED:
                group.speed = value
            else:
                group.stay = value
        elif cmd.code == ptz.CRUISE_START:
            group = groups.get(number)
            first = self.preset_positions.get(target, {}).get(group.points[0]) if group and group.points else None
            if first is not None:
                head = self.head(target)
                head.settle(now)
                head.place(*first)

    # -- queries ---------------------------------------------------------------
    def ptz_position(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """The PTZPosition answer (§A.2.6.15) of the channel queried."""
        return [self._label(manscdp.encode_ptz_position_response(
            msg.sn, msg.device_id, self.position(msg.device_id), charset=self._charset()))]

    def home_position_query(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """The HomePositionQuery answer (§A.2.6.12): what HomePosition (§A.2.3.1.10) set, else off."""
        home = self.front.home.get(msg.device_id)
        info = manscdp.HomePositionInfo(enabled="0", reset_time=0) if home is None else manscdp.HomePositionInfo(
            enabled=str(home.enabled if home.enabled is not None else 0), reset_time=home.reset_time,
            preset_index=home.preset_index)
        return [self._label(manscdp.encode_home_position_response(msg.sn, msg.device_id, info,
                                                                  charset=self._charset()))]

    def cruise_track_list_query(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """The CruiseTrackListQuery answer (§A.2.6.13): the tracks built by A.3.5, by number."""
        groups = self.cruises.get(msg.device_id, {})
        tracks = tuple(manscdp.CruiseTrack(number=n, name=f"Cruise {n}") for n in sorted(groups))
        return [self._label(manscdp.encode_cruise_track_list_response(msg.sn, msg.device_id, tracks,
                                                                      charset=self._charset()))]

    def cruise_track_query(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """The CruiseTrackQuery answer (§A.2.6.14): the points of track ``Number``; ERROR for none."""
        number = msg.number if isinstance(msg, manscdp.CruiseTrackQuery) else None
        group = None if number is None else self.cruises.get(msg.device_id, {}).get(number)
        if number is None or group is None:
            log.info("CruiseTrackQuery for {target}: no track {number}", target=msg.device_id, number=number)
            return [self._label(manscdp.encode_cruise_track_response(
                msg.sn, msg.device_id, number if number is not None else 0, None, (), result="ERROR",
                charset=self._charset()))]
        points = tuple(manscdp.CruisePoint(preset_index=p, stay_time=group.stay, speed=group.speed)
                       for p in group.points)
        return [self._label(manscdp.encode_cruise_track_response(
            msg.sn, msg.device_id, number, f"Cruise {number}", points, charset=self._charset()))]
