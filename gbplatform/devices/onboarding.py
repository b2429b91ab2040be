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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.core.clock import Clock, utc_datetime
from gbplatform.core.errors import DeviceRejected, DomainError
from gbplatform.db.database import Database
from gbplatform.devices import shapes
from gbplatform.devices.catalog import CatalogSync
from gbplatform.devices.registrar import DeviceManager
from gbplatform.signalling.router import SipRouter
from sip import manscdp

log = Logger()

ONBOARDING_QUERIES = 3  # DeviceInfo, ConfigDownload BasicParam, Catalog


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
        concurrency: int = 600,
        max_queue: int = 100_000,
    ) -> None:
        self.router = router
        self.devices = devices
        self.catalog = catalog
        self.db = db
        self.clock = clock
        self.concurrency = concurrency
        self.max_queue = max_queue
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self.in_flight = 0  # onboarding queries sent and not yet ended, all devices together
        self._starting = False
        devices.on_registered.append(self.device_registered)

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
        self._start_next()

    def _start_next(self) -> None:
        # An onboarding can end within its own start (device gone, registry idle)
        # and release its slots from inside this loop: the outer call goes on,
        # rather than recursing once per queued device.
        if self._starting:
            return
        self._starting = True
        try:
            while self._queue and self.in_flight + ONBOARDING_QUERIES <= self.concurrency:
                device_id = self._queue.popleft()
                self._queued.discard(device_id)
                self.in_flight += ONBOARDING_QUERIES
                d = ensureDeferred(self.onboard(device_id, release=self._release))
                d.addErrback(self._onboarding_failed, device_id)
        finally:
            self._starting = False

    @staticmethod
    def _onboarding_failed(failure: Failure, device_id: str) -> None:
        log.failure("onboarding {id} failed", failure, id=device_id)

    def _release(self, slots: int = 1) -> None:
        self.in_flight -= slots
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
            try:
                await step(device_id)
            except DomainError as e:
                log.info("device {id}: {step} failed: {err}", id=device_id, step=step.__name__, err=e.message)
            finally:
                release(1)

        def catalog_ended(result: Any) -> Any:
            release(1)
            return result

        steps: list[Deferred[Any]] = [
            ensureDeferred(guarded(self.onboarding_info)),
            ensureDeferred(guarded(self.basic_param)),
            self.catalog.start(device_id).done.addBoth(catalog_ended),
        ]
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
