"""The simulated device's GB/T 28181 edition: what a 2016 device, or one that spells IFrameCmd, refuses.

A simulated device speaks GB/T 28181-2022 (``SimConfig.gb_version``, the
default) or 2016. Its REGISTER announces it (GB/T 28181-2022 §9.1:
``X-GB-Ver: 3.0``, or ``2.0``; ``registration_headers``).

A 2016 device answers the commands only 2022 has
(``sip.manscdp.dialects.COMMANDS_2022``, the list the platform refuses
them by) the way eXosip-based 2016 firmware (the common IPC/NVR stack,
``shared/vectors/sip-wire/exosip-device-udp.log``) does. Such firmware
answers every MANSCDP MESSAGE 200 at the SIP layer before it reads the body
(eXosip hands the application the MESSAGE; the application's first act is
``eXosip_message_build_answer(200)``), then dispatches on CmdType and, for a
control, on the element it carries:

- a Query CmdType it has no handler for (PTZPosition, HomePositionQuery,
  CruiseTrackListQuery, CruiseTrackQuery, SDCardStatus): nothing more. The
  200 was sent, no Response follows: the platform that asks anyway waits
  until its timeout. Hence the platform's 422 for a 2016 device.
- a ConfigDownload of only 2022 ConfigTypes: the same silence; of 2016 and
  2022 types together, the answer carries the 2016 ones only (§A.2.4.7).
- a DeviceControl or DeviceConfig whose element it does not know
  (PTZPreciseCtrl, TargetTrack, FormatSDCard, DeviceUpgrade; OSDConfig,
  SnapShotConfig...): the control handler exists, so it answers, with
  ``Result`` ERROR (§A.2.6.2, §A.2.6.3).

Apart from the edition, ``SimConfig.iframe_spelling`` makes a device that
knows only one spelling of the I-frame request (§A.2.3.1.7 ``IFameCmd``;
some firmware ``IFrameCmd``): the other spelling is an unknown element,
answered ERROR. "any" (the default) accepts both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Final

from twisted.logger import Logger

from sip import manscdp
from sip.manscdp import dialects
from sip.useragent import QueryAnswers

__all__ = ["IFRAME_SPELLINGS", "SIM_GB_VERSIONS", "DialectAnswers", "registration_headers"]

log = Logger()

SIM_GB_VERSIONS: Final = dialects.DIALECTS
"""The editions a simulated device speaks."""

IFRAME_SPELLINGS: Final = ("any", *dialects.IFRAME_ELEMENTS)
"""Which I-frame element a simulated device knows: both, or only one."""


def registration_headers(gb_version: str) -> tuple[tuple[str, str], ...]:
    """The REGISTER header announcing ``gb_version`` (GB/T 28181-2022 §9.1)."""
    return ((dialects.X_GB_VER, dialects.header_value(gb_version)),)


class DialectAnswers(QueryAnswers):
    """``QueryAnswers`` that refuses, before any answerer sees it, what the device's edition lacks."""

    def __init__(self, device_id: str, gb_version: str, iframe_spelling: str,
                 charset: Callable[[], str], label: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self.device_id = device_id
        self.gb_version = gb_version
        self.iframe_spelling = iframe_spelling
        self._charset = charset  # asked per answer: a charset quirk may change it
        self._label = label
        self.refused: list[tuple[str, str]] = []  # (target, command) refused, for tests

    def answer(self, query: manscdp.ManscdpMessage) -> list[bytes]:
        if self.gb_version == "2016":
            if query.kind == "Query" and dialects.is_2022_query(query.cmd_type):
                return self._silent(query, query.cmd_type)
            if query.kind == "Query" and query.cmd_type.lower() == "configdownload":
                older, newer = dialects.config_types_2022(query.fields.get("ConfigType", ""))
                if newer and not older:
                    return self._silent(query, "ConfigDownload " + "/".join(newer))
                if newer:
                    query = replace(query, fields={**query.fields, "ConfigType": "/".join(older)})
            unknown = dialects.refused_elements(query)
            if unknown:
                return self._error(query, "/".join(unknown), "a GB/T 28181-2022 element")
        if self.iframe_spelling != "any" and isinstance(query, manscdp.DeviceControl):
            other = "IFrameCmd" if self.iframe_spelling == "IFameCmd" else "IFameCmd"
            sent = query.iframe_cmd_variant if other == "IFrameCmd" else query.iframe_cmd
            if sent is not None:
                return self._error(query, other, f"this device only knows {self.iframe_spelling}")
        return super().answer(query)

    def _silent(self, query: manscdp.ManscdpMessage, what: str) -> list[bytes]:
        log.info("device {device_id}: {what} is not GB/T 28181-2016: no answer (as 2016 firmware)",
                 device_id=self.device_id, what=what)
        self.refused.append((query.device_id, what))
        return []

    def _error(self, query: manscdp.ManscdpMessage, what: str, why: str) -> list[bytes]:
        log.info("device {device_id}: {cmd} {what} for {target} refused ({why}): Result ERROR",
                 device_id=self.device_id, cmd=query.cmd_type, what=what, target=query.device_id, why=why)
        self.refused.append((query.device_id, what))
        encode = (manscdp.encode_config_response if query.cmd_type.lower() == "deviceconfig"
                  else manscdp.encode_control_response)
        return [self._label(encode(query.sn, query.device_id, result="ERROR", charset=self._charset()))]
