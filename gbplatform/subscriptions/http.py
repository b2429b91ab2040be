"""The subscriptions API: ``GET|PUT /api/v1/devices/{id}/subscriptions`` (GB/T 28181-2016 §9.11).

``SubscriptionRoutes`` is mounted into the root API (``gbplatform.api.app``).
GET shows each kind's setting and state; PUT stores the device's own settings
and applies them at once (``SubscriptionService.update``: subscribe what is now
wanted, unsubscribe with ``Expires: 0`` what is not). 404 for an unknown device;
``ptz_position: true`` on a GB/T 28181-2016 device is 422.
"""

from __future__ import annotations

from typing import Any, cast

from klein import Klein
from msgspec import UNSET
from twisted.web.server import Request

from gbplatform.api import schemas
from gbplatform.api.routing import Routes, authenticated
from gbplatform.subscriptions import shapes, store
from gbplatform.subscriptions.service import KIND_SPECS, KindStatus, SubscriptionService

__all__ = ["SubscriptionRoutes", "subscriptions_json"]


def _kind(status: KindStatus) -> shapes.SubscriptionKind:
    return shapes.SubscriptionKind(
        wanted=status.wanted, setting=status.setting, state=cast(shapes.State, status.state),
        event=KIND_SPECS[status.kind].event, status=status.status, reason=status.reason,
        expires_at=schemas.iso_epoch(status.expires_at), last_notify_at=schemas.iso_epoch(status.last_notify_at),
    )


def subscriptions_json(service: SubscriptionService, device_id: str, settings: store.SubscriptionSettings,
                       kinds: list[KindStatus]) -> shapes.DeviceSubscriptions:
    by_kind = {k.kind: _kind(k) for k in kinds}
    return shapes.DeviceSubscriptions(
        device_id=device_id, position_interval=service.position_interval(settings),
        position_interval_setting=settings.position_interval, expires=service.config.expires,
        catalog=by_kind["catalog"], alarm=by_kind["alarm"], mobile_position=by_kind["mobile_position"],
        ptz_position=by_kind["ptz_position"],
    )


class SubscriptionRoutes(Routes):
    """``/api/v1/devices/<id>/subscriptions``."""

    app = Klein()

    @property
    def service(self) -> SubscriptionService:
        service = self.platform.subscriptions
        assert service is not None, "build_platform sets it"
        return service

    @app.route("/api/v1/devices/<device_id>/subscriptions", methods=["GET"])
    @authenticated
    async def subscriptions(self, request: Request, device_id: str) -> bytes:
        settings, kinds = await self.service.status(device_id)
        return self._json(request, subscriptions_json(self.service, device_id, settings, kinds))

    @app.route("/api/v1/devices/<device_id>/subscriptions", methods=["PUT"])
    @authenticated
    async def set_subscriptions(self, request: Request, device_id: str) -> bytes:
        body = schemas.parse_body(self._body(request), shapes.SubscriptionsBody)
        changes: dict[str, Any] = {name: getattr(body, name) for name in (*store.KIND_COLUMNS, "position_interval")
                                   if getattr(body, name) is not UNSET}
        settings, kinds = await self.service.update(device_id, changes)
        return self._json(request, subscriptions_json(self.service, device_id, settings, kinds))
