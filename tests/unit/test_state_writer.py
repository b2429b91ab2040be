"""``StateWriter``: per device, lifecycle writes commit in the order they happened.

A registry on PostgreSQL runs transactions on several pool threads, so two
batches handed to it at once may commit in either order. ``ManualRunner``
plays such a pool deterministically: it holds every transaction it is given
until the test runs them, in the order the test picks, against a real
registry (SQLite, and PostgreSQL with the ``postgres`` mark).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from gbplatform.core.clock import FakeClock
from gbplatform.db import queries as q
from gbplatform.db.database import Database, InlineRunner
from gbplatform.devices.registrar import StateWriter
from tests.unit.platform_harness import has_fired
from tests.unit.test_db import db, pg_engine, pg_url  # noqa: F401 - fixtures

DEV = "34020000001320000001"
T0 = dt.datetime(2024, 5, 1, 8, 0, 0, tzinfo=dt.UTC)


class ManualRunner:
    """A ``Runner`` that runs nothing until told: a thread pool whose order the test chooses."""

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((lambda: fn(*args, **kwargs), (), d))
        return d

    def run_one(self, index: int = 0) -> None:
        call, _, d = self.pending.pop(index)
        try:
            result = call()
        except Exception as e:  # noqa: BLE001 - handed to the Deferred, as a pool does
            d.errback(e)
        else:
            d.callback(result)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def registration(t: float) -> q.Registration:
    return q.Registration(DEV, "192.0.2.10", 5060, "UDP", None, "IPC", 3600, at(t))


@pytest.fixture
def manual(db: Database) -> Iterator[tuple[StateWriter, ManualRunner, Database]]:  # noqa: F811 - the fixture
    runner = ManualRunner()
    writer = StateWriter(Database(db.engine, pool=runner), FakeClock())
    yield writer, runner, db


def test_a_flush_does_not_start_a_batch_while_one_runs(
    manual: tuple[StateWriter, ManualRunner, Database],
) -> None:
    writer, runner, registry = manual
    writer.add("registered", registration(0))
    first = writer.flush()
    writer.add("offline", DEV, at(1))
    second = writer.flush()
    assert len(runner.pending) == 1  # the second batch waits for the first
    runner.run_one()
    assert has_fired(first) and not has_fired(second)
    assert len(runner.pending) == 1
    runner.run_one()
    assert has_fired(second)
    assert not _result(registry.run("get", q.get_device_txn, DEV)).online


def test_registered_never_commits_after_a_later_offline(
    manual: tuple[StateWriter, ManualRunner, Database],
) -> None:
    """A pool that runs the newest transaction first (as 4 threads may) must not
    leave the device online after it went offline."""
    writer, runner, registry = manual
    writer.add("registered", registration(0))
    writer.flush()
    writer.add("offline", DEV, at(1))
    writer.flush()
    while runner.pending:
        runner.run_one(len(runner.pending) - 1)
    assert not _result(registry.run("get", q.get_device_txn, DEV)).online


def test_flushes_while_a_batch_runs_are_written_together_next(
    manual: tuple[StateWriter, ManualRunner, Database],
) -> None:
    writer, runner, _ = manual
    writer.add("registered", registration(0))
    writer.flush()
    waits = []
    for n in range(5):
        writer.add("keepalive", DEV, at(n + 1), "192.0.2.10", 5060, "UDP")
        waits.append(writer.flush())
    runner.run_one()
    assert len(runner.pending) == 1  # one batch for the five flushes
    runner.run_one()
    assert all(has_fired(d) for d in waits)


def test_a_flush_with_nothing_pending_waits_for_the_running_batch(
    manual: tuple[StateWriter, ManualRunner, Database],
) -> None:
    """Onboarding flushes to be sure the device's row exists: it must not go on
    while the batch holding its registration is still running."""
    writer, runner, _ = manual
    writer.add("registered", registration(0))
    writer.flush()
    barrier = writer.flush()
    assert not has_fired(barrier)
    runner.run_one()
    assert has_fired(barrier) and not runner.pending


def test_a_failed_batch_is_logged_and_the_next_one_still_runs(
    manual: tuple[StateWriter, ManualRunner, Database],
) -> None:
    writer, runner, registry = manual
    writer.add("registered", registration(0))
    first = writer.flush()
    writer.add("offline", DEV, at(1))
    second = writer.flush()
    _, _, d = runner.pending.pop(0)
    d.errback(RuntimeError("connection lost"))
    assert has_fired(first)  # fired, not failed: the failure is logged
    assert len(runner.pending) == 1
    runner.run_one()
    assert has_fired(second)


def test_flush_without_anything_to_write_fires_at_once() -> None:
    from gbplatform.db.database import make_engine
    from gbplatform.db.models import metadata

    engine = make_engine("sqlite://")
    metadata.create_all(engine)
    writer = StateWriter(Database(engine, pool=InlineRunner()), FakeClock())
    d = writer.flush()
    assert d is not None and has_fired(d)


def _result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box
    return box[0]


# --- catalog writes (issue 8 item 22: "catalog progress can commit after the final store") ---


def test_catalog_progress_never_commits_after_the_final_store() -> None:
    from sip import manscdp
    from tests.unit.platform_harness import Harness

    h = Harness()
    try:
        dev = h.registered_device()
        h.advance(1)  # the registration batch is written
        runner = ManualRunner()
        h.platform.catalog.db = Database(h.engine, pool=runner)
        sn = dev.last_query("Catalog").sn
        items = [manscdp.CatalogItem(device_id=f"340200000013100000{n:02d}", name=f"cam{n}", parent_id=DEV)
                 for n in range(1, 4)]
        dev.message(manscdp.encode_catalog_response(sn, DEV, 3, items[:1]))  # progress: running 1/3
        dev.message(manscdp.encode_catalog_response(sn, DEV, 3, items[1:]))  # done: the final store
        while runner.pending:
            runner.run_one(len(runner.pending) - 1)  # newest first, as a pool of threads may
        record = h.record()
        assert (record.catalog_status, record.catalog_received, record.channel_count) == ("done", 3, 3)
    finally:
        h.close()


def test_a_change_for_a_deleted_device_does_not_lose_the_batch(
    manual: tuple[StateWriter, ManualRunner, Database],
) -> None:
    """A DeviceInfo answer stored after its device was deleted through the API
    must not fail the batch that carries other devices' registrations."""
    writer, runner, registry = manual
    writer.add("device_info", "34020000001320000099", {"name": "gone", "at": at(0)})
    writer.add("basic_param", "34020000001320000099", 30, 3, at(0))
    writer.add("registered", registration(0))
    writer.flush()
    runner.run_one()
    record = _result(registry.run("get", q.get_device_txn, DEV))
    assert record is not None and record.online


def test_written_waits_only_for_a_device_with_changes_pending(
    manual: tuple[StateWriter, ManualRunner, Database],
) -> None:
    """Issue 12: onboarding and catalog stores wait for the device's row with ``written``; a device
    whose changes are all committed must not cost a batch of its own (50,000 devices onboarding)."""
    writer, runner, registry = manual
    other = "34020000001320000002"
    assert has_fired(writer.written(DEV)) and runner.pending == []  # nothing pending: no batch
    writer.add("registered", registration(0))
    assert has_fired(writer.written(other)) and runner.pending == []  # another device's change: no wait
    waiting = writer.written(DEV)
    assert not has_fired(waiting) and len(runner.pending) == 1  # its registration: flushed now
    writer.add("keepalive", other, at(1), "192.0.2.11", 5060, "UDP")  # queued for the next batch
    also = writer.written(DEV)  # still in the running batch: waits for it (and the next)
    runner.run_one()
    assert has_fired(waiting)
    assert registry.run("get", q.get_device_txn, DEV).result is not None  # type: ignore[attr-defined]
    runner.run_one()  # the keepalive batch the second flush asked for
    assert has_fired(also) and runner.pending == []
    assert has_fired(writer.written(DEV)) and has_fired(writer.written(other)) and runner.pending == []


def test_written_is_released_by_a_failed_batch(manual: tuple[StateWriter, ManualRunner, Database]) -> None:
    """A failed batch is logged, not retried: the devices in it are no longer waited for."""
    writer, runner, _ = manual
    writer.add("offline", DEV, at(1))
    waiting = writer.written(DEV)
    _, args, d = runner.pending[0]

    def broken() -> None:
        raise RuntimeError("database gone")

    runner.pending[0] = (broken, args, d)  # the batch's transaction fails
    runner.run_one()
    assert has_fired(waiting)
    assert has_fired(writer.written(DEV)) and runner.pending == []
