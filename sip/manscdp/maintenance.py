"""Device maintenance (GB/T 28181-2022): SD card status and format, firmware upgrade and its result.

GB/T 28181-2022 Annex A adds, for a device's storage and software:

- ``SDCardStatus`` query (§A.2.4) answered by a Response with ``SumNum`` and
  ``SDCardList Num=`` of ``Item``: ``ID``, ``HddName``, ``Status``
  (formatted / unformatted / formatting / abnormal), ``FormatProgress``
  (percent), ``Capacity`` and ``FreeSpace``;
- ``FormatSDCard`` in a DeviceControl (§A.2.3.1): the card's ID, answered by
  ``Result``; the format then runs on the device, its progress in the status;
- ``DeviceUpgrade`` in a DeviceControl (§A.2.3.1): ``Firmware`` (the version
  to install), ``FileURL``, ``Manufacturer``, ``SessionID``, answered by
  ``Result``; when done the device sends Notify ``DeviceUpgradeResult``
  (§A.2.5) with the ``SessionID``, ``UpgradeResult`` OK/ERROR, its
  ``Firmware`` now and ``UpgradeFailedReason``, which the platform answers
  with a Response ``Result`` OK as for other notifications.

The two DeviceControl elements are fields of ``control.DeviceControl`` (one
declaration per CmdType); their shapes live here.

Vendor variants accepted when decoding (element names are matched
case-insensitively anyway): CmdType ``SDCardStatusQuery`` for the query,
``UpgradeResult`` for the notification; ``Result`` for ``UpgradeResult`` and
``FailedReason`` for ``UpgradeFailedReason`` in it. ``Capacity`` and
``FreeSpace`` are numbers in the device's unit (MB on the devices seen);
decimals are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sip.manscdp.messages import Notify, Query, Response
from sip.manscdp.registry import Command, Leaf, Repeated, Struct, Total, declare, encode

__all__ = [
    "DEVICE_UPGRADE",
    "SD_CARD_STATUSES",
    "DeviceUpgrade",
    "DeviceUpgradeResult",
    "SdCard",
    "SdCardStatusQuery",
    "SdCardStatusResponse",
    "encode_sd_card_status_response",
    "encode_upgrade_result",
]

SD_CARD_STATUSES: Final = ("formatted", "unformatted", "formatting", "abnormal")
"""The ``Status`` values of an SD card item (GB/T 28181-2022 §A.2.6), as the platform reports them."""


@dataclass(frozen=True, kw_only=True)
class SdCardStatusQuery(Query):
    """SDCardStatus query (GB/T 28181-2022 §A.2.4): the device's SD cards."""


SD_CARD_STATUS_QUERY: Final = declare(Command(
    kind="Query", cmd_type="SDCardStatus", cls=SdCardStatusQuery, aliases=("SDCardStatusQuery",),
))


@dataclass(frozen=True, kw_only=True)
class SdCard:
    """One ``SDCardList/Item`` of an SDCardStatus answer (GB/T 28181-2022 §A.2.6)."""

    id: str | None = None
    hdd_name: str | None = None
    status: str | None = None
    format_progress: int | None = None
    capacity: float | None = None
    free_space: float | None = None


@dataclass(frozen=True, kw_only=True)
class SdCardStatusResponse(Response):
    """SDCardStatus answer (GB/T 28181-2022 §A.2.6): ``SumNum`` and the cards."""

    sum_num: int | None = None
    cards: tuple[SdCard, ...] = ()
    num: int | None = None


SD_CARD_STATUS_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="SDCardStatus", cls=SdCardStatusResponse, aliases=("SDCardStatusQuery",),
    fields=(
        Leaf("Result", "result"),
        Total("SumNum", "sum_num", of="cards"),
        Repeated("SDCardList", "cards", Struct(SdCard, (
            Leaf("ID", "id"),
            Leaf("HddName", "hdd_name"),
            Leaf("Status", "status"),
            Leaf("FormatProgress", "format_progress", int),
            Leaf("Capacity", "capacity", float),
            Leaf("FreeSpace", "free_space", float),
        )), num_attr="num"),
    ),
))


@dataclass(frozen=True, kw_only=True)
class DeviceUpgrade:
    """``DeviceUpgrade`` of a DeviceControl (GB/T 28181-2022 §A.2.3.1): the firmware version to install,
    where the device downloads it, the manufacturer it is for and the session its result will name."""

    firmware: str | None = None
    file_url: str | None = None
    manufacturer: str | None = None
    session_id: str | None = None


DEVICE_UPGRADE: Final = Struct(DeviceUpgrade, (
    Leaf("Firmware", "firmware"),
    Leaf("FileURL", "file_url"),
    Leaf("Manufacturer", "manufacturer"),
    Leaf("SessionID", "session_id"),
))
"""The shape of ``DeviceUpgrade``, a ``Nested`` field of ``control.DEVICE_CONTROL``."""


@dataclass(frozen=True, kw_only=True)
class DeviceUpgradeResult(Notify):
    """DeviceUpgradeResult notification (GB/T 28181-2022 §A.2.5): how the upgrade of ``session_id`` ended."""

    session_id: str | None = None
    upgrade_result: str | None = None
    result_variant: str | None = None
    firmware: str | None = None
    upgrade_failed_reason: str | None = None
    failed_reason_variant: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the device reports success (``UpgradeResult``, or ``Result``, is OK)."""
        outcome = self.upgrade_result if self.upgrade_result is not None else self.result_variant
        return (outcome or "").strip().upper() == "OK"

    @property
    def reason(self) -> str | None:
        """Why it failed, under either spelling."""
        if self.upgrade_failed_reason is not None:
            return self.upgrade_failed_reason
        return self.failed_reason_variant


DEVICE_UPGRADE_RESULT: Final = declare(Command(
    kind="Notify", cmd_type="DeviceUpgradeResult", cls=DeviceUpgradeResult, aliases=("UpgradeResult",),
    fields=(
        Leaf("SessionID", "session_id"),
        Leaf("UpgradeResult", "upgrade_result"),
        Leaf("Result", "result_variant"),
        Leaf("Firmware", "firmware"),
        Leaf("UpgradeFailedReason", "upgrade_failed_reason"),
        Leaf("FailedReason", "failed_reason_variant"),
    ),
))


def encode_sd_card_status_response(
    sn: int, device_id: str, cards: Iterable[SdCard], *, result: str | None = "OK", charset: str = "GB2312",
) -> bytes:
    """The SDCardStatus answer (GB/T 28181-2022 §A.2.6) listing ``cards``; ``SumNum`` is their number."""
    items = tuple(cards)
    return encode(SD_CARD_STATUS_RESPONSE.build(
        sn, device_id, charset=charset, result=result, sum_num=len(items), cards=items))


def encode_upgrade_result(
    sn: int, device_id: str, *, session_id: str, ok: bool, firmware: str | None,
    reason: str | None = None, charset: str = "GB2312",
) -> bytes:
    """The DeviceUpgradeResult notification (GB/T 28181-2022 §A.2.5) a device sends when an upgrade ends."""
    return encode(DEVICE_UPGRADE_RESULT.build(
        sn, device_id, charset=charset, session_id=session_id, upgrade_result="OK" if ok else "ERROR",
        firmware=firmware, upgrade_failed_reason=None if ok else reason))
