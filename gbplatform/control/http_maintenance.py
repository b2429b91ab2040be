"""The device-maintenance API (GB/T 28181-2022): SD cards and firmware upgrade.

``MaintenanceRoutes`` is mounted into the root API (``gbplatform.api.app``)
next to ``ControlRoutes``; ``MaintenanceService`` does the work. Errors:
400 naming the field, 404 unknown device, 409 offline (or an upgrade already
running), 422 a GB/T 28181-2016 device, 504 no answer within
``sip.query_timeout``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from klein import Klein
from msgspec import UNSET
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated
from gbplatform.control import shapes_maintenance as shapes
from gbplatform.control.maintenance import MaintenanceService, Upgrade
from gbplatform.control.shapes import CommandResult
from gbplatform.core.errors import NotFound
from gbplatform.db import queries as q

__all__ = ["MaintenanceRoutes", "upgrade_state"]

MAX_CARD_INDEX = 255  # cards are few: an SD slot or two, an NVR's disks
# A password in the URL (ftp://user:pass@host/) is the device's to use, not the API's to show back.
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*(@)")


def upgrade_state(upgrade: Upgrade) -> shapes.UpgradeState:
    """The API view of an upgrade session."""
    return shapes.UpgradeState(
        device_id=upgrade.device_id, session_id=upgrade.session_id, state=upgrade.state,
        firmware=upgrade.firmware, file_url=_URL_PASSWORD.sub(r"\1***\2", upgrade.file_url),
        manufacturer=upgrade.manufacturer,
        reason=upgrade.reason, device_firmware=upgrade.device_firmware,
        started_at=schemas.iso_epoch(upgrade.started_at), updated_at=schemas.iso_epoch(upgrade.updated_at),
        finished_at=schemas.iso_epoch(upgrade.finished_at),
    )


def check_file_url(url: str) -> str:
    """The firmware URL a device is sent: http/https/ftp with a host and a valid port (400 ``file_url``)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError:
        raise schemas.ValidationError("file_url", shapes.FILE_URL_MESSAGE) from None
    if parts.scheme not in ("http", "https", "ftp") or not parts.hostname or port == 0:
        raise schemas.ValidationError("file_url", shapes.FILE_URL_MESSAGE)
    return url


class MaintenanceRoutes(Routes):
    """``/api/v1/devices/<id>/sdcards``, ``sdcards/<index>/format`` and ``upgrade``."""

    app = Klein()

    @property
    def maintenance(self) -> MaintenanceService:
        service = self.platform.maintenance
        if service is None:
            raise RuntimeError("AppContext.maintenance is not wired (gbplatform.app.service does it)")
        return service

    @app.route("/api/v1/devices/<device_id>/sdcards", methods=["GET"])
    @authenticated
    async def sd_cards(self, request: Request, device_id: str) -> bytes:
        answer = await self.maintenance.sd_cards(device_id)
        return self._json(request, shapes.SdCardList(
            device_id=answer.device_id, result=answer.result, sum_num=answer.sum_num,
            items=[shapes.SdCardItem(id=c.id, hdd_name=c.hdd_name,
                                     status=None if c.status is None else c.status.strip().lower(),
                                     format_progress=c.format_progress, capacity=c.capacity,
                                     free_space=c.free_space) for c in answer.cards],
        ))

    @app.route("/api/v1/devices/<device_id>/sdcards/<int:index>/format", methods=["POST"])
    @authenticated
    async def format_sd_card(self, request: Request, device_id: str, index: int) -> bytes:
        if not 0 <= index <= MAX_CARD_INDEX:
            raise schemas.ValidationError("index", f"must be a card ID between 0 and {MAX_CARD_INDEX}")
        answer = await self.maintenance.format_sd_card(device_id, index)
        return self._json(request, CommandResult(device_id=answer.device_id, target_id=answer.target_id,
                                                 command=answer.command, result=answer.result))

    @app.route("/api/v1/devices/<device_id>/upgrade", methods=["POST"])
    @authenticated
    async def start_upgrade(self, request: Request, device_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.UpgradeBody,
                                  {"file_url": shapes.FILE_URL_MESSAGE})
        upgrade = await self.maintenance.start_upgrade(
            device_id, firmware=body.firmware, file_url=check_file_url(body.file_url),
            manufacturer=None if body.manufacturer is UNSET else body.manufacturer)
        # 202: the upgrade goes on on the device; 200 when it has ended already (refused).
        return self._json(request, upgrade_state(upgrade), 202 if upgrade.running else 200)

    @app.route("/api/v1/devices/<device_id>/upgrade", methods=["GET"])
    @authenticated
    async def upgrade(self, request: Request, device_id: str) -> bytes:
        latest = self.maintenance.latest(device_id)
        if latest is None:
            if await self.platform.db.run("get_device", q.get_device_txn, device_id) is None:
                raise NotFound(f"device {device_id} not found")
            raise NotFound(f"no upgrade of device {device_id} since the platform started")
        return self._json(request, upgrade_state(latest))
