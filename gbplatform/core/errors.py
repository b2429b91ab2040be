"""Domain errors, mapped once to HTTP statuses by the API."""

from __future__ import annotations


class DomainError(Exception):
    """An error the API reports as ``{"error": {"code", "message"}}``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class DeviceOffline(DomainError):
    """The device is not registered, so it cannot be asked anything."""

    status = 409
    code = "device_offline"


class DeviceTimeout(DomainError):
    """The device did not answer in time (API: 504)."""

    status = 504
    code = "device_timeout"


class DeviceRejected(DomainError):
    """The device answered a request with a SIP error."""

    status = 502
    code = "device_rejected"


class UnsupportedByDialect(DomainError):
    """A command the device's GB/T 28181 dialect lacks (a 2022 command to a 2016 device)."""

    status = 422
    code = "unsupported_by_device_dialect"
