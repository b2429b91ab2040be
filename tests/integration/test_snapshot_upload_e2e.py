"""End to end: a device takes pictures and uploads them (GB/T 28181-2022 §9.14).

``gbplatform run`` and ``gbplatform simulate`` (one 2022 IPC) run as processes.
``POST /channels/{id}/device-snapshots`` sends SnapShotConfig; the simulator
answers OK, encodes two test-pattern JPEGs one second apart (PyAV's mjpeg),
POSTs each to the UploadURL over real HTTP, then sends UploadSnapShotFinished.
Both pictures are listed, each fetched picture decodes as a 320x240 JPEG, the
session is finished with the simulator's SnapShotFileIDs, and the platform
logged the finished session.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"


def test_two_pictures_are_uploaded_listed_and_decode(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        status, session = platform.api("POST", f"/channels/{channel_id}/device-snapshots",
                                       {"count": 2, "interval": 1})
        assert status == 202, f"{session}\n{platform.log()}"
        assert session["state"] == "waiting" and session["device_id"] == DEVICE
        session_id = session["session_id"]

        def finished() -> dict[str, object] | None:
            status, body = platform.api("GET", f"/snapshot-sessions/{session_id}")
            assert status == 200, body
            return body if body["state"] == "finished" else None

        state = wait_for(finished, 30, f"snapshot session {session_id} to finish\n{sim.log()}")
        assert state["received"] == 2
        file_ids = state["file_ids"]
        assert isinstance(file_ids, list) and len(file_ids) == 2
        assert all(str(f).startswith(channel_id) for f in file_ids)

        status, page = platform.api("GET", f"/channels/{channel_id}/device-snapshots")
        assert status == 200, page
        assert page["total"] == 2
        assert sorted(i["seq"] for i in page["items"]) == [1, 2]
        assert sorted(i["file_id"] for i in page["items"]) == sorted(file_ids)
        assert all(i["finished"] and i["session_id"] == session_id for i in page["items"])
        for item in page["items"]:
            jpeg = platform.get_bytes(item["url"])
            assert len(jpeg) == item["size"] and jpeg[:2] == b"\xff\xd8"
            with av.open(io.BytesIO(jpeg)) as container:
                frame = next(container.decode(video=0))
                assert (container.streams.video[0].codec_context.name, frame.width, frame.height) == \
                    ("mjpeg", 320, 240)
        stored = list((tmp_path / "data" / "device-snapshots" / DEVICE / channel_id).glob("*.jpg"))
        assert len(stored) == 2

        # Published on the bus (logged with it): the session's end.
        wait_for(lambda: f"snapshot session {session_id} finished" in platform.log(), 10, "the finished log line")
        status, again = platform.api("POST", f"/channels/{channel_id}/device-snapshots", {"count": 11})
        assert (status, again["error"]["field"]) == (400, "count")
    finally:
        sim.kill()
        platform.stop()
