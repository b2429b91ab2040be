"""The simulated device's SD cards and firmware (GB/T 28181-2022 SDCardStatus, FormatSDCard, DeviceUpgrade).

A simulated device has one SD card (an IPC) or two (an NVR: the second one
new, unformatted). ``SDCardStatus`` (§A.2.4) is answered from their state
(§A.2.6). ``FormatSDCard`` (DeviceControl, §A.2.3.1) of a card that exists
and is not being formatted is answered OK and starts a format lasting
``FORMAT_SECONDS`` on the reactor clock: meanwhile the card is
``formatting`` with its progress (0-99 %), then ``formatted`` with all its
space free. Any other card ID, or a card already formatting, gets ERROR.

``DeviceUpgrade`` (DeviceControl, §A.2.3.1) with a ``FileURL`` and a
``SessionID``, while no other upgrade runs, is answered OK; the device then
really downloads the file with Twisted's HTTP client (``twisted.web.client.Agent``,
``FETCH_TIMEOUT``, at most ``MAX_FIRMWARE_BYTES``) and, ``RESULT_DELAY``
later (the "install"), sends Notify ``DeviceUpgradeResult`` (§A.2.5): OK with
the new ``Firmware`` (which its DeviceInfo answers from then on) when the
download worked, ERROR with ``UpgradeFailedReason`` when it did not (an HTTP
error status, unreachable, too big, not http/https). The fetch is injected
(``fetch``) so unit tests run it without sockets.

Both answers are hooked in front of the 2016 DeviceControl answerer
(``QueryAnswers.intercept``); the device logs every command as
``DeviceControl <element> for <target>`` like the others, and this module
the upgrade's outcome as ``upgrade <session> OK|ERROR``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from sip import manscdp
from sip.useragent import QueryAnswers

__all__ = ["FORMAT_SECONDS", "SimMaintenance", "SimSdCard", "http_fetch"]

log = Logger()

FORMAT_SECONDS: Final = 6.0
"""How long a simulated format takes (long enough for a test to see it ``formatting``)."""
RESULT_DELAY: Final = 1.0
"""Seconds between a finished download and the DeviceUpgradeResult (the simulated install)."""
FETCH_TIMEOUT: Final = 10.0
MAX_FIRMWARE_BYTES: Final = 64 * 1024 * 1024

Fetch = Callable[[str], "Deferred[bytes]"]


class FetchError(Exception):
    """The firmware could not be downloaded; the message is the device's UpgradeFailedReason."""


def http_fetch(reactor: Any, timeout: float = FETCH_TIMEOUT) -> Fetch:
    """GET a URL with ``twisted.web.client.Agent``: its body, or a ``FetchError`` saying why not.

    The agent is made at the first fetch: a simulator of thousands of devices upgrades few of them.
    """
    agents: list[Agent] = []

    def fetch(url: str) -> Deferred[bytes]:
        if not url.lower().startswith(("http://", "https://")):
            raise FetchError(f"unsupported URL scheme in {url[:40]!r} (the simulator fetches http/https)")
        if not agents:
            agents.append(Agent(reactor, connectTimeout=timeout))  # type: ignore[no-untyped-call]
        d = agents[0].request(b"GET", url.encode("utf-8"), Headers({b"User-Agent": [b"gbplatform-sim"]}))

        def got(response: Any) -> Deferred[bytes]:
            if response.code != 200:
                response.deliverBody(_Discard())
                raise FetchError(f"download failed: HTTP {response.code} "
                                 f"{response.phrase.decode('latin-1', 'replace')}")
            if response.length != -1 and response.length > MAX_FIRMWARE_BYTES:
                response.deliverBody(_Discard())
                raise FetchError(f"download failed: {response.length} bytes is too big")
            data: Deferred[bytes] = readBody(response)
            return data

        body = d.addCallback(got)
        body.addTimeout(timeout, reactor)
        return body

    return fetch


class _Discard:
    """A body protocol that reads nothing: the connection is closed (an error status's body is unused)."""

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        pass

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 - Twisted's name
        pass


@dataclass
class SimSdCard:
    """One simulated SD card; sizes in MB, as devices report them."""

    id: int
    name: str
    capacity: int
    free: int
    status: str = "formatted"
    format_started: float | None = None


class SimMaintenance:
    """A simulated device's SD cards and firmware; see the module docstring."""

    def __init__(self, *, device_id: str, reactor: Any, firmware: str, charset: Callable[[], str],
                 label: Callable[[bytes], bytes], send: Callable[[bytes], None], next_sn: Callable[[], int],
                 cards: int = 1, fetch: Fetch | None = None) -> None:
        self.device_id = device_id
        self.reactor = reactor
        self.firmware = firmware
        self._charset = charset  # asked per answer: a charset quirk may change it
        self._label = label
        self._send = send
        self._next_sn = next_sn
        self.fetch = fetch if fetch is not None else http_fetch(reactor)
        self.cards = [SimSdCard(1, "SD1", capacity=30436, free=12870)]
        if cards > 1:
            self.cards.append(SimSdCard(2, "SD2", capacity=61036, free=0, status="unformatted"))
        self.upgrading: str | None = None  # the session of the upgrade under way
        self.results: list[tuple[str, bool, str | None]] = []  # (session, ok, reason) sent, for tests

    def register(self, answers: QueryAnswers) -> None:
        answers.register("SDCardStatus", self.sd_card_status)
        answers.intercept("DeviceControl", self.device_control)

    def _now(self) -> float:
        return float(self.reactor.seconds())

    # -- SD cards --------------------------------------------------------------------------------
    def _settle(self, card: SimSdCard) -> tuple[str, int]:
        """The card's status and format progress now, finishing a format whose time is up."""
        if card.format_started is None:
            return card.status, 100 if card.status == "formatted" else 0
        done = (self._now() - card.format_started) / FORMAT_SECONDS
        if done < 1:
            return "formatting", min(99, int(done * 100))
        card.format_started = None
        card.status, card.free = "formatted", card.capacity
        log.info("device {device_id}: SD card {card} formatted", device_id=self.device_id, card=card.id)
        return card.status, 100

    def sd_card_status(self, query: manscdp.ManscdpMessage) -> list[bytes]:
        """The SDCardStatus answer (GB/T 28181-2022 §A.2.6)."""
        items = []
        for card in self.cards:
            status, progress = self._settle(card)
            items.append(manscdp.SdCard(id=str(card.id), hdd_name=card.name, status=status,
                                        format_progress=progress, capacity=card.capacity, free_space=card.free))
        return [self._label(manscdp.encode_sd_card_status_response(query.sn, self.device_id, items,
                                                                   charset=self._charset()))]

    # -- DeviceControl: FormatSDCard, DeviceUpgrade ------------------------------------------------
    def device_control(self, msg: manscdp.ManscdpMessage) -> list[bytes] | None:
        """Answer the DeviceControl elements of this module (§A.2.3.1); None for the others."""
        if not isinstance(msg, manscdp.DeviceControl):
            return None
        # SimDevice logs each as "DeviceControl <element> for <target>" (sip.useragent.control_command).
        if msg.format_sd_card is not None:
            return self._result(msg, self._format(msg.format_sd_card))
        if msg.device_upgrade is not None:
            return self._result(msg, self._upgrade(msg.device_upgrade))
        return None

    def _result(self, msg: manscdp.ManscdpMessage, ok: bool) -> list[bytes]:
        return [self._label(manscdp.encode_control_response(msg.sn, msg.device_id, result="OK" if ok else "ERROR",
                                                            charset=self._charset()))]

    def _format(self, index: int) -> bool:
        card = next((c for c in self.cards if c.id == index), None)
        if card is None or self._settle(card)[0] == "formatting":
            log.info("device {device_id}: FormatSDCard {index} refused (no such card, or formatting)",
                     device_id=self.device_id, index=index)
            return False
        card.format_started = self._now()
        card.free = 0
        return True

    def _upgrade(self, upgrade: manscdp.DeviceUpgrade) -> bool:
        if not upgrade.file_url or not upgrade.session_id or self.upgrading is not None:
            log.info("device {device_id}: DeviceUpgrade refused (no FileURL or SessionID, or one under way)",
                     device_id=self.device_id)
            return False
        session_id, url = upgrade.session_id, upgrade.file_url
        self.upgrading = session_id
        try:
            d = self.fetch(url)
        except FetchError as e:
            # Answered OK first: the device accepts the command and fails the download, as real ones do.
            self.reactor.callLater(RESULT_DELAY, self._finish, session_id, None, str(e))
            return True
        d.addCallbacks(self._downloaded, self._download_failed, callbackArgs=(session_id, upgrade.firmware),
                       errbackArgs=(session_id,))
        return True

    def _downloaded(self, body: bytes, session_id: str, firmware: str | None) -> None:
        log.info("device {device_id}: firmware for upgrade {session_id} downloaded ({size} bytes)",
                 device_id=self.device_id, session_id=session_id, size=len(body))
        self.reactor.callLater(RESULT_DELAY, self._finish, session_id, firmware or self.firmware, None)

    def _download_failed(self, failure: Failure, session_id: str) -> None:
        error = failure.value
        reason = str(error) if isinstance(error, FetchError) else (
            f"download failed: {type(error).__name__}: {failure.getErrorMessage()}")
        self.reactor.callLater(RESULT_DELAY, self._finish, session_id, None, reason[:200])

    def _finish(self, session_id: str, firmware: str | None, reason: str | None) -> None:
        """Send DeviceUpgradeResult (GB/T 28181-2022 §A.2.5); on success the new firmware is ours."""
        self.upgrading = None
        ok = firmware is not None
        if firmware is not None:
            self.firmware = firmware
        log.info("device {device_id}: upgrade {session_id} {outcome}{why}", device_id=self.device_id,
                 session_id=session_id, outcome="OK" if ok else "ERROR", why=f": {reason}" if reason else "")
        self.results.append((session_id, ok, reason))
        self._send(self._label(manscdp.encode_upgrade_result(
            self._next_sn(), self.device_id, session_id=session_id, ok=ok, firmware=self.firmware,
            reason=reason, charset=self._charset())))
