"""End to end: a simulated camera's live video watched over RTSP (RFC 2326), TCP and UDP.

``gbplatform run`` (RTSP on a free port) and ``gbplatform simulate`` (one
device, one channel replaying a real 1080p H.264 capture) run as processes.
PyAV (ffmpeg's RTSP client and H.264 decoder) opens
``rtsp://.../live/<channel>?token=``: DESCRIBE starts the stream on demand,
and the player must decode real pictures with RTP interleaved on the RTSP
connection and with RTP over UDP.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, free_port, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
FRAMES = 30


def _decode(url: str, transport: str, out: dict[str, Any], deadline: float) -> None:
    import av

    try:
        with av.open(url, options={"rtsp_transport": transport}, timeout=20) as container:
            video = container.streams.video[0]
            out["codec"] = video.codec_context.name
            frames = 0
            for frame in container.decode(video):
                out["size"] = (frame.width, frame.height)
                frames += 1
                if frames >= FRAMES or time.monotonic() > deadline:
                    break
            out["frames"] = frames
    except Exception as e:  # noqa: BLE001 - handed to the test thread, which fails with it
        out["error"] = e


def test_rtsp_plays_the_simulated_camera_over_tcp_and_udp(tmp_path: Path) -> None:
    pytest.importorskip("av")
    rtsp_port = free_port()
    platform = PlatformProcess(tmp_path / "data", env={"GBP_MEDIA_RTSP_PORT": str(rtsp_port)}).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        url = f"rtsp://127.0.0.1:{rtsp_port}/live/{channel_id}?token={TOKEN}"
        for transport in ("tcp", "udp"):
            result: dict[str, Any] = {}
            worker = threading.Thread(target=_decode, args=(url, transport, result, time.monotonic() + 45),
                                      daemon=True)
            worker.start()
            worker.join(60)
            assert not worker.is_alive(), f"the {transport} player hung\n{platform.log()}"
            assert "error" not in result, f"{transport}: {result['error']!r}\n{platform.log()}\n{sim.log()}"
            assert result["codec"] == "h264", result
            assert result["frames"] >= FRAMES and result["size"] == (1920, 1080), (transport, result)

        status, body = platform.api("POST", f"/channels/{channel_id}/play")
        assert status == 200
        # With a playback token for this channel, never the API token (issue 8 item 4).
        assert body["urls"]["rtsp"].startswith(f"rtsp://127.0.0.1:{rtsp_port}/live/{channel_id}?token=")
        assert TOKEN not in body["urls"]["rtsp"]

        def detached() -> bool:
            status, body = platform.api("GET", "/streams")
            return status == 200 and all(s["viewers"] == 0 for s in body["items"])

        wait_for(detached, 15, "the RTSP players to be detached")
        assert "Traceback" not in platform.log(), platform.log()
    finally:
        sim.kill()
        assert platform.stop() == 0, platform.log()
