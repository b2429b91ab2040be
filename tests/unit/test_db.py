"""Registry tests: every query runs on SQLite (in memory, StaticPool, InlineRunner)
and on PostgreSQL (a throw-away database per test session)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from twisted.application.service import MultiService
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure

from gbplatform.db import migrate
from gbplatform.db.database import (
    Database,
    DatabaseService,
    InlineRunner,
    ThreadPoolRunner,
    make_engine,
    normalize_url,
)
from gbplatform.db.models import UtcDateTime, metadata
from gbplatform.db.queries import (
    ChannelData,
    ChannelRecord,
    DeviceExists,
    DeviceNotFound,
    DeviceRecord,
    TreeNode,
    channel_tree_txn,
    channels,
    create_device_txn,
    delete_device_txn,
    device_offline_txn,
    device_registered_txn,
    device_unregistered_txn,
    devices,
    digest_ha1,
    get_channel_txn,
    get_device_txn,
    keepalives_txn,
    list_channels_txn,
    list_devices_txn,
    mark_all_offline_txn,
    replace_channels_txn,
    set_basic_param_txn,
    set_catalog_progress_txn,
    set_device_info_txn,
    update_device_txn,
    upsert_device_txn,
)
from tests.conftest import postgres_admin_url, postgres_url, skip_or_fail

PG_ADMIN_URL = postgres_admin_url()
T0 = dt.datetime(2024, 5, 1, 8, 0, 0, tzinfo=dt.UTC)
DEV = "34020000001320000001"
NVR = "34020000001180000001"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def result_of(d: Any) -> Any:
    """The result of an already-fired Deferred (InlineRunner fires at once)."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A uniquely named database, migrated to head, dropped at the end."""
    admin = make_engine(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    name = f"gbtest_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as e:
        admin.dispose()
        skip_or_fail(f"PostgreSQL not available: {e.orig}")
    url = postgres_url(name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    if request.param == "sqlite":
        engine = make_engine("sqlite://")
        metadata.create_all(engine)
        yield Database(engine, pool=InlineRunner())
        engine.dispose()
    else:
        engine = request.getfixturevalue("pg_engine")
        with engine.begin() as c:
            c.exec_driver_sql("TRUNCATE devices, channels RESTART IDENTITY CASCADE")
        yield Database(engine, pool=InlineRunner())


def call(db: Database, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return result_of(db.run(fn.__name__, fn, *args, **kwargs))


def register(db: Database, device_id: str = DEV, t: float = 0, **overrides: Any) -> DeviceRecord:
    kwargs: dict[str, Any] = {
        "host": "192.0.2.10",
        "port": 5060,
        "transport": "UDP",
        "contact": f"sip:{device_id}@192.0.2.10:5060",
        "user_agent": "IP Camera",
        "expires": 3600,
        "at": at(t),
    }
    kwargs.update(overrides)
    record: DeviceRecord = call(db, device_registered_txn, device_id, **kwargs)
    return record


# --- records and types ---------------------------------------------------------


def test_records_mirror_tables() -> None:
    assert [f.name for f in dataclasses.fields(DeviceRecord)] == [c.name for c in devices.c]
    # ChannelRecord puts the catalog fields (shared with ChannelData) first.
    assert sorted(f.name for f in dataclasses.fields(ChannelRecord)) == sorted(c.name for c in channels.c)


def test_device_record_repr_hides_ha1(db: Database) -> None:
    record = call(db, create_device_txn, DEV, password="secret", realm="3402000000")
    assert record.password_ha1_md5 not in repr(record)
    assert record.has_password


def test_utc_datetime_round_trip(db: Database) -> None:
    register(db)
    beijing = dt.timezone(dt.timedelta(hours=8))
    local = dt.datetime(2024, 5, 1, 16, 30, tzinfo=beijing)
    call(db, upsert_device_txn, DEV, last_keepalive_at=local)
    record = call(db, get_device_txn, DEV)
    assert record.last_keepalive_at == local
    assert record.last_keepalive_at.utcoffset() == dt.timedelta(0)
    assert record.registered_at == T0 and record.registered_at.tzinfo is not None


def test_naive_datetime_refused(db: Database) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        call(db, upsert_device_txn, DEV, last_keepalive_at=dt.datetime(2024, 1, 1))


def test_utc_datetime_type_is_tz_aware_column() -> None:
    assert UtcDateTime().impl.timezone is True


def test_result_rows_are_keyed_by_plain_str() -> None:
    """``models.column``: a ``quoted_name`` key would make ``DeviceRecord(**row)`` match by equality, 2x slower."""
    columns = [c for t in metadata.tables.values() for c in t.columns]
    assert columns and all(type(c.name) is str and type(c.key) is str for c in columns)


# --- devices -------------------------------------------------------------------


def test_unknown_device_is_none(db: Database) -> None:
    assert call(db, get_device_txn, DEV) is None


def test_register_creates_device_online(db: Database) -> None:
    record = register(db)
    assert record.online and not record.pre_added and record.enabled
    assert (record.host, record.port, record.transport) == ("192.0.2.10", 5060, "UDP")
    assert record.register_expires == 3600
    assert record.registered_at == T0 and record.online_at == T0
    assert record.register_expires_at == at(3600)
    assert record.created_at == T0
    assert record.charset == "GB2312" and record.media_transport == "UDP"
    assert (record.keepalive_interval, record.keepalive_count) == (60, 3)
    assert record.catalog_status == "idle" and record.channel_count == 0


def test_reregister_keeps_online_since_and_follows_nat(db: Database) -> None:
    register(db)
    record = register(db, t=1800, host="198.51.100.7", port=40000, transport="TCP")
    assert record.online_at == T0, "a refresh must not reset the online time"
    assert record.registered_at == at(1800)
    assert (record.host, record.port, record.transport) == ("198.51.100.7", 40000, "TCP")
    assert record.created_at == T0


def test_register_after_offline_sets_new_online_time(db: Database) -> None:
    register(db)
    assert call(db, device_offline_txn, DEV, at(100)) is True
    record = register(db, t=200)
    assert record.online and record.online_at == at(200) and record.offline_at == at(100)


def test_register_rejects_bad_input(db: Database) -> None:
    with pytest.raises(ValueError, match="expires"):
        register(db, expires=0)
    with pytest.raises(ValueError, match="transport"):
        register(db, transport="SCTP")
    with pytest.raises(ValueError, match="device_id"):
        register(db, device_id="x" * 33)


def test_unregister(db: Database) -> None:
    register(db)
    record = call(db, device_unregistered_txn, DEV, at=at(50))
    assert not record.online and record.offline_at == at(50)
    assert record.register_expires == 0 and record.register_expires_at == at(50)
    again = call(db, device_unregistered_txn, DEV, at=at(60))
    assert again.offline_at == at(50), "already offline: offline time stays"
    assert call(db, device_unregistered_txn, "34020000001320000099", at=at(60)) is None


def test_device_offline_only_once(db: Database) -> None:
    register(db)
    assert call(db, device_offline_txn, DEV, at(10)) is True
    assert call(db, device_offline_txn, DEV, at(20)) is False
    assert call(db, get_device_txn, DEV).offline_at == at(10)
    assert call(db, device_offline_txn, "unknown", at(20)) is False


def test_mark_all_offline(db: Database) -> None:
    register(db, DEV)
    register(db, NVR)
    call(db, device_offline_txn, NVR, at(5))
    assert call(db, mark_all_offline_txn, at(10)) == 1
    page = call(db, list_devices_txn, online=True)
    assert page.total == 0
    assert call(db, get_device_txn, DEV).offline_at == at(10)
    assert call(db, get_device_txn, NVR).offline_at == at(5)


def test_keepalives_batch(db: Database) -> None:
    register(db, DEV)
    register(db, NVR)
    call(db, device_offline_txn, NVR, at(30))
    result = call(
        db,
        keepalives_txn,
        [
            (DEV, at(60), "192.0.2.10", 5060, "UDP"),
            (NVR, at(61), "203.0.113.5", 6000, "TCP"),
            (DEV, at(59), "192.0.2.99", 1111, "UDP"),  # older duplicate loses
            ("34020000001320000404", at(60), "192.0.2.1", 5060, "UDP"),
        ],
    )
    assert result.updated == 2
    assert result.came_online == (NVR,)
    assert result.unknown == ("34020000001320000404",)
    dev = call(db, get_device_txn, DEV)
    assert dev.last_keepalive_at == at(60) and dev.host == "192.0.2.10" and dev.port == 5060
    assert dev.online_at == T0 and dev.updated_at == T0, "keepalive is liveness, not a change"
    nvr = call(db, get_device_txn, NVR)
    assert nvr.online and nvr.online_at == at(61)
    assert (nvr.host, nvr.port, nvr.transport) == ("203.0.113.5", 6000, "TCP")
    assert call(db, get_device_txn, "34020000001320000404") is None


def test_keepalives_empty_and_bad_transport(db: Database) -> None:
    assert call(db, keepalives_txn, []).updated == 0
    with pytest.raises(ValueError, match="transport"):
        call(db, keepalives_txn, [(DEV, at(0), "192.0.2.1", 5060, "carrier-pigeon")])


def test_keepalives_10000(db: Database) -> None:
    n = 10_000
    ids = [f"340200000013200{i:05d}" for i in range(n)]
    with db.engine.begin() as c:
        c.execute(
            sa.insert(devices),
            [{"device_id": i, "online": True, "created_at": T0, "updated_at": T0} for i in ids],
        )
    batch = [(i, at(60), "10.0.0.1", 5060 + k % 100, "UDP") for k, i in enumerate(ids)]
    started = time.perf_counter()
    result = call(db, keepalives_txn, batch)
    elapsed = time.perf_counter() - started
    print(f"\nkeepalives_txn: {n} rows on {db.engine.dialect.name} in {elapsed * 1000:.0f} ms")
    assert result.updated == n and result.unknown == () and result.came_online == ()
    assert call(db, get_device_txn, ids[-1]).last_keepalive_at == at(60)


def test_create_device_stores_only_ha1(db: Database) -> None:
    record = call(
        db, create_device_txn, DEV, name="Gate", password="s3cret", realm="3402000000",
        media_transport="TCP-PASSIVE", at=T0,
    )
    a1 = f"{DEV}:3402000000:s3cret".encode()
    assert record.password_ha1_md5 == hashlib.md5(a1).hexdigest()
    assert record.password_ha1_sha256 == hashlib.sha256(a1).hexdigest()
    assert record.ha1_realm == "3402000000"
    assert record.pre_added and not record.online and record.name == "Gate"
    assert record.media_transport == "TCP-PASSIVE"
    with db.engine.connect() as c:
        row = c.execute(sa.select(devices)).one()
    assert "s3cret" not in repr(tuple(row))
    with pytest.raises(DeviceExists):
        call(db, create_device_txn, DEV)


def test_create_device_with_ha1_fn_or_precomputed(db: Database) -> None:
    seen: list[tuple[str, str, str]] = []

    def ha1_fn(user: str, realm: str, password: str) -> tuple[str, str]:
        seen.append((user, realm, password))
        return "m" * 32, "s" * 64

    record = call(db, create_device_txn, DEV, password="pw", realm="r", ha1_fn=ha1_fn)
    assert seen == [(DEV, "r", "pw")] and record.password_ha1_md5 == "m" * 32
    other = call(db, create_device_txn, NVR, password_ha1_md5="a" * 32, realm="r")
    assert other.password_ha1_md5 == "a" * 32 and other.password_ha1_sha256 is None
    with pytest.raises(ValueError, match="realm"):
        call(db, create_device_txn, "34020000001320000003", password="pw")
    with pytest.raises(ValueError, match="not both"):
        call(db, create_device_txn, "34020000001320000003", password="pw", realm="r",
             password_ha1_md5="a" * 32)
    with pytest.raises(ValueError, match="read-only"):
        call(db, create_device_txn, "34020000001320000003", created_at=T0)


def test_create_then_register_keeps_api_fields(db: Database) -> None:
    call(db, create_device_txn, DEV, name="Gate", password="pw", realm="r")
    record = register(db, t=10)
    assert record.pre_added and record.name == "Gate" and record.has_password and record.online


def test_update_device(db: Database) -> None:
    with pytest.raises(DeviceNotFound):
        call(db, update_device_txn, DEV, name="x")
    call(db, create_device_txn, DEV, password="old", realm="3402000000")
    record = call(db, update_device_txn, DEV, name="Lobby", password="new", enabled=False,
                  stream_index="stream:1", at=at(5))
    assert record.name == "Lobby" and not record.enabled and record.stream_index == "stream:1"
    assert record.password_ha1_md5 == digest_ha1(DEV, "3402000000", "new")[0]
    assert record.updated_at == at(5)
    cleared = call(db, update_device_txn, DEV, clear_password=True)
    assert not cleared.has_password and cleared.ha1_realm is None
    with pytest.raises(ValueError, match="realm"):
        call(db, update_device_txn, DEV, password="again")
    with pytest.raises(ValueError, match="media_transport"):
        call(db, update_device_txn, DEV, media_transport="QUIC")
    with pytest.raises(ValueError, match="unknown"):
        call(db, update_device_txn, DEV, colour="red")


def test_upsert_device(db: Database) -> None:
    record = call(db, upsert_device_txn, DEV, name="A", charset="UTF-8", at=T0)
    assert record.name == "A" and record.charset == "UTF-8" and not record.online
    record = call(db, upsert_device_txn, DEV, model="DS-2CD", at=at(1))
    assert record.name == "A" and record.model == "DS-2CD"
    assert record.created_at == T0 and record.updated_at == at(1)


def test_delete_device_cascades(db: Database) -> None:
    register(db)
    call(db, replace_channels_txn, DEV, [ChannelData(channel_id=DEV)], complete=True)
    call(db, delete_device_txn, DEV)
    assert call(db, get_device_txn, DEV) is None
    assert call(db, get_channel_txn, DEV) is None
    with pytest.raises(DeviceNotFound):
        call(db, delete_device_txn, DEV)


def test_foreign_key_cascade_in_schema(db: Database) -> None:
    register(db)
    call(db, replace_channels_txn, DEV, [ChannelData(channel_id=DEV)], complete=True)
    with db.engine.begin() as c:
        c.execute(sa.delete(devices))
    with db.engine.connect() as c:
        assert c.scalar(sa.select(sa.func.count()).select_from(channels)) == 0


def test_list_devices(db: Database) -> None:
    for k in range(5):
        register(db, f"3402000000132000000{k}", host=f"10.0.0.{k}")
    call(db, upsert_device_txn, "34020000001320000002", name="North 100% Gate")
    call(db, device_offline_txn, "34020000001320000004", at(1))

    page = call(db, list_devices_txn, offset=1, limit=2)
    assert page.total == 5 and (page.offset, page.limit) == (1, 2)
    assert [d.device_id for d in page.items] == ["34020000001320000001", "34020000001320000002"]
    assert call(db, list_devices_txn, online=False).total == 1
    assert call(db, list_devices_txn, online=True).total == 4
    assert [d.device_id for d in call(db, list_devices_txn, q="north").items] == [
        "34020000001320000002"
    ]
    assert call(db, list_devices_txn, q="100%").total == 1
    assert call(db, list_devices_txn, q="0%").total == 1, "% is literal, not a wildcard"
    assert call(db, list_devices_txn, q="10.0.0.3").total == 1
    assert call(db, list_devices_txn, q="132000").total == 5
    with pytest.raises(ValueError):
        call(db, list_devices_txn, limit=0)
    with pytest.raises(ValueError):
        call(db, list_devices_txn, offset=-1)


def test_device_info_basic_param_and_catalog_progress(db: Database) -> None:
    register(db)
    record = call(db, set_device_info_txn, DEV, name="IPC", manufacturer="Hikvision",
                  model="DS-2CD", firmware="V5.5", at=at(1))
    assert (record.name, record.manufacturer, record.firmware) == ("IPC", "Hikvision", "V5.5")
    record = call(db, set_device_info_txn, DEV, name="Renamed", firmware="V5.6", at=at(2))
    assert record.name == "IPC", "the first name (or the operator's) stays"
    assert record.firmware == "V5.6" and record.model == "DS-2CD"

    call(db, set_basic_param_txn, DEV, 30, 5)
    record = call(db, get_device_txn, DEV)
    assert (record.keepalive_interval, record.keepalive_count) == (30, 5)
    with pytest.raises(ValueError):
        call(db, set_basic_param_txn, DEV, 0, 3)

    call(db, set_catalog_progress_txn, DEV, "running", 140, 10, at(3))
    record = call(db, get_device_txn, DEV)
    assert (record.catalog_status, record.catalog_total, record.catalog_received) == (
        "running", 140, 10)
    assert record.catalog_synced_at is None
    call(db, set_catalog_progress_txn, DEV, "partial", 140, 130, at(4))
    assert call(db, get_device_txn, DEV).catalog_synced_at == at(4)
    with pytest.raises(ValueError, match="catalog_status"):
        call(db, set_catalog_progress_txn, DEV, "weird", 1, 1, at(5))
    with pytest.raises(DeviceNotFound):
        call(db, set_catalog_progress_txn, NVR, "done", 1, 1, at(5))
    with pytest.raises(DeviceNotFound):
        call(db, set_device_info_txn, NVR, name="x")


# --- channels -------------------------------------------------------------------


def cam(n: int, **kw: Any) -> ChannelData:
    return ChannelData(channel_id=f"340200000013100{n:05d}", **kw)


def test_replace_channels_bulk(db: Database) -> None:
    register(db, NVR)
    items = [cam(n, name=f"Cam {n}", status="ON", parent_id=NVR) for n in range(2500)]
    started = time.perf_counter()
    assert call(db, replace_channels_txn, NVR, items, complete=True, at=at(1)) == 2500
    print(f"\nreplace_channels_txn: 2500 rows in {(time.perf_counter() - started) * 1000:.0f} ms")
    assert call(db, get_device_txn, NVR).channel_count == 2500

    # A partial packet updates and adds, never deletes.
    update = [cam(0, name="Renamed", status="OFF"), cam(9999, name="New")]
    assert call(db, replace_channels_txn, NVR, update, complete=False, at=at(2)) == 2501
    renamed = call(db, get_channel_txn, cam(0).channel_id)
    assert renamed.name == "Renamed" and renamed.status == "OFF" and renamed.parent_id is None
    assert renamed.updated_at == at(2)

    # A complete sync deletes what is not listed.
    keep = [cam(n) for n in range(0, 2500, 2)]
    assert call(db, replace_channels_txn, NVR, keep, complete=True) == 1250
    assert call(db, get_device_txn, NVR).channel_count == 1250
    assert call(db, get_channel_txn, cam(1).channel_id) is None

    assert call(db, replace_channels_txn, NVR, [], complete=True) == 0


def test_replace_channels_fields_and_duplicates(db: Database) -> None:
    register(db, NVR)
    item = ChannelData(
        channel_id="34020000001320000001", name="南门", manufacturer="Dahua", model="IPC",
        owner="Owner", civil_code="340200", block="B", address="Gate", parental=0,
        parent_id=NVR, business_group_id=None, safety_way="0", register_way="1",
        cert_num="c", certifiable="0", err_code="400", end_time="2030-01-01T00:00:00",
        secrecy="0", ip_address="192.0.2.20", port=8000, status="ON", longitude=117.28,
        latitude=31.86, ptz_type=1, extra={"Info": {"PTZType": "1", "Resolution": "6/4"}},
    )
    older = dataclasses.replace(item, name="old")
    call(db, replace_channels_txn, NVR, [older, item], complete=True)
    record = call(db, get_channel_txn, item.channel_id, device_id=NVR)
    expected = {f.name: getattr(item, f.name) for f in dataclasses.fields(ChannelData)}
    expected["kind"] = "channel"
    assert {k: getattr(record, k) for k in expected} == expected
    assert record.device_id == NVR
    assert call(db, get_device_txn, NVR).channel_count == 1


def test_replace_channels_unknown_device(db: Database) -> None:
    with pytest.raises(DeviceNotFound):
        call(db, replace_channels_txn, NVR, [cam(1)], complete=True)


def test_channel_data_validation() -> None:
    with pytest.raises(ValueError):
        ChannelData(channel_id="")
    with pytest.raises(ValueError):
        ChannelData(channel_id="1" * 33)
    with pytest.raises(ValueError):
        ChannelData(channel_id="1", kind="planet")


def test_same_channel_id_on_two_devices(db: Database) -> None:
    register(db, DEV)
    register(db, NVR)
    call(db, replace_channels_txn, DEV, [cam(1, name="a")], complete=True)
    call(db, replace_channels_txn, NVR, [cam(1, name="b")], complete=True)
    assert call(db, get_channel_txn, cam(1).channel_id, device_id=NVR).name == "b"
    assert call(db, get_channel_txn, cam(1).channel_id).device_id == DEV
    call(db, replace_channels_txn, NVR, [], complete=True)
    assert call(db, get_channel_txn, cam(1).channel_id, device_id=DEV).name == "a"


def test_list_channels(db: Database) -> None:
    register(db, NVR)
    group = "34020000002160000001"
    items = [cam(n, parent_id=NVR) for n in range(5)] + [
        cam(10, parent_id=group),
        cam(11, parent_id=f"{NVR}/{group}"),
        ChannelData(channel_id=group, parent_id=NVR),
    ]
    call(db, replace_channels_txn, NVR, items, complete=True)
    page = call(db, list_channels_txn, NVR, offset=2, limit=2)
    assert page.total == 8 and [c.channel_id for c in page.items] == [
        cam(2).channel_id, cam(3).channel_id]
    under_group = call(db, list_channels_txn, NVR, parent_id=group)
    assert [c.channel_id for c in under_group.items] == [cam(10).channel_id, cam(11).channel_id]
    assert call(db, list_channels_txn, NVR, parent_id=NVR).total == 6
    assert call(db, list_channels_txn, DEV).total == 0


def shape(nodes: list[TreeNode]) -> list[Any]:
    return [(n.id, shape(n.children)) if n.children else n.id for n in nodes]


def test_channel_tree(db: Database) -> None:
    register(db, NVR)
    bg = "34020000002150000001"
    vo = "34020000002160000001"
    vo2 = "34020000002160000002"
    items = [
        ChannelData(channel_id="34", name="Anhui"),
        ChannelData(channel_id="3402", name="Hefei"),
        ChannelData(channel_id="340200", name="Shushan"),
        ChannelData(channel_id="34020001"),  # parent by civil-code prefix: 340200
        ChannelData(channel_id=bg, name="Traffic", parent_id=NVR),
        ChannelData(channel_id=vo, name="Roads", business_group_id=bg),
        ChannelData(channel_id=vo2, parent_id=f"{bg}/{vo}", business_group_id=bg),
        cam(1, name="c1", parent_id=f"{bg}/{vo}/{vo2}", status="ON"),
        cam(2, parent_id="3402000000"),  # Hikvision: ParentID = platform domain
        cam(3, parent_id="34020000002160009999"),  # unknown parent
        cam(4, civil_code="340200"),  # no ParentID: hangs under its civil code
        cam(5, parent_id=NVR, civil_code="340200"),  # ParentID = device: root
        # A confused device: a parent cycle must not hide the nodes.
        cam(6, parent_id=cam(7).channel_id),
        cam(7, parent_id=cam(6).channel_id),
    ]
    call(db, replace_channels_txn, NVR, items, complete=True)
    tree = call(db, channel_tree_txn, NVR, platform_id="34020000002000000001")
    assert shape(tree) == [
        ("34", [("3402", [("340200", ["34020001", cam(4).channel_id])])]),
        (bg, [(vo, [(vo2, [cam(1).channel_id])])]),
        cam(2).channel_id,
        cam(3).channel_id,
        cam(5).channel_id,
        (cam(6).channel_id, [cam(7).channel_id]),
    ]
    leaf = tree[1].children[0].children[0].children[0]
    assert (leaf.name, leaf.kind, leaf.status) == ("c1", "channel", "ON")
    assert tree[1].kind == "business_group" and tree[0].kind == "civil_code"
    count = 0
    stack = list(tree)
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node.children)
    assert count == len(items)


def test_channel_tree_platform_id_parent_is_root(db: Database) -> None:
    register(db, NVR)
    platform = "34020000002000000001"
    items = [ChannelData(channel_id=platform), cam(1, parent_id=platform)]
    call(db, replace_channels_txn, NVR, items, complete=True)
    assert shape(call(db, channel_tree_txn, NVR)) == [(platform, [cam(1).channel_id])]
    assert shape(call(db, channel_tree_txn, NVR, platform_id=platform)) == [
        cam(1).channel_id, platform]


def test_channel_tree_deep_chain(db: Database) -> None:
    register(db, NVR)
    items = [cam(0)] + [cam(n, parent_id=cam(n - 1).channel_id) for n in range(1, 3000)]
    call(db, replace_channels_txn, NVR, items, complete=True)
    tree = call(db, channel_tree_txn, NVR)
    depth, node = 1, tree[0]
    while node.children:
        node, depth = node.children[0], depth + 1
    assert len(tree) == 1 and depth == 3000


# --- Database.run ------------------------------------------------------------------


class FlakyError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def flaky(sqlstate: str | None, failures: int) -> Callable[..., str]:
    calls = {"n": 0}

    def txn(s: Any) -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise OperationalError("UPDATE devices", {}, FlakyError(sqlstate))
        return f"ok after {calls['n']}"

    return txn


@pytest.fixture
def sqlite_db() -> Iterator[Database]:
    engine = make_engine("sqlite://")
    metadata.create_all(engine)
    yield Database(engine, pool=InlineRunner())
    engine.dispose()


def test_run_rolls_back_on_error(sqlite_db: Database) -> None:
    def txn(s: Any) -> None:
        device_registered_txn(s, DEV, host="h", port=1, transport="UDP", contact=None,
                              user_agent=None, expires=60, at=T0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        result_of(sqlite_db.run("boom", txn))
    assert call(sqlite_db, get_device_txn, DEV) is None


def test_run_retries_serialization_failure_once(sqlite_db: Database) -> None:
    assert result_of(sqlite_db.run("retry", flaky("40001", 1))) == "ok after 2"
    with pytest.raises(OperationalError):
        result_of(sqlite_db.run("retry", flaky("40001", 2)))
    with pytest.raises(OperationalError):
        result_of(sqlite_db.run("no retry", flaky("42P01", 1)))


def test_run_logs_slow_transactions() -> None:
    engine = make_engine("sqlite://")
    ticks = iter([0.0, 2.5])
    database = Database(engine, pool=InlineRunner(), slow_seconds=1.0, timer=lambda: next(ticks))
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        assert result_of(database.run("catalog_sync", lambda s: 7)) == 7
    finally:
        globalLogPublisher.removeObserver(observer)
        engine.dispose()
    slow = [e for e in events if e.get("desc") == "catalog_sync"]
    assert slow and slow[0]["elapsed_ms"] == 2500


class FakeReactor:
    def __init__(self) -> None:
        self.triggers: dict[int, tuple[str, str, Callable[[], None]]] = {}

    def addSystemEventTrigger(self, phase: str, event: str, f: Callable[[], None]) -> int:
        key = len(self.triggers) + 1
        self.triggers[key] = (phase, event, f)
        return key

    def removeSystemEventTrigger(self, key: int) -> None:
        del self.triggers[key]

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class SyncPool:
    """A ThreadPool stand-in that runs work on the calling thread."""

    def __init__(self) -> None:
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except Exception:  # noqa: BLE001 - handed to on_result like ThreadPool does
            on_result(False, Failure())  # type: ignore[no-untyped-call]
        else:
            on_result(True, result)


def test_thread_pool_runner_lifecycle() -> None:
    reactor = FakeReactor()
    pool = SyncPool()
    runner = ThreadPoolRunner(reactor, 1, 1, pool=pool)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not running"):
        result_of(runner.run(lambda: 1))
    runner.start()
    assert pool.started and list(reactor.triggers.values())[0][:2] == ("during", "shutdown")
    def add(x: int, y: int = 0) -> int:
        return x + y

    assert result_of(runner.run(add, 2, y=3)) == 5
    with pytest.raises(ZeroDivisionError):
        result_of(runner.run(lambda: 1 / 0))
    runner.stop()
    assert not pool.started and reactor.triggers == {}
    runner.stop()  # idempotent

    runner.start()
    (_, _, on_shutdown), = reactor.triggers.values()
    on_shutdown()
    assert not pool.started
    runner.stop()  # must not remove the trigger that already fired


def test_thread_pool_runner_sizing() -> None:
    reactor = FakeReactor()
    sqlite_engine = make_engine("sqlite://")
    runner = ThreadPoolRunner.for_engine(reactor, sqlite_engine, max=8)
    assert runner._pool.max == 1
    pg = sa.create_engine("postgresql+psycopg://u@127.0.0.1/x")
    assert ThreadPoolRunner.for_engine(reactor, pg, max=8)._pool.max == 8
    with pytest.raises(ValueError):
        ThreadPoolRunner(reactor, 2, 1)
    sqlite_engine.dispose()


def test_database_service_lifecycle() -> None:
    reactor = FakeReactor()
    pool = SyncPool()
    engine = make_engine("sqlite://")
    metadata.create_all(engine)
    database = Database(engine, pool=ThreadPoolRunner(reactor, pool=pool))  # type: ignore[arg-type]
    parent = MultiService()  # type: ignore[no-untyped-call]
    DatabaseService(database).setServiceParent(parent)  # type: ignore[no-untyped-call]
    parent.startService()  # type: ignore[no-untyped-call]
    assert pool.started
    assert result_of(database.run("get", get_device_txn, DEV)) is None
    parent.stopService()  # type: ignore[no-untyped-call]
    assert not pool.started


# --- engines ------------------------------------------------------------------------


def test_make_engine_sqlite_file(tmp_path: Any) -> None:
    path = tmp_path / "nested" / "dir" / "gb.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        assert path.exists()
    finally:
        engine.dispose()


def test_normalize_url() -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://u@h/db")
    engine = make_engine("postgresql://u@127.0.0.1/db")
    assert engine.dialect.driver == "psycopg" and engine.pool._pre_ping
    engine.dispose()


# --- batched registrar writes ---------------------------------------------------


def test_registrations_txn_upserts_a_batch_and_keeps_online_at(db: Database) -> None:
    from gbplatform.db.queries import Registration, registrations_txn

    first = [Registration(f"3402000000132{i:07d}", "10.0.0.1", 5060 + i, "UDP", None, "sim", 3600, at(1))
             for i in range(1, 6)]
    assert call(db, registrations_txn, first) == 5
    again = [dataclasses.replace(first[0], host="10.0.0.9", port=6000, transport="TCP", at=at(50)),
             dataclasses.replace(first[0], host="10.0.0.8", port=6001, at=at(60))]  # newest wins
    assert call(db, registrations_txn, again) == 1
    record = call(db, get_device_txn, first[0].device_id)
    assert (record.host, record.port, record.transport, record.online) == ("10.0.0.8", 6001, "UDP", True)
    assert record.online_at == at(1)  # still online since the first registration
    assert record.register_expires_at == at(60) + dt.timedelta(seconds=3600)
    assert call(db, registrations_txn, []) == 0
    with pytest.raises(ValueError):
        call(db, registrations_txn, [dataclasses.replace(first[1], expires=0)])
    with pytest.raises(ValueError):
        call(db, registrations_txn, [dataclasses.replace(first[1], transport="SCTP")])


def test_auth_records_and_store_device_info(db: Database) -> None:
    from gbplatform.db.queries import auth_records_txn, store_device_info_txn

    register(db, DEV)
    register(db, NVR)
    records = {r.device_id: r for r in call(db, auth_records_txn)}
    assert set(records) == {DEV, NVR}
    assert records[DEV].enabled and not records[DEV].pre_added and records[DEV].ha1_md5 is None
    assert [r.device_id for r in call(db, auth_records_txn, NVR)] == [NVR]
    assert call(db, auth_records_txn, "34020000001320009999") == []
    call(db, store_device_info_txn, DEV, name="IPC", manufacturer="Hikvision", at=at(3))
    call(db, store_device_info_txn, DEV, name="Other", firmware="V5", at=at(4))
    record = call(db, get_device_txn, DEV)
    assert (record.name, record.manufacturer, record.firmware) == ("IPC", "Hikvision", "V5")
    with pytest.raises(DeviceNotFound):
        call(db, store_device_info_txn, "34020000001320009999", name="x")


def test_keepalives_without_report(db: Database) -> None:
    """The state writer's form (issue 12): no read first; an offline device gets online_at, unknown IDs nothing."""
    register(db, DEV)
    register(db, NVR)
    call(db, device_offline_txn, NVR, at(30))
    batch = [
        (DEV, at(60), "192.0.2.10", 5060, "UDP"),
        (NVR, at(61), "203.0.113.5", 6000, "TCP"),
        ("34020000001320000404", at(60), "192.0.2.1", 5060, "UDP"),
    ]
    result = call(db, keepalives_txn, batch, report=False)
    assert (result.updated, result.came_online, result.unknown) == (3, (), ())
    dev = call(db, get_device_txn, DEV)
    assert dev.online and dev.last_keepalive_at == at(60) and dev.online_at == T0
    nvr = call(db, get_device_txn, NVR)
    assert nvr.online and nvr.online_at == at(61) and nvr.last_keepalive_at == at(61)
    assert (nvr.host, nvr.port, nvr.transport) == ("203.0.113.5", 6000, "TCP")
    assert call(db, get_device_txn, "34020000001320000404") is None
    # The same statement again (cached per dialect), a batch of another size.
    call(db, keepalives_txn, [(DEV, at(120), "192.0.2.11", 5061, "UDP")], report=False)
    assert call(db, get_device_txn, DEV).port == 5061


def test_state_batch_runs_keep_the_order(db: Database) -> None:
    """Runs of one kind are one statement each (issue 12); per device the writes still land in order."""
    from gbplatform.db.queries import Registration
    from gbplatform.devices.registrar import apply_state_batch_txn

    cam = "34020000001320000003"
    for device_id in (DEV, NVR, cam):
        register(db, device_id)
    ops: list[tuple[str, tuple[Any, ...]]] = [
        ("offline", (DEV, at(10))),
        ("offline", (NVR, at(10))),
        ("keepalive", (DEV, at(20), "192.0.2.10", 5060, "UDP")),  # back online after its offline
        ("unregistered", (cam, at(30))),
        ("offline", (NVR, at(40))),  # already offline: left as it was
        ("keepalive", (NVR, at(50), "192.0.2.20", 5060, "UDP")),
        ("registered", (Registration(NVR, "192.0.2.30", 5070, "UDP", None, None, 3600, at(60)),)),
        ("offline", ("34020000001320000404", at(70))),  # unknown: nothing
    ]
    assert call(db, apply_state_batch_txn, ops) == []
    dev = call(db, get_device_txn, DEV)
    assert dev.online and dev.offline_at == at(10) and dev.online_at == at(20) and dev.last_keepalive_at == at(20)
    nvr = call(db, get_device_txn, NVR)
    assert nvr.online and nvr.offline_at == at(10) and (nvr.host, nvr.port) == ("192.0.2.30", 5070)
    gone = call(db, get_device_txn, cam)
    assert not gone.online and gone.offline_at == at(30)
    assert (gone.register_expires, gone.register_expires_at) == (0, at(30))


def test_state_batch_mass_offline(db: Database) -> None:
    from gbplatform.devices.registrar import apply_state_batch_txn

    ids = [f"340200000013200{i:05d}" for i in range(3000)]
    with db.engine.begin() as c:
        c.execute(sa.insert(devices), [{"device_id": i, "online": True, "created_at": T0, "updated_at": T0}
                                        for i in ids])
    ops = [("offline" if n % 3 else "unregistered", (i, at(90))) for n, i in enumerate(ids)]
    ops.sort(key=lambda op: op[0])  # a sweep: the offlines, then the unregistrations
    call(db, apply_state_batch_txn, ops)
    assert call(db, list_devices_txn, online=True).total == 0
