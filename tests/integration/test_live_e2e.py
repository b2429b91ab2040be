"""End to end: a simulated camera's live video watched over HTTP-FLV.

``gbplatform run`` and ``gbplatform simulate`` (one device, one channel,
replaying a real 1080p H.264 PS capture as RTP) run as processes. A player
(PyAV, i.e. ffmpeg's FLV demuxer and H.264 decoder) opens
``/live/<channel>.flv?token=``, which starts the stream on demand (INVITE,
GB/T 28181-2016 §9.2), and must decode real pictures; stopping through the
API (BYE) leaves no stream behind. The same stream also plays as HLS
(RFC 8216): PyAV opens ``/live/<channel>/index.m3u8?token=``.
"""

from __future__ import annotations

import io
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
FRAMES = 30


def _decode(url: str, out: dict[str, Any], deadline: float, want: int = FRAMES) -> None:
    import av

    try:
        with av.open(url, timeout=20) as container:
            video = container.streams.video[0]
            out["codec"] = video.codec_context.name
            frames = 0
            for frame in container.decode(video):
                out["size"] = (frame.width, frame.height)
                frames += 1
                if frames >= want or time.monotonic() > deadline:
                    break
            out["frames"] = frames
    except Exception as e:  # noqa: BLE001 - handed to the test thread, which fails with it
        out["error"] = e


def test_http_flv_plays_the_simulated_camera_and_stop_ends_it(tmp_path: Path) -> None:
    pytest.importorskip("av")
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        status, body = platform.api("GET", "/streams")
        assert (status, body) == (200, {"items": []})

        url = f"http://127.0.0.1:{platform.http_port}/live/{channel_id}.flv?token={TOKEN}"
        result: dict[str, Any] = {}
        worker = threading.Thread(target=_decode, args=(url, result, time.monotonic() + 45), daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), f"the player hung\n{platform.log()}"
        assert "error" not in result, f"{result['error']!r}\n{platform.log()}\n{sim.log()}"
        assert result["codec"] == "h264"
        assert result["frames"] >= FRAMES and result["size"] == (1920, 1080), result

        # A JPEG snapshot of the still-playing stream's cached keyframe (?token= like the FLV URL).
        import av

        snap = f"http://127.0.0.1:{platform.http_port}/api/v1/channels/{channel_id}/snapshot?token={TOKEN}"
        with urllib.request.urlopen(snap, timeout=20) as resp:
            assert (resp.status, resp.headers["Content-Type"]) == (200, "image/jpeg")
            jpeg = resp.read()
        assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
        with av.open(io.BytesIO(jpeg), mode="r") as picture:
            assert (picture.streams.video[0].width, picture.streams.video[0].height) == (1920, 1080)

        # The player has gone; the stream is still up (until it idles out) and counts no viewer.
        def viewers() -> list[Any] | None:
            status, body = platform.api("GET", "/streams")
            items = body["items"] if status == 200 else []
            return items if items and all(s["viewers"] == 0 for s in items) else None

        streams = wait_for(viewers, 15, "the player to be detached")
        assert [s["channel_id"] for s in streams] == [channel_id]
        assert streams[0]["state"] == "playing" and streams[0]["frames"] >= FRAMES

        # HLS of the running stream: the playlist waits for a first 2 s segment,
        # and the segment URIs carry the token on.
        hls_url = f"http://127.0.0.1:{platform.http_port}/live/{channel_id}/index.m3u8?token={TOKEN}"
        hls: dict[str, Any] = {}
        worker = threading.Thread(target=_decode, args=(hls_url, hls, time.monotonic() + 45, 20), daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), f"the HLS player hung\n{platform.log()}"
        assert "error" not in hls, f"{hls['error']!r}\n{platform.log()}"
        assert hls["codec"] == "h264" and hls["frames"] >= 20 and hls["size"] == (1920, 1080), hls

        status, _ = platform.api("POST", f"/channels/{channel_id}/stop")
        assert status == 204
        assert platform.api("GET", "/streams") == (200, {"items": []})
        assert platform.api("POST", f"/channels/{channel_id}/stop")[0] == 404
    finally:
        sim.kill()
        assert platform.stop() == 0, platform.log()
