"""Queries the platform asks devices: DeviceInfo, DeviceStatus, ConfigDownload, Catalog.

On registration (or re-registration from a new address) a device is asked
its DeviceInfo, its BasicParam (heartbeat interval and count, GB/T
28181-2016 §A.2.6.8) and its Catalog. A registration storm of thousands of
devices must not become a storm of queries that starves signalling, so the
onboarding queries go through a bounded queue; the API's on-demand queries
bypass it.

The bound is on queries in flight across all devices (``concurrency``), not
on devices: each of a device's three queries holds one slot until it is
answered, fails or times out (10 s for DeviceInfo and ConfigDownload, 30 s
for Catalog), and the next queued device starts as soon as three slots are
free. A device that ignores some queries holds only those slots, so the
devices that answer keep being onboarded at the rate they answer (issue 8:
with one worker per device waiting for its slowest answer, 32 silent devices
stopped onboarding for 30 s at a time).

Overload (issue 12): the bound adapts (:class:`AdaptiveLimit`, AIMD). While
the reactor runs late (a repeating call's lateness on the clock) or the
registry falls behind (catalog stores queued), fewer devices are started, so
REGISTER and keepalives keep their answers in time: a 50,000-device storm
used to collapse, keepalives timing out and devices re-registering, the load
growing instead of draining. ``sip.onboarding_queries`` is the ceiling
(1,500: at 167 devices/s, 10 % of them silent on one query, the silent
queries alone hold about 280 slots; the answering ones about 600 more at
1.2 s per answer). At most ``START_PER_TURN`` devices start in one reactor
turn, so a burst of MESSAGEs does not hold up the datagrams waiting to be read.

A DeviceInfo or ConfigDownload query that times out while the device is
still online is asked once more (logged) before it is given up: under load
answers come late, and a device that answered is not silent. The first
attempt's slot is given back when it times out, so retried queries of
devices that really are silent do not hold up the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.core.clock import Clock, utc_datetime
from gbplatform.core.errors import DeviceRejected, DeviceTimeout, DomainError
from gbplatform.db.database import Database
from gbplatform.devices import shapes
from gbplatform.devices.catalog import CatalogSync
from gbplatform.devices.registrar import DeviceManager
from gbplatform.signalling.router import SipRouter
from sip import manscdp

log = Logger()

ONBOARDING_QUERIES = 3  # DeviceInfo, ConfigDownload BasicParam, Catalog
#: Catalog stores queued for the registry past which onboarding is held back (the database is behind).
STORE_BACKLOG = 1000
#: Devices started in one reactor turn (3 MESSAGEs each); the rest wait for the next turn.
START_PER_TURN = 50


class AdaptiveLimit:
    """AIMD bound on onboarding queries in flight, driven by the reactor's lateness.

    Theory of operation: while onboarding has work, a call repeats every
    ``TICK`` seconds on the injected clock; how late it runs is how long the
    reactor was busy elsewhere (datagrams, database callbacks, garbage
    collection). Once per ``PERIOD`` the worst lateness is compared with
    ``max_lag``:

    - over it, or ``pressure()`` (the registry's queue is long), or most of the
      period's DeviceInfo/ConfigDownload answers (``answered(delay)``, a time-out
      counted as its timeout) took over ``MAX_ANSWER_DELAY``: the limit is
      multiplied by ``DECREASE`` (not below ``floor``); queries in flight end
      on their own, no new device starts until the count is under the limit;
    - under half of it, at most a quarter of the answers slow, and ``wanted()``
      (devices wait for slots): the limit grows by ``step`` (not above
      ``ceiling``), and ``on_raise`` starts them;
    - in between: unchanged.

    Why the answer delay too: a platform short of CPU reads its socket late and
    the kernel queues (then drops) datagrams: the reactor's timers can run on
    time while each answer waits seconds in the socket buffer (50,000 devices on
    a shared 2-core machine: 6.6 MB queued, 660,000 datagrams dropped). A
    one-answer query that takes seconds says so whatever the reactor's lag.

    Multiplicative decrease and additive increase (as TCP congestion
    avoidance, RFC 5681 §3.1) make a storm drain: the limit settles where the
    reactor keeps up. The default ``max_lag`` (0.25 s) is half of SIP's T1:
    an answer later than T1 makes a UDP device retransmit (RFC 3261 §17.1.2.2,
    Timer E), more load on a platform that is already late. ``max_lag`` 0
    turns adaptation off (the limit stays at the ceiling).
    """

    TICK = 0.1
    PERIOD = 1.0
    DECREASE = 0.7
    #: A one-answer query slower than this (seconds) is a sign of congestion (a device on a LAN answers in ms).
    MAX_ANSWER_DELAY = 2.0
    #: Answers a period needs before their delays count.
    MIN_ANSWERS = 5

    def __init__(
        self,
        clock: Clock,
        *,
        ceiling: int,
        max_lag: float = 0.25,
        active: Callable[[], bool] = lambda: False,
        wanted: Callable[[], bool] = lambda: False,
        pressure: Callable[[], bool] = lambda: False,
        on_raise: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.max_lag = max_lag
        self.active = active
        self.wanted = wanted
        self.pressure = pressure
        self.on_raise = on_raise
        self.ceiling = ceiling
        self.floor = ceiling
        self.step = ceiling
        self.limit = ceiling
        self.set_ceiling(ceiling)
        self.lag = 0.0  # the worst lateness of the last whole period, seconds
        self.stats = {"periods": 0, "decreases": 0, "increases": 0}
        self._timer: Any = None
        self._expected = 0.0
        self._period_end = 0.0
        self._worst = 0.0
        self._answers = 0
        self._slow = 0

    def set_ceiling(self, ceiling: int) -> None:
        """The configured bound; the limit restarts there."""
        self.ceiling = ceiling
        # A twentieth of the ceiling: 75 queries (25 devices) of the default 1,500 at the least.
        self.floor = min(ceiling, max(ONBOARDING_QUERIES, ceiling // 20))
        # Grows back by a fiftieth (30 of 1,500) a good period: from the floor to the ceiling in about
        # 50 s. Faster (a twentieth) swung between 270 and 600 every few seconds at 50,000 devices.
        self.step = max(ONBOARDING_QUERIES, ceiling // 50)
        self.limit = ceiling

    @property
    def running(self) -> bool:
        return self._timer is not None

    def answered(self, delay: float) -> None:
        """A DeviceInfo or ConfigDownload query ended after ``delay`` seconds (its timeout if unanswered)."""
        self._answers += 1
        if delay > self.MAX_ANSWER_DELAY:
            self._slow += 1

    def start(self) -> None:
        """Measure while ``active()``; a no-op when already measuring or adaptation is off."""
        if self._timer is not None or self.max_lag <= 0:
            return
        now = self.clock.seconds()
        self._period_end = now + self.PERIOD
        self._worst = 0.0
        self._answers = self._slow = 0
        self._schedule(now)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _schedule(self, now: float) -> None:
        self._expected = now + self.TICK
        self._timer = self.clock.call_later(self.TICK, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        self._worst = max(self._worst, now - self._expected)
        if now >= self._period_end:
            self._adjust()
            self._period_end = now + self.PERIOD
            self._worst = 0.0
            self._answers = self._slow = 0
        if self.active():
            self._schedule(now)

    def _adjust(self) -> None:
        self.lag = self._worst
        self.stats["periods"] += 1
        pressure = self.pressure()
        slow = self._answers >= self.MIN_ANSWERS and self._slow * 2 > self._answers
        if self._worst > self.max_lag or pressure or slow:
            lower = max(self.floor, int(self.limit * self.DECREASE))
            if lower < self.limit:
                self.stats["decreases"] += 1
                log.info("onboarding held back: limit {old} -> {new} queries (reactor {lag_ms} ms late, "
                         "{slow} of {answers} answers slow, registry behind: {pressure})", old=self.limit,
                         new=lower, lag_ms=round(self._worst * 1000), slow=self._slow, answers=self._answers,
                         pressure=pressure)
                self.limit = lower
        elif (self._worst <= self.max_lag / 2 and self._slow * 4 <= self._answers and self.limit < self.ceiling
              and self.wanted()):
            self.limit = min(self.ceiling, self.limit + self.step)
            self.stats["increases"] += 1
            self.on_raise()


def _status_json(msg: manscdp.DeviceStatusResponse) -> shapes.DeviceStatus:
    return shapes.DeviceStatus(
        device_id=msg.device_id, result=msg.result, online=msg.online, status=msg.status, reason=msg.reason,
        encode=msg.encode, record=msg.record,
        device_time=msg.device_time.isoformat() if msg.device_time else None,
        alarm_status=[shapes.AlarmStatus(device_id=a.device_id, duty_status=a.duty_status)
                      for a in msg.alarm_status],
        fields=dict(msg.fields),
    )


def _info_json(msg: manscdp.DeviceInfoResponse) -> shapes.DeviceInfo:
    return shapes.DeviceInfo(
        device_id=msg.device_id, result=msg.result, device_name=msg.device_name, manufacturer=msg.manufacturer,
        model=msg.model, firmware=msg.firmware, channel=msg.channel, fields=dict(msg.fields),
    )


class DeviceQueries:
    def __init__(
        self,
        *,
        router: SipRouter,
        devices: DeviceManager,
        catalog: CatalogSync,
        db: Database,
        clock: Clock,
        concurrency: int = 1500,
        max_queue: int = 100_000,
        max_lag: float = 0.25,
    ) -> None:
        self.router = router
        self.devices = devices
        self.catalog = catalog
        self.db = db
        self.clock = clock
        self.max_queue = max_queue
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self.slots = 0  # slots held: onboarding queries sent and not yet ended, first attempts
        self.retrying = 0  # queries asked a second time (they hold no slot)
        self.stats = {"retried": 0, "retry_answered": 0}
        self._starting = False
        self._resume: Any = None  # the next turn's _start_next, when a turn started START_PER_TURN devices
        self.limiter = AdaptiveLimit(
            clock, ceiling=concurrency, max_lag=max_lag,
            active=lambda: bool(self._queue) or self.in_flight > 0,
            wanted=lambda: bool(self._queue),
            pressure=lambda: self.catalog.stores.queued > STORE_BACKLOG,
            on_raise=self._start_next,
        )
        devices.on_registered.append(self.device_registered)

    @property
    def concurrency(self) -> int:
        """The ceiling of the adaptive limit (``sip.onboarding_queries``)."""
        return self.limiter.ceiling

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        self.limiter.set_ceiling(value)
        self._start_next()

    @property
    def limit(self) -> int:
        """Queries in flight the adaptive limit allows now (``GET /health``: ``sip.onboarding_limit``)."""
        return self.limiter.limit

    @property
    def in_flight(self) -> int:
        """Onboarding queries sent and not yet ended, all devices together, second attempts included."""
        return self.slots + self.retrying

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def device_registered(self, device_id: str, fresh: bool) -> None:
        if not fresh or device_id in self._queued:
            return
        if len(self._queue) >= self.max_queue:
            log.warn("onboarding queue full; device {id} not queried", id=device_id)
            return
        self._queue.append(device_id)
        self._queued.add(device_id)
        self.limiter.start()
        self._start_next()

    def _start_next(self) -> None:
        # An onboarding can end within its own start (device gone, registry idle)
        # and release its slots from inside this loop: the outer call goes on,
        # rather than recursing once per queued device.
        if self._starting:
            return
        self._starting = True
        started = 0
        try:
            while self._queue and self.slots + ONBOARDING_QUERIES <= self.limiter.limit:
                if started >= START_PER_TURN:
                    # The rest on the next reactor turn: datagrams waiting (REGISTER,
                    # keepalives, answers) are read in between, not after a whole burst.
                    if self._resume is None:
                        self._resume = self.clock.call_later(0, self._resumed)
                    break
                device_id = self._queue.popleft()
                self._queued.discard(device_id)
                self.slots += ONBOARDING_QUERIES
                d = ensureDeferred(self.onboard(device_id, release=self._release))
                if not d.called:  # one gone before its turn sent nothing: it does not count
                    started += 1
                d.addErrback(self._onboarding_failed, device_id)
        finally:
            self._starting = False

    async def _timed(self, step: Any, device_id: str) -> None:
        """Run one query step, telling the adaptive limit how long its answer took (or its timeout)."""
        started = self.clock.seconds()
        try:
            await step(device_id)
        except DeviceTimeout:
            self.limiter.answered(self.clock.seconds() - started)
            raise
        self.limiter.answered(self.clock.seconds() - started)

    def _resumed(self) -> None:
        self._resume = None
        self._start_next()

    @staticmethod
    def _onboarding_failed(failure: Failure, device_id: str) -> None:
        log.failure("onboarding {id} failed", failure, id=device_id)

    def _release(self, slots: int = 1) -> None:
        self.slots -= slots
        self._start_next()

    async def onboard(self, device_id: str, release: Callable[[int], None] = lambda n: None) -> None:
        """DeviceInfo, BasicParam and Catalog for a newly registered device, at once.

        Asked together so that a device that ignores one query (many ignore
        ConfigDownload) does not hold up the others until its timeout.
        ``release(n)`` is called as each query ends, with the number of
        queries that ended (3 at once if the device is gone before its turn).
        """
        # The device's row must exist; waits only if its registration is still unwritten (never fails: logs).
        await self.devices.writer.written(device_id)
        if not self.devices.is_known(device_id):
            release(ONBOARDING_QUERIES)
            return

        async def guarded(step: Any) -> None:
            released = retried = False
            try:
                try:
                    await self._timed(step, device_id)
                except DeviceTimeout as e:
                    if not self.devices.is_known(device_id):
                        raise
                    # Online, so perhaps answered late by a loaded platform (issue 12: 169 of
                    # 10,000 DeviceInfo answers came after sip.query_timeout): ask once more. The
                    # slot goes to the next device meanwhile: a silent device holds none for it.
                    log.info("device {id}: {step} not answered in time ({err}); asking once more",
                             id=device_id, step=step.__name__, err=e.message)
                    self.stats["retried"] += 1
                    self.retrying += 1
                    retried = released = True
                    release(1)
                    await self._timed(step, device_id)
                    self.stats["retry_answered"] += 1
            except DomainError as e:
                log.info("device {id}: {step} failed: {err}", id=device_id, step=step.__name__, err=e.message)
            finally:
                if retried:
                    self.retrying -= 1
                if not released:
                    release(1)

        def catalog_ended(result: Any) -> Any:
            release(1)
            return result

        steps: list[Deferred[Any]] = [
            ensureDeferred(guarded(self.onboarding_info)),
            ensureDeferred(guarded(self.basic_param)),
        ]
        catalog = self.catalog.start(device_id)
        # The slot comes free when the sync ends; its store is group-committed later (catalog.py).
        steps += [catalog.ended.addBoth(catalog_ended), catalog.done]
        await gatherResults(steps)

    async def device_info(self, device_id: str, *, batch: bool = False) -> shapes.DeviceInfo:
        """Query and store DeviceInfo (GB/T 28181-2016 §A.2.4.4 / §A.2.6.5).

        ``batch``: leave the write to the next batch (onboarding); otherwise
        it is stored before returning, so the API shows what it just answered.
        """
        msg = await self.router.query(device_id, "DeviceInfo")
        if not isinstance(msg, manscdp.DeviceInfoResponse):
            raise DeviceRejected(f"device {device_id} sent an unexpected DeviceInfo answer")
        at = utc_datetime(self.clock.time())
        self.devices.writer.add(
            "device_info", device_id,
            dict(name=msg.device_name, manufacturer=msg.manufacturer, model=msg.model, firmware=msg.firmware, at=at),
        )
        if not batch:
            await self.devices.writer.flush()
        return _info_json(msg)

    async def onboarding_info(self, device_id: str) -> shapes.DeviceInfo:
        return await self.device_info(device_id, batch=True)

    async def device_status(self, device_id: str) -> shapes.DeviceStatus:
        """Query DeviceStatus (GB/T 28181-2016 §A.2.4.3 / §A.2.6.6)."""
        msg = await self.router.query(device_id, "DeviceStatus")
        if not isinstance(msg, manscdp.DeviceStatusResponse):
            raise DeviceRejected(f"device {device_id} sent an unexpected DeviceStatus answer")
        return _status_json(msg)

    async def basic_param(self, device_id: str) -> dict[str, Any] | None:
        """ConfigDownload BasicParam; applies HeartBeatInterval/Count (§A.2.4.7, §A.2.6.8)."""
        msg = await self.router.query(device_id, "ConfigDownload", extra={"ConfigType": "BasicParam"})
        if not isinstance(msg, manscdp.ConfigDownloadResponse) or msg.basic_param is None:
            return None
        bp = msg.basic_param
        self.devices.set_basic_param(device_id, bp.heart_beat_interval, bp.heart_beat_count)
        return {
            "name": bp.name,
            "expiration": bp.expiration,
            "heart_beat_interval": bp.heart_beat_interval,
            "heart_beat_count": bp.heart_beat_count,
        }
