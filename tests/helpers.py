from __future__ import annotations

from pathlib import Path
from typing import cast

import sessiondb
from sessiondb.core.store import SessionStore
from sessiondb.sqlite.backend import SQLiteBackend
from sessiondb.sqlite.engine import Engine


def engine_of(store: sessiondb.Store) -> Engine:
    """The SQLite engine under a store opened on a file (schema in place), for tests of the
    SQLite backend itself."""
    backend = cast(SessionStore, store).backend
    assert isinstance(backend, SQLiteBackend)
    return backend.engine


def store_with_pending_backfill(db: Path, text: str = "marker 東京都", rows: int = 250) -> None:
    """A store whose search index was added after its messages, its backfill not yet run (as a
    store created before the index was left by migration 2)."""
    from sessiondb.sqlite import fts, fts_v3

    with sessiondb.open(db) as store:
        engine = engine_of(store)
        with engine.write() as conn:
            fts.drop(conn)
        for i in range(rows):
            store.append(f"s{i % 3}", "user", f"row {i} {text}")
        with engine.write() as conn:
            fts.create(conn)
            fts_v3.upgrade(conn)
            assert fts.backfill_pending(conn)
