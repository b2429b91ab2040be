"""The 8-byte front-end device control command ``PTZCmd`` (GB/T 28181-2016 Annex A.3).

Theory of operation
-------------------
A ``DeviceControl`` body carries ``<PTZCmd>`` as 16 hex digits, eight bytes
(§A.3.1, Table A.3):

====  ==========================================================================
byte  meaning
====  ==========================================================================
1     0xA5, the leading code
2     high nibble: version (0); low nibble: check of byte 1's two nibbles and
      byte 2's high nibble, ``(0xA + 0x5 + version) % 16`` (0xF for version 0)
3     address, low 8 bits
4     the command code (what the other bytes mean depends on it)
5     data 1
6     data 2
7     high nibble: data 3 (combination code 2); low nibble: address, high 4 bits
8     checksum: ``sum(bytes 1-7) % 256``
====  ==========================================================================

Byte 4, by family:

- **PTZ** (§A.3.2, bits 7-6 = 00): bit 5 zoom out (wide), bit 4 zoom in
  (tele), bit 3 up, bit 2 down, bit 1 left, bit 0 right; byte 5 pan speed,
  byte 6 tilt speed, byte 7's high nibble zoom speed. 0x00 is stop.
- **FI** (§A.3.3, bits 7-4 = 0100): bit 3 iris close, bit 2 iris open,
  bit 1 focus near, bit 0 focus far; byte 5 focus speed, byte 6 iris speed.
  0x40 is stop.
- **Preset** (§A.3.4): 0x81 set, 0x82 call, 0x83 delete; byte 6 the preset 1-255.
- **Cruise** (§A.3.5): 0x84 add point, 0x85 delete point, 0x86 speed, 0x87
  dwell time, 0x88 start; byte 5 the group, byte 6 the point (0 in delete:
  the whole group); speed and dwell are 12 bits, low 8 in byte 6, high 4 in
  byte 7's high nibble.
- **Scan** (§A.3.6): 0x89 with byte 6 = 0 start, 1 set left limit, 2 set
  right limit; 0x8A speed (12 bits as in cruise); byte 5 the scan group.
- **Auxiliary switch** (§A.3.7): 0x8C on, 0x8D off; byte 5 the switch (1 = wiper).

A :class:`PtzCmd` is the decoded command, whichever family: ``code`` with its
three data fields, and the address. Builders (``move``, ``lens``, ``preset``…)
take the fields named as the standard names them; ``decode`` accepts any
case and refuses a wrong length, leading code, byte 2 check or checksum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "AUX_OFF",
    "AUX_ON",
    "CRUISE_ADD",
    "CRUISE_DELETE",
    "CRUISE_DWELL",
    "CRUISE_SPEED",
    "CRUISE_START",
    "DIRECTIONS",
    "FI_STOP",
    "LENS",
    "PRESET_CALL",
    "PRESET_DELETE",
    "PRESET_SET",
    "SCAN",
    "SCAN_SPEED",
    "STOP",
    "WIPER",
    "PtzCmd",
    "PtzCmdError",
    "aux",
    "cruise",
    "decode",
    "encode",
    "lens",
    "move",
    "preset",
    "scan",
]

LEAD: Final = 0xA5
VERSION: Final = 0x0

# §A.3.2 byte 4 bits.
RIGHT: Final = 0x01
LEFT: Final = 0x02
DOWN: Final = 0x04
UP: Final = 0x08
ZOOM_IN: Final = 0x10
ZOOM_OUT: Final = 0x20
STOP: Final = 0x00
DIRECTIONS: Final[dict[str, int]] = {
    "stop": STOP,
    "right": RIGHT, "left": LEFT, "up": UP, "down": DOWN,
    "upleft": UP | LEFT, "upright": UP | RIGHT, "downleft": DOWN | LEFT, "downright": DOWN | RIGHT,
    "zoomin": ZOOM_IN, "zoomout": ZOOM_OUT,
}
# §A.3.3 byte 4: 0100 then iris close, iris open, focus near, focus far.
FI_STOP: Final = 0x40
LENS: Final[dict[str, int]] = {
    "stop": FI_STOP, "iris_close": FI_STOP | 0x08, "iris_open": FI_STOP | 0x04,
    "focus_near": FI_STOP | 0x02, "focus_far": FI_STOP | 0x01,
}
PRESET_SET: Final = 0x81
PRESET_CALL: Final = 0x82
PRESET_DELETE: Final = 0x83
CRUISE_ADD: Final = 0x84
CRUISE_DELETE: Final = 0x85
CRUISE_SPEED: Final = 0x86
CRUISE_DWELL: Final = 0x87
CRUISE_START: Final = 0x88
SCAN: Final = 0x89
SCAN_SPEED: Final = 0x8A
AUX_ON: Final = 0x8C
AUX_OFF: Final = 0x8D
WIPER: Final = 1


class PtzCmdError(ValueError):
    """A PTZCmd that is not 8 well-formed bytes, or a field out of its range."""


def _check(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise PtzCmdError(f"{name} must be {low}-{high}, not {value}")
    return value


@dataclass(frozen=True)
class PtzCmd:
    """One A.3 command: byte 4 ``code``, bytes 5 and 6 ``data1``/``data2``, byte 7's high nibble ``data3``."""

    code: int
    data1: int = 0
    data2: int = 0
    data3: int = 0
    address: int = 0

    def __post_init__(self) -> None:
        _check("code", self.code, 0, 0xFF)
        _check("data1", self.data1, 0, 0xFF)
        _check("data2", self.data2, 0, 0xFF)
        _check("data3", self.data3, 0, 0xF)
        _check("address", self.address, 0, 0xFFF)


def _byte2(version: int = VERSION) -> int:
    """§A.3.1 byte 2: version in the high nibble, ``(0xA + 0x5 + version) % 16`` in the low one."""
    return (version << 4) | ((LEAD >> 4) + (LEAD & 0xF) + version) % 16


def encode(cmd: PtzCmd) -> bytes:
    """The eight bytes of ``cmd`` (GB/T 28181-2016 §A.3.1)."""
    head = bytes((
        LEAD, _byte2(), cmd.address & 0xFF, cmd.code, cmd.data1, cmd.data2,
        (cmd.data3 << 4) | (cmd.address >> 8),
    ))
    return head + bytes((sum(head) % 256,))


def to_hex(cmd: PtzCmd) -> str:
    """``cmd`` as the ``<PTZCmd>`` text: 16 upper-case hex digits."""
    return encode(cmd).hex().upper()


def decode(data: bytes | str) -> PtzCmd:
    """The command in ``data`` (8 bytes, or their 16 hex digits in any case); :class:`PtzCmdError` if malformed."""
    if isinstance(data, str):
        try:
            data = bytes.fromhex(data.strip())
        except ValueError:
            raise PtzCmdError("PTZCmd is not hexadecimal") from None
    if len(data) != 8:
        raise PtzCmdError(f"PTZCmd must be 8 bytes, not {len(data)}")
    if data[0] != LEAD:
        raise PtzCmdError(f"PTZCmd byte 1 must be 0xA5, not 0x{data[0]:02X}")
    if data[1] != _byte2(data[1] >> 4):
        raise PtzCmdError(f"PTZCmd byte 2 check is wrong: 0x{data[1]:02X}")
    if data[7] != sum(data[:7]) % 256:
        raise PtzCmdError(f"PTZCmd checksum is 0x{data[7]:02X}, not 0x{sum(data[:7]) % 256:02X}")
    return PtzCmd(code=data[3], data1=data[4], data2=data[5], data3=data[6] >> 4,
                  address=((data[6] & 0xF) << 8) | data[2])


# -- builders: the fields as the standard names them ---------------------------------


def move(action: str, speed: int = 0, zoom_speed: int | None = None) -> PtzCmd:
    """Pan/tilt/zoom or stop (§A.3.2); ``speed`` 0-255 for pan and tilt, zoom speed 0-15
    (``speed >> 4`` unless given: the same relative speed on a 4-bit scale)."""
    code = DIRECTIONS.get(action)
    if code is None:
        raise PtzCmdError(f"action must be one of {', '.join(DIRECTIONS)}")
    _check("speed", speed, 0, 255)
    if code == STOP:
        return PtzCmd(STOP)
    pan = speed if code & (LEFT | RIGHT) else 0
    tilt = speed if code & (UP | DOWN) else 0
    zoom = 0
    if code & (ZOOM_IN | ZOOM_OUT):
        zoom = _check("zoom_speed", speed >> 4 if zoom_speed is None else zoom_speed, 0, 15)
    return PtzCmd(code, pan, tilt, zoom)


def lens(action: str, speed: int = 0) -> PtzCmd:
    """Iris open/close, focus near/far, or stop (§A.3.3); byte 5 focus speed, byte 6 iris speed."""
    code = LENS.get(action)
    if code is None:
        raise PtzCmdError(f"action must be one of {', '.join(LENS)}")
    _check("speed", speed, 0, 255)
    focus = speed if code & 0x03 else 0
    iris = speed if code & 0x0C else 0
    return PtzCmd(code, focus, iris)


def preset(code: int, index: int) -> PtzCmd:
    """Set, call or delete preset ``index`` 1-255 (§A.3.4, byte 6)."""
    if code not in (PRESET_SET, PRESET_CALL, PRESET_DELETE):
        raise PtzCmdError(f"not a preset command: 0x{code:02X}")
    return PtzCmd(code, 0, _check("index", index, 1, 255))


def cruise(code: int, group: int, value: int = 0) -> PtzCmd:
    """A cruise command (§A.3.5): ``value`` is the point (add/delete, 0-255), or the
    speed or dwell time (12 bits: low 8 in byte 6, high 4 in byte 7); start takes none."""
    if not CRUISE_ADD <= code <= CRUISE_START:
        raise PtzCmdError(f"not a cruise command: 0x{code:02X}")
    _check("group", group, 0, 255)
    if code in (CRUISE_SPEED, CRUISE_DWELL):
        _check("value", value, 0, 0xFFF)
        return PtzCmd(code, group, value & 0xFF, value >> 8)
    return PtzCmd(code, group, _check("point", value, 0, 255) if code != CRUISE_START else 0)


def scan(code: int, group: int, value: int = 0) -> PtzCmd:
    """Auto-scan (§A.3.6): 0x89 with ``value`` 0 start, 1 left limit, 2 right limit; 0x8A speed (12 bits)."""
    _check("group", group, 0, 255)
    if code == SCAN:
        return PtzCmd(SCAN, group, _check("value", value, 0, 2))
    if code == SCAN_SPEED:
        _check("value", value, 0, 0xFFF)
        return PtzCmd(SCAN_SPEED, group, value & 0xFF, value >> 8)
    raise PtzCmdError(f"not a scan command: 0x{code:02X}")


def aux(switch: int, on: bool) -> PtzCmd:
    """Auxiliary switch ``switch`` on or off (§A.3.7, byte 5; 1 is the wiper)."""
    return PtzCmd(AUX_ON if on else AUX_OFF, _check("switch", switch, 0, 255))
