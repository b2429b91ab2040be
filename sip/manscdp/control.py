"""Answers to Control commands: DeviceControl and DeviceConfig (GB/T 28181-2016 §A.2.6.2, §A.2.6.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sip.manscdp.messages import Response
from sip.manscdp.registry import Command, Leaf, declare


@dataclass(frozen=True, kw_only=True)
class ControlResponse(Response):
    """Answer to DeviceControl/DeviceConfig (GB/T 28181-2016 §A.2.6.2, §A.2.6.3)."""


DEVICE_CONTROL_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="DeviceControl", cls=ControlResponse,
    fields=(Leaf("Result", "result"),),
))
DEVICE_CONFIG_RESPONSE: Final = declare(Command(
    kind="Response", cmd_type="DeviceConfig", cls=ControlResponse,
    fields=(Leaf("Result", "result"),),
))
