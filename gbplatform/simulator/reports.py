"""What a simulated device reports on its own: alarms and mobile positions (GB/T 28181-2016 §9.4, §9.10).

``SimReports`` sends, through the device's one report path (``SimDevice.send_report``: a MESSAGE,
or a NOTIFY once the platform subscribed), an alarm every ``alarm_interval`` seconds and its position
every ``position_interval`` seconds (0: never; ``--alarm-interval``, ``--position-interval``), and an
alarm at once on ``alarm_now`` (SIGUSR2 for every device: ``alarm_on_sigusr2``). While the platform
holds a MobilePosition subscription, its ``Interval`` rules instead (``follow_subscription``, called by
the notifier; GB/T 28181-2016 §9.11, §A.2.4.8): the position at once, then every ``Interval`` seconds,
as NOTIFYs in the subscription; when it ends, the device's own schedule comes back. It answers the
Alarm Query (§A.2.4.5) with the alarms it sent plus a short history from before it started, filtered
by the query's priority range and time range, and the MobilePosition Query (§A.2.4.8) with where it
is now.

Alarms come from the device's first channel (a camera's motion detection: method 5, type 2, event
1 start; §A.2.5.5), priorities cycling 1-4. The position moves on a circle of about 1 km around a
point set by the device's index, one degree of arc per second.
"""

from __future__ import annotations

import math
import signal
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sip import manscdp
from sip.useragent import QueryAnswers

__all__ = ["HISTORY", "SimReports", "alarm_on_sigusr2"]

log = Logger()

HISTORY: Final = 50
"""Alarms a device keeps for the Alarm Query."""
_SEEDED: Final = 3  # alarms "from before the simulator started", so a first query has an answer
_RADIUS_DEG: Final = 0.01


class SimReports:
    """A simulated device's alarms and positions; see the module docstring."""

    def __init__(self, *, device_id: str, index: int, reactor: Any, send: Callable[[str, bytes], None],
                 next_sn: Callable[[], int], charset: Callable[[], str], label: Callable[[bytes], bytes],
                 source: Callable[[], str], online: Callable[[], bool], alarm_interval: float = 0.0,
                 position_interval: float = 0.0) -> None:
        self.device_id = device_id
        self.reactor = reactor
        self._send = send
        self._next_sn = next_sn
        self._charset = charset
        self._label = label
        self._source = source
        self._online = online
        self.alarm_interval = alarm_interval
        self.position_interval = position_interval
        self.center = (116.39 + 0.05 * (index % 20), 39.90 + 0.05 * (index // 20 % 20))
        self.sent_alarms = 0
        self.sent_positions = 0
        now = self._now()
        self.history: deque[manscdp.AlarmItem] = deque(
            (self._item(now - 3600.0 * (n + 1), priority=1 + n % 4) for n in reversed(range(_SEEDED))),
            maxlen=HISTORY)
        self._loops: list[LoopingCall] = []
        self._position_loop: LoopingCall | None = None
        # The Interval of the platform's MobilePosition subscription while there is one (§A.2.4.8).
        self.subscribed_interval: float | None = None
        self._running = False

    def _now(self) -> float:
        return float(self.reactor.seconds())

    @staticmethod
    def _local(epoch: float) -> datetime:
        """A device's clock: local time, no zone (§A.2.1)."""
        return datetime.fromtimestamp(epoch).replace(microsecond=0)

    def _item(self, epoch: float, *, priority: int) -> manscdp.AlarmItem:
        return manscdp.alarm_item(self._source(), priority=priority, method=5, time=self._local(epoch),
                                  description="motion detected", alarm_type=2, event_type=1,
                                  longitude=self.center[0], latitude=self.center[1])

    # -- schedule ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the periodic reports (none when both intervals are 0); a second start restarts them."""
        self.stop()
        self._running = True
        if self.alarm_interval > 0:
            self._loops.append(self._loop(self.alarm_now, self.alarm_interval, now=False))
        self._schedule_positions(now=False)

    def stop(self) -> None:
        self._running = False
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self._stop_positions()

    def follow_subscription(self, interval: float | None) -> None:
        """The platform subscribed to MobilePosition with ``interval`` seconds (or refreshed it with a new
        one): the position now, then every ``interval`` (GB/T 28181-2016 §A.2.4.8), replacing the
        device's own schedule. None: the subscription ended, back to ``position_interval``."""
        if interval == self.subscribed_interval:
            return  # a refresh with the same Interval keeps the rhythm
        self.subscribed_interval = interval
        if interval is not None:
            log.info("device {id}: position every {n} s in the MobilePosition subscription", id=self.device_id,
                     n=interval)
        if self._running:
            self._schedule_positions(now=interval is not None)

    def _schedule_positions(self, *, now: bool) -> None:
        self._stop_positions()
        interval = self.position_interval if self.subscribed_interval is None else self.subscribed_interval
        if interval > 0:
            self._position_loop = self._loop(self.position_now, interval, now=now)

    def _stop_positions(self) -> None:
        loop, self._position_loop = self._position_loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _loop(self, report: Callable[[], bool], interval: float, *, now: bool) -> LoopingCall:
        loop = LoopingCall(report)
        loop.clock = self.reactor
        d = loop.start(interval, now=now)
        d.addErrback(lambda f: log.failure("device {id}: periodic report failed", f, id=self.device_id))
        return loop

    # -- reports ------------------------------------------------------------------------------------
    def alarm_now(self) -> bool:
        """Send one alarm now (when registered); True when sent."""
        if not self._online():
            return False
        item = self._item(self._now(), priority=1 + self.sent_alarms % 4)
        self.history.append(item)
        self.sent_alarms += 1
        assert item.alarm_time is not None and item.alarm_priority is not None and item.alarm_method is not None
        body = manscdp.encode_alarm_notify(
            self._next_sn(), item.device_id or self.device_id, priority=item.alarm_priority,
            method=item.alarm_method, time=item.alarm_time, description=item.alarm_description,
            longitude=item.longitude, latitude=item.latitude, alarm_type=item.alarm_type,
            event_type=item.event_type, charset=self._charset())
        log.info("device {id}: alarm {n} from {source} (priority {p})", id=self.device_id, n=self.sent_alarms,
                 source=item.device_id, p=item.alarm_priority)
        self._send("Alarm", self._label(body))
        return True

    def position(self, sn: int) -> bytes:
        """A MobilePosition body of where the device is now (§A.2.5.6)."""
        now = self._now()
        angle = math.radians(now % 360.0)
        lon = round(self.center[0] + _RADIUS_DEG * math.cos(angle), 6)
        lat = round(self.center[1] + _RADIUS_DEG * math.sin(angle), 6)
        heading = (math.degrees(angle) + 360.0) % 360.0  # tangent of the counter-clockwise circle, from north
        return self._label(manscdp.encode_mobile_position(
            sn, self.device_id, time=self._local(now), longitude=lon, latitude=lat, speed=40.0,
            direction=round(heading, 1), altitude=50.0, charset=self._charset()))

    def position_now(self) -> bool:
        """Send the device's position now (when registered); True when sent."""
        if not self._online():
            return False
        self.sent_positions += 1
        self._send("MobilePosition", self.position(self._next_sn()))
        return True

    # -- queries -----------------------------------------------------------------------------------
    def register(self, answers: QueryAnswers) -> None:
        answers.register("Alarm", self.answer_alarm_query)
        answers.register("MobilePosition", lambda query: [self.position(query.sn)])

    def answer_alarm_query(self, query: manscdp.ManscdpMessage) -> list[bytes]:
        """The alarms kept that match the query (§A.2.4.5), newest last, in one answer."""
        if not isinstance(query, manscdp.AlarmQuery):
            return []
        lo = query.start_alarm_priority or 1
        hi = query.end_alarm_priority or 4
        methods = {m.strip() for m in (query.alarm_method or "").split("/") if m.strip()}
        start = query.start_alarm_time or datetime.min
        end = query.end_alarm_time or datetime.max - timedelta(days=1)
        found = [item for item in self.history
                 if lo <= (item.alarm_priority or 0) <= hi
                 and (not methods or str(item.alarm_method) in methods)
                 and item.alarm_time is not None and start <= item.alarm_time.replace(tzinfo=None) <= end]
        return [self._label(manscdp.encode_alarm_query_response(query.sn, self.device_id, len(found), found,
                                                                charset=self._charset()))]


def alarm_on_sigusr2(reactor: Any, devices: list[Any]) -> None:
    """SIGUSR2: every registered device sends one alarm now (``SimReports.alarm_now``)."""

    def fire() -> None:
        sent = sum(1 for device in devices if device.reports.alarm_now())
        log.info("SIGUSR2: {n} alarm(s) sent", n=sent)

    signal.signal(signal.SIGUSR2, lambda signum, frame: reactor.callFromThread(fire))
