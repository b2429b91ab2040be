"""Engine construction and the ``Database.run`` bridge from Twisted to SQLAlchemy.

Theory of operation: SQLAlchemy is synchronous, the reactor must never block.
Every unit of database work is a plain function ``fn(session, *args)`` (by
convention named ``*_txn``, see :mod:`gbplatform.db.queries`) that knows
nothing of Twisted.  :meth:`Database.run` hands it to a :class:`Runner`, which
executes it off the reactor thread and returns a ``Deferred``.  ``run`` owns the
transaction scope: it opens a :class:`Session` (one Core connection in one
transaction), commits on success, rolls back on error and retries once when
PostgreSQL reports a serialization failure or a lost connection (so ``*_txn``
functions must be safe to run twice).

The session is the platform's own, not ``sqlalchemy.orm.Session``: the queries
are Core statements on the tables of :mod:`gbplatform.db.models`, and leaving
the ORM unimported saves 6 MiB of the idle process (issue 12; see the models'
docstring).

SQLite allows one writer at a time; a pool with more than one thread only
produces "database is locked" errors, so :meth:`ThreadPoolRunner.for_engine`
caps SQLite at one thread.  PostgreSQL may use several.

Reads beside the writer (issue 12, 50,000 devices): with one SQLite thread,
an API read waited behind every state batch (1-2 s each while 50,000 devices
register and onboard). In WAL mode a reader sees the last commit and neither
blocks nor is blocked by the writer (https://www.sqlite.org/wal.html §2.2),
so a file SQLite gets a second small pool (``readers_for_engine``) and
:meth:`Database.run` sends it the functions marked :func:`read_only`: plain
SELECTs that never write. Order is kept where it matters: a read started
after a write's Deferred fired sees that commit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, Never, ParamSpec, Protocol, TypeVar, TypeVarTuple, overload

from sqlalchemy import Connection, Engine, Executable, Result, ScalarResult, create_engine, event
from sqlalchemy.engine import URL, NestedTransaction, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlalchemy.sql.selectable import TypedReturnsRows
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

__all__ = [
    "READ_ONLY_TXNS",
    "Database",
    "DatabaseService",
    "InlineRunner",
    "Runner",
    "Session",
    "ThreadPoolRunner",
    "make_engine",
    "normalize_url",
    "read_only",
    "transaction",
]

log = Logger()

P = ParamSpec("P")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Statement parameters: one row's, or several rows' for an executemany.
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]

# SQLSTATEs worth one retry: the transaction lost a race, not a bug
# (PostgreSQL docs, Appendix A "Class 40 — Transaction Rollback").
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})

SQLITE_BUSY_TIMEOUT_MS = 5000
# Threads of the SQLite read pool: the API's reads overlap one another and the writer.
SQLITE_READERS = 2

# ``*_txn`` functions that only read: run on the read pool when there is one.
READ_ONLY_TXNS: set[Callable[..., Any]] = set()

F = TypeVar("F", bound=Callable[..., Any])


def read_only(fn: F) -> F:
    """Mark a ``*_txn`` function as read-only (SELECTs only) for :meth:`Database.run`'s read pool."""
    READ_ONLY_TXNS.add(fn)
    return fn


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pin the PostgreSQL driver to psycopg 3.

    ``postgresql://`` and ``postgres://`` (as Heroku-style configs spell it)
    would otherwise select psycopg2, which is not a dependency.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use sqlite or postgresql")


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Create an engine for a SQLite file/memory URL or a PostgreSQL URL.

    SQLite files get their parent directory created and WAL journalling (so
    readers do not block the writer), ``foreign_keys=ON`` (SQLite's default is
    off, which would break ``ON DELETE CASCADE``) and a busy timeout.  An
    in-memory SQLite database uses a ``StaticPool`` so every session sees the
    same database.  PostgreSQL pings connections before use so a restarted
    server costs one retry, not a burst of errors.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, echo=echo, pool_pre_ping=True)

    memory = _is_memory_sqlite(parsed)
    if not memory:
        assert parsed.database is not None
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        parsed,
        echo=echo,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **({"poolclass": StaticPool} if memory else {}),
    )

    def on_connect(dbapi_connection: sqlite3.Connection, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable across application crashes in WAL mode;
                # only an OS crash can lose the last commits.
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    event.listen(engine, "connect", on_connect)
    return engine


class Runner(Protocol):
    """Runs a blocking function away from the reactor thread."""

    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ThreadPoolRunner:
    """A :class:`Runner` on a dedicated ``twisted.python.threadpool.ThreadPool``.

    A dedicated pool (not the reactor's shared one) keeps DNS lookups and other
    ``deferToThread`` users from queueing behind database work. [Synapse]
    """

    def __init__(
        self,
        reactor: Any,
        min: int = 1,
        max: int = 4,
        *,
        name: str = "gbplatform-db",
        pool: ThreadPool | None = None,
    ) -> None:
        if min < 0 or max < 1 or min > max:
            raise ValueError(f"bad thread pool size min={min} max={max}")
        self._reactor = reactor
        self._pool = pool if pool is not None else ThreadPool(min, max, name)
        self._shutdown_trigger: Any = None

    @classmethod
    def for_engine(cls, reactor: Any, engine: Engine, max: int = 8) -> ThreadPoolRunner:
        """Size the pool for ``engine``: one thread for SQLite, ``max`` otherwise."""
        if engine.dialect.name == "sqlite":
            return cls(reactor, 1, 1)
        return cls(reactor, 1, max)

    @classmethod
    def readers_for_engine(cls, reactor: Any, engine: Engine) -> ThreadPoolRunner | None:
        """A read pool for a file SQLite in WAL mode; None where the main pool reads as well.

        PostgreSQL's pool already runs transactions side by side; an in-memory
        SQLite is one connection (``StaticPool``) that two threads must not share.
        """
        if engine.dialect.name != "sqlite" or _is_memory_sqlite(engine.url):
            return None
        return cls(reactor, 1, SQLITE_READERS, name="gbplatform-db-read")

    @property
    def running(self) -> bool:
        return bool(self._pool.started)

    def start(self) -> None:
        if self._pool.started:
            return
        self._pool.start()
        # Stop with the reactor even if no service owns us, or its threads
        # would keep the process alive after reactor.stop().
        self._shutdown_trigger = self._reactor.addSystemEventTrigger(
            "during", "shutdown", self._stop_on_shutdown
        )

    def _stop_on_shutdown(self) -> None:
        self._shutdown_trigger = None
        self.stop()

    def stop(self) -> None:
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        if self._pool.started:
            self._pool.stop()

    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        if not self._pool.started:
            return fail(RuntimeError("database thread pool is not running"))
        return deferToThreadPool(self._reactor, self._pool, fn, *args, **kwargs)


class InlineRunner:
    """A :class:`Runner` that runs the function at once on the calling thread.

    Only for tests (with a SQLite ``StaticPool`` engine) and offline tools:
    in the reactor it would block.
    """

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        try:
            result = fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - handed to the caller as a Failure
            return fail()
        return succeed(result)


def _retryable(error: DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate in _RETRY_SQLSTATES


class Session:
    """A transaction on one Core connection: the face the ``*_txn`` functions use.

    :meth:`Database.run` (through :func:`transaction`) checks a connection out
    of the engine's pool, begins a transaction, hands a ``Session`` over it to
    the function, then commits, or rolls back when the function raises.  It
    offers exactly what the query code calls: ``execute``, ``scalar`` and
    ``scalars`` as on ``Connection``, ``begin_nested`` for a SAVEPOINT, and
    ``connection()``/``get_bind()`` for driver-level statements and the
    dialect.  The names and result types are those of ``sqlalchemy.orm.Session``
    (``execute`` is typed ``Result``, as there), which this replaces without
    importing the ORM (issue 12: 6 MiB of the idle process).
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @overload
    def execute(self, statement: TypedReturnsRows[*Ts], params: Params | None = None) -> Result[*Ts]:
        ...

    @overload
    def execute(self, statement: Executable, params: Params | None = None) -> Result[*tuple[Any, ...]]: ...

    def execute(self, statement: Executable, params: Params | None = None) -> Result[*tuple[Any, ...]]:
        """Run ``statement``; a sequence of parameter mappings runs it once per mapping (executemany)."""
        return self._connection.execute(statement, params)

    @overload
    def scalar(self, statement: TypedReturnsRows[Never], params: Mapping[str, Any] | None = None) -> Any | None:
        ...

    @overload
    def scalar(self, statement: TypedReturnsRows[T], params: Mapping[str, Any] | None = None) -> T | None: ...

    @overload
    def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any: ...

    def scalar(self, statement: Executable, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        return self._connection.scalar(statement, params)

    @overload
    def scalars(self, statement: TypedReturnsRows[T], params: Params | None = None) -> ScalarResult[T]: ...

    @overload
    def scalars(self, statement: Executable, params: Params | None = None) -> ScalarResult[Any]: ...

    def scalars(self, statement: Executable, params: Params | None = None) -> ScalarResult[Any]:
        """The first column of every row."""
        return self._connection.scalars(statement, params)

    def begin_nested(self) -> NestedTransaction:
        """A SAVEPOINT; as a context manager it is released on success, rolled back to on error."""
        return self._connection.begin_nested()

    def connection(self) -> Connection:
        """The Core connection, for what only it offers (``exec_driver_sql``)."""
        return self._connection

    def get_bind(self) -> Connection:
        """The connection, as ``orm.Session.get_bind()`` gives it: callers read ``.dialect``."""
        return self._connection


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work on ``engine``: committed when the block ends, rolled back if it raises.

    What :meth:`Database.run` does around each ``*_txn`` function; also for
    tests and offline tools that call ``*_txn`` functions directly.
    """
    with engine.connect() as connection, connection.begin():
        yield Session(connection)


class Database:
    """Runs ``*_txn(session, ...)`` functions on a :class:`Runner`.

    Usage: ``device = await db.run("device_registered", device_registered_txn, did, ...)``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        pool: Runner,
        read_pool: Runner | None = None,
        slow_seconds: float = 1.0,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.engine = engine
        self.runner = pool
        self.read_runner = read_pool
        self._slow_seconds = slow_seconds
        self._timer = timer

    def run(
        self,
        desc: str,
        fn: Callable[Concatenate[Session, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """Run ``fn(session, *args, **kwargs)`` in one transaction off the reactor.

        The Deferred fires with ``fn``'s return value after the commit, or
        fails with its exception after the rollback. A :func:`read_only`
        function runs on the read pool when there is one.
        """
        runner = self.read_runner if self.read_runner is not None and fn in READ_ONLY_TXNS else self.runner
        return runner.run(self._interaction, desc, fn, args, kwargs)

    def _interaction(
        self,
        desc: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        attempt = 1
        while True:
            started = self._timer()
            try:
                with transaction(self.engine) as session:
                    result = fn(session, *args, **kwargs)
            except DBAPIError as e:
                if attempt == 1 and _retryable(e):
                    attempt += 1
                    log.warn(
                        "transaction {desc} failed ({error}); retrying once",
                        desc=desc,
                        error=str(e.orig),
                    )
                    continue
                raise
            finally:
                elapsed = self._timer() - started
                if elapsed >= self._slow_seconds:
                    log.warn(
                        "slow transaction {desc}: {elapsed_ms} ms",
                        desc=desc,
                        elapsed_ms=round(elapsed * 1000),
                    )
            return result

    def dispose(self) -> None:
        """Close pooled connections (after the runner has stopped)."""
        self.engine.dispose()


class DatabaseService(Service):
    """Ties a :class:`Database`'s runner and engine to the service lifecycle."""

    name = "database"

    def __init__(self, database: Database) -> None:
        self.database = database

    def startService(self) -> None:
        self.database.runner.start()
        if self.database.read_runner is not None:
            self.database.read_runner.start()
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.database.runner.stop()
        if self.database.read_runner is not None:
            self.database.read_runner.stop()
        self.database.dispose()
        return None
