"""SQLite: a ``reading`` transaction reads its snapshot while a writer holds the write lock, without waiting."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from shared.db.engine import make_engine, reading


def test_a_reader_does_not_queue_behind_a_writer(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'lock.db'}", pool_size=4)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE counter (value INTEGER)"))
        connection.execute(text("INSERT INTO counter VALUES (1)"))
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with engine.begin() as connection:
            connection.execute(text("UPDATE counter SET value = 2"))
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    try:
        # a reader sees the last committed value; had it asked for the write lock, it would wait for the writer,
        # which waits for this read: the busy timeout would end it with 'database is locked'
        with reading(engine).connect() as connection, connection.begin():
            assert connection.execute(text("SELECT value FROM counter")).scalar() == 1
    finally:
        release.set()
        thread.join(10)
        engine.dispose()
