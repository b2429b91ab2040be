"""End to end: a simulated camera recorded by ``gbplatform run``, played back, killed, restarted.

Run 1 records with 4 s segments (``GBP_RECORD_SEGMENT_SECONDS``) once a
continuous policy is set through the API. The HLS VOD of a middle segment's
range, read by PyAV (ffmpeg's HLS demuxer fetching ``EXT-X-BYTERANGE`` parts
with HTTP Range), has exactly that segment's frames at 25 fps steps; the MP4
download of three segments has the duration ffprobe expects. The platform is
then SIGKILLed mid-segment.

Run 2 (same data directory, a quota just under what is stored) must have
repaired the open segment (whole TS packets, closed, playable) and then
deletes the oldest segments first. Run 3 records into a path that cannot be
a directory: recording reports errors, while SIP queries and live HTTP-FLV
carry on.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    RECORDING_ENV,
    TOKEN,
    PlatformProcess,
    SimulatorProcess,
    wait_for,
)

pytestmark = pytest.mark.integration

DEVICE = "34020000001320000001"
ENV = RECORDING_ENV


def _segments(platform: PlatformProcess, channel_id: str) -> list[dict[str, Any]]:
    today = dt.datetime.now(dt.UTC).date()
    segs: list[dict[str, Any]] = []
    for day in sorted({today - dt.timedelta(days=1), today}):
        status, body = platform.api("GET", f"/channels/{channel_id}/recordings?date={day.isoformat()}")
        assert status == 200, body
        segs += body["segments"]
    return sorted({s["id"]: s for s in segs}.values(), key=lambda s: s["id"])


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _probe(path: Path | str, *args: str) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], capture_output=True, text=True,
                         check=True).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def _packet_pts(data: bytes) -> list[int]:
    import io

    import av

    with av.open(io.BytesIO(data), "r", format="mpegts") as c:
        return [p.pts for p in c.demux(video=0) if p.size]


def _open_segment_frames(platform: PlatformProcess) -> int:
    """Video frames in the segment being written, as far as its file on disk goes."""
    import av

    channels = platform.api("GET", "/storage")[1]["channels"]
    key = channels[0]["segment"] if channels else None
    if not key:
        return 0
    try:
        data = (platform.data_dir / "recordings" / key).read_bytes()
    except FileNotFoundError:
        return 0
    try:
        return len(_packet_pts(data[:len(data) // 188 * 188]))
    except av.FFmpegError:
        return 0


def _decode_hls(url: str) -> list[int]:
    import av

    with av.open(url, timeout=20) as c:
        return [f.pts for f in c.decode(video=0)]


def test_record_play_kill_recover_retain(tmp_path: Path) -> None:
    pytest.importorskip("av")
    platform = PlatformProcess(tmp_path / "data", env=dict(ENV)).start()
    sim = SimulatorProcess(platform, tmp_path / "sim1.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        # A recording plan through the API: every day, all day (record.timezone's days).
        week = [{"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7)]
        status, plan = platform.api("POST", "/record/plans", {"name": "always", "schedule": week})
        assert status == 201, plan
        status, body = platform.api("PUT", f"/channels/{channel_id}/record", {"mode": "plan", "plan_id": plan["id"]})
        assert status == 200 and body["mode"] == "plan", body

        # Three whole 4 s segments (plus the loop points of the 10 s clip, where its timestamps restart).
        def closed_full() -> list[dict[str, Any]] | None:
            segs = [s for s in _segments(platform, channel_id) if s["state"] == "closed"]
            full = [s for s in segs if _epoch(s["end"]) - _epoch(s["start"]) > 3.5]
            return segs if len(full) >= 3 and len(segs) >= 4 else None

        segs = wait_for(closed_full, 60, "three closed 4 s segments", interval=0.5)
        status, storage = platform.api("GET", "/storage")
        assert storage["backends"][0]["dropped_frames"] == 0 and storage["channels"][0]["recording"], storage

        # HLS VOD of the middle of a whole segment: exactly its frames, 40 ms apart.
        middle = [s for s in segs if _epoch(s["end"]) - _epoch(s["start"]) > 3.5][1]
        a, b = _epoch(middle["start"]), _epoch(middle["end"])
        file_pts = _packet_pts(platform.get_bytes(f"/vod/{channel_id}/seg/{middle['id']}.ts"))
        playlist = platform.get_bytes(f"/vod/{channel_id}/index.m3u8?start={a + 0.5}&end={b - 0.5}").decode()
        assert "#EXT-X-ENDLIST" in playlist and "#EXT-X-BYTERANGE:" in playlist, playlist
        hls_pts = _decode_hls(f"http://127.0.0.1:{platform.http_port}/vod/{channel_id}/index.m3u8?"
                              f"start={a + 0.5}&end={b - 0.5}&token={TOKEN}")
        assert len(hls_pts) == len(file_pts) == 100
        assert hls_pts == sorted(file_pts) and {y - x for x, y in zip(hls_pts, hls_pts[1:], strict=False)} == {3600}
        # ffprobe (ffmpeg's own HLS client) reads the same range: H.264 1080p, the same 100 frames.
        vod = (f"http://127.0.0.1:{platform.http_port}/vod/{channel_id}/index.m3u8?"
               f"start={a + 0.5}&end={b - 0.5}&token={TOKEN}")
        probe = _probe(vod, "-select_streams", "v:0", "-count_packets",
                       "-show_entries", "stream=codec_name,width,height,nb_read_packets")
        stream = probe["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1920, 1080)
        assert int(stream["nb_read_packets"]) == 100

        # MP4 of three consecutive segments: the duration the download announced.
        first, third = segs[0], segs[2]
        url = f"/vod/{channel_id}.mp4?start={_epoch(first['start'])}&end={_epoch(third['end']) - 0.1}"
        req = urllib.request.Request(f"http://127.0.0.1:{platform.http_port}{url}&token={TOKEN}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            announced = float(resp.headers["X-Content-Duration"])
            (tmp_path / "range.mp4").write_bytes(resp.read())
        duration = float(_probe(tmp_path / "range.mp4", "-show_entries", "format=duration")["format"]["duration"])
        assert duration == pytest.approx(announced, abs=0.1) and announced > 8
        status, jobs = platform.api("GET", "/record/downloads")
        assert jobs["items"][-1]["state"] == "done"

        # SIGKILL mid-segment: once the open segment holds two seconds of video on disk.
        wait_for(lambda: _open_segment_frames(platform) >= 50, 30, "two seconds in the open segment",
                 interval=0.5)
        before = _segments(platform, channel_id)
        assert platform.proc is not None
        platform.proc.send_signal(signal.SIGKILL)
        platform.proc.wait(10)
    finally:
        sim.kill()

    # Run 2: recovery, then retention by quota, oldest first.
    stored = sum(s["size"] for s in before if s["state"] == "closed")
    oldest_two = sum(s["size"] for s in before[:2])
    platform.extra_env["GBP_RECORD_QUOTA_BYTES"] = str(stored - oldest_two + 4_000_000)
    platform.start()
    sim = SimulatorProcess(platform, tmp_path / "sim2.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        storage = wait_for(lambda: (lambda b: b if b["ready"] else None)(platform.api("GET", "/storage")[1]), 20,
                           "crash recovery")
        assert storage["recovery"]["repaired"] == 1, storage
        after = {s["id"]: s for s in _segments(platform, channel_id)}
        known = {s["id"] for s in before}
        # The segment open at the kill is the first one the API did not list before (it lists closed ones).
        torn = min((s for s in after.values() if s["id"] not in known), key=lambda s: s["id"])
        assert torn["state"] == "closed" and torn["size"] % 188 == 0 and torn["size"] > 0
        frames = _packet_pts(platform.get_bytes(f"/vod/{channel_id}/seg/{torn['id']}.ts"))
        assert len(frames) >= 25  # at least the flushed second of video plays

        def oldest_gone() -> bool:
            ids = {s["id"] for s in _segments(platform, channel_id)}
            return before[0]["id"] not in ids and before[1]["id"] not in ids

        wait_for(oldest_gone, 20, "retention to delete the two oldest segments")
        left = {s["id"] for s in _segments(platform, channel_id)}
        gone = known - left
        assert gone and max(gone) < min(left & known, default=max(gone) + 1), (gone, left)
        assert platform.api("PUT", f"/channels/{channel_id}/record", {"mode": "off"})[0] == 200
    finally:
        sim.kill()
        assert platform.stop() == 0, platform.log()


def test_unwritable_recordings_do_not_delay_signalling_or_live_video(tmp_path: Path) -> None:
    pytest.importorskip("av")
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"x")
    platform = PlatformProcess(tmp_path / "data", env={**ENV, "GBP_RECORD_DIRECTORY": str(blocker),
                                                       "GBP_SIP_QUERY_TIMEOUT": "3"}).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1",
                           "--first-id", DEVICE)
    try:
        channel_id = platform.first_channel(DEVICE)
        assert platform.api("PUT", f"/channels/{channel_id}/record", {"mode": "continuous"})[0] == 200

        def failing() -> dict[str, Any] | None:
            body = platform.api("GET", "/storage")[1]
            return body if body["backends"][0]["write_errors"] > 0 else None

        storage = wait_for(failing, 30, "recording to report its write errors")
        assert "cannot start segment" in (storage["channels"][0]["error"] or "")

        # Signalling: a DeviceInfo query (SIP MESSAGE round trip) is answered within the
        # platform's own sip.query_timeout, set short for this run (a late answer is a 504).
        status, info = platform.api("GET", f"/devices/{DEVICE}/info")
        assert status == 200, info

        # Live video: HTTP-FLV decodes 30 frames while recording keeps failing.
        import av

        out: dict[str, Any] = {}

        def watch() -> None:
            url = f"http://127.0.0.1:{platform.http_port}/live/{channel_id}.flv?token={TOKEN}"
            try:
                with av.open(url, timeout=20) as c:
                    out["frames"] = sum(1 for _, f in zip(range(30), c.decode(video=0), strict=False) if f)
            except Exception as e:  # noqa: BLE001 - handed to the test thread
                out["error"] = e

        worker = threading.Thread(target=watch, daemon=True)
        worker.start()
        worker.join(40)
        assert out.get("frames") == 30, (out, platform.log())
        assert platform.api("GET", "/storage")[1]["backends"][0]["dropped_frames"] == 0
    finally:
        sim.kill()
        assert platform.stop() == 0, platform.log()
