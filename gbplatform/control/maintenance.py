"""``MaintenanceService``: a GB/T 28181-2022 device's SD cards and firmware upgrade.

Theory of operation
-------------------
SD cards: ``sd_cards`` asks the SDCardStatus query (GB/T 28181-2022 §A.2.4,
answered §A.2.6) of a registered device; ``format_sd_card`` sends a
DeviceControl ``FormatSDCard`` (§A.2.3.1) answered by ``Result``. A format
takes the device a while: the status then shows the card ``formatting``
with its ``FormatProgress``, which the API reads by asking the status again.

Firmware upgrade: ``start_upgrade`` creates a session (``pending``), sends a
DeviceControl ``DeviceUpgrade`` (``Firmware``, ``FileURL``, ``Manufacturer``,
``SessionID``) and, once the device answers ``Result`` OK, the session is
``upgrading``: the device downloads and installs on its own. When it is
done it sends Notify ``DeviceUpgradeResult`` (§A.2.5) naming the session;
the platform answers it with a Response ``Result`` OK (after the router's
200, as for the other notifications) and the session ends ``done`` (the
device's DeviceInfo is asked again so its firmware in the registry is the new
one, as onboarding asks it) or ``failed`` with the device's reason. A session
with no result after ``control.upgrade_timeout`` is marked ``failed``; a result
arriving later still applies, since the device's report is the truth. A
device's ERROR answer, 504 or SIP error to the DeviceUpgrade also fails it.

One upgrade runs per device at a time (a second one is 409). Sessions are
kept in memory, bounded (``max_sessions``, the oldest finished dropped first):
the API shows a device's latest one. Every state change is an ``upgrade``
event on the bus. A result naming a session the platform does not know (or
another device's) is logged and still answered, so the device stops resending.

Every command here is a GB/T 28181-2022 one: a 2016 device gets 422
(``ControlService.require_2022``) before anything is sent.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from gbplatform.control.service import CommandAnswer, ControlService
from gbplatform.core.clock import Clock, DelayedCallLike
from gbplatform.core.errors import Conflict, DeviceRejected, DomainError
from gbplatform.devices.onboarding import DeviceQueries
from gbplatform.events.bus import EventBus
from sip import manscdp

__all__ = ["MAX_SESSIONS", "UPGRADE_STATES", "MaintenanceService", "SdCardsAnswer", "Upgrade", "UpgradeStateName"]

log = Logger()

UpgradeStateName: TypeAlias = Literal["pending", "upgrading", "done", "failed"]
UPGRADE_STATES: Final = ("pending", "upgrading", "done", "failed")
"""pending: DeviceUpgrade sent, not yet accepted; upgrading: accepted, no result yet; done/failed: ended."""
RUNNING: Final = frozenset({"pending", "upgrading"})
MAX_SESSIONS: Final = 10_000
"""Upgrade sessions kept, all devices together; past it the oldest finished ones are dropped."""
# DeviceUpgradeResult under the CmdType spellings sip.manscdp.maintenance declares.
_RESULT_CMD_TYPES: Final = ("DeviceUpgradeResult", "UpgradeResult")


@dataclass(frozen=True)
class SdCardsAnswer:
    """The device's SD cards (SDCardStatus, GB/T 28181-2022 §A.2.6)."""

    device_id: str
    result: str | None
    sum_num: int | None
    cards: tuple[manscdp.SdCard, ...]


@dataclass
class Upgrade:
    """One firmware upgrade session of a device; times are wall-clock epoch seconds."""

    session_id: str
    device_id: str
    firmware: str
    file_url: str
    manufacturer: str | None
    state: UpgradeStateName
    started_at: float
    updated_at: float
    finished_at: float | None = None
    reason: str | None = None
    device_firmware: str | None = None  # what the device's DeviceUpgradeResult reports it runs now
    timer: DelayedCallLike | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.state in RUNNING


class MaintenanceService:
    """SD card status and format, firmware upgrade sessions; see the module docstring."""

    def __init__(self, *, control: ControlService, queries: DeviceQueries, bus: EventBus, clock: Clock,
                 upgrade_timeout: float, new_session_id: Callable[[], str] | None = None,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.control = control
        self.router = control.router
        self.queries = queries
        self.bus = bus
        self.clock = clock
        self.upgrade_timeout = upgrade_timeout
        self.new_session_id = new_session_id or (lambda: secrets.token_hex(16))
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Upgrade] = OrderedDict()
        self._latest: dict[str, str] = {}  # device -> its latest session
        self.unknown_results = 0
        for cmd_type in _RESULT_CMD_TYPES:
            self.router.on_manscdp("Notify", cmd_type, self._upgrade_result)

    # -- SD cards ------------------------------------------------------------------------------
    async def sd_cards(self, device_id: str) -> SdCardsAnswer:
        """SDCardStatus (GB/T 28181-2022 §A.2.4) of a registered 2022 device, as it answers (§A.2.6)."""
        await self.control.device(device_id)
        self.control.require_2022(device_id, "SDCardStatus")
        answer = await self.router.query(device_id, "SDCardStatus")
        if not isinstance(answer, manscdp.SdCardStatusResponse):
            raise DeviceRejected(f"device {device_id} sent an unexpected SDCardStatus answer")
        return SdCardsAnswer(device_id, answer.result, answer.sum_num, answer.cards)

    async def format_sd_card(self, device_id: str, index: int) -> CommandAnswer:
        """DeviceControl ``FormatSDCard`` (GB/T 28181-2022 §A.2.3.1) of card ``index``, answered by Result."""
        await self.control.device(device_id)
        self.control.require_2022(device_id, "FormatSDCard")
        return await self.control.control(device_id, "FormatSDCard", device=True, format_sd_card=index)

    # -- firmware upgrade ------------------------------------------------------------------------
    def latest(self, device_id: str) -> Upgrade | None:
        """The device's latest upgrade session, if the platform still keeps one."""
        session_id = self._latest.get(device_id)
        return None if session_id is None else self._sessions.get(session_id)

    def session(self, session_id: str) -> Upgrade | None:
        return self._sessions.get(session_id)

    async def start_upgrade(self, device_id: str, *, firmware: str, file_url: str,
                            manufacturer: str | None = None) -> Upgrade:
        """Send DeviceUpgrade (GB/T 28181-2022 §A.2.3.1) to a registered 2022 device; the session as it
        stands once the device answered (``upgrading``, or ``failed`` when it answered ERROR).

        404 unknown device, 409 offline or an upgrade of it running, 422 a 2016
        device, 504 no answer (the session is then failed; a result the device
        sends anyway still applies).
        """
        await self.control.device(device_id)
        self.control.require_2022(device_id, "DeviceUpgrade")
        # Checked and claimed with no await between: two requests cannot both pass.
        current = self.latest(device_id)
        if current is not None and current.running:
            raise Conflict(f"an upgrade of device {device_id} is running (session {current.session_id}, "
                           f"{current.state}); wait for its result or its timeout")
        now = self.clock.time()
        upgrade = Upgrade(session_id=self.new_session_id(), device_id=device_id, firmware=firmware,
                          file_url=file_url, manufacturer=manufacturer, state="pending", started_at=now,
                          updated_at=now)
        self._keep(upgrade)
        upgrade.timer = self.clock.call_later(self.upgrade_timeout, self._expire, upgrade.session_id)
        self._publish(upgrade)
        command = manscdp.DeviceUpgrade(firmware=firmware, file_url=file_url, manufacturer=manufacturer,
                                        session_id=upgrade.session_id)
        try:
            answer = await self.control.control(device_id, "DeviceUpgrade", device=True, device_upgrade=command)
        except DomainError as e:
            if upgrade.state == "pending":
                self._finish(upgrade, "failed", f"the device did not accept the upgrade: {e.message}")
            raise
        if upgrade.state == "pending":  # a result may have come first (its MESSAGE overtook the answer)
            if answer.result == "OK":
                self._set(upgrade, "upgrading")
            else:
                self._finish(upgrade, "failed", f"the device answered {answer.result or 'no Result'} to DeviceUpgrade")
        return upgrade

    def _keep(self, upgrade: Upgrade) -> None:
        self._sessions[upgrade.session_id] = upgrade
        self._latest[upgrade.device_id] = upgrade.session_id
        if len(self._sessions) <= self.max_sessions:
            return
        # The oldest finished sessions go first; running ones are at most one per device.
        for session_id, old in list(self._sessions.items()):
            if len(self._sessions) <= self.max_sessions:
                break
            if old.running:
                continue
            del self._sessions[session_id]
            if self._latest.get(old.device_id) == session_id:
                del self._latest[old.device_id]

    def _set(self, upgrade: Upgrade, state: UpgradeStateName, reason: str | None = None) -> None:
        upgrade.state = state
        upgrade.updated_at = self.clock.time()
        upgrade.reason = reason
        log.info("device {device_id}: upgrade {session_id} to {firmware} {state}{why}",
                 device_id=upgrade.device_id, session_id=upgrade.session_id, firmware=upgrade.firmware,
                 state=state, why=f": {reason}" if reason else "")
        self._publish(upgrade)

    def _finish(self, upgrade: Upgrade, state: UpgradeStateName, reason: str | None = None) -> None:
        if upgrade.timer is not None and upgrade.timer.active():
            upgrade.timer.cancel()
        upgrade.timer = None
        upgrade.finished_at = self.clock.time()
        self._set(upgrade, state, reason)

    def _publish(self, upgrade: Upgrade) -> None:
        self.bus.publish("upgrade", device_id=upgrade.device_id, session_id=upgrade.session_id,
                         state=upgrade.state, firmware=upgrade.firmware, device_firmware=upgrade.device_firmware,
                         reason=upgrade.reason)

    def _expire(self, session_id: str) -> None:
        upgrade = self._sessions.get(session_id)
        if upgrade is None or not upgrade.running:
            return
        upgrade.timer = None
        self._finish(upgrade, "failed", f"no DeviceUpgradeResult within {self.upgrade_timeout:g} s "
                                        "(control.upgrade_timeout)")

    def _upgrade_result(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """Notify DeviceUpgradeResult (GB/T 28181-2022 §A.2.5): answer it, then apply it to its session."""
        self._answer(device_id, msg)
        if not isinstance(msg, manscdp.DeviceUpgradeResult):
            log.info("device {device_id}: undecodable {cmd} ignored", device_id=device_id, cmd=msg.cmd_type)
            return
        upgrade = self._sessions.get(msg.session_id or "")
        if upgrade is None or upgrade.device_id != device_id:
            self.unknown_results += 1
            log.info("device {device_id}: DeviceUpgradeResult {result} for unknown upgrade session {session_id!r} "
                     "answered and ignored", device_id=device_id, result=msg.upgrade_result or msg.result_variant,
                     session_id=msg.session_id)
            return
        if not upgrade.running:
            log.info("device {device_id}: late DeviceUpgradeResult for upgrade {session_id} ({state}) applied",
                     device_id=device_id, session_id=upgrade.session_id, state=upgrade.state)
        upgrade.device_firmware = msg.firmware
        if msg.ok:
            self._finish(upgrade, "done")
            # The registry's firmware is what DeviceInfo says (§A.2.6.5), as at onboarding.
            d = ensureDeferred(self.queries.device_info(device_id))
            d.addErrback(self._refresh_failed, device_id)
        else:
            self._finish(upgrade, "failed", msg.reason or "the device reported the upgrade failed (no reason given)")

    def _answer(self, device_id: str, msg: manscdp.ManscdpMessage) -> None:
        """The Response ``Result`` OK a notification gets (GB/T 28181-2022 §A.2.5), in the device's charset."""
        body = manscdp.encode_response(msg.cmd_type, msg.sn, msg.device_id, result="OK",
                                       charset=self.router.devices.charset_of(device_id))
        d = ensureDeferred(self.router.send_manscdp(device_id, body))
        d.addErrback(self._answer_failed, device_id, msg.cmd_type)

    @staticmethod
    def _answer_failed(failure: Failure, device_id: str, cmd_type: str) -> None:
        log.info("device {device_id}: the Response to its {cmd} was not delivered: {err}", device_id=device_id,
                 cmd=cmd_type, err=failure.getErrorMessage())

    @staticmethod
    def _refresh_failed(failure: Failure, device_id: str) -> None:
        log.info("device {device_id}: DeviceInfo after its upgrade failed: {err}", device_id=device_id,
                 err=failure.getErrorMessage())
