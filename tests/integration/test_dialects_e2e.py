"""End to end: GB/T 28181 dialects per device against ``gbplatform run`` and ``gbplatform simulate``.

Two simulator processes register with one platform: a 2022 device whose
firmware knows only the ``IFrameCmd`` spelling (``--iframe-spelling``), and a
2016 device (``--gb-version 2016``). Their REGISTERs announce ``X-GB-Ver``
3.0 and 2.0 (GB/T 28181-2022 §9.1); the API shows what was detected, and the
operator's setting (``PUT /devices/{id}/dialect``) overrides it. A 2022
command to the 2016 device is refused with 422 before anything is sent. The
I-frame request is refused (Result ERROR) by the IFrameCmd-only device until
its ``iframe_element`` is set, then answered OK. A GuardCmd addressed to a
channel (§A.2.3.1.4) reaches the simulator with the channel's ID and shows
in its DeviceStatus.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE_2022 = "34020000001320000001"
DEVICE_2016 = "34020000001320000002"
DIALECT_KEYS = ("gb_version", "gb_version_detected", "gb_version_setting", "iframe_element")


def dialect(platform: PlatformProcess, device_id: str) -> dict[str, Any]:
    status, body = platform.api("GET", f"/devices/{device_id}")
    assert status == 200, body
    return {key: body[key] for key in DIALECT_KEYS}


def wire(platform: PlatformProcess, device_id: str, direction: str, start: str) -> str:
    """The last REGISTER transaction message of the device's SIP trace going ``direction`` whose start line
    begins ``start``."""
    status, body = platform.api("GET", f"/devices/{device_id}/trace?limit=200")
    assert status == 200, body
    found = [e["message"] for e in body["items"] if e["direction"] == direction and e["summary"].startswith(start)
             and re.search(r"^CSeq: *\d+ REGISTER", e["message"], re.M | re.I)]
    assert found, f"no {direction} {start} in the trace of {device_id}"
    return str(found[-1])


def a_2022_channel_query(platform: PlatformProcess) -> str | None:
    """A GET under /channels/{channel_id}/ that the OpenAPI document marks 422 (a 2022-only query)."""
    status, doc = platform.api("GET", "/openapi.json")
    assert status == 200
    for path, item in sorted(doc["paths"].items()):
        get = item.get("get")
        if path.startswith("/api/v1/channels/{channel_id}/") and get and "422" in get["responses"] \
                and path.count("{") == 1:
            return str(path.removeprefix("/api/v1"))
    return None


def test_dialects_detected_set_and_spoken(tmp_path: Path) -> None:
    # A short query timeout: the forced-2022 query to the 2016 device is meant to time out.
    platform = PlatformProcess(tmp_path / "data", env={"GBP_SIP_QUERY_TIMEOUT": "2"}).start()
    new = SimulatorProcess(platform, tmp_path / "sim2022.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE_2022, "--iframe-spelling", "IFrameCmd")
    old = SimulatorProcess(platform, tmp_path / "sim2016.log", "--devices", "1", "--channels", "2",
                           "--first-id", DEVICE_2016, "--gb-version", "2016")
    try:
        channel_2022 = platform.first_channel(DEVICE_2022)
        channel_2016 = platform.first_channel(DEVICE_2016)

        # Detected from X-GB-Ver.
        assert dialect(platform, DEVICE_2022) == {"gb_version": "2022", "gb_version_detected": "2022",
                                                  "gb_version_setting": "auto", "iframe_element": "IFameCmd"}
        assert dialect(platform, DEVICE_2016) == {"gb_version": "2016", "gb_version_detected": "2016",
                                                  "gb_version_setting": "auto", "iframe_element": "IFameCmd"}

        # On the wire (the SIP trace): each REGISTER names its edition, the platform names 2022 back.
        assert "X-GB-Ver: 2.0" in wire(platform, DEVICE_2016, "recv", "REGISTER")
        assert "X-GB-Ver" not in wire(platform, DEVICE_2016, "send", "SIP/2.0 200")
        assert "X-GB-Ver: 3.0" in wire(platform, DEVICE_2022, "recv", "REGISTER")
        assert "X-GB-Ver: 3.0" in wire(platform, DEVICE_2022, "send", "SIP/2.0 200")

        # A 2022 query to the 2016 device: 422 at once, nothing sent. Forced to 2022, the device stays
        # silent as 2016 firmware does: 504 after sip.query_timeout.
        query = a_2022_channel_query(platform)
        if query is not None:
            path = query.replace("{channel_id}", channel_2016)
            status, body = platform.api("GET", path)
            assert (status, body["error"]["code"]) == (422, "unsupported_by_device_dialect"), body
            assert platform.api("PUT", f"/devices/{DEVICE_2016}/dialect", {"version": "2022"})[0] == 200
            status, body = platform.api("GET", path)
            assert (status, body["error"]["code"]) == (504, "device_timeout"), body
            assert "no answer (as 2016 firmware)" in old.log()
            assert platform.api("PUT", f"/devices/{DEVICE_2016}/dialect", {"version": "auto"})[0] == 200

        # The operator's setting overrides the detection, and "auto" restores it.
        status, body = platform.api("PUT", f"/devices/{DEVICE_2022}/dialect", {"version": "2016"})
        assert (status, body["gb_version"], body["gb_version_detected"]) == (200, "2016", "2022"), body
        assert dialect(platform, DEVICE_2022)["gb_version"] == "2016"
        status, body = platform.api("PUT", f"/devices/{DEVICE_2022}/dialect", {"version": "auto"})
        assert (status, body["gb_version"]) == (200, "2022"), body

        # The IFrameCmd-only device refuses the standard spelling, then gets its own.
        status, body = platform.api("POST", f"/channels/{channel_2022}/iframe")
        assert (status, body) == (200, {"device_id": DEVICE_2022, "target_id": channel_2022,
                                        "command": "IFameCmd", "result": "ERROR"}), f"{body}\n{platform.log()}"
        status, body = platform.api("PUT", f"/devices/{DEVICE_2022}/dialect", {"iframe_element": "IFrameCmd"})
        assert (status, body["iframe_element"]) == (200, "IFrameCmd"), body
        status, body = platform.api("POST", f"/channels/{channel_2022}/iframe")
        assert (status, body) == (200, {"device_id": DEVICE_2022, "target_id": channel_2022,
                                        "command": "IFrameCmd", "result": "OK"}), f"{body}\n{platform.log()}"
        refusals = re.findall(r"DeviceControl IFameCmd for (\d{20}) refused", new.log_path.read_text(errors="replace"))
        assert refusals == [channel_2022]

        # A channel's guard: GuardCmd with the channel's ID, to the device owning it (both dialects know it).
        for device_id, channel_id, sim in ((DEVICE_2016, channel_2016, old), (DEVICE_2022, channel_2022, new)):
            status, body = platform.api("POST", f"/channels/{channel_id}/guard", {"armed": True})
            assert (status, body) == (200, {"device_id": device_id, "target_id": channel_id,
                                            "command": "SetGuard", "result": "OK"}), f"{body}\n{platform.log()}"

            def logged(sim: SimulatorProcess = sim) -> list[str]:
                return re.findall(r"DeviceControl SetGuard for (\d{20})", sim.log_path.read_text(errors="replace"))

            wait_for(logged, 10, "the simulator's GuardCmd log")
            assert logged() == [channel_id]
            status, body = platform.api("GET", f"/devices/{device_id}/status")
            assert status == 200, body
            assert {"device_id": channel_id, "duty_status": "ONDUTY"} in body["alarm_status"]
    finally:
        new.kill()
        old.kill()
        platform.stop()
