"""Batched catalog stores (issue 12): ``queries.store_catalogs_txn`` on SQLite and PostgreSQL,
and ``CatalogStoreBatch``'s group commit, with a failing batch stored again device by device
(each device's catalog whole or not at all, errors logged, nothing lost)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from gbplatform.db import queries as q
from gbplatform.db.database import Database
from gbplatform.devices.catalog import CatalogStoreBatch
from tests.unit.test_db import call, db, pg_engine, pg_url, register  # noqa: F401 - fixtures

T0 = dt.datetime(2024, 5, 1, 8, 0, 0, tzinfo=dt.UTC)


def dev(n: int) -> str:
    return f"340200000013200{n:05d}"


def cam(n: int, m: int) -> str:
    return f"34020000001310{n:03d}{m:03d}"


def chans(n: int, numbers: range, **fields: Any) -> list[q.ChannelData]:
    return [q.ChannelData(channel_id=cam(n, m), name=f"cam {m}", **fields) for m in numbers]


def store(n: int, numbers: range, status: str = "done", **kw: Any) -> q.CatalogStore:
    items = chans(n, numbers)
    return q.CatalogStore(dev(n), items, status, kw.pop("total", len(items)), kw.pop("received", len(items)),
                          kw.pop("at", T0), **kw)


def channel_ids(database: Database, n: int) -> list[str]:
    return [c.channel_id for c in call(database, q.list_channels_txn, dev(n), limit=1000).items]


# --- store_catalogs_txn ---------------------------------------------------------


def test_many_devices_in_one_transaction(db: Database) -> None:  # noqa: F811 - fixture
    for n in (1, 2, 3):
        register(db, dev(n))
    call(db, q.replace_channels_txn, dev(2), chans(2, range(1, 6)), complete=True)  # 5 stored before
    results = call(db, q.store_catalogs_txn, [
        store(1, range(1, 4)),
        store(2, range(3, 8)),  # done: 1 and 2 removed, 6 and 7 added
        store(3, range(1, 3), status="partial", total=5, error="2 of 5 items"),
    ])
    assert [(r.added, r.removed, r.found) for r in results] == [
        ([cam(1, 1), cam(1, 2), cam(1, 3)], [], True),
        ([cam(2, 6), cam(2, 7)], [cam(2, 1), cam(2, 2)], True),
        ([cam(3, 1), cam(3, 2)], [], True),
    ]
    assert channel_ids(db, 2) == [cam(2, m) for m in range(3, 8)]
    one, two, three = (call(db, q.get_device_txn, dev(n)) for n in (1, 2, 3))
    assert (one.catalog_status, one.channel_count, one.catalog_total, one.catalog_error) == ("done", 3, 3, None)
    assert (two.catalog_status, two.channel_count) == ("done", 5)
    assert (three.catalog_status, three.channel_count, three.catalog_total, three.catalog_received,
            three.catalog_error) == ("partial", 2, 5, 2, "2 of 5 items")
    assert one.catalog_synced_at == T0 and three.catalog_synced_at == T0


def test_a_partial_sync_deletes_nothing(db: Database) -> None:  # noqa: F811
    register(db, dev(1))
    call(db, q.replace_channels_txn, dev(1), chans(1, range(1, 4)), complete=True)
    [result] = call(db, q.store_catalogs_txn, [store(1, range(3, 5), status="partial", total=9)])
    assert (result.added, result.removed) == ([cam(1, 4)], [])
    assert channel_ids(db, 1) == [cam(1, m) for m in range(1, 5)]
    assert call(db, q.get_device_txn, dev(1)).channel_count == 4


def test_the_catalogs_own_name_fills_only_an_empty_name(db: Database) -> None:  # noqa: F811
    register(db, dev(1))
    register(db, dev(2))
    call(db, q.set_device_info_txn, dev(2), name="Set by DeviceInfo")
    call(db, q.store_catalogs_txn, [store(1, range(1, 2), own_name="NVR 1"), store(2, range(1, 2), own_name="NVR 2"),
                                    ])
    assert call(db, q.get_device_txn, dev(1)).name == "NVR 1"
    assert call(db, q.get_device_txn, dev(2)).name == "Set by DeviceInfo"
    register(db, dev(3))
    call(db, q.store_catalogs_txn, [store(3, range(1, 2))])  # no own name: stays empty
    assert not call(db, q.get_device_txn, dev(3)).name


def test_a_deleted_device_is_reported_not_stored(db: Database) -> None:  # noqa: F811
    register(db, dev(1))
    results = call(db, q.store_catalogs_txn, [store(1, range(1, 3)), store(2, range(1, 3))])
    assert [r.found for r in results] == [True, False]
    assert channel_ids(db, 1) == [cam(1, 1), cam(1, 2)]


def test_a_long_reason_is_cut_and_done_clears_it(db: Database) -> None:  # noqa: F811
    register(db, dev(1))
    call(db, q.store_catalogs_txn, [store(1, range(1, 2), status="partial", total=3, error="x" * 2000)])
    assert call(db, q.get_device_txn, dev(1)).catalog_error == "x" * q.MAX_CATALOG_ERROR
    call(db, q.store_catalogs_txn, [store(1, range(1, 2), error="ignored")])
    assert call(db, q.get_device_txn, dev(1)).catalog_error is None


def test_a_device_twice_or_an_unstorable_status_is_refused(db: Database) -> None:  # noqa: F811
    register(db, dev(1))
    with pytest.raises(ValueError, match="twice"):
        call(db, q.store_catalogs_txn, [store(1, range(1, 2)), store(1, range(2, 3))])
    with pytest.raises(ValueError, match="done or partial"):
        call(db, q.store_catalogs_txn, [store(1, range(1, 2), status="timeout")])
    assert channel_ids(db, 1) == []


def test_a_large_batch_is_chunked(db: Database) -> None:  # noqa: F811
    """More devices than one IN (...) list holds, and more rows than one executemany chunk."""
    numbers = range(1, 1201)
    for n in numbers:
        register(db, dev(n))
    results = call(db, q.store_catalogs_txn, [store(n, range(1, 3)) for n in numbers])
    assert all(r.found and len(r.added) == 2 for r in results)
    assert {call(db, q.get_device_txn, dev(n)).channel_count for n in (1, 600, 1200)} == {2}


# --- CatalogStoreBatch ------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def written(self, device_id: str) -> Deferred[None]:
        self.asked.append(device_id)
        return succeed(None)


class _Devices:
    def __init__(self) -> None:
        self.writer = _Writer()


class _HeldDb:
    """``Database.run`` whose transactions wait until the test ends them (a busy database thread)."""

    def __init__(self, real: Database) -> None:
        self.real = real
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def run(self, desc: str, fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((fn, args, d))
        return d

    def end_one(self) -> None:
        fn, args, d = self.pending.pop(0)
        box: list[Any] = []
        self.real.run("held", fn, *args).addBoth(box.append)
        if isinstance(box[0], Failure):
            d.errback(box[0])
        else:
            d.callback(box[0])


def outcomes(ds: list[Deferred[Any]]) -> list[Any]:
    box: list[Any] = []
    for d in ds:
        d.addBoth(lambda r: box.append(r.value if isinstance(r, Failure) else r))
    return box


def test_stores_submitted_while_a_batch_runs_go_into_the_next_one(db: Database) -> None:  # noqa: F811
    for n in range(1, 6):
        register(db, dev(n))
    held = _HeldDb(db)
    devices = _Devices()
    batch = CatalogStoreBatch(held, devices, max_stores=3)  # type: ignore[arg-type]
    first = batch.submit(store(1, range(1, 3)))
    assert len(held.pending) == 1 and batch.busy  # an idle registry: written at once
    later = [batch.submit(store(n, range(1, 3))) for n in (2, 3, 4, 5)]
    assert len(held.pending) == 1 and batch.queued == 4
    held.end_one()
    assert [r.added for r in outcomes([first])] == [[cam(1, 1), cam(1, 2)]]
    # The next batch took three (max_stores) of the four waiting: one transaction.
    assert len(held.pending) == 1 and [s.device_id for s in held.pending[0][1][0]] == [dev(2), dev(3), dev(4)]
    held.end_one()
    held.end_one()
    assert [len(r.added) for r in outcomes(later)] == [2, 2, 2, 2]
    assert not batch.busy and batch.stats == {"batches": 3, "stores": 5, "batch_failures": 0}
    assert devices.writer.asked == [dev(n) for n in range(1, 6)]  # each waited for its lifecycle writes


def test_a_failing_batch_is_stored_device_by_device(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """One device's bad data fails the batch: the others are stored, that one not at all, and logged."""
    for n in range(1, 4):
        register(db, dev(n))
    real = q.store_catalogs_txn

    def breaks_on_dev2(s: Any, stores: list[q.CatalogStore]) -> list[q.CatalogStored]:
        results = real(s, stores)  # written, then rolled back with the transaction
        if any(st.device_id == dev(2) for st in stores):
            raise RuntimeError("bad channel data")
        return results

    monkeypatch.setattr(q, "store_catalogs_txn", breaks_on_dev2)
    held = _HeldDb(db)
    batch = CatalogStoreBatch(held, _Devices())  # type: ignore[arg-type]
    blocker = batch.submit(store(1, range(1, 2)))  # keeps the registry busy while the others queue
    ds = [batch.submit(store(n, range(1, 4))) for n in (2, 3)]
    held.end_one()
    outcomes([blocker])
    held.end_one()  # the batch of 2 and 3 fails ...
    assert len(held.pending) == 2  # ... and each is tried alone
    held.end_one()
    held.end_one()
    two, three = outcomes(ds)
    assert isinstance(two, RuntimeError) and str(two) == "bad channel data"
    assert isinstance(three, q.CatalogStored) and len(three.added) == 3
    assert channel_ids(db, 2) == [] and call(db, q.get_device_txn, dev(2)).catalog_status != "done"
    assert channel_ids(db, 3) == [cam(3, m) for m in range(1, 4)]
    # One batch failed; device 2's own failure reaches its caller (CatalogSync logs it).
    assert batch.stats["batch_failures"] == 1 and not batch.busy


def test_a_device_deleted_meanwhile_fails_its_store_alone(db: Database) -> None:  # noqa: F811
    register(db, dev(1))
    batch = CatalogStoreBatch(db, _Devices())  # type: ignore[arg-type]
    gone, kept = outcomes([batch.submit(store(7, range(1, 2))), batch.submit(store(1, range(1, 2)))])
    assert isinstance(gone, q.DeviceNotFound)
    assert isinstance(kept, q.CatalogStored)


def test_a_batch_whose_database_is_down_fails_every_store(db: Database) -> None:  # noqa: F811
    class Down:
        def run(self, desc: str, fn: Any, *args: Any) -> Deferred[Any]:
            return fail(RuntimeError("database thread pool is not running"))

    batch = CatalogStoreBatch(Down(), _Devices())  # type: ignore[arg-type]
    results = outcomes([batch.submit(store(1, range(1, 2)))])
    assert isinstance(results[0], RuntimeError) and not batch.busy
