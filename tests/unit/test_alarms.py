"""Alarms and mobile positions through SIP and the API against in-memory devices (GB/T 28181-2016 §9.4,
§9.5, §9.10): stored and answered, filtered and paged, tracks as GeoJSON, the Notify rate limit,
retention, snapshot on alarm.

The platform (``platform_harness``) and fake devices talk SIP in memory with a stepped clock; the API
is called over StubTreq (``test_api.Client``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from twisted.internet.defer import ensureDeferred, maybeDeferred

from gbplatform.alarms import store
from gbplatform.alarms.service import PURGE_INTERVAL, AlarmService
from gbplatform.api.app import Api
from gbplatform.app.config import Config
from gbplatform.core.errors import DeviceOffline
from gbplatform.db.database import Database, InlineRunner, make_engine
from gbplatform.db.models import metadata
from gbplatform.events.bus import Event
from sip import manscdp
from tests.conftest import postgres_admin_url, postgres_url, skip_or_fail
from tests.unit.platform_harness import DEV, DEV2, FakeDevice, Harness, has_fired, result_of
from tests.unit.test_api import Client
from tests.unit.test_control import CH, nvr

ALARM_IN = "34020000001340000001"  # an alarm input of the NVR: an alarm's source, not a registered device
T0 = dt.datetime(2026, 12, 5, 8, 30, 0)  # device local time (record.timezone empty: the host's zone, UTC here)
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"


def config(tmp_path: Path, **sections: Any) -> Config:
    base = Config()
    changed: dict[str, Any] = {"storage": replace(base.storage, data_dir=str(tmp_path))}
    for name, values in sections.items():
        changed[name] = replace(getattr(base, name), **values)
    return replace(base, **changed)


@pytest.fixture
def build(tmp_path: Path, harnesses: Callable[[Config], Harness]) -> Callable[..., Harness]:
    def factory(**sections: Any) -> Harness:
        cfg = config(tmp_path, **sections)
        if not cfg.record.timezone:
            cfg = replace(cfg, record=replace(cfg.record, timezone="UTC"))
        harness = harnesses(cfg)
        assert harness.platform.alarms is not None
        harness.platform.alarms.run_blocking = maybeDeferred
        return harness

    return factory


@pytest.fixture
def h(build: Callable[..., Harness]) -> Harness:
    return build()


@pytest.fixture
def client(h: Harness) -> Client:
    return Client(Api(h.platform))


def alarms_of(h: Harness) -> AlarmService:
    assert h.platform.alarms is not None
    return h.platform.alarms


def events(h: Harness, kind: str) -> list[Event]:
    found = h.platform.bus.kept()
    return [e for e in found if e.kind == kind]


def send_alarm(dev: FakeDevice, source: str = ALARM_IN, *, priority: int = 1, method: int = 2,
               time: dt.datetime = T0, alarm_type: int | None = 1, **kw: Any) -> int:
    """An alarm from ``dev`` with ``source`` as its DeviceID; the MESSAGE's final status."""
    body = manscdp.encode_alarm_notify(dev.next_sn(), source, priority=priority, method=method, time=time,
                                       alarm_type=alarm_type, **kw)
    return dev.message(body).status


def send_position(dev: FakeDevice, source: str, time: dt.datetime, lon: float, lat: float, **kw: Any) -> int:
    body = manscdp.encode_mobile_position(dev.next_sn(), source, time=time, longitude=lon, latitude=lat, **kw)
    return dev.message(body).status


# --- receiving ------------------------------------------------------------------------------------------


def test_an_alarm_is_answered_stored_and_published(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert send_alarm(dev, priority=1, method=5, alarm_type=2, event_type=1, longitude=116.397, latitude=39.909,
                      description="motion") == 200
    # §9.4.2: the platform's own Response, with the alarm's SN and DeviceID, Result OK.
    ack = dev.last_query("Alarm")
    assert ack.kind == "Response" and ack.device_id == ALARM_IN and ack.fields.get("Result") == "OK"
    h.advance(1)
    reply = client("GET", "/alarms")
    assert reply.code == 200, reply.json
    [alarm] = reply.json["items"]
    assert alarm == {
        "id": alarm["id"], "device_id": DEV, "channel_id": ALARM_IN, "priority": 1, "method": 5, "type": 2,
        "event_type": 1, "time": "2026-12-05T08:30:00.000Z", "received_at": alarm["received_at"],
        "longitude": 116.397, "latitude": 39.909, "description": "motion", "source": "notify",
        "snapshot_url": None, "snapshot_error": None,
    }
    assert client("GET", f"/alarms/{alarm['id']}").json == alarm
    [event] = events(h, "alarm")
    assert event.data["id"] == alarm["id"] and event.device_id == DEV and event.channel_id == ALARM_IN


def test_vendor_variants_are_stored(h: Harness, client: Client) -> None:
    dev = nvr(h)
    body = (b'<?xml version="1.0" encoding="GB2312"?>\r\n<notify><cmdtype>alarm</cmdtype><SN>7</SN>'
            b"<DeviceID>" + ALARM_IN.encode() + b"</DeviceID><AlarmPriority> 2 </AlarmPriority>"
            b"<AlarmMethod>2</AlarmMethod><AlarmTime>2026-12-05T08:30Z</AlarmTime>"
            b"<Longitude> 116.5 </Longitude><Latitude>39.5 </Latitude></notify>")
    assert dev.message(body).status == 200
    h.advance(1)
    [alarm] = client("GET", "/alarms").json["items"]
    assert (alarm["priority"], alarm["type"], alarm["time"]) == (2, None, "2026-12-05T08:30:00.000Z")
    assert (alarm["longitude"], alarm["latitude"]) == (116.5, 39.5)


def test_nonsense_priority_is_stored_as_unknown(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert send_alarm(dev, priority=9, method=0) == 200
    h.advance(1)
    [alarm] = client("GET", "/alarms").json["items"]
    assert (alarm["priority"], alarm["method"]) == (None, None)


def test_an_alarm_from_an_unregistered_sender_is_refused(h: Harness) -> None:
    dev = h.device()  # never registered
    assert send_alarm(dev) == 403
    h.advance(1)
    assert h.call(store.list_alarms_txn, store.AlarmFilter(), limit=10)[1] == 0


# --- the list -------------------------------------------------------------------------------------------


def test_filters_and_paging_newest_first(h: Harness, client: Client) -> None:
    dev = nvr(h)
    dev2 = h.registered_device(DEV2, ("UDP", "127.0.0.1", 5071))
    for n in range(5):
        send_alarm(dev, priority=1 + n % 2, method=2 if n < 3 else 5, alarm_type=n)
        h.advance(10)
    send_alarm(dev2, DEV2, priority=3, method=4)
    h.advance(1)
    everything = client("GET", "/alarms").json
    assert everything["total"] == 6
    ids = [a["id"] for a in everything["items"]]
    assert ids == sorted(ids, reverse=True) and everything["items"][0]["device_id"] == DEV2
    assert [a["type"] for a in client("GET", f"/alarms?device_id={DEV}").json["items"]] == [4, 3, 2, 1, 0]
    assert client("GET", "/alarms?priority=2").json["total"] == 2
    assert client("GET", "/alarms?method=5").json["total"] == 2
    assert [a["type"] for a in client("GET", "/alarms?type=3").json["items"]] == [3]
    assert client("GET", f"/alarms?channel_id={DEV2}").json["total"] == 1
    first = client("GET", f"/alarms?device_id={DEV}&limit=2").json
    assert [a["type"] for a in first["items"]] == [4, 3] and first["next_cursor"] == first["items"][-1]["id"]
    second = client("GET", f"/alarms?device_id={DEV}&limit=2&cursor={first['next_cursor']}").json
    assert [a["type"] for a in second["items"]] == [2, 1]
    assert [a["type"] for a in client("GET", f"/alarms?device_id={DEV}&limit=2&offset=2").json["items"]] == [2, 1]
    # Time range on when the platform received them.
    received = sorted(a["received_at"] for a in everything["items"])
    window = client("GET", f"/alarms?start={received[1]}&end={received[3]}").json
    assert window["total"] == 2
    assert client("GET", "/alarms?priority=7").code == 400
    assert client("GET", "/alarms?start=2026-01-02&end=2026-01-01").code == 400
    assert client("GET", "/alarms/999").code == 404


def test_manual_purge_deletes_alarms_and_their_snapshots(build: Callable[..., Harness]) -> None:
    h = build(alarms={"snapshot": True})
    client = Client(Api(h.platform))
    dev = nvr(h)
    alarms_of(h).snapshotter = fake_snapshot
    send_alarm(dev, CH)
    h.advance(1)
    [alarm] = client("GET", "/alarms").json["items"]
    path = alarms_of(h).snapshot_path(h.call(store.get_alarm_txn, alarm["id"]).snapshot)
    assert path.read_bytes() == JPEG
    later = dt.datetime.fromtimestamp(h.clock.time() + 1, dt.UTC).isoformat()
    assert client("DELETE", "/alarms").code == 400  # before is required
    reply = client("DELETE", f"/alarms?before={later.replace('+00:00', 'Z')}")
    assert reply.json == {"deleted": 1}
    assert client("GET", "/alarms").json["total"] == 0 and not path.exists()


# --- snapshot on alarm ---------------------------------------------------------------------------------------


async def fake_snapshot(channel_id: str) -> bytes:
    return JPEG


def test_snapshot_setting_per_channel_over_the_default(build: Callable[..., Harness]) -> None:
    h = build(alarms={"snapshot": False})
    client = Client(Api(h.platform))
    dev = nvr(h)
    taken: list[str] = []

    async def snap(channel_id: str) -> bytes:
        taken.append(channel_id)
        return JPEG

    alarms_of(h).snapshotter = snap
    send_alarm(dev, CH)
    h.advance(1)
    assert taken == []
    reply = client("PUT", f"/channels/{CH}/alarm-settings", body={"snapshot": True})
    assert reply.code == 200 and reply.json == {"channel_id": CH, "snapshot": True, "effective": True}
    send_alarm(dev, CH)
    h.advance(1)
    assert taken == [CH]
    newest = client("GET", "/alarms?limit=1").json["items"][0]
    assert newest["snapshot_url"] == f"/api/v1/alarms/{newest['id']}/snapshot.jpg"
    d = client.start("GET", f"/alarms/{newest['id']}/snapshot.jpg")
    client.stub.flush()
    response = result_of(d)
    assert response.code == 200 and response.headers.getRawHeaders("Content-Type") == ["image/jpeg"]
    assert result_of(client.stub.content(response)) == JPEG
    [note] = events(h, "snapshot")
    assert note.data["alarm_id"] == newest["id"] and note.data["url"] == newest["snapshot_url"]
    # null: back to the default (off).
    assert client("PUT", f"/channels/{CH}/alarm-settings", body={"snapshot": None}).json["effective"] is False
    send_alarm(dev, CH)
    h.advance(1)
    assert taken == [CH]
    assert client("PUT", "/channels/34020000001310000099/alarm-settings", body={"snapshot": True}).code == 404
    assert client("PUT", f"/channels/{CH}/alarm-settings", body={"snapshot": "yes"}).code == 400


def test_a_failed_snapshot_is_recorded_on_the_stored_alarm(build: Callable[..., Harness]) -> None:
    h = build(alarms={"snapshot": True})
    client = Client(Api(h.platform))
    dev = nvr(h)

    async def offline(channel_id: str) -> bytes:
        raise DeviceOffline("device 34020000001320000001 is not registered")

    alarms_of(h).snapshotter = offline
    send_alarm(dev, CH)
    h.advance(1)
    [alarm] = client("GET", "/alarms").json["items"]
    assert alarm["snapshot_url"] is None and "not registered" in alarm["snapshot_error"]
    assert client("GET", f"/alarms/{alarm['id']}/snapshot.jpg").code == 404


# --- the Alarm Query ----------------------------------------------------------------------------------------


def test_the_alarm_query_stores_the_devices_history(h: Harness, client: Client) -> None:
    dev = nvr(h)
    d = client.start("POST", f"/devices/{DEV}/alarms/query",
                     body={"start_priority": 1, "end_priority": 4, "method": "2/5", "start": "2026-12-01T00:00:00Z",
                           "end": "2026-12-05T00:00:00Z"})
    h.pump()
    query = dev.last_query("Alarm")
    assert isinstance(query, manscdp.AlarmQuery)
    assert (query.start_alarm_priority, query.alarm_method) == (1, "2/5")
    assert query.start_alarm_time == dt.datetime(2026, 12, 1)
    items = [manscdp.alarm_item(ALARM_IN, priority=2, method=2, time=T0 - dt.timedelta(days=n), alarm_type=1)
             for n in range(1, 4)]
    # SumNum 3 over two MESSAGEs (§9.5, as a catalog).
    dev.message(manscdp.encode_alarm_query_response(query.sn, DEV, 3, items[:2]))
    assert not has_fired(d)
    dev.message(manscdp.encode_alarm_query_response(query.sn, DEV, 3, items[2:]))
    reply = client.finish(d)
    assert reply.code == 200, reply.json
    assert (reply.json["sum_num"], reply.json["complete"], len(reply.json["items"])) == (3, True, 3)
    assert {a["source"] for a in reply.json["items"]} == {"query"}
    assert client("GET", "/alarms").json["total"] == 3
    # Asking again stores nothing twice.
    d = client.start("POST", f"/devices/{DEV}/alarms/query", body={})
    h.pump()
    dev.message(manscdp.encode_alarm_query_response(dev.last_query("Alarm").sn, DEV, 3, items))
    assert len(client.finish(d).json["items"]) == 3
    assert client("GET", "/alarms").json["total"] == 3


def test_the_alarm_query_errors(h: Harness, client: Client) -> None:
    dev = nvr(h)
    assert client("POST", "/devices/34020000001320000099/alarms/query", body={}).code == 404
    assert client("POST", f"/devices/{DEV}/alarms/query", body={"method": "9"}).code == 400
    d = client.start("POST", f"/devices/{DEV}/alarms/query", body={})
    h.pump()
    h.advance(h.config.sip.query_timeout + 1)
    reply = client.finish(d)
    assert (reply.code, reply.json["error"]["code"]) == (504, "device_timeout")
    assert dev.register_auth(expires=0).status == 200
    assert client("POST", f"/devices/{DEV}/alarms/query", body={}).code == 409


# --- positions ---------------------------------------------------------------------------------------------------


def test_positions_latest_per_source_and_track_as_geojson(h: Harness, client: Client) -> None:
    dev = nvr(h)
    for n in range(6):
        assert send_position(dev, DEV, T0 + dt.timedelta(seconds=5 * n), 116.0 + n / 100, 39.0, speed=30.0 + n,
                             direction=90.0) == 200
    send_position(dev, CH, T0, 117.0, 40.0)
    h.advance(1)
    [first, *_] = events(h, "position")
    assert first.data["longitude"] == 116.0 and first.device_id == DEV
    latest = client("GET", f"/devices/{DEV}/position").json
    assert latest["device_id"] == DEV
    assert {(p["channel_id"], p["longitude"]) for p in latest["items"]} == {(DEV, 116.05), (CH, 117.0)}
    span = "start=2026-12-05T08:00:00Z&end=2026-12-05T09:00:00Z"
    track = client("GET", f"/devices/{DEV}/track?{span}&channel_id={DEV}").json
    assert track["type"] == "FeatureCollection" and track["total"] == 6
    [line] = track["features"]
    assert line["geometry"]["type"] == "LineString"
    assert line["geometry"]["coordinates"][0] == [116.0, 39.0] and len(line["geometry"]["coordinates"]) == 6
    assert line["properties"]["times"][1] == "2026-12-05T08:30:05.000Z" and line["properties"]["speeds"][5] == 35.0
    # Bounded: thinned to `limit` points, first and last kept.
    thin = client("GET", f"/devices/{DEV}/track?{span}&channel_id={DEV}&limit=3").json["features"][0]
    coords = thin["geometry"]["coordinates"]
    assert len(coords) == 3 and coords[0] == [116.0, 39.0] and coords[-1] == [116.05, 39.0]
    # Every source, with a Point per position when asked.
    both = client("GET", f"/devices/{DEV}/track?{span}&points=true").json
    kinds = [(f["geometry"]["type"], f["properties"]["channel_id"]) for f in both["features"]]
    assert kinds.count(("Point", DEV)) == 6 and kinds.count(("LineString", DEV)) == 1 and ("Point", CH) in kinds
    assert client("GET", f"/devices/{DEV}/track").code == 400
    assert client("GET", "/devices/34020000001320000099/position").code == 404


def test_a_position_without_coordinates_is_dropped(h: Harness) -> None:
    dev = nvr(h)
    body = (b'<?xml version="1.0"?><Notify><CmdType>MobilePosition</CmdType><SN>3</SN><DeviceID>'
            + DEV.encode() + b"</DeviceID><Time>2026-12-05T08:30:00</Time><Longitude>abc</Longitude>"
            b"<Latitude>39.9</Latitude></Notify>")
    assert dev.message(body).status == 200
    h.advance(1)
    assert alarms_of(h).stats["dropped"] == 1 and events(h, "position") == []


def test_a_flood_of_positions_is_written_in_few_transactions(h: Harness) -> None:
    dev = nvr(h)
    runs: list[str] = []
    real_run = h.db.run

    def counting(name: str, fn: Any, *args: Any, **kw: Any) -> Any:
        runs.append(name)
        return real_run(name, fn, *args, **kw)

    h.db.run = counting  # type: ignore[method-assign]
    for n in range(50):
        send_position(dev, DEV, T0 + dt.timedelta(seconds=n), 116.0, 39.0)
    h.advance(1)
    assert runs.count("alarm_reports") <= 2
    assert h.call(store.track_txn, DEV, dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                  dt.datetime(2027, 1, 1, tzinfo=dt.UTC), limit=1000)[1] == 50


# --- rate limit -------------------------------------------------------------------------------------------------


def test_a_flooding_device_gets_503_while_another_devices_alarm_is_stored(build: Callable[..., Harness]) -> None:
    h = build(sip={"notify_rate": 1.0, "notify_burst": 3})
    dev = nvr(h)
    dev2 = h.registered_device(DEV2, ("UDP", "127.0.0.1", 5071))
    statuses = [send_position(dev, DEV, T0, 116.0, 39.0) for _ in range(6)]
    assert statuses == [200, 200, 200, 503, 503, 503]
    refused = [r for r in dev.responses if r.status == 503]
    assert refused[0].headers.get("Retry-After") == "1"
    assert send_alarm(dev2, DEV2) == 200  # its own budget
    assert dev.keepalive().status == 200  # keepalives are not counted
    h.advance(1)
    assert [a.device_id for a in h.call(store.list_alarms_txn, store.AlarmFilter(), limit=10)[0]] == [DEV2]
    assert h.platform.devices.stats["notify_rate_limited"] == 3
    h.advance(2)
    assert send_position(dev, DEV, T0, 116.0, 39.0) == 200  # refilled


# --- retention ------------------------------------------------------------------------------------------------


def test_retention_purges_old_alarms_snapshots_and_positions(build: Callable[..., Harness]) -> None:
    h = build(alarms={"retention_days": 1, "snapshot": True}, positions={"retention_days": 2})
    dev = nvr(h)
    service = alarms_of(h)
    service.snapshotter = fake_snapshot
    service.start()
    send_alarm(dev, CH)
    send_position(dev, DEV, T0, 116.0, 39.0)
    h.advance(1)
    [old] = h.call(store.list_alarms_txn, store.AlarmFilter(), limit=10)[0]
    path = service.snapshot_path(old.snapshot)
    assert path.exists()
    h.advance(86400 + PURGE_INTERVAL)  # a day and an hourly run later
    dev.register_auth()  # still there: only its reports age
    assert h.call(store.list_alarms_txn, store.AlarmFilter(), limit=10)[1] == 0 and not path.exists()
    everything = (dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert h.call(store.track_txn, DEV, *everything, limit=10)[1] == 1  # positions: kept two days
    h.advance(86400 + PURGE_INTERVAL)
    assert h.call(store.track_txn, DEV, *everything, limit=10)[1] == 0
    assert result_of(ensureDeferred(service.purge())) == (0, 0)


# --- the store on PostgreSQL too ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    if request.param == "sqlite":
        engine = make_engine("sqlite://")
        metadata.create_all(engine)
        yield Database(engine, pool=InlineRunner())
        engine.dispose()
        return
    admin = make_engine(postgres_admin_url()).execution_options(isolation_level="AUTOCOMMIT")
    name = f"gbalarm_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        skip_or_fail(f"PostgreSQL not available: {e.orig}")
    engine = make_engine(postgres_url(name))
    try:
        metadata.create_all(engine)
        yield Database(engine, pool=InlineRunner())
    finally:
        engine.dispose()
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_store_queries(db: Database) -> None:
    def run(fn: Any, *args: Any, **kw: Any) -> Any:
        return result_of(db.run(fn.__name__, fn, *args, **kw))

    at = dt.datetime(2026, 12, 5, 8, 30, tzinfo=dt.UTC)
    run(store.set_alarm_setting_txn, CH, True, at)
    rows = [store.AlarmRow(device_id=DEV, channel_id=src, priority=1, method=5, alarm_type=2, event_type=1,
                           device_time=at, received_at=at + dt.timedelta(seconds=n), longitude=None, latitude=None,
                           description=None, source=source)
            for n, (src, source) in enumerate([(CH, "notify"), (ALARM_IN, "notify"), (CH, "query")])]
    positions = [store.PositionRow(device_id=DEV, channel_id=DEV, time=at + dt.timedelta(seconds=n), received_at=at,
                                   longitude=116.0 + n, latitude=39.0, speed=None, direction=None, altitude=None)
                 for n in range(7)]
    stored = run(store.write_reports_txn, rows, positions)
    assert [(s.snapshot, s.new) for s in stored] == [(True, True), (None, True), (True, False)]
    assert stored[2].id == stored[0].id  # the queried copy of a stored alarm
    items, total = run(store.list_alarms_txn, store.AlarmFilter(device_id=DEV), limit=1)
    assert total == 2 and [a.channel_id for a in items] == [ALARM_IN]
    assert run(store.set_alarm_snapshot_txn, items[0].id, "2026-12-05/2.jpg", None)
    [latest] = run(store.latest_positions_txn, DEV)
    assert latest.longitude == 122.0
    track, count = run(store.track_txn, DEV, at, at + dt.timedelta(hours=1), limit=3)
    assert count == 7 and [p.longitude for p in track] == [116.0, 119.0, 122.0]
    assert run(store.delete_alarms_before_txn, at + dt.timedelta(seconds=5)) == (2, ["2026-12-05/2.jpg"])
    assert run(store.purge_positions_txn, at + dt.timedelta(seconds=1)) == 7
    run(store.set_alarm_setting_txn, CH, None, at)
    assert run(store.get_alarm_setting_txn, CH) is None


def test_an_alarm_of_the_whole_device_pictures_its_camera(build: Callable[..., Harness]) -> None:
    h = build(alarms={"snapshot": True})
    dev = nvr(h)
    taken: list[str] = []

    async def snap(channel_id: str) -> bytes:
        taken.append(channel_id)
        return JPEG

    alarms_of(h).snapshotter = snap
    send_alarm(dev, DEV, method=6)
    h.advance(1)
    assert taken == [CH]


# --- the responses against their components ----------------------------------------------------------------


def every_response() -> None:
    """Every JSON answer of the alarm routes (success paths) once, validated against its OpenAPI component
    (``test_shapes`` records which shapes were sent)."""
    jsonschema = pytest.importorskip("jsonschema")
    import tempfile

    from gbplatform.api.openapi import build_openapi

    components = build_openapi("x")["components"]

    def check(reply: Any, name: str) -> None:
        assert reply.code == 200, reply.json
        jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": components}).validate(
            reply.json)

    with tempfile.TemporaryDirectory() as data_dir:
        h = Harness(config(Path(data_dir), record={"timezone": "UTC"}))
        try:
            alarms_of(h).run_blocking = maybeDeferred
            client = Client(Api(h.platform))
            dev = nvr(h)
            check(client("PUT", f"/channels/{CH}/alarm-settings", body={"snapshot": False}), "AlarmSettings")
            assert send_alarm(dev, priority=1, method=5, alarm_type=2, longitude=116.397, latitude=39.909,
                              description="motion") == 200
            for n in range(3):
                assert send_position(dev, DEV, T0 + dt.timedelta(seconds=5 * n), 116.0 + n / 100, 39.0,
                                     speed=30.0, direction=90.0) == 200
            h.advance(1)
            page = client("GET", "/alarms")
            check(page, "AlarmPage")
            check(client("GET", f"/alarms/{page.json['items'][0]['id']}"), "Alarm")
            d = client.start("POST", f"/devices/{DEV}/alarms/query", body={"start_priority": 1, "end_priority": 4})
            h.pump()
            item = manscdp.alarm_item(ALARM_IN, priority=2, method=2, time=T0 - dt.timedelta(days=1), alarm_type=1)
            dev.message(manscdp.encode_alarm_query_response(dev.last_query("Alarm").sn, DEV, 1, [item]))
            check(client.finish(d), "AlarmQueryResult")
            check(client("GET", f"/devices/{DEV}/position"), "PositionList")
            span = "start=2026-12-05T08:00:00Z&end=2026-12-05T09:00:00Z"
            check(client("GET", f"/devices/{DEV}/track?{span}&points=true"), "Track")
            later = dt.datetime.fromtimestamp(h.clock.time() + 1, dt.UTC).isoformat().replace("+00:00", "Z")
            purged = client("DELETE", f"/alarms?before={later}")
            check(purged, "AlarmPurgeResult")
            assert purged.json["deleted"] >= 1
            assert not h.failures(), h.failures()
        finally:
            h.close()


def test_responses_match_their_openapi_components() -> None:
    every_response()
