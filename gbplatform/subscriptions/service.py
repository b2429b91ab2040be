"""``SubscriptionService``: the platform's subscriptions to its devices (GB/T 28181-2016 §9.11, RFC 6665).

Theory of operation
-------------------
Per registered device and per kind (``KINDS``: catalog, alarm,
mobile_position, ptz_position) there is one ``sip.subscription.Subscription``,
the sans-IO state of one RFC 6665 subscription. This service is its adapter:
it builds the target (the device's URI and address, the ``Event`` package of
``KIND_SPECS``, the MANSCDP ``<Query>`` body with a new SN each time), sends
what the core asks through the router, feeds the answers and the NOTIFYs back,
keeps one timer per subscription at its ``next_timer()``, registers its
dialogs with the router (``add_dialog``) and publishes each state change as a
``subscription`` event on the bus.

Which kinds a device gets: its own setting (``device_subscriptions``, set by
``PUT /api/v1/devices/{id}/subscriptions``), else the ``[subscriptions]``
default; PTZPosition only on a GB/T 28181-2022 device. They start when the
device registers (``DeviceManager.on_registered``; a fresh registration, after
a reboot or a move, subscribes anew at once) and stop when it goes offline
(an unregistering device is unsubscribed with ``Expires: 0``), or at once
when the setting changes. A device deleted through the API (``forget``) is
unsubscribed and its settings dropped from memory; when the platform stops
(``stop_all``) every subscription is ended with ``Expires: 0`` (RFC 6665
§4.1.2.3), waiting at most ``grace`` seconds for the devices' answers so
they do not keep notifying a platform that is gone until their subscriptions
expire.

NOTIFYs: the router gives a subscription's dialog its NOTIFYs; a NOTIFY that
comes before the 2xx (RFC 6665 §4.1.2.4) reaches ``handle_notify`` (the
router's NOTIFY handler, for NOTIFYs of no routed dialog), which matches it to
an initial SUBSCRIBE or answers 481. The ``Subscription-State`` is the core's;
the MANSCDP body goes to the router's ``handle_manscdp``, so the listeners of
``Notify`` CmdTypes get it as they get a MESSAGE (the alarm and position
services listen there). This service listens to two of them itself:

* ``Notify/Catalog`` (§A.2.5.4, by NOTIFY or MESSAGE): each item's ``Event``
  applies to the registry: ON/OFF/VLOST/DEFECT set the channel's status
  (``ON``, else ``OFF``: the channel shows offline in the API at once),
  ADD/UPDATE upsert the channel, DEL deletes it; each publishes a ``channel``
  event.
* ``Notify/PTZPosition`` (GB/T 28181-2022): published as a ``ptz`` event.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.app.config import SubscriptionsConfig
from gbplatform.core.clock import Clock, DelayedCallLike, utc_datetime
from gbplatform.db import queries as q
from gbplatform.db.database import Database
from gbplatform.devices.catalog import to_channel
from gbplatform.devices.registrar import DeviceManager, may_speak_for
from gbplatform.events.bus import EventBus
from gbplatform.signalling.router import SipRouter, SipTimeout
from gbplatform.subscriptions import store
from sip import manscdp
from sip.dialog import DialogId
from sip.endpoint import Addr
from sip.gbid import is_loose_id
from sip.headers import from_header, to_header
from sip.message import Request, Response, make_response
from sip.subscription import (
    DialogClosed,
    DialogOpened,
    SendRequest,
    StateChanged,
    SubscribeTarget,
    Subscription,
)
from sip.transaction import ServerTransaction

__all__ = ["KINDS", "KIND_SPECS", "MAX_PENDING_CATALOG_WRITES", "KindSpec", "KindStatus", "SubscriptionService"]

log = Logger()


@dataclass(frozen=True)
class KindSpec:
    """One kind of subscription: the CmdType of its ``<Query>`` body and NOTIFYs, and its ``Event`` package.

    GB/T 28181-2016 §9.11 names the catalog's package ``Catalog``; for alarms and
    positions it leaves the value to the implementations and the field uses
    ``presence`` (WVP, and the devices tested with it), so that is what is
    sent. Change it here, once, for a device family that wants another.
    """

    kind: str
    cmd_type: str
    event: str
    only_2022: bool = False


KIND_SPECS: Final[dict[str, KindSpec]] = {
    "catalog": KindSpec("catalog", "Catalog", "Catalog"),
    "alarm": KindSpec("alarm", "Alarm", "presence"),
    "mobile_position": KindSpec("mobile_position", "MobilePosition", "presence"),
    "ptz_position": KindSpec("ptz_position", "PTZPosition", "presence", only_2022=True),
}
KINDS: Final = tuple(KIND_SPECS)

# Catalog NOTIFY events (§A.2.5.4) that change a channel's status, and the status each sets.
_STATUS_EVENTS: Final = {"ON": "ON", "OFF": "OFF", "VLOST": "OFF", "DEFECT": "OFF"}
# A PTZPosition NOTIFY's fields as published (GB/T 28181-2022 §A.2.6.15 has six): at most these many, this long.
_MAX_PTZ_FIELDS, _MAX_PTZ_TEXT = 32, 64
_ALARM_PRIORITIES: Final = ("1", "4")  # §A.2.4.10: from level 1 to level 4, i.e. every alarm
_DEFAULTS: Final = store.SubscriptionSettings()  # a device without its own settings
MAX_PENDING_CATALOG_WRITES: Final = 10_000
"""Catalog events of one device waiting for the database at most. Each is a transaction; a device within
``sip.notify_rate`` can still send 20 NOTIFYs a second of hundreds of items each: past this the events are
dropped (logged, throttled, counted) rather than queued without end; the next catalog query (on
registration, or through the API) brings the registry back."""


@dataclass(frozen=True)
class KindStatus:
    """What the API shows of one kind on one device."""

    kind: str
    wanted: bool
    setting: bool | None
    state: str
    status: int | None
    reason: str | None
    expires_at: float | None  # wall clock
    last_notify_at: float | None  # wall clock


class SubscriptionService:
    """Subscribes to devices' catalogs, alarms and positions; applies catalog NOTIFYs. See the module docstring."""

    def __init__(self, *, router: SipRouter, devices: DeviceManager, db: Database, clock: Clock, bus: EventBus,
                 config: SubscriptionsConfig, platform_id: str, domain: str,
                 require_2022: Callable[[str, str], None]) -> None:
        self.router = router
        self.devices = devices
        self.db = db
        self.clock = clock
        self.bus = bus
        self.config = config
        self.platform_id = platform_id
        self.domain = domain
        self.require_2022 = require_2022  # ControlService.require_2022: 422 for a GB/T 28181-2016 device
        self._subs: dict[str, dict[str, Subscription]] = {}
        self._timers: dict[tuple[str, str], DelayedCallLike] = {}
        self._dialogs: dict[DialogId, tuple[str, str]] = {}
        self._dest: dict[str, Addr] = {}  # where each device was last reached, for a final unsubscribe
        # Every device's own settings, read once (``all_settings_txn``) and kept up to date by ``update``.
        self._settings: dict[str, store.SubscriptionSettings] = {}
        self._loaded = False
        self._loading = False
        self._waiting: dict[str, bool] = {}  # registered before the settings were read: device -> fresh
        self._writes: dict[str, Deferred[None]] = {}  # the last catalog-event write of each device
        self._pending_writes: dict[str, int] = {}  # catalog-event writes queued or running, per device
        self._forgotten: set[str] = set()  # deleted devices whose last unsubscribes are still in flight
        self._stopping: Deferred[None] | None = None  # stop_all's, until every unsubscribe is done
        self._closing: set[tuple[str, str]] = set()  # during stop_all: the subscriptions not done yet
        self._stopped = False
        self._grace: DelayedCallLike | None = None

    def wire(self) -> None:
        """Register with the registrar and the router (``gbplatform.app.service`` calls it once)."""
        self.devices.on_registered.append(self.device_registered)
        self.devices.on_offline.append(self.device_offline)
        self.router.on_request("NOTIFY", self.handle_notify, from_device=True)
        self.router.on_manscdp("Notify", "Catalog", self.catalog_notify)
        self.router.on_manscdp("Notify", "PTZPosition", self.ptz_notify)

    # -- settings ------------------------------------------------------------
    def default(self, kind: str) -> bool:
        return bool(getattr(self.config, kind))

    def wanted(self, device_id: str, kind: str, settings: store.SubscriptionSettings) -> bool:
        own = settings.wanted(kind)
        want = self.default(kind) if own is None else own
        if want and KIND_SPECS[kind].only_2022 and self.devices.gb_version(device_id) != "2022":
            return False
        return want

    def position_interval(self, settings: store.SubscriptionSettings) -> int:
        return settings.position_interval or self.config.position_interval

    async def settings(self, device_id: str) -> store.SubscriptionSettings:
        found: store.SubscriptionSettings = await self.db.run("subscription_settings", store.get_settings_txn,
                                                              device_id)
        self._settings[device_id] = found
        return found

    async def status(self, device_id: str) -> tuple[store.SubscriptionSettings, list[KindStatus]]:
        """The device's settings and each kind's state; ``DeviceNotFound`` (404) for an unknown device."""
        if await self.db.run("get_device", q.get_device_txn, device_id) is None:
            raise q.DeviceNotFound(device_id)
        settings = await self.settings(device_id)
        return settings, [self._kind_status(device_id, kind, settings) for kind in KINDS]

    async def update(self, device_id: str, changes: dict[str, Any]) -> tuple[store.SubscriptionSettings,
                                                                            list[KindStatus]]:
        """Store ``changes`` and apply them at once: subscribe what is now wanted, unsubscribe the rest.

        PTZPosition asked for on a GB/T 28181-2016 device is 422 (``UnsupportedByDialect``).
        """
        if changes.get("ptz_position"):
            if await self.db.run("get_device", q.get_device_txn, device_id) is None:
                raise q.DeviceNotFound(device_id)
            # Known only while it is registered, or when the operator set it: an offline "auto" device
            # keeps the setting, and a 2016 one never gets the subscription (``wanted``).
            if self.devices.is_known(device_id) or self.devices.dialect_setting(device_id)[0] != "auto":
                self.require_2022(device_id, "PTZPosition subscription")
        settings: store.SubscriptionSettings = await self.db.run(
            "put_subscription_settings", store.put_settings_txn, device_id, changes,
            utc_datetime(self.clock.time()))
        self._settings[device_id] = settings
        interval_changed = "position_interval" in changes
        self._apply(device_id, settings, fresh=False, refresh_positions=interval_changed)
        return settings, [self._kind_status(device_id, kind, settings) for kind in KINDS]

    def _kind_status(self, device_id: str, kind: str, settings: store.SubscriptionSettings) -> KindStatus:
        sub = self._subs.get(device_id, {}).get(kind)
        now, wall = self.clock.seconds(), self.clock.time()

        def to_wall(at: float | None) -> float | None:
            return None if at is None else wall + (at - now)

        return KindStatus(
            kind=kind, wanted=self.wanted(device_id, kind, settings), setting=settings.wanted(kind),
            state=sub.api_state if sub is not None else "off",
            status=sub.status if sub is not None else None,
            reason=sub.reason if sub is not None else None,
            expires_at=to_wall(sub.expires_at) if sub is not None and sub.api_state != "off" else None,
            last_notify_at=to_wall(sub.last_notify_at) if sub is not None else None,
        )

    # -- device lifecycle ------------------------------------------------------
    def device_registered(self, device_id: str, fresh: bool) -> None:
        """REGISTER accepted (``fresh``: newly online or moved): subscribe what the device's settings want."""
        if self._stopped or self._stopping is not None:
            return  # the platform is stopping: no new subscription would outlive it
        self._forgotten.discard(device_id)  # deleted, then registered again: a device like any other
        if self._loaded:
            self._apply(device_id, self._settings.get(device_id, _DEFAULTS), fresh=fresh)
            return
        self._waiting[device_id] = self._waiting.get(device_id, False) or fresh
        if self._loading:
            return
        self._loading = True
        d = self.db.run("subscription_settings_all", store.all_settings_txn)

        def loaded(found: dict[str, store.SubscriptionSettings]) -> None:
            self._loading = False
            self._loaded = True
            self._settings = {**found, **self._settings}  # an update() that came meanwhile wins
            waiting, self._waiting = self._waiting, {}
            for waiting_id, was_fresh in waiting.items():
                if self.devices.is_known(waiting_id):
                    self._apply(waiting_id, self._settings.get(waiting_id, _DEFAULTS), fresh=was_fresh)

        def failed(failure: Failure) -> None:
            self._loading = False  # the next registration reads again; the waiting devices with it
            log.failure("reading the subscription settings failed", failure)

        d.addCallbacks(loaded, failed)

    def device_offline(self, device_id: str, reason: str) -> None:
        """The device went offline: an unregistering one is unsubscribed; for one that fell silent the
        subscriptions are only forgotten (it would not answer)."""
        self._waiting.pop(device_id, None)
        if self._stopped:
            return  # stop_all ended every subscription and the transport is closing: nothing more to send
        now = self.clock.seconds()
        for kind, sub in self._subs.get(device_id, {}).items():
            if sub.wanted or sub.dialog is not None:
                sub.stop(now, unsubscribe=reason == "unregistered")
                self._drive(device_id, kind)

    def forget(self, device_id: str) -> None:
        """The device was deleted (``DELETE /api/v1/devices/{id}``): end its subscriptions with ``Expires: 0``
        (RFC 6665 §4.1.2.3) and drop its settings from memory (its row went with the device). Its
        ``Subscription`` objects stay until the unsubscribes are answered and the final NOTIFYs came or
        their wait ended (``Subscription.idle``), so those NOTIFYs are answered 200, not 481."""
        self._settings.pop(device_id, None)
        self._waiting.pop(device_id, None)
        self._forgotten.add(device_id)
        now = self.clock.seconds()
        for kind, sub in list(self._subs.get(device_id, {}).items()):
            if self._live(sub):
                sub.stop(now, unsubscribe=True)
                self._drive(device_id, kind)
        self._sweep(device_id)

    def stop_all(self, grace: float = 1.0) -> Deferred[None]:
        """The platform stops: unsubscribe (``Expires: 0``, RFC 6665 §4.1.2.3) every subscription with a
        dialog, best effort. Fires once every unsubscribe is answered and its final NOTIFY came, or after
        ``grace`` seconds, whichever is first; never fails. The requests are handed to the router (and so
        to the transport) before this returns; the caller stops the transport after it fires."""
        if self._stopping is not None:
            return self._stopping
        if self._stopped:
            return succeed(None)
        now = self.clock.seconds()
        ended = 0
        for device_id, subs in list(self._subs.items()):
            for kind, sub in list(subs.items()):
                if self._live(sub):
                    ended += sub.dialog is not None
                    sub.stop(now, unsubscribe=True)
                    self._drive(device_id, kind)
                if sub.awaiting or sub.state == "unsubscribing":
                    self._closing.add((device_id, kind))
        if ended:
            log.info("platform stopping: {n} subscription(s) ended with Expires: 0", n=ended)
        # Set only now: _drive checks for the end, which must not come before every subscription was stopped.
        d: Deferred[None] = Deferred()
        self._stopping = d
        self._grace = self.clock.call_later(grace, self._stopped_now, "grace")
        if not self._closing:
            self._stopped_now("done")
        return d

    @staticmethod
    def _live(sub: Subscription) -> bool:
        """Wanted, or holding a dialog not already being ended (its Expires: 0 is out: not sent twice)."""
        return sub.wanted or (sub.dialog is not None and sub.state != "unsubscribing")

    def _check_stopped(self, device_id: str, kind: str, sub: Subscription) -> None:
        """During ``stop_all``: done once no unsubscribe awaits its answer or its final NOTIFY."""
        if self._stopping is None or sub.awaiting or sub.state == "unsubscribing":
            return
        self._closing.discard((device_id, kind))
        if not self._closing:
            self._stopped_now("done")

    def _stopped_now(self, why: str) -> None:
        d, self._stopping = self._stopping, None
        if d is None:
            return
        self._stopped = True
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        self._closing.clear()
        if why == "grace":
            log.info("platform stopping: not every device answered its unsubscribe in time")
        # No timer may fire into a router whose transport is about to close.
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        d.callback(None)

    def _sweep(self, device_id: str) -> None:
        """Drop a deleted device's subscriptions once none has anything left to do."""
        if device_id not in self._forgotten:
            return
        subs = self._subs.get(device_id, {})
        if all(sub.idle for sub in subs.values()):
            for kind in subs:
                timer = self._timers.pop((device_id, kind), None)
                if timer is not None and timer.active():
                    timer.cancel()
            self._subs.pop(device_id, None)
            self._dest.pop(device_id, None)
            self._forgotten.discard(device_id)

    def _apply(self, device_id: str, settings: store.SubscriptionSettings, *, fresh: bool,
               refresh_positions: bool = False) -> None:
        now = self.clock.seconds()
        dest = self.devices.address_of(device_id)
        subs = self._subs.get(device_id)
        if subs is None:
            if dest is None or not any(self.wanted(device_id, kind, settings) for kind in KINDS):
                return  # nothing to do, and nothing kept: most devices of a large site are here
            subs = self._subs[device_id] = {}
        for kind in KINDS:
            sub = subs.get(kind)
            if dest is None or not self.wanted(device_id, kind, settings):
                if sub is not None and (sub.wanted or sub.dialog is not None):
                    sub.stop(now, unsubscribe=True)
                    self._drive(device_id, kind)
                continue
            self._dest[device_id] = dest
            target = self._target(device_id, kind, dest, settings)
            if sub is None:
                sub = subs[kind] = Subscription(rng=self.router.rng)
            if fresh:
                sub.restart(now, target)
            elif not sub.wanted or (refresh_positions and kind == "mobile_position"):
                sub.start(now, target)
            elif sub.state == "failed" and sub.next_timer() is None:
                sub.start(now, target)  # refused for good before (rejected): a new registration tries again
            else:
                sub.target = target
            self._drive(device_id, kind)

    def _target(self, device_id: str, kind: str, dest: Addr, settings: store.SubscriptionSettings) -> SubscribeTarget:
        spec = KIND_SPECS[kind]
        host, port = self.router.endpoint.local.get(dest[0], ("127.0.0.1", 5060))
        interval = self.position_interval(settings)
        expires = self.config.expires

        def body() -> bytes:
            extra: dict[str, str] = {}
            if kind == "mobile_position":
                extra["Interval"] = str(interval)  # §A.2.4.11: seconds between reports
            elif kind == "alarm":
                # §A.2.4.10: every priority and method, from now to the end of the subscription.
                # GB times are local time (§A.2.1 dateTime, as the Date header of §9.10).
                start = dt.datetime.fromtimestamp(self.clock.time())
                extra.update(StartAlarmPriority=_ALARM_PRIORITIES[0], EndAlarmPriority=_ALARM_PRIORITIES[1],
                             AlarmMethod="0", StartAlarmTime=manscdp.format_gb_time(start),
                             EndAlarmTime=manscdp.format_gb_time(start + dt.timedelta(seconds=expires)))
            return manscdp.encode_query(spec.cmd_type, self.router.next_sn(), device_id,
                                        charset=self.devices.charset_of(device_id), extra=extra or None)

        return SubscribeTarget(
            request_uri=f"sip:{device_id}@{dest[1]}:{dest[2]}",
            from_uri=f"sip:{self.platform_id}@{self.domain}",
            to_uri=f"sip:{device_id}@{self.domain}",
            contact=f"<sip:{self.platform_id}@{host}:{port}>",
            event=spec.event, expires=expires, body=body,
        )

    # -- the adapter -------------------------------------------------------------
    def _drive(self, device_id: str, kind: str) -> None:
        sub = self._subs.get(device_id, {}).get(kind)
        if sub is None:
            return
        while outputs := sub.take_outputs():
            for out in outputs:
                if isinstance(out, SendRequest):
                    self._send(device_id, kind, out)
                elif isinstance(out, DialogOpened):
                    self._dialogs[out.dialog_id] = (device_id, kind)
                    self.router.add_dialog(out.dialog_id, self._in_dialog, frozenset({"NOTIFY"}))
                elif isinstance(out, DialogClosed):
                    self._dialogs.pop(out.dialog_id, None)
                    self.router.remove_dialog(out.dialog_id)
                elif isinstance(out, StateChanged):
                    self._state_changed(device_id, kind, sub, out)
        if self._stopped:
            return  # stop_all is over: no timer any more
        self._arm(device_id, kind, sub)
        self._sweep(device_id)
        self._check_stopped(device_id, kind, sub)

    def _send(self, device_id: str, kind: str, out: SendRequest) -> None:
        dest = self.devices.address_of(device_id) or self._dest.get(device_id)
        sub = self._subs[device_id][kind]
        if dest is None:
            sub.on_response(out.token, None, self.clock.seconds())
            return
        d = self.router.send_request(out.request, dest)

        def answered(resp: Response | None) -> None:
            current = self._subs.get(device_id, {}).get(kind)
            if current is not None:
                current.on_response(out.token, resp, self.clock.seconds())
                self._drive(device_id, kind)

        def failed(failure: Failure) -> None:
            if not isinstance(failure.value, SipTimeout):
                log.failure("SUBSCRIBE to {id} failed", failure, id=device_id)
            answered(None)

        d.addCallbacks(answered, failed)

    def _arm(self, device_id: str, kind: str, sub: Subscription) -> None:
        key = (device_id, kind)
        timer = self._timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        at = sub.next_timer()
        if at is not None:
            self._timers[key] = self.clock.call_later(max(0.0, at - self.clock.seconds()), self._fire, device_id,
                                                      kind)

    def _fire(self, device_id: str, kind: str) -> None:
        self._timers.pop((device_id, kind), None)
        sub = self._subs.get(device_id, {}).get(kind)
        if sub is not None:
            sub.on_timer(self.clock.seconds())
            self._drive(device_id, kind)

    def _state_changed(self, device_id: str, kind: str, sub: Subscription, change: StateChanged) -> None:
        log.info("subscription {kind} of {id}: {state} ({status} {reason})", kind=kind, id=device_id,
                 state=change.state, status=change.status, reason=change.reason)
        wall, now = self.clock.time(), self.clock.seconds()
        self.bus.publish("subscription", device_id=device_id, subscription=kind, state=sub.api_state, status=change.status,
                         reason=change.reason,
                         expires_at=None if sub.expires_at is None else wall + (sub.expires_at - now))

    # -- NOTIFY ------------------------------------------------------------------
    def _in_dialog(self, req: Request, tx: ServerTransaction, source: Addr) -> None:
        """A NOTIFY in one of our subscription dialogs (the router matched the dialog)."""
        key = self._dialogs.get(DialogId(req.call_id, to_header(req).tag or "", from_header(req).tag or ""))
        if key is None:
            self._answer(req, tx, 481)
            return
        self._notify(key, req, tx, source)

    def handle_notify(self, req: Request, tx: ServerTransaction, source: Addr) -> None:
        """A NOTIFY of no routed dialog: the first of a subscription whose 2xx has not come (RFC 6665
        §4.1.2.4), else 481 (RFC 3261 §12.2.2)."""
        device_id = from_header(req).user or ""
        for kind, sub in self._subs.get(device_id, {}).items():
            if sub.matches_initial(req):
                self._notify((device_id, kind), req, tx, source)
                return
        self._answer(req, tx, 481, stateless=True)

    def _notify(self, key: tuple[str, str], req: Request, tx: ServerTransaction, source: Addr) -> None:
        device_id, kind = key
        sub = self._subs[device_id][kind]
        if not self._from_its_device(device_id, req, source):
            # A NOTIFY in a dialog of one device from another (or from elsewhere): it must not end or
            # extend that device's subscription, nor have its body taken as that device's (§9.11, as for
            # a MESSAGE, §9.3). 403 like the router's refusals of strangers.
            self.devices.log_refusal(f"notify stranger {device_id}",
                                     "NOTIFY in the {package} subscription of {id} from {user} at {host}:{port} refused",
                                     package=kind, id=device_id, user=(from_header(req).user or "?")[:32],
                                     host=source[1], port=source[2])
            self._answer(req, tx, 403)
            return
        refused = sub.on_notify(req, self.clock.seconds())
        self._drive(device_id, kind)
        if refused is not None:
            self._answer(req, tx, refused)
            return
        if req.body.strip():
            # The body is what a MESSAGE would carry (§9.11): the router checks the sender, answers 200
            # and gives it to the Notify listeners (catalog here, alarms and positions elsewhere).
            self.router.handle_manscdp(req, tx, source)
        else:
            self._answer(req, tx, 200)

    def _from_its_device(self, device_id: str, req: Request, source: Addr) -> bool:
        """The NOTIFY's sender is the subscription's device: its ID in From, sent from where it registered
        (or, once it went offline and a final NOTIFY is awaited, from where it was last reached)."""
        if (from_header(req).user or "") != device_id:
            return False
        if self.devices.is_known(device_id):
            return self.devices.speaks_for(device_id, source)
        last = self._dest.get(device_id)
        return last is None or may_speak_for(last, source)

    def _answer(self, req: Request, tx: ServerTransaction, status: int, *, stateless: bool = False) -> None:
        self.router.respond(tx, make_response(req, status, to_tag=to_header(req).tag or self.router.endpoint.new_tag()),
                            stateless=stateless)

    # -- catalog events (§A.2.5.4) -------------------------------------------------
    def catalog_notify(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """A Notify/Catalog (by NOTIFY or MESSAGE): apply each item's Event to the registry."""
        if not isinstance(msg, manscdp.CatalogNotify):
            return
        for item in msg.items:
            event = (item.event or "").strip().upper()
            channel_id = item.device_id
            if not channel_id:
                continue
            if event in _STATUS_EVENTS:
                self._write(device_id, self._status_change, device_id, item, event)
            elif event in ("ADD", "UPDATE"):
                self._write(device_id, self._upsert, device_id, item, event)
            elif event == "DEL":
                self._write(device_id, self._delete, device_id, channel_id)
            else:
                log.info("catalog NOTIFY of {id}: item {channel} with unknown Event {event!r} ignored",
                         id=device_id, channel=channel_id, event=item.event)

    async def _status_change(self, device_id: str, item: manscdp.CatalogItem, event: str) -> None:
        channel_id = item.device_id or ""
        status = _STATUS_EVENTS[event]
        at = utc_datetime(self.clock.time())
        found = await self.db.run("channel_status", store.set_channel_status_txn, device_id, channel_id, status, at)
        if not found:
            if not item.name:
                log.info("catalog {event} of {id} for unknown channel {channel} ignored", event=event, id=device_id,
                         channel=channel_id)
                return
            # A channel the platform has not seen, with its details: news worth keeping.
            await self._store_item(device_id, item, status)
        self.bus.publish("channel", device_id=device_id, channel_id=channel_id, event=event, status=status)

    async def _upsert(self, device_id: str, item: manscdp.CatalogItem, event: str) -> None:
        status = await self._store_item(device_id, item, item.status)
        if status is not False:
            self.bus.publish("channel", device_id=device_id, channel_id=item.device_id, event=event,
                             status=item.status)

    async def _store_item(self, device_id: str, item: manscdp.CatalogItem, status: str | None) -> bool:
        try:
            channel = to_channel(item)
        except ValueError as e:
            log.info("catalog NOTIFY of {id}: item dropped: {err}", id=device_id, err=str(e))
            return False
        if status is not None and channel.status != status:
            channel = dataclasses.replace(channel, status=status)
        await self.db.run("channel_upsert", store.upsert_channel_txn, device_id, channel,
                          utc_datetime(self.clock.time()))
        return True

    async def _delete(self, device_id: str, channel_id: str) -> None:
        gone = await self.db.run("channel_delete", store.delete_channel_txn, device_id, channel_id,
                                 utc_datetime(self.clock.time()))
        if gone:
            self.bus.publish("channel", device_id=device_id, channel_id=channel_id, event="DEL", status=None)
        else:
            log.info("catalog DEL of {id} for unknown channel {channel} ignored", id=device_id, channel=channel_id)

    def _write(self, device_id: str, fn: Callable[..., Any], *args: Any) -> None:
        """Run one catalog event's write after the device's previous one (a pool of several threads could
        commit OFF after a later ON), the first after the lifecycle batch that holds a new device's row.
        Past ``MAX_PENDING_CATALOG_WRITES`` waiting, the event is dropped with a (throttled) log line."""
        pending = self._pending_writes.get(device_id, 0)
        if pending >= MAX_PENDING_CATALOG_WRITES:
            self.devices.stats["catalog_events_dropped"] = self.devices.stats.get("catalog_events_dropped", 0) + 1
            self.devices.log_refusal(f"catalog backlog {device_id}", "catalog event of {id} dropped: {n} are still "
                                     "waiting for the database", id=device_id, n=pending)
            return
        self._pending_writes[device_id] = pending + 1
        previous = self._writes.get(device_id)
        ended: Deferred[None] = Deferred()
        self._writes[device_id] = ended

        def run(_: object) -> None:
            first = self.devices.writer.flush() if previous is None else succeed(None)
            first.addCallback(lambda _: Deferred.fromCoroutine(fn(*args)))
            first.addErrback(self._log_failure, "catalog event of {id} not applied", device_id)
            first.addBoth(lambda _: finished())

        def finished() -> None:
            if self._writes.get(device_id) is ended:
                del self._writes[device_id]
            left = self._pending_writes.get(device_id, 1) - 1
            if left > 0:
                self._pending_writes[device_id] = left
            else:
                self._pending_writes.pop(device_id, None)
            ended.callback(None)

        if previous is None:
            run(None)
        else:
            previous.addCallback(run)

    @staticmethod
    def _log_failure(failure: Failure, text: str, device_id: str) -> None:
        if isinstance(failure.value, q.DeviceNotFound):
            log.info(text + ": the device was deleted", id=device_id)
        else:
            log.failure(text, failure, id=device_id)

    # -- PTZPosition (GB/T 28181-2022) ------------------------------------------------
    def ptz_notify(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """A Notify/PTZPosition: published as a ``ptz`` event (``source`` ``notify``, as the PTZPosition query's
        are ``query``) with the position's fields as sent."""
        fields = list(msg.fields.items())
        position = {key[:_MAX_PTZ_TEXT]: value[:_MAX_PTZ_TEXT] for key, value in fields[:_MAX_PTZ_FIELDS]}
        channel_id = msg.device_id if is_loose_id(msg.device_id) else device_id
        if len(fields) > _MAX_PTZ_FIELDS or channel_id != msg.device_id or any(
                len(key) > _MAX_PTZ_TEXT or len(value) > _MAX_PTZ_TEXT for key, value in fields):
            # A body's every element would otherwise ride in each event, its backlog, streams and webhooks.
            self.devices.log_refusal(f"ptz notify {device_id}", "PTZPosition NOTIFY of {id}: {n} field(s), DeviceID "
                                     "{channel!r}; published cut to {max} fields of {len} characters", id=device_id,
                                     n=len(fields), channel=msg.device_id[:40], max=_MAX_PTZ_FIELDS, len=_MAX_PTZ_TEXT)
        self.bus.publish("ptz", device_id=device_id, channel_id=channel_id, source="notify", position=position)
