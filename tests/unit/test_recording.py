"""Recording manager, registry and API: policies and plans, the index, timeline, VOD, MP4, retention, recovery.

In memory: SQLite on an ``InlineRunner``, a ``FakeClock``, ``FakeLive`` with a
real ``FrameDispatcher``, the writer drained on the test thread, thread
hand-offs made synchronous. Frames are the real capture.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av
import pytest
from twisted.internet.defer import Deferred, maybeDeferred

from gbplatform.api.app import Api
from gbplatform.app.config import Config, RecordConfig
from gbplatform.app.context import AppContext
from gbplatform.core.clock import FakeClock
from gbplatform.db import queries as q
from gbplatform.recording import queries as rq
from gbplatform.recording.http import RangeNotSatisfiable, byte_range
from gbplatform.recording.manager import RecordingManager
from gbplatform.recording.playback import GAP, TimelineCache, gop_ranges, timeline, vod_playlist
from gbplatform.recording.schedule import ScheduleError, covers, parse_schedule
from gbplatform.recording.writer import segment_key
from media.frame import Frame
from tests.unit.test_api import (
    CAM1,
    DEV,
    ROOT,
    Client,
    FakeDevice,
    FakeLive,
    call,
    make_platform,
    result_of,
)
from tests.unit.test_media_snapshot import capture_frames

# FakeClock's wall clock: 2023-11-14T22:13:20Z, a Tuesday.
DAY = "2023-11-14"


@pytest.fixture(scope="module")
def frames(shared_dir: Path) -> list[Frame]:
    return capture_frames(shared_dir)


@dataclass
class Rec:
    platform: AppContext
    clock: FakeClock
    manager: RecordingManager
    live: FakeLive
    client: Client
    root: Path


def make_manager(platform: AppContext, clock: FakeClock, root: Path, **cfg: Any) -> RecordingManager:
    config = RecordConfig(**{"directory": str(root), "segment_seconds": 2.0, "min_free_bytes": 0,
                             "timezone": "UTC", **cfg})
    return RecordingManager(
        config, data_dir=root, db=platform.db, clock=clock, live=platform.live, devices=platform.devices,
        call_from_thread=lambda f, *a: f(*a), run_in_thread=lambda f, *a, **k: maybeDeferred(f, *a, **k),
    )


@pytest.fixture
def rec(tmp_path: Path) -> Iterator[Rec]:
    platform, clock = make_platform(Config())
    live = FakeLive()
    platform.live = cast(Any, live)
    manager = make_manager(platform, clock, tmp_path / "rec")
    manager.running = manager.ready = True
    platform.recording = manager
    call(platform, q.create_device_txn, DEV, at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    call(platform, q.replace_channels_txn, DEV, [q.ChannelData(channel_id=CAM1, name="C")], complete=True)
    api = Api(platform)
    api.run_in_thread = lambda f, *a, **k: maybeDeferred(f, *a, **k)
    yield Rec(platform, clock, manager, live, Client(api), tmp_path / "rec")
    platform.db.engine.dispose()


def check(r: Rec) -> None:
    result_of(Deferred.fromCoroutine(r.manager._check()))


def feed(r: Rec, frames: list[Frame]) -> None:
    """The frames through the live stream, 40 ms of FakeClock apart, then the writer drained."""
    stream = r.live.streams[CAM1]
    for f in frames:
        stream.dispatcher.input_frame(f)
        r.clock.advance(0.04)
    r.manager.writer.run_pending()


def record_all(r: Rec, frames: list[Frame]) -> list[rq.SegmentRecord]:
    FakeDevice(r.platform, r.clock).register()
    assert r.client("PUT", f"/channels/{CAM1}/record", body={"mode": "continuous"}).code == 200
    check(r)
    feed(r, frames)
    r.client("PUT", f"/channels/{CAM1}/record", body={"mode": "off"})
    check(r)
    r.manager.writer.run_pending()
    segs: list[rq.SegmentRecord] = call(r.platform, rq.segments_between_txn, CAM1, 0, 4e9)
    return segs


# --- schedules ------------------------------------------------------------------------


def test_schedule_windows() -> None:
    plan = parse_schedule([{"weekday": 1, "start": "22:00", "end": "24:00"}, {"weekday": 0, "start": "08:00",
                                                                               "end": "09:30"}])
    assert plan[0]["weekday"] == 0
    tuesday = dt.datetime(2023, 11, 14, 22, 13, tzinfo=dt.UTC)
    assert covers(plan, tuesday) and not covers(plan, tuesday - dt.timedelta(hours=1))
    assert covers(plan, dt.datetime(2023, 11, 13, 9, 29)) and not covers(plan, dt.datetime(2023, 11, 13, 9, 30))
    for bad, msg in [([{"weekday": 7, "start": "01:00", "end": "02:00"}], "weekday"),
                     ([{"weekday": 1, "start": "03:00", "end": "02:00"}], "not after"),
                     ([{"weekday": 1, "start": "3:00", "end": "04:00"}], "HH:MM"), ({}, "list")]:
        with pytest.raises(ScheduleError, match=msg):
            parse_schedule(bad)


# --- plans and policies through the API ---------------------------------------------------------


def test_plan_crud_and_policy(rec: Rec) -> None:
    c = rec.client
    window = [{"weekday": 1, "start": "22:00", "end": "23:00"}]
    created = c("POST", "/record/plans", body={"name": "night", "schedule": window})
    assert created.code == 201 and created.json["schedule"] == window
    plan_id = created.json["id"]
    assert c("POST", "/record/plans", body={"name": "night", "schedule": []}).json["error"]["code"] == "plan_exists"
    bad = c("POST", "/record/plans", body={"name": "x", "schedule": [{"weekday": 9, "start": "1", "end": "2"}]})
    assert (bad.code, bad.json["error"]["field"]) == (400, "schedule")
    assert c("GET", f"/record/plans/{plan_id}").json["name"] == "night"
    assert c("PUT", f"/record/plans/{plan_id}", body={"name": "late"}).json["name"] == "late"
    assert [p["name"] for p in c("GET", "/record/plans").json["items"]] == ["late"]

    assert c("GET", f"/channels/{CAM1}/record").json["mode"] == "off"
    assert c("PUT", f"/channels/{CAM1}/record", body={"mode": "plan"}).json["error"]["field"] == "plan_id"
    assert c("PUT", "/channels/34020000001310009999/record", body={"mode": "continuous"}).code == 404
    put = c("PUT", f"/channels/{CAM1}/record", body={"mode": "plan", "plan_id": plan_id, "retention_days": 3})
    assert put.code == 200 and (put.json["mode"], put.json["plan_id"], put.json["retention_days"]) == ("plan", plan_id, 3)
    assert c("DELETE", f"/record/plans/{plan_id}").json["error"]["code"] == "plan_in_use"

    # 22:13 on a Tuesday is inside the plan: the channel is pulled and recorded.
    FakeDevice(rec.platform, rec.clock).register()
    check(rec)
    assert rec.live.plays == [(DEV, CAM1)]
    assert rec.live.streams[CAM1].dispatcher.sinks == (rec.manager.channels[CAM1].sink,)
    assert c("GET", f"/channels/{CAM1}/record").json["status"]["recording"] is True
    # Past 23:00 it is not.
    rec.clock.advance(50 * 60)
    check(rec)
    assert CAM1 not in rec.manager.channels and rec.live.streams[CAM1].dispatcher.sinks == ()

    c("PUT", f"/channels/{CAM1}/record", body={"mode": "off"})
    assert c("DELETE", f"/record/plans/{plan_id}").code == 204
    assert c("GET", f"/record/plans/{plan_id}").code == 404


def test_lost_stream_is_reinvited_with_backoff_when_the_device_is_back(rec: Rec) -> None:
    rec.client("PUT", f"/channels/{CAM1}/record", body={"mode": "continuous"})
    check(rec)
    assert rec.live.plays == [] and "offline" in (rec.manager.channels[CAM1].error or "")
    device = FakeDevice(rec.platform, rec.clock)
    device.register()
    check(rec)
    assert rec.live.plays == [(DEV, CAM1)]
    rec.live.stop(CAM1)  # the device's BYE
    assert rec.manager.channels[CAM1].stream is None
    check(rec)
    assert len(rec.live.plays) == 1  # backing off: 2 s
    rec.clock.advance(2.5)
    check(rec)
    assert len(rec.live.plays) == 2 and rec.manager.channels[CAM1].stream is rec.live.streams[CAM1]


# --- index, timeline, playback --------------------------------------------------------------


def test_recording_indexes_segments_and_serves_the_timeline(rec: Rec, frames: list[Frame]) -> None:
    segs = record_all(rec, frames)
    assert [s.state for s in segs] == ["closed"] * 5
    assert all(len(s.keyframes) == 1 and s.size > 0 for s in segs)
    for a, b in zip(segs, segs[1:], strict=False):
        assert b.start == pytest.approx(a.end, abs=0.05)  # contiguous
    assert segs[0].key == segment_key(CAM1, segs[0].start)

    reply = rec.client("GET", f"/channels/{CAM1}/recordings?date={DAY}")
    assert reply.code == 200
    body = reply.json
    assert len(body["intervals"]) == 1 and body["recorded_seconds"] == pytest.approx(10.0, abs=0.1)
    assert len(body["segments"]) == 5 and body["intervals"][0]["urls"]["hls"].startswith(f"/vod/{CAM1}/index.m3u8")
    assert rec.client("GET", f"/channels/{CAM1}/recordings?date=bad").code == 400
    # The second call is served from the LRU.
    hits = rec.manager.cache.hits
    rec.client("GET", f"/channels/{CAM1}/recordings?date={DAY}")
    assert rec.manager.cache.hits == hits + 1

    storage = rec.client("GET", "/storage").json
    local = storage["backends"][0]
    assert local["name"] == "local" and local["dropped_frames"] == 0 and local["queue_bytes"] == 0
    assert local["written_bytes"] == sum(s.size for s in segs)


def test_index_starts_at_the_replayed_keyframe(rec: Rec, frames: list[Frame]) -> None:
    """Issue 8 item 20: a recording that joins a playing stream starts with its GOP cache."""
    from tests.unit.test_api import FakeStream

    stream = rec.live.streams[CAM1] = FakeStream(DEV, CAM1)
    cached = 12
    for f in frames[:cached]:  # a viewer's stream: 0.44 s of the GOP is cached
        stream.dispatcher.input_frame(f)
    joined = rec.clock.time()
    segs = record_all(rec, frames[cached:])
    assert len(segs) == 5
    # feed() hands frame 12 over at ``joined`` too, then one every 40 ms.
    assert segs[0].start == pytest.approx(joined - cached * 0.04, abs=1e-3)
    assert segs[0].keyframes[0][2] == pytest.approx(segs[0].start, abs=1e-3)
    for a, b in zip(segs, segs[1:], strict=False):
        assert a.end is not None and a.end <= b.start + 1e-3


def _get(r: Rec, path: str, headers: dict[str, str] | None = None) -> Any:
    d = r.client.stub.request("GET", ROOT + path, headers={"Authorization": "Bearer t", **(headers or {})})
    r.client.stub.flush()
    response = result_of(d)
    body = result_of(r.client.stub.content(response))
    return response, body


def test_vod_playlist_of_the_middle_segments(rec: Rec, frames: list[Frame]) -> None:
    segs = record_all(rec, frames)
    start, end = segs[1].start, segs[3].end
    response, body = _get(rec, f"/vod/{CAM1}/index.m3u8?start={start}&end={end}")
    assert response.code == 200
    text = body.decode()
    assert text.startswith("#EXTM3U\n#EXT-X-VERSION:4\n") and "#EXT-X-PLAYLIST-TYPE:VOD" in text
    assert text.rstrip().endswith("#EXT-X-ENDLIST") and "#EXT-X-DISCONTINUITY" not in text
    parts = [line for line in text.splitlines() if line.startswith("#EXT-X-BYTERANGE:")]
    uris = [line for line in text.splitlines() if line.startswith("seg/")]
    assert uris == [f"seg/{s.id}.ts" for s in segs[1:4]] and len(parts) == 3

    # Each part, fetched with its Range, is a TS that decodes from a keyframe; together 150 frames.
    total = 0
    for part, uri in zip(parts, uris, strict=True):
        length, offset = (int(v) for v in part.split(":")[1].split("@"))
        response, data = _get(rec, f"/vod/{CAM1}/{uri}", {"Range": f"bytes={offset}-{offset + length - 1}"})
        assert response.code in (200, 206) and len(data) == length
        with av.open(io.BytesIO(data), "r", format="mpegts") as c:
            decoded = list(c.decode(video=0))
        assert decoded[0].key_frame
        total += len(decoded)
    assert total == 150
    response, data = _get(rec, f"/vod/{CAM1}/seg/{segs[1].id}.ts", {"Range": "bytes=0-187"})
    assert response.code == 206 and len(data) == 188
    assert response.headers.getRawHeaders("Content-Range") == [f"bytes 0-187/{segs[1].size}"]
    assert _get(rec, f"/vod/{CAM1}/index.m3u8?start=1&end=2")[0].code == 404


def test_playlist_marks_gaps_as_discontinuities(rec: Rec, frames: list[Frame]) -> None:
    segs = record_all(rec, frames)
    moved = [segs[0], *[_shift(s, 30.0) for s in segs[1:]]]
    ranges = gop_ranges(moved, moved[0].start, moved[-1].end)
    text = vod_playlist(ranges, lambda s: f"seg/{s.id}.ts")
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    result = timeline(moved, moved[0].start - 5, moved[-1].end + 5)
    assert len(result["intervals"]) == 2 and len(result["gaps"]) == 3
    assert result["gaps"][1][1] - result["gaps"][1][0] == pytest.approx(30.0, abs=GAP)


def _shift(seg: rq.SegmentRecord, by: float) -> rq.SegmentRecord:
    from dataclasses import replace

    return replace(seg, start=seg.start + by, end=(seg.end or 0) + by,
                   keyframes=[[k[0], k[1], k[2] + by] for k in seg.keyframes])


def test_mp4_download_of_a_range(rec: Rec, frames: list[Frame], tmp_path: Path) -> None:
    segs = record_all(rec, frames)
    start, end = segs[1].start, segs[3].end
    response, body = _get(rec, f"/vod/{CAM1}.mp4?start={start}&end={end}")
    assert response.code == 200 and response.headers.getRawHeaders("Content-Type") == ["video/mp4"]
    assert response.headers.getRawHeaders("X-Content-Duration") == ["6.000"]
    out = tmp_path / "dl.mp4"
    out.write_bytes(body)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_entries",
                            "format=duration:stream=nb_read_packets", "-of", "default=nw=1", str(out)],
                           capture_output=True, text=True, check=True).stdout
    assert "nb_read_packets=150" in probe
    duration = float(probe.split("duration=")[1].split()[0])
    assert duration == pytest.approx(6.0, abs=0.05)
    jobs = rec.client("GET", "/record/downloads").json["items"]
    assert jobs[-1]["state"] == "done" and jobs[-1]["percent"] == 100.0 and jobs[-1]["bytes"] == len(body)


def test_byte_range_header() -> None:
    assert byte_range(None, 100) == (0, 99)
    assert byte_range(b"bytes=10-19", 100) == (10, 19)
    assert byte_range(b"bytes=90-", 100) == (90, 99)
    assert byte_range(b"bytes=-5", 100) == (95, 99)
    assert byte_range(b"bytes=10-1000", 100) == (10, 99)
    assert byte_range(b"items=1-2", 100) == (0, 99)
    with pytest.raises(RangeNotSatisfiable):
        byte_range(b"bytes=100-", 100)


def test_timeline_cache_is_bounded() -> None:
    cache = TimelineCache(size=2)
    cache.put(("a", "1"), 1)
    cache.put(("a", "2"), 2)
    assert cache.get(("a", "1")) == 1
    cache.put(("b", "1"), 3)
    assert cache.get(("a", "2")) is None and cache.get(("a", "1")) == 1
    cache.invalidate("a")
    assert cache.get(("a", "1")) is None and cache.get(("b", "1")) == 3


# --- retention ---------------------------------------------------------------------------


def test_quota_deletes_the_oldest_first(rec: Rec, frames: list[Frame]) -> None:
    segs = record_all(rec, frames)
    total = sum(s.size for s in segs)
    rec.manager.config = RecordConfig(**{**rec.manager.config.__dict__, "quota_bytes": total - segs[0].size - 1})
    deleted = result_of(Deferred.fromCoroutine(rec.manager.retention()))
    assert deleted == 2
    left = call(rec.platform, rq.segments_between_txn, CAM1, 0, 4e9)
    assert [s.id for s in left] == [s.id for s in segs[2:]]
    assert not (rec.root / segs[0].key).exists() and not (rec.root / segs[1].key).exists()
    assert (rec.root / segs[2].key).exists()


def test_age_retention_with_a_channel_override(rec: Rec, frames: list[Frame]) -> None:
    segs = record_all(rec, frames)
    rec.client("PUT", f"/channels/{CAM1}/record", body={"mode": "off", "retention_days": 1})
    rec.clock.advance(86400 - 5)  # the first 5 s of footage are a day old
    deleted = result_of(Deferred.fromCoroutine(rec.manager.retention()))
    left = call(rec.platform, rq.segments_between_txn, CAM1, 0, 4e9)
    assert deleted == 2 and [s.id for s in left] == [s.id for s in segs[2:]]


# --- recovery ----------------------------------------------------------------------------------


def test_recovery_repairs_open_segments_and_adopts_orphans(rec: Rec, frames: list[Frame]) -> None:
    segs = record_all(rec, frames)
    # Segment 0 as a crash leaves it: row open, file torn mid-packet.
    path = rec.root / segs[0].key
    path.write_bytes(path.read_bytes()[:-100])
    call(rec.platform, rq.delete_segment_by_key_txn, segs[0].key)
    call(rec.platform, rq.open_segment_txn, CAM1, segs[0].key, segs[0].start, "local")
    # Segment 1's row is lost altogether; a stray file sits beside them.
    call(rec.platform, rq.delete_segment_by_key_txn, segs[1].key)
    (rec.root / CAM1 / "notes.ts").write_bytes(b"hello")
    result_of(Deferred.fromCoroutine(rec.manager.recover()))
    state = rec.manager.state().recovery
    assert (state.repaired, state.adopted, state.unindexed) == (1, 1, [f"{CAM1}/notes.ts"])
    fixed = call(rec.platform, rq.segments_between_txn, CAM1, 0, 4e9)
    assert [s.state for s in fixed] == ["closed"] * 5
    assert fixed[0].size % 188 == 0 and fixed[0].size == path.stat().st_size
    assert fixed[0].end == pytest.approx(segs[0].end, abs=0.05)
    assert fixed[1].keyframes == [list(k) for k in segs[1].keyframes] or \
        [k[:2] for k in fixed[1].keyframes] == [k[:2] for k in segs[1].keyframes]


# --- the same queries on PostgreSQL ----------------------------------------------------------------

from tests.unit.test_db import pg_engine, pg_url  # noqa: E402,F401 - fixtures


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Any]:
    from gbplatform.db.database import Database, InlineRunner, make_engine
    from gbplatform.db.models import metadata

    if request.param == "sqlite":
        engine = make_engine("sqlite://")
        metadata.create_all(engine)
        yield Database(engine, pool=InlineRunner())
        engine.dispose()
    else:
        engine = request.getfixturevalue("pg_engine")
        with engine.begin() as c:
            c.exec_driver_sql("TRUNCATE record_segments, record_policies, record_plans, devices, channels "
                              "RESTART IDENTITY CASCADE")
        yield Database(engine, pool=InlineRunner())


def _run(db: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    return result_of(db.run(fn.__name__, fn, *args, **kwargs))


def test_closing_a_segment_keeps_its_refined_start(db: Any) -> None:
    """The writer dates a segment better once it has seen more frames (issue 8, item 20)."""
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    _run(db, q.create_device_txn, DEV, at=at)
    _run(db, q.replace_channels_txn, DEV, [q.ChannelData(channel_id=CAM1, name="C")], complete=True)
    t0 = at.timestamp()
    key = segment_key(CAM1, t0)
    _run(db, rq.open_segment_txn, CAM1, key, t0, "local")
    _run(db, rq.close_segment_txn, CAM1, key, start=t0 - 0.44, end=t0 + 1.56, size=1000,
         keyframes=[[0, 90000, t0 - 0.44]], has_audio=False, backend="local")
    [seg] = _run(db, rq.segments_between_txn, CAM1, t0 - 10, t0 + 10)
    assert seg.start == pytest.approx(t0 - 0.44, abs=1e-3) and seg.end == pytest.approx(t0 + 1.56, abs=1e-3)


def test_recording_queries_on_both_databases(db: Any) -> None:
    at = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    plan = _run(db, rq.create_plan_txn, "p", [{"weekday": 0, "start": "00:00", "end": "24:00"}], at=at)
    with pytest.raises(rq.PlanExists):
        _run(db, rq.create_plan_txn, "p", [], at=at)
    _run(db, q.create_device_txn, DEV, at=at)
    _run(db, q.replace_channels_txn, DEV, [q.ChannelData(channel_id=CAM1, name="C")], complete=True)
    _run(db, rq.put_policy_txn, CAM1, mode="plan", plan_id=plan.id, retention_days=2, at=at)
    assert _run(db, rq.put_policy_txn, CAM1, mode="plan", plan_id=plan.id, retention_days=3, at=at).retention_days == 3
    with pytest.raises(rq.PlanInUse):
        _run(db, rq.delete_plan_txn, plan.id)
    active = _run(db, rq.active_policies_txn)
    assert [(a.channel_id, a.device_id, a.mode) for a in active] == [(CAM1, DEV, "plan")]
    t0 = at.timestamp()
    ids = []
    for i in range(3):
        key = segment_key(CAM1, t0 + 10 * i)
        seg_id = _run(db, rq.open_segment_txn, CAM1, key, t0 + 10 * i, "local")
        assert _run(db, rq.open_segment_txn, CAM1, key, t0 + 10 * i, "local") == seg_id  # safe to retry
        _run(db, rq.close_segment_txn, CAM1, key, start=t0 + 10 * i, end=t0 + 10 * i + 10, size=1000 + i,
             keyframes=[[0, 90000, t0 + 10 * i]], has_audio=False, backend="local")
        ids.append(seg_id)
    _run(db, rq.open_segment_txn, CAM1, segment_key(CAM1, t0 + 30), t0 + 30, "local")
    assert [s.id for s in _run(db, rq.segments_between_txn, CAM1, t0 + 5, t0 + 25)] == ids
    assert [s.key for s in _run(db, rq.open_segments_txn)] == [segment_key(CAM1, t0 + 30)]
    assert _run(db, rq.usage_txn)["local"] == {"segments": 4, "bytes": 3003, "local_bytes": 3003}
    assert [s.id for s in _run(db, rq.oldest_segments_txn, 2)] == ids[:2]
    expired = _run(db, rq.expired_segments_txn, t0 + 86400 * 3 + 15, 30, {CAM1: 3})
    assert [s.id for s in expired] == ids[:1]
    assert _run(db, rq.delete_segments_txn, ids[:1]) == 1
    _run(db, rq.mark_uploaded_txn, ids[1], at=t0 + 100, keep_local=True)
    assert [s.id for s in _run(db, rq.expired_local_copies_txn, t0 + 200)] == [ids[1]]
    _run(db, rq.mark_local_removed_txn, [ids[1]])
    assert _run(db, rq.get_segment_txn, ids[1]).local is False
    assert _run(db, rq.known_keys_txn) == {segment_key(CAM1, t0 + 10 * i) for i in (1, 2, 3)}


# --- thread pools and slow download clients (issue 8, item 23) ---------------------------------


class BusyPool:
    """A pool whose every thread is taken (say, by ten slow downloads): work queues, none runs."""

    def __init__(self) -> None:
        self.queued: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def run(self, fn: Any, /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.queued.append((fn, args, d))
        return d

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_snapshot_is_taken_while_downloads_fill_their_pool(rec: Rec, frames: list[Frame]) -> None:
    from gbplatform.core.workers import Workers
    from gbplatform.db.database import InlineRunner

    segs = record_all(rec, frames)
    busy = BusyPool()
    inline = InlineRunner()
    rec.platform.workers = Workers({"snapshot": inline, "vod": inline, "remux": busy, "retention": inline,
                                    "storage": inline})
    api = Api(rec.platform)
    api.run_in_thread = busy.run  # the reactor's one shared pool, as ten downloads leave it
    client = Client(api)
    url = f"/vod/{CAM1}.mp4?start={segs[0].start}&end={segs[-1].end}"
    _downloads = [client.stub.request("GET", ROOT + url, headers={"Authorization": "Bearer t"})
                 for _ in range(10)]
    client.stub.flush()
    assert len(busy.queued) == 10  # headers sent, the MP4 waits for a thread
    snap = client.start("GET", f"/channels/{CAM1}/snapshot", token="t")
    client.stub.flush()
    answered: list[Any] = []
    snap.addBoth(answered.append)
    assert answered, "the snapshot waits for a thread behind the downloads"
    response = answered[0]
    body = result_of(client.stub.content(response))
    assert response.code == 200 and body[:2] == b"\xff\xd8"
    # Retention has its pool too: it runs with the shared pool still full.
    rec.manager.run_in_thread, rec.manager.workers = busy.run, rec.platform.workers
    rec.manager.config = dataclasses.replace(rec.manager.config, retention_days=1)
    rec.clock.advance(2 * 86400)
    assert result_of(Deferred.fromCoroutine(rec.manager.retention())) == 5
    for _, _, d in busy.queued:  # the clients give up
        d.cancel()


def test_slow_download_clients_cost_a_spool_not_a_thread(rec: Rec, frames: list[Frame], tmp_path: Path) -> None:
    from twisted.internet.testing import StringTransport

    from gbplatform.recording.http import Spool
    from gbplatform.recording.playback import Cancelled, Progress, remux_mp4

    segs = record_all(rec, frames)
    ranges = gop_ranges(segs, segs[0].start, segs[-1].end)
    clients = [StringTransport() for _ in range(10)]
    spools = [Spool(c, lambda f, *a: f(*a), chunk=4096) for c in clients]
    for client, spool in zip(clients, spools, strict=True):
        client.registerProducer(spool, True)
        spool.pauseProducing()  # a client that reads nothing: its transport buffer is full
        # The remux runs to its end on this thread: it never waits for the client.
        remux_mp4(ranges, rec.manager.read, spool.write, Progress(10.0))
        spool.end()
        assert client.value() == b"" and spool.written > 100_000
    drained = [s.drained() for s in spools]
    assert not any(d.called for d in drained)
    # The client reads at last: everything arrives, a chunk per write, and the MP4 plays.
    spools[0].resumeProducing()
    assert drained[0].called and len(clients[0].value()) == spools[0].written
    out = tmp_path / "slow.mp4"
    out.write_bytes(clients[0].value())
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets",
                            "-of", "default=nw=1", str(out)], capture_output=True, text=True, check=True).stdout
    assert "nb_read_packets=250" in probe
    # A client that goes away cancels: nothing more is sent and a producer still writing stops.
    spools[1].stopProducing()
    assert drained[1].called and clients[1].value() == b""
    with pytest.raises(Cancelled):
        spools[1].write(b"more")
    for spool in spools:
        spool.close()
        assert spool._file.closed


def test_spool_is_bounded(tmp_path: Path) -> None:
    """Past ``limit`` unsent bytes the producer waits for the client after all (disk is finite)."""
    import threading

    from twisted.internet.testing import StringTransport

    from gbplatform.recording.http import Spool

    client = StringTransport()
    calls: list[Any] = []
    spool = Spool(client, lambda f, *a: calls.append((f, a)), limit=10, chunk=4)
    spool.pauseProducing()
    spool.write(b"0123456789")
    blocked = threading.Thread(target=spool.write, args=(b"abc",), daemon=True)
    blocked.start()
    assert spool.full.wait(10)  # a deadline, not a duration: the writer is waiting
    assert blocked.is_alive() and spool.written == 10
    spool.resumeProducing()  # the client reads: room again
    blocked.join(10)
    assert not blocked.is_alive() and spool.written == 13
    for f, a in calls:
        f(*a)
    assert client.value() == b"0123456789abc"
