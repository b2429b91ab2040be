"""End to end: a stream's start timeline, and a video-only stream that goes out at its first keyframe.

``gbplatform run`` and ``gbplatform simulate`` (one device, one channel, the 1080p H.264 PS capture,
video only: its PSM lists no audio) run as processes. An HTTP-FLV client and an RTSP client
(PyAV) each decode a first picture; ``GET /api/v1/streams`` then shows the stream's ``timeline``:
INVITE sent, 200 OK, first RTP packet, first keyframe, and each viewer's attach and first media, in
that order. Nothing is asserted about durations (issue 12's figures are ``benchmarks/first_frame.py``).
"""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"


def _first_picture(url: str, options: dict[str, str], out: dict[str, Any]) -> None:
    import av

    try:
        with av.open(url, options=options, timeout=20) as container:
            video = container.streams.video[0]
            for frame in container.decode(video):
                out["size"] = (frame.width, frame.height)
                break
    except Exception as e:  # noqa: BLE001 - handed to the test thread, which fails with it
        out["error"] = e


def _play(url: str, options: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    worker = threading.Thread(target=_first_picture, args=(url, options, out), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the player hung"
    return out


def test_timeline_and_first_pictures_over_flv_and_rtsp(tmp_path: Path) -> None:
    pytest.importorskip("av")
    platform = PlatformProcess(tmp_path / "data").start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        flv = f"http://127.0.0.1:{platform.http_port}/live/{channel_id}.flv?token={TOKEN}"
        # The FLV header says "video only" (flags 0x01): the PSM lists no audio, so the stream did not
        # wait for an audio probe to tell.
        with urllib.request.urlopen(flv, timeout=30) as resp:
            assert resp.read(13)[:5] == b"FLV\x01\x01"
        low_probe = {"probesize": "32", "analyzeduration": "0"}
        for url, options in ((flv, low_probe),
                             (f"rtsp://127.0.0.1:{platform.rtsp_port}/live/{channel_id}?token={TOKEN}",
                              {**low_probe, "rtsp_transport": "tcp"})):
            result = _play(url, options)
            assert "error" not in result, f"{result['error']!r}\n{platform.log()}\n{sim.log()}"
            assert result["size"] == (1920, 1080)

        status, body = platform.api("GET", "/streams")
        assert status == 200, body
        [stream] = body["items"]
        t = stream["timeline"]
        assert t["invite_sent_ms"] <= t["answered_ms"] <= t["first_rtp_ms"] <= t["first_keyframe_ms"]
        viewers = t["viewers"]
        assert [v["output"] for v in viewers] == ["http-flv", "http-flv", "rtsp"]
        for viewer in viewers:
            assert viewer["peer"].startswith("127.0.0.1:")
            assert t["invite_sent_ms"] <= viewer["attached_ms"] <= viewer["first_frame_ms"]
            assert viewer["first_frame_ms"] >= t["first_keyframe_ms"]
    finally:
        sim.kill()
        platform.stop()
