"""The store's space on PostgreSQL, for ``info`` and ``prune`` (docs/adr/0006-retention.md).

PostgreSQL gives a deleted row's space back by itself, in two steps: (auto)vacuum marks it free
for new rows of the same table, and a vacuum also cuts empty pages off a table's end. That is
``reclaim``: a plain ``VACUUM`` of the tables a prune deletes from, which takes no lock a writer
waits for. Giving every free byte back to the filesystem takes ``VACUUM FULL``, which rewrites
each table under an exclusive lock: ``compact``, on a person's explicit request only, as on
SQLite. Free space inside the tables is not reported: reading it needs an extension
(pg_freespacemap, pgstattuple) a store cannot assume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from .connection import Connections
from .errors import translate
from .wire import Wire

#: The search index of the messages (schema.py): GIN over the client-built tsvector, the CJK row
#: index and, when pg_trgm is installed, its trigram index.
_SEARCH_INDEXES = ("messages_search", "messages_cjk", "messages_cjk_trgm")
#: Tables a prune deletes from (the rollup's rows go with their session).
_PRUNED = ("messages", "sessions", "activity", "responses", "purge_queue")


def split(conn: psycopg.Connection[Any] | Wire) -> dict[str, int]:
    """Bytes by what they hold: messages (table, TOAST and plain indexes), the search index,
    and every other table of the store's schema."""
    rows = conn.execute(
        "SELECT c.relname, c.relkind, pg_total_relation_size(c.oid), pg_relation_size(c.oid)"
        " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
        " AND c.relkind IN ('r', 'i')"
    ).fetchall()
    tables = {str(name): int(total) for name, kind, total, _ in rows if kind == "r"}
    search = sum(int(size) for name, kind, _, size in rows if name in _SEARCH_INDEXES)
    messages = tables.pop("messages", 0)
    return {
        "messages": messages - search,
        "search_index": search,
        "other": sum(tables.values()),
    }


def _total(conns: Connections) -> int:
    with conns.read() as conn:
        return sum(split(conn).values())


def _vacuum(conns: Connections, full: bool, progress: Callable[[int], None] | None) -> int:
    before = _total(conns)
    conn = conns.connect()  # autocommit: VACUUM runs outside any transaction block
    try:
        left = len(_PRUNED)
        for table in _PRUNED:
            name = (
                sql.Identifier(table)
                if conns.schema is None
                else sql.Identifier(conns.schema, table)
            )
            verb = sql.SQL("VACUUM (FULL, ANALYZE) {}" if full else "VACUUM (ANALYZE) {}")
            conn.execute(verb.format(name))
            left -= 1
            if progress is not None:
                progress(left)
    except psycopg.Error as e:
        raise translate(e, conns.where) from e
    finally:
        conn.close()
    return max(0, before - _total(conns))


def reclaim(conns: Connections, progress: Callable[[int], None] | None = None) -> int:
    """A plain ``VACUUM`` of the pruned tables: freed rows become reusable, empty end pages go
    back to the filesystem; writers go on meanwhile. Returns the bytes the tables shrank by."""
    return _vacuum(conns, False, progress)


def compact(conns: Connections) -> int:
    """``VACUUM FULL`` of the pruned tables: every free byte back, each table locked while it
    is rewritten (readers and writers wait). Returns the bytes given back."""
    return _vacuum(conns, True, None)


__all__ = ["compact", "reclaim", "split"]
