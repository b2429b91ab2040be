"""S3 backend against a real S3-compatible server: ``moto_server`` started here on 127.0.0.1.

The recording side runs in-process (registry in memory, writer drained on the
test thread); upload, multipart, ranged reads, playback and deletion go over
HTTP to the server process. A stopped (SIGSTOP) server leaves the uploader
retrying in its own thread while recording carries on.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, maybeDeferred

from gbplatform.api.app import Api
from gbplatform.app.config import RecordConfig
from gbplatform.db import queries as q
from gbplatform.recording import queries as rq
from gbplatform.recording.playback import Progress, gop_ranges, remux_mp4
from gbplatform.recording.storage import LocalStorage, S3Storage, Uploader
from tests.integration.harness import free_port, wait_for
from tests.unit.test_api import Client
from tests.unit.test_media_snapshot import capture_frames
from tests.unit.test_recording import (
    CAM1,
    FakeLive,
    Rec,
    call,
    make_manager,
    make_platform,
    result_of,
)
from tests.unit.test_recording import record_all as record_frames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "ab")  # noqa: SIM115 - owned by the child
    exe = Path(sys.executable).with_name("moto_server")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen([*cmd, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=2):
                return True
        except OSError:
            return proc.poll() is not None and (_ for _ in ()).throw(AssertionError("moto_server exited"))

    try:
        wait_for(up, 30, "moto_server")
        yield url
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def s3(endpoint: str, bucket: str = "rec", **kw: Any) -> S3Storage:
    storage = S3Storage(endpoint=endpoint, bucket=bucket, access_key="test", secret_key="test",
                        region="us-east-1", **kw)
    storage.ensure_bucket()
    return storage


def test_multipart_upload_and_ranged_reads(s3_endpoint: str, tmp_path: Path) -> None:
    local = LocalStorage(tmp_path)
    data = os.urandom(5 * 1024 * 1024 + 12345)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "big.ts").write_bytes(data)
    bucket = s3(s3_endpoint, multipart_bytes=5 * 1024 * 1024)
    done: list[tuple[int, str | None]] = []
    uploader = Uploader(local, bucket, done=lambda i, e: done.append((i, e)))
    assert uploader.upload_one(7, "c/big.ts")
    assert done == [(7, None)] and uploader.uploaded_bytes == len(data)
    head = bucket.client.head_object(Bucket="rec", Key="c/big.ts")
    assert head["ContentLength"] == len(data) and "-" in head["ETag"]  # a multipart ETag: "<md5>-<parts>"
    assert bucket.read("c/big.ts", 1000, 188) == data[1000:1188]
    assert bucket.read("c/big.ts", len(data) - 10, None) == data[-10:]
    bucket.delete("c/big.ts")
    with pytest.raises(Exception, match="404|Not Found|NoSuchKey"):
        bucket.size("c/big.ts")


def test_failed_upload_is_retried_then_reported(s3_endpoint: str, tmp_path: Path) -> None:
    bucket = s3(s3_endpoint)
    sleeps: list[float] = []
    done: list[tuple[int, str | None]] = []
    uploader = Uploader(LocalStorage(tmp_path), bucket, done=lambda i, e: done.append((i, e)), sleep=sleeps.append)
    assert not uploader.upload_one(1, "missing/file.ts")
    assert sleeps == [1.0, 2.0] and done[0][1] is not None and uploader.failures == 1


def test_recordings_upload_and_play_back_from_the_bucket(s3_endpoint: str, tmp_path: Path,
                                                         shared_dir: Path) -> None:
    platform, clock = make_platform()
    live = FakeLive()
    platform.live = live  # type: ignore[assignment]
    manager = make_manager(platform, clock, tmp_path / "rec", backend="s3")
    bucket = s3(s3_endpoint, bucket="playback")
    manager.s3 = bucket
    uploaded: list[tuple[int, str | None]] = []
    manager.uploader = Uploader(manager.storage, bucket, done=lambda i, e: (uploaded.append((i, e)),
                                                                            manager._upload_done(i, e)))
    manager.backend = "s3"
    manager.running = manager.ready = True
    platform.recording = manager
    call(platform, q.create_device_txn, "34020000001320000001", at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    call(platform, q.replace_channels_txn, "34020000001320000001", [q.ChannelData(channel_id=CAM1, name="C")],
         complete=True)
    api = Api(platform)
    api.run_in_thread = lambda f, *a, **k: maybeDeferred(f, *a, **k)
    r = Rec(platform, clock, manager, live, Client(api), tmp_path / "rec")
    segs = record_frames(r, capture_frames(shared_dir))
    assert len(segs) == 5 and all(s.backend == "s3" for s in segs)

    # The uploader thread takes every closed segment; the local copies go (keep_local_hours 0).
    manager.uploader.start()
    for seg in segs:
        manager.uploader.submit(seg.id, seg.key)
    wait_for(lambda: len(uploaded) == 5, 30, "five uploads")
    manager.uploader.stop()
    assert all(e is None for _, e in uploaded)
    after = call(platform, rq.segments_between_txn, CAM1, 0, 4e9)
    assert [s.state for s in after] == ["uploaded"] * 5 and not any(s.local for s in after)
    assert not any((tmp_path / "rec" / s.key).exists() for s in after)
    keys = {o["Key"] for o in bucket.client.list_objects_v2(Bucket="playback")["Contents"]}
    assert keys == {s.key for s in segs}

    # Playback reads back from the bucket: a byte range, and an MP4 of the middle three.
    seg = after[1]
    first = manager.read(seg, 0, 188)
    assert first[0] == 0x47 and len(first) == 188
    chunks: list[bytes] = []
    progress = Progress(6.0)
    remux_mp4(gop_ranges(after, after[1].start, after[3].end), manager.read, chunks.append, progress)
    out = tmp_path / "s3.mp4"
    out.write_bytes(b"".join(chunks))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                            str(out)], capture_output=True, text=True, check=True).stdout
    assert float(probe) == pytest.approx(6.0, abs=0.05)
    state = manager.state()
    s3_state = next(b for b in state.backends if b.name == "s3")
    assert s3_state.upload_backlog == 0 and s3_state.uploaded == 5

    # Retention deletes the objects too.
    manager.config = RecordConfig(**{**manager.config.__dict__, "quota_bytes": 1})
    assert result_of(Deferred.fromCoroutine(manager.retention())) == 5
    assert "Contents" not in bucket.client.list_objects_v2(Bucket="playback")
    platform.db.engine.dispose()


def test_stalled_s3_server_does_not_block_the_caller(s3_endpoint: str, tmp_path: Path) -> None:
    """A SIGSTOPped server: submit() returns at once, the upload thread waits and reports later."""
    bucket = s3(s3_endpoint, bucket="stall")
    bucket = S3Storage(endpoint=s3_endpoint, bucket="stall", access_key="test", secret_key="test",
                       region="us-east-1", timeout=1.0, attempts=1)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "s.ts").write_bytes(b"\x47" * 188 * 10)
    done: list[tuple[int, str | None]] = []
    uploader = Uploader(LocalStorage(tmp_path), bucket, done=lambda i, e: done.append((i, e)), attempts=1)
    port = int(s3_endpoint.rsplit(":", 1)[1])
    pid = _pid_listening(port)
    os.kill(pid, signal.SIGSTOP)
    try:
        uploader.start()
        started = time.monotonic()
        uploader.submit(1, "c/s.ts")
        assert time.monotonic() - started < 0.5 and uploader.backlog == 1
        wait_for(lambda: done, 60, "the stalled upload to give up")
        assert done[0][1] is not None
    finally:
        os.kill(pid, signal.SIGCONT)
        uploader.stop()


def _pid_listening(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def test_gbplatform_run_records_into_the_bucket_and_plays_back(s3_endpoint: str, tmp_path: Path) -> None:
    """The whole path in processes: ``gbplatform run`` with ``record.backend = s3`` and a simulated camera."""
    from tests.integration.harness import TOKEN, PlatformProcess, SimulatorProcess
    from tests.integration.test_record_e2e import ENV, _epoch, _probe, _segments

    device = "34020000001320000001"
    platform = PlatformProcess(tmp_path / "data", env={
        **ENV, "GBP_RECORD_BACKEND": "s3", "GBP_RECORD_S3_ENDPOINT": s3_endpoint, "GBP_RECORD_S3_BUCKET": "e2e",
        "GBP_RECORD_S3_ACCESS_KEY": "test", "GBP_RECORD_S3_SECRET_KEY": "test",
    }).start()
    sim = SimulatorProcess(platform, tmp_path / "sim.log", "--devices", "1", "--channels", "1", "--first-id", device)
    try:
        channel_id = platform.first_channel(device)
        status, body = platform.api("PUT", f"/channels/{channel_id}/record", {"mode": "continuous"})
        assert status == 200, body

        def uploaded() -> list[dict[str, Any]] | None:
            segs = [s for s in _segments(platform, channel_id) if s["state"] == "uploaded"]
            return segs if len(segs) >= 2 else None

        segs = wait_for(uploaded, 60, "two segments uploaded to the bucket", interval=0.5)
        assert all(s["backend"] == "s3" and not s["local"] for s in segs), segs
        keys = {o["Key"] for o in s3(s3_endpoint, bucket="e2e").client.list_objects_v2(Bucket="e2e")["Contents"]}
        assert len(keys) >= 2

        # Playback and download of the uploaded range, read back from the bucket by the platform.
        a, b = _epoch(segs[0]["start"]), _epoch(segs[1]["end"])
        base = f"http://127.0.0.1:{platform.http_port}/vod/{channel_id}"
        probe = _probe(f"{base}/index.m3u8?start={a}&end={b}&token={TOKEN}", "-select_streams", "v:0",
                       "-count_packets", "-show_entries", "stream=codec_name,width,height,nb_read_packets")
        stream = probe["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1920, 1080)
        assert int(stream["nb_read_packets"]) >= 25 * (b - a) * 0.9
        with urllib.request.urlopen(f"{base}.mp4?start={a}&end={b}&token={TOKEN}", timeout=60) as resp:
            announced = float(resp.headers["X-Content-Duration"])
            (tmp_path / "range.mp4").write_bytes(resp.read())
        duration = float(_probe(tmp_path / "range.mp4", "-show_entries", "format=duration")["format"]["duration"])
        assert duration == pytest.approx(announced, abs=0.1) and announced > 3
        status, storage = platform.api("GET", "/storage")
        assert status == 200 and any(be["name"] == "s3" for be in storage["backends"]), storage
    finally:
        sim.kill()
        assert platform.stop() == 0, platform.log()
