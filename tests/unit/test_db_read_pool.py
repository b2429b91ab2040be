"""The SQLite read pool (issue 12): API reads beside the one writer, in WAL mode."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from twisted.application.service import MultiService

from gbplatform.db.database import (
    READ_ONLY_TXNS,
    Database,
    DatabaseService,
    ThreadPoolRunner,
    make_engine,
    transaction,
)
from gbplatform.db.models import metadata
from gbplatform.db.queries import (
    channel_tree_txn,
    get_device_txn,
    list_channels_txn,
    list_devices_txn,
    upsert_device_txn,
)
from gbplatform.devices.http import _channels_txn, _tree_txn
from tests.unit.test_db import FakeReactor, SyncPool, result_of

DEV = "34020000001320000001"


def _engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'gb.db'}")
    metadata.create_all(engine)
    return engine


def test_read_only_queries_are_marked() -> None:
    # What the API's device and channel reads run: all of them SELECTs only.
    for fn in (get_device_txn, list_devices_txn, list_channels_txn, channel_tree_txn, _channels_txn, _tree_txn):
        assert fn in READ_ONLY_TXNS, fn.__name__
    assert upsert_device_txn not in READ_ONLY_TXNS


def test_readers_only_for_a_file_sqlite(tmp_path: Path) -> None:
    reactor = FakeReactor()
    memory = make_engine("sqlite://")
    assert ThreadPoolRunner.readers_for_engine(reactor, memory) is None  # one shared connection
    pg = sa.create_engine("postgresql+psycopg://u@127.0.0.1/x")
    assert ThreadPoolRunner.readers_for_engine(reactor, pg) is None  # its own pool runs side by side
    engine = _engine(tmp_path)
    readers = ThreadPoolRunner.readers_for_engine(reactor, engine)
    assert readers is not None and readers._pool.max == 2
    memory.dispose()
    engine.dispose()


def test_reads_go_to_the_read_pool_and_writes_to_the_writer(tmp_path: Path) -> None:
    reactor = FakeReactor()
    engine = _engine(tmp_path)
    writer_pool, reader_pool = SyncPool(), SyncPool()
    calls: list[str] = []

    def tag(pool: SyncPool, name: str) -> SyncPool:
        run = pool.callInThreadWithCallback

        def counted(*args: Any, **kwargs: Any) -> None:
            calls.append(name)
            run(*args, **kwargs)

        pool.callInThreadWithCallback = counted  # type: ignore[method-assign]
        return pool

    database = Database(
        engine,
        pool=ThreadPoolRunner(reactor, pool=tag(writer_pool, "writer")),  # type: ignore[arg-type]
        read_pool=ThreadPoolRunner(reactor, pool=tag(reader_pool, "reader")),  # type: ignore[arg-type]
    )
    parent = MultiService()  # type: ignore[no-untyped-call]
    DatabaseService(database).setServiceParent(parent)  # type: ignore[no-untyped-call]
    parent.startService()  # type: ignore[no-untyped-call]
    assert writer_pool.started and reader_pool.started

    result_of(database.run("upsert", upsert_device_txn, DEV, name="cam"))
    record = result_of(database.run("get", get_device_txn, DEV))
    assert record is not None and record.name == "cam"  # the read sees the write committed before it
    assert result_of(database.run("list", list_devices_txn)).total == 1
    assert calls == ["writer", "reader", "reader"]

    parent.stopService()  # type: ignore[no-untyped-call]
    assert not writer_pool.started and not reader_pool.started


def test_without_a_read_pool_everything_goes_to_the_writer(tmp_path: Path) -> None:
    reactor = FakeReactor()
    engine = _engine(tmp_path)
    pool = SyncPool()
    database = Database(engine, pool=ThreadPoolRunner(reactor, pool=pool))  # type: ignore[arg-type]
    database.runner.start()
    assert result_of(database.run("get", get_device_txn, DEV)) is None
    database.runner.stop()
    engine.dispose()


def test_a_wal_reader_is_not_blocked_by_an_open_write(tmp_path: Path) -> None:
    """Why the read pool helps: in WAL mode a read completes while a write transaction is open
    (https://www.sqlite.org/wal.html §2.2), seeing the last commit."""
    engine = _engine(tmp_path)
    with transaction(engine) as s:
        upsert_device_txn(s, DEV, name="before")
    writing, read_done = threading.Event(), threading.Event()
    seen: list[Any] = []

    def reader() -> None:
        writing.wait(10)
        with transaction(engine) as s:
            seen.append(get_device_txn(s, DEV))
        read_done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    with transaction(engine) as s:
        upsert_device_txn(s, DEV, name="during")  # the write lock is held from here until the commit
        writing.set()
        assert read_done.wait(10), "the read waited for the writer"
    thread.join(10)
    assert seen and seen[0] is not None and seen[0].name == "before"
    engine.dispose()
