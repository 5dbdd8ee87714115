"""The GIN indexes keep no pending list (``fastupdate = off``): on a new store, and on a store
made before the rule, which migration 2 turns off and whose pending entries migration 3 moves
into the index (docs/postgres.md, "GIN maintenance")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg

import sessiondb
from sessiondb.postgres import schema
from tests import pg

CJK = "東京都に住んでいるのはとてもしいです"


@contextlib.contextmanager
def _raw(name: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection into schema *name* (opening a Store would migrate it)."""
    with psycopg.connect(pg.BASE_URL, autocommit=True) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (name,))
        yield conn


def _options(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    return {
        name: conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (name,)
        ).fetchone()[0]  # type: ignore[index]
        for name in schema.GIN_INDEXES
    }


def _pending_pages_cleaned(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT gin_clean_pending_list(to_regclass(%s))", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _old_store(url: str) -> None:
    """A store as migration 1 left it before the rule: both GIN indexes with PostgreSQL's
    default (``fastupdate = on``), entries waiting in their pending lists, at version 1."""
    with sessiondb.open(url) as store:
        with store.backend.connections.write() as conn:
            for name in schema.GIN_INDEXES:
                conn.execute(f"ALTER INDEX {name} SET (fastupdate = on)")  # names from schema.py
            conn.execute("DELETE FROM sessiondb_schema WHERE version >= 2")
        for i in range(20):
            store.append("old", "user", f"{CJK} word{i} shared")


def test_a_new_store_has_no_pending_lists() -> None:
    name = pg.new_schema()
    sessiondb.open(pg.url_for(name)).close()
    with _raw(name) as conn:
        assert _options(conn) == {n: ["fastupdate=off"] for n in schema.GIN_INDEXES}


def test_migrations_turn_the_pending_lists_off_and_empties_them() -> None:
    control, name = pg.new_schema(), pg.new_schema()
    _old_store(pg.url_for(control))
    _old_store(pg.url_for(name))
    with _raw(control) as conn:
        assert _options(conn) == {n: ["fastupdate=on"] for n in schema.GIN_INDEXES}
        # The same appends left entries pending in the old store's indexes...
        assert all(_pending_pages_cleaned(conn, n) > 0 for n in schema.GIN_INDEXES)
    with sessiondb.open(pg.url_for(name)) as store:  # opening migrates
        with _raw(name) as conn:
            assert schema.current_version(conn) == schema.LATEST == 4
            assert _options(conn) == {n: ["fastupdate=off"] for n in schema.GIN_INDEXES}
            # ... and the migrations moved them into the index: nothing is left to flush.
            assert all(_pending_pages_cleaned(conn, n) == 0 for n in schema.GIN_INDEXES)
        assert [h.message.seq for h in store.search("word7")] == [8]
        assert len(store.search(CJK[:4], limit=50)) == 20
        store.append("old", "user", f"{CJK} after")  # straight into the index
        with _raw(name) as conn:
            assert _pending_pages_cleaned(conn, "messages_cjk_trgm") == 0
