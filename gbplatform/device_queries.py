"""Queries the platform asks devices: DeviceInfo, DeviceStatus, ConfigDownload, Catalog.

On registration (or re-registration from a new address) a device is asked
its DeviceInfo, its BasicParam (heartbeat interval and count, GB/T
28181-2016 §A.2.6.8) and its Catalog. A registration storm of thousands of
devices must not become a storm of queries that starves signalling, so the
onboarding queries go through a bounded queue worked by ``concurrency``
workers; the API's on-demand queries bypass it.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.logger import Logger

from gbplatform.catalog import CatalogSync
from gbplatform.clock import Clock
from gbplatform.db.database import Database
from gbplatform.errors import DeviceRejected, DomainError
from sip import manscdp

log = Logger()


def _status_json(msg: manscdp.DeviceStatusResponse) -> dict[str, Any]:
    return {
        "device_id": msg.device_id,
        "result": msg.result,
        "online": msg.online,
        "status": msg.status,
        "reason": msg.reason,
        "encode": msg.encode,
        "record": msg.record,
        "device_time": msg.device_time.isoformat() if msg.device_time else None,
        "alarm_status": [{"device_id": a.device_id, "duty_status": a.duty_status} for a in msg.alarm_status],
        "fields": dict(msg.fields),
    }


def _info_json(msg: manscdp.DeviceInfoResponse) -> dict[str, Any]:
    return {
        "device_id": msg.device_id,
        "result": msg.result,
        "device_name": msg.device_name,
        "manufacturer": msg.manufacturer,
        "model": msg.model,
        "firmware": msg.firmware,
        "channel": msg.channel,
        "fields": dict(msg.fields),
    }


class DeviceQueries:
    def __init__(
        self,
        *,
        app: Any,
        devices: Any,
        catalog: CatalogSync,
        db: Database,
        clock: Clock,
        concurrency: int = 32,
        max_queue: int = 100_000,
    ) -> None:
        self.app = app
        self.devices = devices
        self.catalog = catalog
        self.db = db
        self.clock = clock
        self.concurrency = concurrency
        self.max_queue = max_queue
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._workers = 0
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
        while self._workers < self.concurrency and self._queue:
            self._workers += 1
            d = ensureDeferred(self._work())
            d.addErrback(lambda f: log.failure("onboarding worker failed", f))

    async def _work(self) -> None:
        try:
            while self._queue:
                device_id = self._queue.popleft()
                self._queued.discard(device_id)
                await self.onboard(device_id)
        finally:
            self._workers -= 1

    async def onboard(self, device_id: str) -> None:
        """DeviceInfo, BasicParam and Catalog for a newly registered device, at once.

        Asked together so that a device that ignores one query (many ignore
        ConfigDownload) does not hold up the others until its timeout.
        """
        await self.devices.writer.flush()  # the device's row must exist before we write to it
        if not self.devices.is_known(device_id):
            return

        async def guarded(step: Any) -> None:
            try:
                await step(device_id)
            except DomainError as e:
                log.info("device {id}: {step} failed: {err}", id=device_id, step=step.__name__, err=e.message)

        steps: list[Deferred[Any]] = [
            ensureDeferred(guarded(self.onboarding_info)),
            ensureDeferred(guarded(self.basic_param)),
        ]
        steps.append(self.catalog.start(device_id).done)
        await gatherResults(steps)

    async def device_info(self, device_id: str, *, batch: bool = False) -> dict[str, Any]:
        """Query and store DeviceInfo (GB/T 28181-2016 §A.2.4.4 / §A.2.6.5).

        ``batch``: leave the write to the next batch (onboarding); otherwise
        it is stored before returning, so the API shows what it just answered.
        """
        msg = await self.app.query(device_id, "DeviceInfo")
        if not isinstance(msg, manscdp.DeviceInfoResponse):
            raise DeviceRejected(f"device {device_id} sent an unexpected DeviceInfo answer")
        at = dt.datetime.fromtimestamp(self.clock.time(), dt.UTC)
        self.devices.writer.add(
            "device_info", device_id,
            dict(name=msg.device_name, manufacturer=msg.manufacturer, model=msg.model, firmware=msg.firmware, at=at),
        )
        if not batch:
            await self.devices.writer.flush()
        return _info_json(msg)

    async def onboarding_info(self, device_id: str) -> dict[str, Any]:
        return await self.device_info(device_id, batch=True)

    async def device_status(self, device_id: str) -> dict[str, Any]:
        """Query DeviceStatus (GB/T 28181-2016 §A.2.4.3 / §A.2.6.6)."""
        msg = await self.app.query(device_id, "DeviceStatus")
        if not isinstance(msg, manscdp.DeviceStatusResponse):
            raise DeviceRejected(f"device {device_id} sent an unexpected DeviceStatus answer")
        return _status_json(msg)

    async def basic_param(self, device_id: str) -> dict[str, Any] | None:
        """ConfigDownload BasicParam; applies HeartBeatInterval/Count (§A.2.4.7, §A.2.6.8)."""
        msg = await self.app.query(device_id, "ConfigDownload", extra={"ConfigType": "BasicParam"})
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
