"""Bounded, named thread pools for the platform's blocking work, one per kind.

Theory of operation
-------------------
Everything that blocks (decoding a keyframe to JPEG, reading recorded
bytes from a disk or a bucket, deleting files, remuxing a download) runs in
a thread, never on the reactor. Run on the reactor's one default pool (10
threads) these kinds starve each other: ten downloads, or a NAS that hangs
the retention's deletes, and no snapshot is taken any more (issue 8,
item 23). So each kind has its own pool, bounded, and named after it
(``PoolThread-gbplatform-snapshot-0``… in a thread dump):

=============  ====  =====================================================
kind           size  work
=============  ====  =====================================================
``snapshot``      2  keyframe → JPEG (``media.snapshot``)
``vod``           4  recorded bytes for HLS segments and RTSP playback
``remux``         2  MP4 downloads, stream copy into a spool file
``retention``     1  deleting recordings, disk usage
``storage``       2  crash recovery scans, S3 bucket checks
=============  ====  =====================================================

A pool's work queues when all its threads are busy; the other pools do not
notice. A download holds a ``remux`` thread only while it muxes, at disk
speed: its client reads from a spool file (``gbplatform.recording.http``),
so a slow client costs disk space, not a thread.

The database has its pool of its own (``gbplatform.db.database``), and the
recording writer and S3 uploader their own threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gbplatform.db.database import Runner, ThreadPoolRunner

log = Logger()

__all__ = ["POOL_SIZES", "Workers", "WorkersService"]

POOL_SIZES: dict[str, int] = {"snapshot": 2, "vod": 4, "remux": 2, "retention": 1, "storage": 2}


class Workers:
    """One ``Runner`` per kind of blocking work (see the module docstring)."""

    def __init__(self, runners: Mapping[str, Runner]) -> None:
        missing = set(POOL_SIZES) - set(runners)
        if missing:
            raise ValueError(f"no pool for {', '.join(sorted(missing))}")
        self._runners = dict(runners)
        self._on_stop: list[Callable[[], None]] = []

    @classmethod
    def threaded(cls, reactor: Any, sizes: Mapping[str, int] | None = None) -> Workers:
        """A ``ThreadPool`` per kind, ``gbplatform-<kind>``, of ``sizes[kind]`` threads at most."""
        sizes = {**POOL_SIZES, **(sizes or {})}
        return cls({kind: ThreadPoolRunner(reactor, 0, n, name=f"gbplatform-{kind}") for kind, n in sizes.items()})

    def run(self, kind: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Deferred[Any]:
        """``fn(*args, **kwargs)`` on the ``kind`` pool; its result, or its failure, on the reactor."""
        return self._runners[kind].run(fn, *args, **kwargs)

    def runner(self, kind: str) -> Callable[..., Deferred[Any]]:
        """``run`` bound to ``kind``: the ``run_in_thread`` a component is built with."""
        return self._runners[kind].run

    def on_stop(self, cancel: Callable[[], None]) -> Callable[[], None]:
        """Call ``cancel`` before the pools stop (long work ends early); returns the undo."""
        self._on_stop.append(cancel)

        def undo() -> None:
            if cancel in self._on_stop:
                self._on_stop.remove(cancel)

        return undo

    def start(self) -> None:
        for runner in self._runners.values():
            runner.start()

    def stop(self) -> None:
        """Cancel long work, then stop every pool (joins its threads: their current work ends first)."""
        for cancel in list(self._on_stop):
            try:
                cancel()
            except Exception:  # noqa: BLE001 - one failing hook must not keep the pools running
                log.failure("cancelling work before the pools stop failed")
        self._on_stop.clear()
        for runner in self._runners.values():
            runner.stop()


class WorkersService(Service):
    """Starts the pools with the platform and stops them with it.

    The recording manager's own shutdown (closing the last segments) does not
    run on these pools, so stopping them at once loses no recording.
    """

    name = "workers"

    def __init__(self, workers: Workers) -> None:
        self.workers = workers

    def startService(self) -> None:
        self.workers.start()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.workers.stop()
