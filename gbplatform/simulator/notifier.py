"""A simulated device's subscriptions: the notifier side of RFC 6665 with GB/T 28181 bodies (§9.11).

The platform SUBSCRIBEs to the device's ``Catalog``, ``Alarm``,
``MobilePosition`` or (2022) ``PTZPosition``: the CmdType is read from the
SUBSCRIBE's MANSCDP ``<Query>`` body, else from its ``Event`` (``Catalog``);
anything else is 489 Bad Event (RFC 6665 §8.3.1). The device answers 200
with the ``Expires`` it grants (what was asked, RFC 6665 §4.2.1.1) and sends at
once a NOTIFY with ``Subscription-State: active;expires=N`` (§4.2.1.2). A
refresh in the dialog gets 200 and the same NOTIFY; ``Expires: 0`` ends the
subscription with a ``terminated;reason=timeout`` NOTIFY (§4.2.1.4), as does
the end of the granted time without a refresh (§4.2.2). One subscription per
CmdType: a new SUBSCRIBE outside the dialog replaces the old one.

Reports go within the matching subscription (``send``: a NOTIFY in its
dialog), or as a MESSAGE when there is none (GB/T 28181-2016 §9.4, §9.11).
A MobilePosition subscription's ``<Query>`` carries ``Interval`` (§A.2.4.8,
default 5 s): while it lasts the device sends its position at once, then
every ``Interval`` seconds, as NOTIFYs in it (``SimReports.follow_subscription``);
a refresh with another ``Interval`` changes the rhythm, the end of the
subscription brings back the device's own ``--position-interval`` MESSAGEs.
The catalog changes (``catalog_change``) cycle through a channel going OFF,
coming back ON, a new channel ADDed and that channel DELeted (§A.2.5.4),
one step per call: on a schedule (``--catalog-change-interval``) and on
SIGHUP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from twisted.logger import Logger

from sip import manscdp
from sip.dialog import Dialog
from sip.errors import LocalSipError, SipParseError
from sip.headers import expires_value, to_header
from sip.message import Request, Response, make_response
from sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from gbplatform.simulator.device import SimDevice

__all__ = ["CATALOG_CYCLE", "SimNotifier"]

log = Logger()

MANSCDP_TYPE: Final = "Application/MANSCDP+xml"
# The CmdTypes a simulated device accepts subscriptions for (GB/T 28181-2016 §9.11; PTZPosition 2022).
SUBSCRIBABLE: Final = {"catalog": "Catalog", "alarm": "Alarm", "mobileposition": "MobilePosition",
                       "ptzposition": "PTZPosition"}
CATALOG_CYCLE: Final = ("OFF", "ON", "ADD", "DEL")
DEFAULT_EXPIRES: Final = 3600
DEFAULT_POSITION_INTERVAL: Final = 5  # §A.2.4.8: Interval is optional, 5 s when absent


@dataclass
class _Subscription:
    cmd_type: str
    event: str
    dialog: Dialog
    expires: int
    timer: Any = None
    interval: int | None = None  # MobilePosition only: seconds between positions (§A.2.4.8)


class SimNotifier:
    """The subscriptions one ``SimDevice`` serves; see the module docstring."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.subs: dict[str, _Subscription] = {}  # by CmdType
        self._step = 0
        self._added: str | None = None  # the channel the last ADD created, for the next DEL

    # -- SUBSCRIBE ---------------------------------------------------------------
    def handle_subscribe(self, req: Request, tx: ServerTransaction) -> None:
        try:
            expires = expires_value(req.headers.get("Expires"))
        except SipParseError:
            self.device._reply(req, tx, 400)
            return
        if to_header(req).tag:
            self._in_dialog(req, tx, DEFAULT_EXPIRES if expires is None else expires)
            return
        query = self._query(req)
        cmd_type = self._cmd_type(req, query)
        if cmd_type is None:
            self.device._reply(req, tx, 489, headers=[("Allow-Events", "Catalog, presence")])
            return
        granted = DEFAULT_EXPIRES if expires is None else expires
        link = self.device.link
        assert link is not None
        resp = make_response(req, 200, to_tag=link.endpoint.new_tag(),
                             headers=[("Expires", str(granted)), ("Contact", f"<{self.device._contact()}>")])
        resp.headers.add("User-Agent", self.device.quirks.user_agent)
        try:
            dialog = Dialog.from_uas(req, resp)
        except (LocalSipError, SipParseError) as e:
            log.info("device {id}: SUBSCRIBE refused: {err}", id=self.device.device_id, err=str(e))
            self.device._reply(req, tx, 400)
            return
        link.respond(tx, resp)
        if granted == 0:  # a fetch (RFC 6665 §4.4.3): one NOTIFY, no subscription
            self._send_notify(dialog, req.headers.get("Event") or cmd_type, "terminated;reason=timeout", b"")
            return
        self._drop(cmd_type)
        sub = _Subscription(cmd_type, req.headers.get("Event") or cmd_type, dialog, granted)
        if cmd_type == "MobilePosition":
            sub.interval = self._interval(query) or DEFAULT_POSITION_INTERVAL
        self.subs[cmd_type] = sub
        log.info("device {id}: {cmd} subscribed for {n} s", id=self.device.device_id, cmd=cmd_type, n=granted)
        self._arm(sub)
        self._send_notify(dialog, sub.event, f"active;expires={granted}", b"")
        self._follow(sub)  # after the active NOTIFY: the first position goes in an established subscription

    def _query(self, req: Request) -> manscdp.ManscdpMessage | None:
        """The SUBSCRIBE's MANSCDP body (§9.11: a ``<Query>``), None when it has none or an unreadable one."""
        if "manscdp" not in req.content_type or not req.body.strip():
            return None
        try:
            return manscdp.decode(req.body, default_charset=self.device.config.body_charset)
        except manscdp.ManscdpError as e:
            log.info("device {id}: SUBSCRIBE body unreadable: {err}", id=self.device.device_id, err=str(e))
            return None

    def _cmd_type(self, req: Request, query: manscdp.ManscdpMessage | None) -> str | None:
        if query is not None:
            return SUBSCRIBABLE.get(query.cmd_type.lower())
        if "manscdp" in req.content_type and req.body.strip():
            return None  # a body that is no MANSCDP Query names no package we serve
        event = (req.headers.get("Event") or "").split(";")[0].strip().lower()
        return "Catalog" if event == "catalog" else None

    def _interval(self, query: manscdp.ManscdpMessage | None) -> int | None:
        """The ``Interval`` of a MobilePosition Query (§A.2.4.8); None when absent or not a positive number."""
        if not isinstance(query, manscdp.MobilePositionQuery) or query.interval is None:
            return None
        if query.interval <= 0:
            log.info("device {id}: MobilePosition Interval {n} ignored", id=self.device.device_id, n=query.interval)
            return None
        return query.interval

    def _follow(self, sub: _Subscription) -> None:
        """Positions every ``Interval`` while the MobilePosition subscription lasts (§9.11, §A.2.4.8)."""
        if sub.cmd_type == "MobilePosition" and self.subs.get(sub.cmd_type) is sub:
            self.device.reports.follow_subscription(sub.interval)

    def _in_dialog(self, req: Request, tx: ServerTransaction, expires: int) -> None:
        sub = next((s for s in self.subs.values() if s.dialog.matches(req)), None)
        if sub is None:
            self.device._reply(req, tx, 481)
            return
        refused = sub.dialog.receive_request(req)
        if refused is not None:
            self.device._reply(req, tx, refused)
            return
        link = self.device.link
        assert link is not None
        resp = make_response(req, 200, headers=[("Expires", str(expires)), ("Contact", f"<{self.device._contact()}>")])
        resp.headers.add("User-Agent", self.device.quirks.user_agent)
        link.respond(tx, resp)
        if expires == 0:
            log.info("device {id}: {cmd} unsubscribed", id=self.device.device_id, cmd=sub.cmd_type)
            self._end(sub, "timeout")
            return
        sub.expires = expires
        if sub.cmd_type == "MobilePosition":
            # A refresh may carry another Interval (the platform's setting changed); none keeps the current.
            sub.interval = self._interval(self._query(req)) or sub.interval
        self._arm(sub)
        log.info("device {id}: {cmd} refreshed for {n} s", id=self.device.device_id, cmd=sub.cmd_type, n=expires)
        self._send_notify(sub.dialog, sub.event, f"active;expires={expires}", b"")
        self._follow(sub)

    def _arm(self, sub: _Subscription) -> None:
        if sub.timer is not None and sub.timer.active():
            sub.timer.cancel()
        sub.timer = self.device.sim.reactor.callLater(sub.expires, self._expired, sub)

    def _expired(self, sub: _Subscription) -> None:
        sub.timer = None
        if self.subs.get(sub.cmd_type) is sub:
            log.info("device {id}: {cmd} subscription expired", id=self.device.device_id, cmd=sub.cmd_type)
            self._end(sub, "timeout")

    def _end(self, sub: _Subscription, reason: str) -> None:
        if self.subs.get(sub.cmd_type) is sub:
            del self.subs[sub.cmd_type]
            self._unfollow(sub.cmd_type)
        if sub.timer is not None and sub.timer.active():
            sub.timer.cancel()
        sub.timer = None
        self._send_notify(sub.dialog, sub.event, f"terminated;reason={reason}", b"")

    def _drop(self, cmd_type: str) -> None:
        old = self.subs.pop(cmd_type, None)
        if old is not None:
            self._unfollow(cmd_type)
            if old.timer is not None and old.timer.active():
                old.timer.cancel()

    def _unfollow(self, cmd_type: str) -> None:
        if cmd_type == "MobilePosition":
            self.device.reports.follow_subscription(None)  # back to the device's own schedule

    def close(self) -> None:
        """The device unregistered or stops: its subscriptions are gone with it, silently."""
        for cmd_type in list(self.subs):
            self._drop(cmd_type)

    # -- NOTIFY / reports --------------------------------------------------------
    def _send_notify(self, dialog: Dialog, event: str, state: str, body: bytes) -> bool:
        link = self.device.link
        if link is None or self.device.paused:
            return False
        try:
            req = dialog.new_request(
                "NOTIFY", body=body, content_type=MANSCDP_TYPE if body else None,
                headers=[("Event", event), ("Subscription-State", state),
                         ("User-Agent", self.device.quirks.user_agent)])
        except LocalSipError as e:
            log.info("device {id}: NOTIFY not sent: {err}", id=self.device.device_id, err=str(e))
            return False
        link.send_request(req, lambda resp: self._notify_answered(dialog, resp))
        return True

    def _notify_answered(self, dialog: Dialog, resp: Response | None) -> None:
        if resp is not None and resp.status == 481:
            # The platform no longer knows the subscription (RFC 6665 §4.2.2): stop notifying in it.
            for sub in list(self.subs.values()):
                if sub.dialog is dialog:
                    self._drop(sub.cmd_type)

    def send(self, cmd_type: str, body: bytes) -> None:
        """A report (``Notify`` body) within the ``cmd_type`` subscription, else as a MESSAGE."""
        sub = self.subs.get(cmd_type)
        if sub is not None and self._send_notify(sub.dialog, sub.event, f"active;expires={sub.expires}", body):
            log.info("device {id}: {cmd} report sent as NOTIFY", id=self.device.device_id, cmd=cmd_type)
            return
        log.info("device {id}: {cmd} report sent as MESSAGE", id=self.device.device_id, cmd=cmd_type)
        self.device._notify(body)

    # -- catalog changes (§A.2.5.4) --------------------------------------------------
    def catalog_change(self) -> str | None:
        """Send the next change of ``CATALOG_CYCLE``; returns the event sent (None: no channel to change)."""
        items: list[manscdp.CatalogItem] = self.device._items
        channels = [i for i in items if i.parent_id == self.device.device_id]
        if not channels:
            return None
        event = CATALOG_CYCLE[self._step % len(CATALOG_CYCLE)]
        self._step += 1
        first = channels[0]
        if event in ("OFF", "ON"):
            changed = replace(first, status=event)
            items[items.index(first)] = changed
            item = replace(changed, event=event)
        elif event == "ADD":
            from gbplatform.simulator.device import channel_id

            count = self.device.config.channels
            new_id = channel_id(self.device.device_id, count + 1, count + 1)
            if any(i.device_id == new_id for i in items):
                new_id = channel_id(self.device.device_id, count + 2, count + 2)
            added = replace(first, device_id=new_id, name=f"{self.device.config.name_prefix}新增", status="ON")
            items.append(added)
            self._added = new_id
            item = replace(added, event="ADD")
        else:
            gone = next((i for i in items if i.device_id == self._added), None)
            if gone is None:
                return self.catalog_change()
            items.remove(gone)
            self._added = None
            item = manscdp.CatalogItem(device_id=gone.device_id, event="DEL")
        body = self.device._label(manscdp.encode_catalog_response(
            self.device.messages.next_sn(), self.device.device_id, 1, [item], charset=self.device._out_charset,
            kind="Notify"))
        log.info("device {id}: catalog {event} of {channel}", id=self.device.device_id, event=event,
                 channel=item.device_id)
        self.send("Catalog", body)
        return event
