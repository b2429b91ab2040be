"""The A.3 PTZCmd codec (GB/T 28181-2016 Annex A.3), byte for byte against worked examples.

Every example is derived by hand from the A.3 tables; the derivation is the
comment above it. Byte 2 is the same in all of them: version 0 in the high
nibble, and (0xA + 0x5 + 0x0) % 16 = 0xF in the low one, so 0x0F. Byte 8 is
the sum of bytes 1-7 modulo 256; 0xA5 + 0x0F = 0xB4 (180) starts every sum.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sip import ptz
from sip.ptz import PtzCmd, PtzCmdError

WORKED = [
    # stop: byte 4 = 0x00, no speeds. Sum 180 = 0xB4.
    (ptz.move("stop"), "A50F0000000000B4"),
    # right, speed 0x10: byte 4 bit 0 = 0x01; pan speed (byte 5) 0x10, tilt 0.
    # Sum 180 + 0x01 + 0x10 = 197 = 0xC5.
    (ptz.move("right", 0x10), "A50F0001100000C5"),
    # left, speed 0x10: bit 1 = 0x02. Sum 180 + 2 + 16 = 198 = 0xC6.
    (ptz.move("left", 0x10), "A50F0002100000C6"),
    # down, speed 0x20: bit 2 = 0x04; tilt speed (byte 6) 0x20. Sum 180 + 4 + 32 = 216 = 0xD8.
    (ptz.move("down", 0x20), "A50F0004002000D8"),
    # up, speed 0x20: bit 3 = 0x08. Sum 180 + 8 + 32 = 220 = 0xDC.
    (ptz.move("up", 0x20), "A50F0008002000DC"),
    # up-left, speed 0x20: 0x08 | 0x02 = 0x0A; pan and tilt 0x20. Sum 180 + 10 + 64 = 254 = 0xFE.
    (ptz.move("upleft", 0x20), "A50F000A202000FE"),
    # up-right: 0x08 | 0x01 = 0x09. Sum 180 + 9 + 64 = 253 = 0xFD.
    (ptz.move("upright", 0x20), "A50F0009202000FD"),
    # down-left: 0x04 | 0x02 = 0x06. Sum 180 + 6 + 64 = 250 = 0xFA.
    (ptz.move("downleft", 0x20), "A50F0006202000FA"),
    # down-right: 0x04 | 0x01 = 0x05. Sum 180 + 5 + 64 = 249 = 0xF9.
    (ptz.move("downright", 0x20), "A50F0005202000F9"),
    # zoom in (tele), speed 0x50: bit 4 = 0x10; zoom speed is byte 7's high nibble, 0x50 >> 4 = 5,
    # so byte 7 = 0x50. Sum 180 + 16 + 80 = 276 % 256 = 20 = 0x14.
    (ptz.move("zoomin", 0x50), "A50F001000005014"),
    # zoom out (wide), speed 0x50: bit 5 = 0x20. Sum 180 + 32 + 80 = 292 % 256 = 36 = 0x24.
    (ptz.move("zoomout", 0x50), "A50F002000005024"),
    # right at full speed to address 0x123: byte 3 = 0x23 (low 8 bits), byte 7 low nibble 0x1.
    # Sum 180 + 0x23 + 0x01 + 0xFF + 0x01 = 180 + 35 + 1 + 255 + 1 = 472 % 256 = 216 = 0xD8.
    (PtzCmd(ptz.RIGHT, 0xFF, 0, 0, address=0x123), "A50F2301FF0001D8"),
    # FI stop: byte 4 = 0100 0000 = 0x40. Sum 180 + 64 = 244 = 0xF4.
    (ptz.lens("stop"), "A50F0040000000F4"),
    # iris open, speed 0x40: 0x40 | bit 2 = 0x44; iris speed is byte 6. Sum 180 + 68 + 64 = 312 % 256 = 0x38.
    (ptz.lens("iris_open", 0x40), "A50F004400400038"),
    # iris close: 0x40 | bit 3 = 0x48. Sum 180 + 72 + 64 = 316 % 256 = 60 = 0x3C.
    (ptz.lens("iris_close", 0x40), "A50F00480040003C"),
    # focus near, speed 0x40: 0x40 | bit 1 = 0x42; focus speed is byte 5. Sum 180 + 66 + 64 = 310 % 256 = 0x36.
    (ptz.lens("focus_near", 0x40), "A50F004240000036"),
    # focus far: 0x40 | bit 0 = 0x41. Sum 180 + 65 + 64 = 309 % 256 = 0x35.
    (ptz.lens("focus_far", 0x40), "A50F004140000035"),
    # preset set 3: byte 4 = 0x81, byte 6 = 3. Sum 180 + 129 + 3 = 312 % 256 = 0x38.
    (ptz.preset(ptz.PRESET_SET, 3), "A50F008100030038"),
    # preset call 3: 0x82. Sum 313 % 256 = 0x39.
    (ptz.preset(ptz.PRESET_CALL, 3), "A50F008200030039"),
    # preset delete 255: 0x83, byte 6 0xFF. Sum 180 + 131 + 255 = 566 % 256 = 54 = 0x36.
    (ptz.preset(ptz.PRESET_DELETE, 255), "A50F008300FF0036"),
    # cruise group 1 add point 2: 0x84, byte 5 group, byte 6 point. Sum 180 + 132 + 1 + 2 = 315 % 256 = 0x3B.
    (ptz.cruise(ptz.CRUISE_ADD, 1, 2), "A50F00840102003B"),
    # cruise group 1 speed 0x123 (12 bits): byte 6 = 0x23, byte 7 high nibble = 0x1 -> 0x10.
    # Sum 180 + 134 + 1 + 35 + 16 = 366 % 256 = 110 = 0x6E.
    (ptz.cruise(ptz.CRUISE_SPEED, 1, 0x123), "A50F00860123106E"),
    # cruise group 1 dwell 30 s: 0x87, byte 6 = 0x1E. Sum 180 + 135 + 1 + 30 = 346 % 256 = 90 = 0x5A.
    (ptz.cruise(ptz.CRUISE_DWELL, 1, 30), "A50F0087011E005A"),
    # cruise group 1 start: 0x88. Sum 180 + 136 + 1 = 317 % 256 = 61 = 0x3D.
    (ptz.cruise(ptz.CRUISE_START, 1), "A50F00880100003D"),
    # scan group 0, set left limit: 0x89 with byte 6 = 1. Sum 180 + 137 + 1 = 318 % 256 = 0x3E.
    (ptz.scan(ptz.SCAN, 0, 1), "A50F00890001003E"),
    # scan group 0 speed 0x0FF: 0x8A, byte 6 0xFF, byte 7 0x00. Sum 180 + 138 + 255 = 573 % 256 = 61 = 0x3D.
    (ptz.scan(ptz.SCAN_SPEED, 0, 0xFF), "A50F008A00FF003D"),
    # wiper (switch 1) on: 0x8C, byte 5 = 1. Sum 180 + 140 + 1 = 321 % 256 = 65 = 0x41.
    (ptz.aux(ptz.WIPER, True), "A50F008C01000041"),
    # switch 1 off: 0x8D. Sum 322 % 256 = 0x42.
    (ptz.aux(ptz.WIPER, False), "A50F008D01000042"),
]


@pytest.mark.parametrize(("cmd", "wire"), WORKED, ids=[w for _, w in WORKED])
def test_worked_examples(cmd: PtzCmd, wire: str) -> None:
    assert ptz.to_hex(cmd) == wire
    assert ptz.encode(cmd) == bytes.fromhex(wire)
    assert ptz.decode(wire) == cmd
    assert ptz.decode(wire.lower()) == cmd
    assert ptz.decode(bytes.fromhex(wire)) == cmd


def test_byte2_is_the_nibble_check() -> None:
    # §A.3.1: (byte 1 high nibble + byte 1 low nibble + byte 2 high nibble) % 16.
    assert ptz.encode(PtzCmd(0))[1] == 0x0F


@given(st.builds(PtzCmd, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 15),
                 st.integers(0, 0xFFF)))
def test_round_trip(cmd: PtzCmd) -> None:
    data = ptz.encode(cmd)
    assert len(data) == 8 and data[7] == sum(data[:7]) % 256
    assert ptz.decode(data) == cmd


@pytest.mark.parametrize(("wire", "message"), [
    ("A50F00000000B4", "PTZCmd must be 8 bytes, not 7"),
    ("A50F0000000000B400", "PTZCmd must be 8 bytes, not 9"),
    ("A60F0000000000B5", "PTZCmd byte 1 must be 0xA5, not 0xA6"),
    ("A50E0000000000B3", "PTZCmd byte 2 check is wrong: 0x0E"),
    ("A50F0000000000B5", "PTZCmd checksum is 0xB5, not 0xB4"),
    ("A50F00000000zzB4", "PTZCmd is not hexadecimal"),
])
def test_malformed_commands_are_refused(wire: str, message: str) -> None:
    with pytest.raises(PtzCmdError, match=f"^{message}$"):
        ptz.decode(wire)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: ptz.move("sideways", 1), "action must be one of"),
    (lambda: ptz.move("left", 256), "speed must be 0-255, not 256"),
    (lambda: ptz.lens("zoom", 1), "action must be one of"),
    (lambda: ptz.preset(ptz.PRESET_SET, 0), "index must be 1-255, not 0"),
    (lambda: ptz.cruise(ptz.CRUISE_DWELL, 1, 4096), "value must be 0-4095, not 4096"),
    (lambda: ptz.cruise(ptz.CRUISE_ADD, 256, 1), "group must be 0-255, not 256"),
    (lambda: ptz.scan(ptz.SCAN, 0, 3), "value must be 0-2, not 3"),
    (lambda: ptz.aux(300, True), "switch must be 0-255, not 300"),
])
def test_out_of_range_fields_are_refused(build: object, message: str) -> None:
    with pytest.raises(PtzCmdError, match=message):
        build()  # type: ignore[operator]
