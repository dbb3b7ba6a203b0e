"""Engines for SQLite (WAL, busy timeout, immediate write locks) and PostgreSQL, from one URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000


#: the execution option that marks a transaction as read-only (see ``reading``)
_READ_ONLY = "imagejobs_read_only"


def reading(engine: Engine) -> Engine:
    """``engine`` for transactions that only read: on SQLite they take no write lock (elsewhere: no change)."""
    return engine.execution_options(**{_READ_ONLY: True})


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create the engine for ``url``; call once per process (after any fork)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, pool_size=pool_size)
    if parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False))
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_engine(url: str, database: str | None, *, pool_size: int) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
        # as many connections as threads may want one at once (a memory database keeps SQLAlchemy's own pool)
        **({} if database in (None, "", ":memory:") else {"pool_size": pool_size, "max_overflow": pool_size}),
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then writes cannot wait
        # for the lock (SQLite fails it with "database is locked" at once), an immediate one can.
        # A reader (``reading``) takes no lock at all: in WAL mode it reads a snapshot and never waits for,
        # nor holds up, a writer (https://www.sqlite.org/wal.html#concurrency).
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

    return engine
