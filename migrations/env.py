"""Alembic environment for the gbplatform registry.

The URL comes from, in order: ``config.attributes["url"]`` (set by
:mod:`gbplatform.db.migrate`), ``-x url=...`` on the command line, or
``sqlalchemy.url`` in ``alembic.ini``.  Engines are built by
:func:`gbplatform.db.database.make_engine`, so ``postgresql://`` selects
psycopg 3 just as at runtime.

SQLite cannot ALTER most things, so every migration runs in batch mode
(``render_as_batch=True``: copy into a new table and swap).  Foreign keys are
switched off while migrating: a batch copy drops and recreates ``devices``,
and with ``foreign_keys=ON`` that drop would cascade into ``channels``
(SQLite docs, "ALTER TABLE", §7 "Making Other Kinds Of Table Schema Changes").
Integrity is checked with ``PRAGMA foreign_key_check`` afterwards instead.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from gbplatform.db.database import make_engine, normalize_url
from gbplatform.db.models import UtcDateTime, metadata

config = context.config
target_metadata = metadata

if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    return str(url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations must not import application types: a later change to
    # UtcDateTime would silently change old revisions.
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(
        url=normalize_url(_url()).render_as_string(hide_password=False),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Outside any transaction, or SQLite ignores the pragma.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if violations:
                raise RuntimeError(f"foreign key violations after migration: {violations[:10]}")
    finally:
        if sqlite:
            connection.rollback()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
