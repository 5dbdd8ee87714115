from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import apsw

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
    import pytest

    from sessiondb.sqlite import deferred, fts, fts_v3, selfindex

    with sessiondb.open(db) as store, pytest.MonkeyPatch.context() as patch:
        engine = engine_of(store)
        with engine.write() as conn:
            fts.drop(conn)
        legacy_appends(patch)  # no index to write to (sqlite/deferred.py)
        for i in range(rows):
            store.append(f"s{i % 3}", "user", f"row {i} {text}")
        with engine.write() as conn:
            fts.create(conn)
            fts_v3.upgrade(conn)
            selfindex.install_triggers(conn)
            deferred.install(conn)
            assert fts.backfill_pending(conn)


def downgrade_to_v6(conn: apsw.Connection) -> None:
    """Make a file as schema version 6 left it (before the store indexed its batches itself):
    the insert triggers of migrations 2, 3 and 5, no claim column."""
    from sessiondb.sqlite import fts, fts_v3

    def trigger(statements: list[str], name: str) -> str:
        [found] = [s for s in statements if s.startswith(f"CREATE TRIGGER {name} ")]
        return found

    from sessiondb.sqlite import rollup

    conn.execute("DROP TRIGGER messages_search_ai; DROP TRIGGER IF EXISTS messages_search_ai_tri")
    # migration 8 (deferred.py): its cursor and triggers; the file is indexed to the top first
    from sessiondb.sqlite import deferred

    deferred.finish(conn)
    conn.execute(f"DROP TABLE {deferred.CURSOR}; DROP TRIGGER messages_search_ai_claimed")
    old_indexed = fts.INDEXED.format(row="old")
    for name, sql in (
        ("messages_search_ad", fts.word_delete_trigger(old_indexed)),
        ("messages_search_au", fts.word_update_trigger(old_indexed)),
        ("messages_search_au_tri", fts_v3.trigram_update_trigger(old_indexed)),
    ):
        conn.execute(f"DROP TRIGGER {name}")
        conn.execute(sql)
    conn.execute("DROP TRIGGER messages_rollup_ai")
    conn.execute(rollup.insert_trigger())
    conn.execute(trigger(fts.schema_statements(), "messages_search_ai"))
    conn.execute(trigger(fts_v3._statements(), "messages_search_ai_tri"))
    conn.execute("ALTER TABLE sessions DROP COLUMN indexing")
    conn.execute("DELETE FROM schema_version WHERE version >= 7")


def legacy_appends(monkeypatch: Any) -> None:
    """Appends as sessiondb made them before migration 7 — rows only, the insert triggers index
    each — for a test that keeps a store at an older schema (no claim column, no deferred
    index: sqlite/deferred.py). ``monkeypatch.undo()`` ends it."""
    from sessiondb.sqlite import insert

    def insert_batches(conn: apsw.Connection, batches: Any, now: float) -> list[Any]:
        rows: list[Any] = []
        out = []
        for ref, sid, items in batches:
            last = insert._allocate(conn, ref, items, now, False)  # no claim
            out.append(insert._rows(sid, ref, items, last, now, rows))
        conn.executemany(insert._INSERT_MESSAGE, rows)
        return out

    monkeypatch.setattr(insert, "insert_batches", insert_batches)
