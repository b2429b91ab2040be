"""The platform's thread pools: one bounded, named pool per kind of blocking work (issue 8, item 23)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from gbplatform.core.workers import POOL_SIZES, Workers, WorkersService
from gbplatform.db.database import InlineRunner


def test_each_kind_has_its_own_bounded_named_pool() -> None:
    workers = Workers.threaded(MemoryReactorClock(), {"remux": 3})
    pools: dict[str, Any] = {kind: workers._runners[kind]._pool for kind in POOL_SIZES}  # type: ignore[attr-defined]
    assert {kind: pool.name for kind, pool in pools.items()} == {kind: f"gbplatform-{kind}" for kind in POOL_SIZES}
    assert {kind: pool.max for kind, pool in pools.items()} == {**POOL_SIZES, "remux": 3}
    assert len({id(pool) for pool in pools.values()}) == len(POOL_SIZES)
    service = WorkersService(workers)
    service.startService()
    assert all(pool.started for pool in pools.values())
    cancelled: list[str] = []
    workers.on_stop(lambda: cancelled.append("download"))
    forget = workers.on_stop(lambda: cancelled.append("finished download"))
    forget()
    service.stopService()
    # Long work is told to stop first; then no pool is left running (nor keeps the process alive).
    assert cancelled == ["download"]
    assert not any(pool.started for pool in pools.values())


def test_every_kind_needs_a_pool() -> None:
    inline = InlineRunner()
    with pytest.raises(ValueError, match="no pool for remux"):
        Workers({kind: inline for kind in POOL_SIZES if kind != "remux"})
    workers = Workers({kind: inline for kind in POOL_SIZES})
    assert workers.run("snapshot", lambda x: x * 2, 21).result == 42
