"""PTZ through the API reaches pjsua2, an independent SIP stack, as the exact GB/T 28181-2016 A.3 bytes.

``gbplatform run`` and ``pjsua2_device.py`` (a device played by PJSIP) run as
processes. Each of the eight directions, zoom in/out and stop goes through
``POST /api/v1/channels/{id}/ptz`` with its own speed; pjsua2 logs every
DeviceControl element it receives (``DEVICECONTROL <SN> <target> <element>
<value>``) and answers a Response with Result OK (§A.2.6.2). The expected
bytes are derived here from the A.3 tables, not from ``sip.ptz``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.harness import PlatformProcess, wait_for
from tests.integration.test_pjsua2_interop import run_device

pytest.importorskip("pjsua2")
pytestmark = pytest.mark.integration

DEVICE = "34020000001320000030"
CHANNEL = "34020000001310000101"  # the first channel of pjsua2_device.py's catalog

# Byte 4 of A.3.2 (Table A.4): bits 7-6 are 00 for PTZ; bit 5 zoom out (wide), bit 4 zoom in (tele),
# bit 3 up, bit 2 down, bit 1 left, bit 0 right. All bits 0 is stop.
RIGHT, LEFT, DOWN, UP, TELE, WIDE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
INSTRUCTION = {
    "left": LEFT, "right": RIGHT, "up": UP, "down": DOWN,
    "upleft": UP | LEFT, "upright": UP | RIGHT, "downleft": DOWN | LEFT, "downright": DOWN | RIGHT,
    "zoomin": TELE, "zoomout": WIDE, "stop": 0x00,
}
# A speed per command, each different, so a byte taken from the wrong field would show.
SPEEDS = {
    "left": 0x11, "right": 0x22, "up": 0x33, "down": 0x44, "upleft": 0x55, "upright": 0x66,
    "downleft": 0x77, "downright": 0x88, "zoomin": 0xA0, "zoomout": 0xF3, "stop": 0x99,
}


def a3(action: str, speed: int, address: int = 0) -> str:
    """The PTZCmd a device must receive for ``action`` at the API's ``speed`` (A.3.1 Table A.3, A.3.2).

    The API has one speed, 0-255. The platform's convention (``sip/ptz.py`` ``move``): it is the pan
    speed (byte 5) only when a left/right bit is set, the tilt speed (byte 6) only when an up/down bit
    is set, and for zoom its high nibble is the 4-bit zoom speed (byte 7's high nibble); stop carries
    no speed. The platform addresses the camera by the body's DeviceID, so the A.3 address is 0.
    """
    instruction = INSTRUCTION[action]
    pan = speed if instruction & (LEFT | RIGHT) else 0
    tilt = speed if instruction & (UP | DOWN) else 0
    zoom = speed >> 4 if instruction & (TELE | WIDE) else 0
    b1 = 0xA5  # byte 1: the leading code
    # Byte 2: high nibble the version (0), low nibble the check (byte 1 high + byte 1 low + version) % 16.
    version = 0x0
    b2 = (version << 4) | ((0xA + 0x5 + version) & 0xF)  # = 0x0F
    b3 = address & 0xFF  # byte 3: the address, low 8 bits
    b4 = instruction  # byte 4: the instruction code
    b5 = pan  # byte 5: data 1, horizontal (pan) speed
    b6 = tilt  # byte 6: data 2, vertical (tilt) speed
    b7 = (zoom << 4) | (address >> 8)  # byte 7: data 3 (zoom speed) high nibble, address high 4 bits low
    head = [b1, b2, b3, b4, b5, b6, b7]
    b8 = sum(head) % 256  # byte 8: the checksum, sum of bytes 1-7 modulo 256
    return bytes([*head, b8]).hex().upper()


def test_a3_derivation_matches_the_tables_by_hand() -> None:
    """Two values worked out by hand from Table A.3, so the derivation itself is checked."""
    # left at 0x11: A5 0F 00 02 11 00 00, sum = 0xA5+0x0F+0x02+0x11 = 0xC7.
    assert a3("left", 0x11) == "A50F0002110000C7"
    # zoom out at 0xF3: zoom speed 0xF in byte 7 -> F0; sum = 0xA5+0x0F+0x20+0xF0 = 0x1C4 -> C4.
    assert a3("zoomout", 0xF3) == "A50F00200000F0C4"


def received(log: Path) -> list[tuple[str, str, str, str]]:
    """pjsua2's DEVICECONTROL lines: (SN, target, element, value)."""
    return re.findall(r"^DEVICECONTROL (\d+) (\d{20}) (\w+) (\S+)$", log.read_text(errors="replace"), re.M)


def test_ptz_reaches_pjsua2_as_the_a3_bytes(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    log = tmp_path / "pjsua2.log"
    device = run_device(platform, DEVICE, "12345678", 60, log)
    try:
        def synced() -> bool:
            status, body = platform.api("GET", f"/devices/{DEVICE}/channels")
            return status == 200 and any(c["channel_id"] == CHANNEL for c in body["items"])

        wait_for(synced, 30, f"the pjsua2 catalog\n{log.read_text(errors='replace')}")

        expected = {action: a3(action, speed) for action, speed in SPEEDS.items()}
        for action, speed in SPEEDS.items():
            status, body = platform.api("POST", f"/channels/{CHANNEL}/ptz", {"action": action, "speed": speed})
            # result is the device's Result: without pjsua2's Response the API answers 504, not 200.
            assert (status, body) == (200, {"device_id": DEVICE, "channel_id": CHANNEL, "result": "OK",
                                            "ptz_cmd": expected[action]}), f"{action}: {body}\n{platform.log()}"

        wait_for(lambda: len(received(log)) >= len(SPEEDS), 10, "pjsua2's DEVICECONTROL lines")
        lines = received(log)
        # Exactly one control element per command, PTZCmd, to the channel, each in its own SN.
        assert [(target, element) for _, target, element, _ in lines] == [(CHANNEL, "PTZCmd")] * len(SPEEDS)
        assert len({sn for sn, _, _, _ in lines}) == len(SPEEDS)
        assert [value for _, _, _, value in lines] == list(expected.values())
        text = platform.log_path.read_text(errors="replace")
        assert all(f"PTZCmd {wire} answered OK" in text for wire in expected.values()), platform.log()
    finally:
        if device.poll() is None:
            device.kill()
        device.wait(10)
        assert platform.stop() == 0, platform.log()
