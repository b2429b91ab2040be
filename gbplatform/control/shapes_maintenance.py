"""API shapes of device maintenance (GB/T 28181-2022): SD card status and format, firmware upgrade.

See ``gbplatform/api/shapes.py`` for how shapes become validation and OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from msgspec import UNSET, Meta, UnsetType

from gbplatform.api.shapes import NO_CONTROL, OptStr, OptTime, Shape, Time

__all__ = ["FILE_URL_MESSAGE", "SdCardItem", "SdCardList", "UpgradeBody", "UpgradeState"]

FILE_URL_PATTERN: Final = r"^(https?|ftp)://[^\s/?#@]+(@[^\s/?#@]+)?([/?#][^\s]*)?$"
FILE_URL_MESSAGE: Final = "must be an http://, https:// or ftp:// URL of at most 1024 characters, without spaces"


class SdCardItem(Shape):
    """One SD card of the device (``SDCardList/Item``, GB/T 28181-2022 §A.2.6)."""

    id: Annotated[OptStr, Meta(examples=["1"], description="The card's ID: what `format` takes.")]
    hdd_name: Annotated[OptStr, Meta(examples=["SD1"], description="The device's name for the card.")]
    status: Annotated[OptStr, Meta(examples=["formatted"], description=(
        "As the device reports it, lowercased: formatted, unformatted, formatting or abnormal on the devices "
        "seen."))]
    format_progress: Annotated[int | None, Meta(examples=[100], description="Percent of a format done.")]
    capacity: Annotated[float | None, Meta(examples=[30436], description="Size, in the device's unit (MB).")]
    free_space: Annotated[float | None, Meta(examples=[12870], description="Free space, same unit.")]


class SdCardList(Shape):
    """The device's SD cards (SDCardStatus, GB/T 28181-2022 §A.2.6)."""

    device_id: str
    result: Annotated[OptStr, Meta(examples=["OK"], description="The device's Result.")]
    sum_num: Annotated[int | None, Meta(description="`SumNum`: the cards the device has.")]
    items: list[SdCardItem]


class UpgradeBody(Shape, forbid_unknown_fields=True):
    """Upgrade the device's firmware (DeviceUpgrade, GB/T 28181-2022 §A.2.3.1): the device downloads
    `file_url` itself and reports the result later."""

    firmware: Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_CONTROL, examples=["V5.7.3"],
                                  description="The firmware version to install.")]
    file_url: Annotated[str, Meta(min_length=10, max_length=1024, pattern=FILE_URL_PATTERN,
                                  examples=["http://192.0.2.10/firmware/ipc-v5.7.3.bin"],
                                  description="Where the device downloads the firmware: http, https or ftp.")]
    manufacturer: Annotated[str, Meta(min_length=1, max_length=64, pattern=NO_CONTROL, examples=["Hikvision"],
                                      description="The manufacturer the firmware is for.")] | UnsetType = UNSET


class UpgradeState(Shape):
    """A firmware upgrade session of a device and where it stands."""

    device_id: str
    session_id: Annotated[str, Meta(examples=["5f0c2e7d9a4b41c8b1e3d2a6f7c8e9d0"],
                                    description="`SessionID` sent in DeviceUpgrade; the device's result names it.")]
    state: Annotated[Literal["pending", "upgrading", "done", "failed"], Meta(description=(
        "pending: DeviceUpgrade sent; upgrading: the device accepted it; done: it reported OK; failed: it "
        "refused, reported ERROR, or sent no result within `control.upgrade_timeout`."))]
    firmware: Annotated[str, Meta(description="The firmware version asked for.")]
    file_url: Annotated[str, Meta(description="As given, a password in it shown as `***`.")]
    manufacturer: OptStr
    reason: Annotated[OptStr, Meta(examples=["download failed: 404 Not Found"],
                                   description="Why it failed (the device's `UpgradeFailedReason`, or the platform's).")]
    device_firmware: Annotated[OptStr, Meta(description="The firmware the device's DeviceUpgradeResult reports.")]
    started_at: Time
    updated_at: Time
    finished_at: OptTime
