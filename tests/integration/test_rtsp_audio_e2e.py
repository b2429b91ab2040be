"""End to end: video with G.711 or AAC audio over the real RTSP server, played by FFmpeg.

``tests.integration.rtsp_audio_server`` runs the platform's ``RtspFactory``
on 127.0.0.1 in its own process, playing the 1080p H.264 capture at real
time with synthetic audio next to it. PyAV (FFmpeg's RTSP client and
decoders) must find both tracks in the SDP, SETUP and PLAY both over TCP
interleaved and over UDP, and decode pictures and sound that line up;
ffprobe, a separate program, must describe the same two streams.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.harness import free_port

pytestmark = pytest.mark.integration

CHANNEL = "34020000001310000001"
VIDEO_FRAMES = 50  # 2 s at 25 fps
AUDIO_NAMES = {"g711a": ("pcm_alaw", 8000), "g711u": ("pcm_mulaw", 8000), "aac": ("aac", 44100)}


def _play(url: str, transport: str, out: dict[str, Any], deadline: float) -> None:
    import av

    try:
        with av.open(url, options={"rtsp_transport": transport}, timeout=20) as container:
            out["streams"] = {s.type: (s.codec_context.name, getattr(s.codec_context, "sample_rate", 0) or 0)
                              for s in container.streams}
            counts = {"video": 0, "audio": 0}
            last = {"video": 0.0, "audio": 0.0}
            for packet in container.demux():
                kind = packet.stream.type
                for frame in packet.decode():
                    counts[kind] += 1
                    if frame.time is not None:
                        last[kind] = frame.time
                if counts["video"] >= VIDEO_FRAMES or time.monotonic() > deadline:
                    break
            out["counts"], out["last"] = counts, last
    except Exception as e:  # noqa: BLE001 - handed to the test thread, which fails with it
        out["error"] = e


class _Server:
    def __init__(self, audio: str, shared: Path, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        log = open(log_path, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "tests.integration.rtsp_audio_server", str(self.port), str(shared), audio],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while b"READY" not in log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the RTSP test server did not start:\n{self.log()}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live/{CHANNEL}?token=t"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.parametrize("audio", ["g711a", "aac"])
def test_players_get_video_and_audio_over_tcp_and_udp(audio: str, shared_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("av")
    server = _Server(audio, shared_dir, tmp_path / "server.log")
    try:
        for transport in ("tcp", "udp"):
            result: dict[str, Any] = {}
            worker = threading.Thread(target=_play, args=(server.url, transport, result, time.monotonic() + 40),
                                      daemon=True)
            worker.start()
            worker.join(60)
            assert not worker.is_alive(), f"the {transport} player hung\n{server.log()}"
            assert "error" not in result, f"{transport}: {result['error']!r}\n{server.log()}"
            assert result["streams"] == {"video": ("h264", 0), "audio": AUDIO_NAMES[audio]}, result
            counts, last = result["counts"], result["last"]
            assert counts["video"] >= VIDEO_FRAMES and counts["audio"] >= 20, (transport, result)
            # RTP-Info names one instant on both clocks: sound and picture run together.
            assert abs(last["video"] - last["audio"]) < 0.5, (transport, result)

        ffprobe = shutil.which("ffprobe")
        if ffprobe is not None:
            run = subprocess.run(
                [ffprobe, "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json", server.url],
                capture_output=True, timeout=60, check=False,
            )
            assert run.returncode == 0, run.stderr.decode(errors="replace")
            streams = {s["codec_type"]: s for s in json.loads(run.stdout)["streams"]}
            assert streams["video"]["codec_name"] == "h264"
            assert (streams["video"]["width"], streams["video"]["height"]) == (1920, 1080)
            name, rate = AUDIO_NAMES[audio]
            assert (streams["audio"]["codec_name"], int(streams["audio"]["sample_rate"])) == (name, rate)
        assert "Traceback" not in server.log(), server.log()
    finally:
        server.stop()
