"""API shapes of the subscriptions (``/api/v1/devices/{id}/subscriptions``, GB/T 28181-2016 §9.11).

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import OptStr, OptTime, Shape

__all__ = ["DeviceSubscriptions", "SUBSCRIPTIONS_EXAMPLE", "SubscriptionKind", "SubscriptionsBody"]

State = Literal["active", "pending", "failed", "off"]
Interval = Annotated[int, Meta(ge=1, le=3600, description="MobilePosition `Interval` asked for, seconds.")]
Setting = Annotated[bool | None, Meta(description="The device's own choice; `null`: the `[subscriptions]` default.")]


class SubscriptionKind(Shape):
    """One kind of subscription on one device, as it stands."""

    wanted: Annotated[bool, Meta(description=(
        "Whether the platform subscribes: the device's setting, else the default (PTZPosition only on a "
        "GB/T 28181-2022 device)."))]
    setting: Setting
    state: Annotated[State, Meta(description=(
        "`active` (accepted, NOTIFYs come), `pending` (SUBSCRIBE sent, or the device said pending), `failed` "
        "(refused, no answer, or terminated: see `status`/`reason`; retried with a back-off), `off`."))]
    event: Annotated[str, Meta(description="The `Event` header sent (`Catalog`, `presence`).")]
    status: Annotated[int | None, Meta(description="The device's last answer: SIP status (200 for a NOTIFY).")]
    reason: Annotated[OptStr, Meta(description="Its reason phrase, or why the subscription ended.")]
    expires_at: OptTime
    last_notify_at: OptTime


class DeviceSubscriptions(Shape):
    """A device's subscriptions (GB/T 28181-2016 §9.11): catalog, alarm, mobile position, PTZ position."""

    device_id: str
    position_interval: Interval
    position_interval_setting: Annotated[int | None, Meta(description="The device's own interval; `null`: "
                                                                      "the default.")]
    expires: Annotated[int, Meta(description="Subscription duration asked for, seconds (`subscriptions.expires`).")]
    catalog: SubscriptionKind
    alarm: SubscriptionKind
    mobile_position: SubscriptionKind
    ptz_position: SubscriptionKind


class SubscriptionsBody(Shape, forbid_unknown_fields=True):
    """What to change; an absent member stays as it is, `null` goes back to the `[subscriptions]` default."""

    catalog: Setting | UnsetType = UNSET
    alarm: Setting | UnsetType = UNSET
    mobile_position: Setting | UnsetType = UNSET
    ptz_position: Annotated[bool | None, Meta(description=(
        "PTZPosition (GB/T 28181-2022); `true` on a 2016 device is 422."))] | UnsetType = UNSET
    position_interval: Annotated[int, Meta(ge=1, le=3600, description=(
        "MobilePosition `Interval`, seconds; `null`: the default."))] | None | UnsetType = UNSET


SUBSCRIPTIONS_EXAMPLE: Final = {
    "device_id": "34020000001320000001", "position_interval": 5, "position_interval_setting": None,
    "expires": 3600,
    "catalog": {"wanted": True, "setting": True, "state": "active", "event": "Catalog", "status": 200,
                "reason": "OK", "expires_at": "2026-12-05T21:00:00.000Z", "last_notify_at": "2026-12-05T20:00:00.120Z"},
    "alarm": {"wanted": False, "setting": None, "state": "off", "event": "presence", "status": None,
              "reason": None, "expires_at": None, "last_notify_at": None},
    "mobile_position": {"wanted": True, "setting": True, "state": "failed", "event": "presence", "status": 489,
                        "reason": "Bad Event", "expires_at": None, "last_notify_at": None},
    "ptz_position": {"wanted": False, "setting": None, "state": "off", "event": "presence", "status": None,
                     "reason": None, "expires_at": None, "last_notify_at": None},
}
