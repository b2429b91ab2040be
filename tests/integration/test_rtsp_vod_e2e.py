"""End to end: a simulated camera recorded by ``gbplatform run``, played back over RTSP.

``rtsp://.../vod/<channel>?start&end&token`` is read by ffprobe (TCP
interleaved) and by PyAV: H.264 1080p, about 25 frames a second of range,
timestamps increasing, the stream ending by itself (RTCP BYE). A PyAV seek
to the middle of the range (PAUSE + PLAY with ``Range: npt=``) gets frames
from near there.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess, wait_for
from tests.integration.test_record_e2e import DEVICE, ENV, _epoch, _segments

pytestmark = pytest.mark.integration


def test_rtsp_vod_plays_and_seeks(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    # test_record_e2e adds a quota to its ENV dict in place: retention must not delete what we play.
    env = {k: v for k, v in ENV.items() if k != "GBP_RECORD_QUOTA_BYTES"}
    platform = PlatformProcess(tmp_path / "data", env=env).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1", "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        status, body = platform.api("PUT", f"/channels/{channel_id}/record", {"mode": "continuous"})
        assert status == 200, body

        def two_closed() -> list[dict[str, Any]] | None:
            segs = [s for s in _segments(platform, channel_id) if s["state"] == "closed"]
            full = [s for s in segs if _epoch(s["end"]) - _epoch(s["start"]) > 3.5]
            return full if len(full) >= 2 else None

        full = wait_for(two_closed, 60, "two closed 4 s segments", interval=0.5)
        seg = full[0]
        a, b = _epoch(seg["start"]), _epoch(seg["end"])
        # A little inside the segment: the API's times are rounded, and a range that touches the
        # previous segment's last GOP would include it.
        url = (f"rtsp://127.0.0.1:{platform.rtsp_port}/vod/{channel_id}?start={a + 0.1:.3f}&end={b - 0.1:.3f}"
               f"&token={TOKEN}")

        # The timeline offers the RTSP URL next to HLS and MP4.
        status, day = platform.api("GET", f"/channels/{channel_id}/recordings?date={seg['start'][:10]}")
        assert status == 200 and day["intervals"][0]["urls"]["rtsp"].startswith(
            f"rtsp://127.0.0.1:{platform.rtsp_port}/vod/{channel_id}?start="), day["intervals"][0]

        # ffprobe: codec, size and the frame count of a ~4 s range played at 1x.
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-of", "json", "-select_streams", "v:0",
             "-count_packets", "-show_entries", "stream=codec_name,width,height,nb_read_packets", url],
            capture_output=True, text=True, check=True, timeout=30).stdout
        stream = json.loads(out)["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1920, 1080)
        expected = 25 * (b - a)
        assert abs(int(stream["nb_read_packets"]) - expected) <= 10, (stream, expected)

        # PyAV: timestamps increase, 40 ms apart; then a seek to 2.5 s.
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=20) as c:
            packets = [p for p in c.demux(video=0) if p.size]
        pts = [p.pts for p in packets if p.pts is not None]
        assert abs(len(packets) - expected) <= 10 and len(pts) >= len(packets) - 2, (len(packets), len(pts))
        assert all(y > x for x, y in zip(pts, pts[1:], strict=False))
        assert {y - x for x, y in zip(pts, pts[1:], strict=False)} <= {3600, 3599, 3601}
        with av.open(url, options={"rtsp_transport": "tcp"}, timeout=20) as c:
            first = next(p for p in c.demux(video=0) if p.size and p.pts is not None)
            c.seek(2_500_000)  # microseconds: npt 2.5 s
            timed = (p for p in c.demux(video=0) if p.size and p.pts is not None)
            after = [p for _, p in zip(range(10), timed, strict=False)]
        tb = first.time_base
        assert float(first.pts * tb) < 0.5
        seconds = [float(p.pts * tb) for p in after]
        assert 1.0 <= seconds[0] <= 2.6 and seconds == sorted(seconds), seconds
    finally:
        sim.kill()
        platform.stop()
