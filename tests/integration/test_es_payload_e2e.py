"""End to end: cameras that answer the INVITE with raw H.264/H.265 RTP instead of PS.

``gbplatform simulate --payload es`` answers the platform's offer (GB/T
28181-2016 Annex F: ``96 PS``, ``98 H264``, ``97 MPEG4``, ``99 H265``) with
``98 H264/90000`` or ``99 H265/90000`` and sends RFC 6184 / RFC 7798 packets;
the platform must pick its depacketizer from that answer. Two devices: the
generated H.265 640x360 clip over TCP (the platform listens, the camera
connects), read over RTSP by ffprobe; the 1080p H.264 capture over UDP, read
over HTTP-FLV and decoded by PyAV. ``/api/v1/streams`` reports each codec, and
no audio (an ES camera sends video only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

HEVC = "34020000001320000041"  # --clip h265 --payload es, media over TCP
AVC = "34020000001320000051"  # --clip capture --payload es, media over UDP
FRAMES = 30


def _channel(platform: PlatformProcess, device_id: str) -> str | None:
    status, body = platform.api("GET", f"/devices/{device_id}/channels")
    items = body["items"] if status == 200 else []
    return str(items[0]["channel_id"]) if items else None


def _stream(platform: PlatformProcess, channel_id: str) -> dict[str, Any]:
    status, body = platform.api("GET", "/streams")
    assert status == 200, body
    found = [s for s in body["items"] if s["channel_id"] == channel_id]
    assert found, body
    stream: dict[str, Any] = found[0]
    return stream


def test_es_payload_cameras_play_over_rtsp_and_flv(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    if shutil.which("ffprobe") is None:
        pytest.fail("ffprobe is missing: scripts/test.sh installs Debian's ffmpeg")
    platform = PlatformProcess(tmp_path / "data").start()
    sims = [
        SimulatorProcess(platform, tmp_path / "hevc.log", "--devices", "1", "--channels", "1",
                         "--first-id", HEVC, "--clip", "h265", "--payload", "es"),
        SimulatorProcess(platform, tmp_path / "avc.log", "--devices", "1", "--channels", "1",
                         "--first-id", AVC, "--clip", "capture", "--payload", "es"),
    ]
    try:
        channels = {dev: wait_for(partial(_channel, platform, dev), 60, f"the channel of {dev}")
                    for dev in (HEVC, AVC)}
        status, body = platform.api("PATCH", f"/devices/{HEVC}", {"media_transport": "TCP-PASSIVE"})
        assert status == 200, body
        urls = {}
        for dev, channel_id in channels.items():
            status, body = platform.api("POST", f"/channels/{channel_id}/play")
            assert status == 200, f"{body}\n{platform.log()}\n{sims[0].log()}\n{sims[1].log()}"
            urls[dev] = body["urls"]
            assert body["stream"]["transport"] == ("tcp-passive" if dev == HEVC else "udp")

        # H.265 over RTSP/TCP, read by ffmpeg's own client.
        cmd = ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-read_intervals", "%+3",
               "-show_entries", "stream=codec_type,codec_name,width,height:packet=pts_time",
               "-of", "json", urls[HEVC]["rtsp"]]  # as given: it carries a playback token
        done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, f"{done.stderr.decode(errors='replace')}\n{platform.log()}"
        probe = json.loads(done.stdout)
        assert [(s["codec_type"], s["codec_name"], s["width"], s["height"])
                for s in probe["streams"]] == [("video", "hevc", 640, 360)]
        assert len(probe["packets"]) >= FRAMES, len(probe["packets"])

        # H.264 1080p over HTTP-FLV, decoded.
        with av.open(urls[AVC]["http_flv"], timeout=20) as container:
            assert not container.streams.audio
            video = container.streams.video[0]
            decoded = 0
            for frame in container.decode(video):
                assert (frame.width, frame.height) == (1920, 1080)
                decoded += 1
                if decoded == FRAMES:
                    break
            assert video.codec_context.name == "h264"
        assert decoded == FRAMES

        for dev, (codec, width, height) in {HEVC: ("h265", 640, 360), AVC: ("h264", 1920, 1080)}.items():
            health = _stream(platform, channels[dev])
            assert health["state"] == "playing", health
            assert (health["video_codec"], health["audio_codec"]) == (codec, None), health
            assert (health["width"], health["height"]) == (width, height), health
            assert health["frames"] >= FRAMES and health["rtp_lost"] == 0, health
        # The platform took the payload types from the answers, not PS by default.
        assert "RTP payload formats {99: 'H265'}" in platform.log()
        assert "RTP payload formats {98: 'H264'}" in platform.log()
        for channel_id in channels.values():
            assert platform.api("POST", f"/channels/{channel_id}/stop")[0] == 204
    finally:
        for sim in sims:
            sim.kill()
        assert platform.stop() == 0, platform.log()
