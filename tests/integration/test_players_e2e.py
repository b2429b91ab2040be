"""End to end with independent players: Debian's ffprobe reads every live output, and streams end cleanly.

``gbplatform run`` with short idle and no-RTP timeouts, and ``gbplatform
simulate`` cameras replaying a real 1080p H.264 PS capture. ffprobe (ffmpeg's
own RTSP, FLV and HLS clients, not our code) opens the URLs the play API
returns and must see the camera's codec, resolution and a steady 25 fps.

Then every way a stream ends, each returning its RTP port (``/health``
``media.ports.in_use`` back to 0):

* nobody watches: the stream is torn down after ``[media] idle_timeout``;
* the camera hangs up (the simulator sends BYE on SIGUSR1): the viewer's
  HTTP-FLV response ends;
* the camera dies (SIGKILL, no BYE): after ``no_rtp_timeout`` the platform
  sends BYE itself and ends the viewer's response.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import statistics
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, wait_for

pytestmark = pytest.mark.integration

CAMERA = "34020000001320000011"
DOOMED = "34020000001320000021"  # killed without BYE
HEVC = "34020000001320000031"  # H.265 640x360 + G.711 A-law, a clip encoded at test time
TIMEOUT = 3  # idle and no-RTP timeouts of the platform under test, seconds


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if shutil.which("ffprobe") is None:
        pytest.fail("ffprobe is missing: scripts/test.sh installs Debian's ffmpeg")
    tmp = tmp_path_factory.mktemp("players")
    platform = PlatformProcess(tmp / "data", env={
        "GBP_MEDIA_IDLE_TIMEOUT": str(TIMEOUT), "GBP_MEDIA_NO_RTP_TIMEOUT": str(TIMEOUT),
    }).start()
    camera = SimulatorProcess(platform, tmp / "camera.log", "--devices", "1", "--channels", "3",
                              "--first-id", CAMERA)
    doomed = SimulatorProcess(platform, tmp / "doomed.log", "--devices", "1", "--channels", "1",
                              "--first-id", DOOMED)
    hevc = SimulatorProcess(platform, tmp / "hevc.log", "--devices", "1", "--channels", "1",
                            "--first-id", HEVC, "--clip", "h265", "--audio", "g711a")
    try:
        channels = {dev: wait_for(lambda dev=dev: _channels(platform, dev), 60, f"the channels of {dev}")
                    for dev in (CAMERA, DOOMED, HEVC)}
        yield {"platform": platform, "camera": camera, "doomed": doomed, "channels": channels}
    finally:
        for sim in (camera, doomed, hevc):
            sim.kill()
        platform.stop()


def _channels(platform: PlatformProcess, device_id: str) -> list[str] | None:
    status, body = platform.api("GET", f"/devices/{device_id}/channels")
    items = [item["channel_id"] for item in body["items"]] if status == 200 else []
    return sorted(items) or None


def _ffprobe(url: str, *options: str, seconds: int = 3, select: str = "v:0") -> dict[str, Any]:
    cmd = ["ffprobe", "-v", "error", *options, "-read_intervals", f"%+{seconds}", "-select_streams", select,
           "-show_entries", "stream=codec_type,codec_name,width,height,sample_rate:packet=pts_time,flags",
           "-of", "json", url]
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _assert_camera_video(probe: dict[str, Any], what: str) -> None:
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1920, 1080), (what, stream)
    pts = [float(p["pts_time"]) for p in probe["packets"] if p.get("pts_time") not in (None, "N/A")]
    assert len(pts) >= 50, (what, len(pts))  # 3 s at 25 fps, less what the GOP cache replays at once
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    assert statistics.median(steps) == pytest.approx(0.04, abs=0.002), (what, steps[:20])
    assert any("K" in p.get("flags", "") for p in probe["packets"][:1]), f"{what}: does not start on a keyframe"


def _full_log(platform: PlatformProcess) -> str:
    """The whole platform log (``platform.log()`` is its tail, for failure messages)."""
    return platform.log_path.read_text(errors="replace")


def _health(platform: PlatformProcess) -> dict[str, Any]:
    status, body = platform.api("GET", "/health", auth=False)
    assert status == 200
    media: dict[str, Any] = body["media"]
    return media


def _stream(platform: PlatformProcess, channel_id: str) -> dict[str, Any] | None:
    status, body = platform.api("GET", "/streams")
    assert status == 200
    return next((s for s in body["items"] if s["channel_id"] == channel_id), None)


class FlvViewer:
    """An HTTP-FLV client in a thread: reads until the platform ends the response."""

    def __init__(self, url: str) -> None:
        self.bytes = 0
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self._resp = urllib.request.urlopen(url, timeout=30)  # noqa: S310 - 127.0.0.1 test URL
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while chunk := self._resp.read1(65536):
                self.bytes += len(chunk)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.ended.set()

    def close(self) -> None:
        self._resp.close()


def test_ffprobe_reads_rtsp_flv_and_hls_of_the_camera(env: dict[str, Any]) -> None:
    platform: PlatformProcess = env["platform"]
    first, second, _ = env["channels"][CAMERA]

    status, body = platform.api("POST", f"/channels/{first}/play")
    assert status == 200, body
    urls = body["urls"]
    assert set(urls) == {"http_flv", "hls", "snapshot", "rtsp"}
    _assert_camera_video(_ffprobe(urls["rtsp"], "-rtsp_transport", "tcp"), "RTSP/TCP")
    _assert_camera_video(_ffprobe(urls["rtsp"], "-rtsp_transport", "udp"), "RTSP/UDP")
    _assert_camera_video(_ffprobe(urls["http_flv"]), "HTTP-FLV")

    health = _stream(platform, first)
    assert health is not None and health["state"] == "playing"
    assert (health["video_codec"], health["width"], health["height"]) == ("h264", 1920, 1080)
    assert 20 <= health["fps"] <= 30 and health["bitrate_bps"] > 1_000_000 and health["gop"] == 50

    # HLS on its own channel, started on demand by the playlist request.
    hls = f"http://127.0.0.1:{platform.http_port}/live/{second}/index.m3u8?token={TOKEN}"
    probe = _ffprobe(hls, seconds=4)
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1920, 1080)
    assert len(probe["packets"]) >= 50


def test_h265_with_g711_audio_plays_in_every_output(env: dict[str, Any]) -> None:
    platform: PlatformProcess = env["platform"]
    (channel,) = env["channels"][HEVC]
    status, body = platform.api("POST", f"/channels/{channel}/play")
    assert status == 200, body
    urls = body["urls"]
    for transport in ("tcp", "udp"):
        probe = _ffprobe(urls["rtsp"], "-rtsp_transport", transport, select="")
        kinds = {s["codec_type"]: s for s in probe["streams"]}
        video, audio = kinds["video"], kinds["audio"]
        assert (video["codec_name"], video["width"], video["height"]) == ("hevc", 640, 360), transport
        assert (audio["codec_name"], audio["sample_rate"]) == ("pcm_alaw", "8000"), transport
    health = _stream(platform, channel)
    assert health is not None
    assert (health["video_codec"], health["audio_codec"], health["width"]) == ("h265", "g711a", 640)

    # HLS: H.265 in MPEG-TS, the G.711 transcoded to AAC (MPEG-TS has no G.711).
    probe = _ffprobe(urls["hls"], seconds=4, select="")
    kinds = {s["codec_type"]: s for s in probe["streams"]}
    assert (kinds["video"]["codec_name"], kinds["video"]["width"]) == ("hevc", 640)
    assert kinds["audio"]["codec_name"] == "aac"

    # HTTP-FLV carries H.265 as enhanced FLV, which Debian's ffmpeg 5.1 predates: PyAV's newer
    # libavformat reads it.
    import av

    with av.open(urls["http_flv"], timeout=20) as container:
        assert container.streams.audio[0].codec_context.name == "pcm_alaw"
        video = container.streams.video[0]
        frames = 0
        for frame in container.decode(video):
            assert (frame.width, frame.height) == (640, 360)
            frames += 1
            if frames == 30:
                break
    assert video.codec_context.name == "hevc"


def test_a_stream_nobody_watches_is_torn_down_and_its_port_returned(env: dict[str, Any]) -> None:
    platform: PlatformProcess = env["platform"]
    first = env["channels"][CAMERA][0]
    # Started here and never watched (each test stands alone, in any order).
    status, body = platform.api("POST", f"/channels/{first}/play")
    assert status == 200, body
    wait_for(lambda: _stream(platform, first) is None, TIMEOUT + 10, "the idle stream to be torn down")
    assert f"{first}: no viewer for" in _full_log(platform)


def test_the_camera_hanging_up_ends_the_viewers(env: dict[str, Any]) -> None:
    platform: PlatformProcess = env["platform"]
    camera: SimulatorProcess = env["camera"]
    third = env["channels"][CAMERA][2]
    viewer = FlvViewer(f"http://127.0.0.1:{platform.http_port}/live/{third}.flv?token={TOKEN}")
    try:
        wait_for(lambda: viewer.bytes > 200_000, 30, "FLV bytes from the camera")
        camera.proc.send_signal(signal.SIGUSR1)  # the simulator's devices send BYE
        assert viewer.ended.wait(15), "the FLV response did not end after the camera's BYE"
        assert viewer.error is None
        wait_for(lambda: _stream(platform, third) is None, 10, "the stream to go")
        assert "the device ended the stream (BYE)" in _full_log(platform)
    finally:
        viewer.close()


def test_a_dead_camera_times_out_without_rtp(env: dict[str, Any]) -> None:
    platform: PlatformProcess = env["platform"]
    doomed: SimulatorProcess = env["doomed"]
    (channel,) = env["channels"][DOOMED]
    viewer = FlvViewer(f"http://127.0.0.1:{platform.http_port}/live/{channel}.flv?token={TOKEN}")
    try:
        wait_for(lambda: viewer.bytes > 200_000, 30, "FLV bytes from the doomed camera")
        doomed.kill()  # SIGKILL: no BYE, no un-REGISTER, the RTP just stops
        assert viewer.ended.wait(TIMEOUT + 15), "the FLV response did not end after the RTP stopped"
        wait_for(lambda: _stream(platform, channel) is None, 10, "the failed stream to go")
        # The cause, from the platform's own account rather than a stopwatch: the no-RTP
        # timeout, after at least TIMEOUT seconds without a packet.
        silences = [float(x) for x in re.findall(rf"channel {channel}: no RTP for ([0-9.]+) s", _full_log(platform))]
        assert silences and min(silences) >= TIMEOUT, platform.log()
    finally:
        viewer.close()


def test_every_port_comes_back(env: dict[str, Any]) -> None:
    platform: PlatformProcess = env["platform"]
    second = env["channels"][CAMERA][1]
    # A stream of its own, so that a port is taken whatever ran before.
    status, body = platform.api("POST", f"/channels/{second}/play")
    assert status == 200, body
    assert _health(platform)["ports"]["in_use"] >= 1
    # An HLS stream lingers longest: its segmenter is a viewer until 20 s after the last request.
    wait_for(lambda: _health(platform)["streams"] == 0, 45, "every stream to end")
    assert _health(platform)["ports"] == {"capacity": 250, "in_use": 0, "available": 250}
    status, body = platform.api("GET", "/streams")
    assert (status, body) == (200, {"items": []})


def test_snapshot_is_a_jpeg_of_the_frame_size(env: dict[str, Any], tmp_path: Path) -> None:
    platform: PlatformProcess = env["platform"]
    first = env["channels"][CAMERA][0]
    url = f"http://127.0.0.1:{platform.http_port}/api/v1/channels/{first}/snapshot?token={TOKEN}"
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - 127.0.0.1 test URL
        assert resp.headers["Content-Type"] == "image/jpeg"
        (tmp_path / "snap.jpg").write_bytes(resp.read())
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of",
                            "json", str(tmp_path / "snap.jpg")], capture_output=True, timeout=30, check=True)
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("mjpeg", 1920, 1080)
