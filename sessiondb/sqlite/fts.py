"""Full-text index of message content: DDL, triggers, merge settings and the batched backfill.

Two FTS5 *external-content* tables read their text from ``messages`` (no second copy of content):

* ``messages_fts`` — word index, ``unicode61 remove_diacritics 2``, ``detail=full`` (phrases,
  NEAR and bm25 need positions). No extra ``tokenchars``: making ``.``/``-``/``/`` part of words
  would turn ``end.`` into a token and hide ``bar`` inside ``foo.bar``; punctuated words are
  served by the trigram index instead.
* ``messages_tri`` — trigram index, ``detail=none columnsize=0``: it only finds candidate rows
  for literal words (``foo.bar``, ``C++``, CJK) through ``LIKE``, which SQLite then re-checks
  against the real content, so positions and lengths would be wasted bytes (docs/search.md has
  the measured sizes: detail=full trigram alone is larger than the content).

Triggers keep both in sync inside the writer's own transaction. Rows that existed before the
index (a store created before search) are indexed by :func:`backfill` in short batches; until it
finishes, ``search_backfill`` holds the cursor and the delete/update triggers skip rows that were
never indexed (an external-content ``delete`` of an unindexed row would corrupt the index).
"""

from __future__ import annotations

from typing import Any

WORD_TABLE = "messages_fts"
TRIGRAM_TABLE = "messages_tri"

# Merge policy (see docs/search.md for the measurements): every append commits a tiny segment.
# automerge=4 lets each commit do a bounded slice of incremental merge work; crisismerge is raised
# so that a level reaching 16 segments does not trigger one large synchronous merge in some
# unlucky writer's transaction; usermerge bounds the explicit 'merge' steps of `optimize_step`.
MERGE_SETTINGS: tuple[tuple[str, int], ...] = (
    ("automerge", 4),
    ("crisismerge", 64),
    ("usermerge", 4),
)

_INDEXED = (
    "NOT EXISTS (SELECT 1 FROM search_backfill b"
    " WHERE {row}.id > b.done_id AND {row}.id <= b.end_id)"
)


def schema_statements() -> list[str]:
    """Statements creating the index, its triggers and the backfill cursor (one transaction)."""
    old_indexed = _INDEXED.format(row="old")
    new_indexed = _INDEXED.format(row="new")
    return [
        f"""CREATE VIRTUAL TABLE {WORD_TABLE} USING fts5(
            content, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2')""",
        f"""CREATE VIRTUAL TABLE {TRIGRAM_TABLE} USING fts5(
            content, content='messages', content_rowid='id',
            tokenize='trigram', detail=none, columnsize=0)""",
        # One row while a backfill is pending: rows (done_id, end_id] are not indexed yet.
        """CREATE TABLE search_backfill(
            id INTEGER PRIMARY KEY CHECK (id = 1),
            done_id INTEGER NOT NULL,
            end_id INTEGER NOT NULL)""",
        """INSERT INTO search_backfill(id, done_id, end_id)
            SELECT 1, 0, max(id) FROM messages HAVING max(id) IS NOT NULL""",
        # A new row inside the pending range (an id reused after a delete) is left to the
        # backfill, so that no row is ever indexed twice.
        f"""CREATE TRIGGER messages_search_ai AFTER INSERT ON messages WHEN {new_indexed} BEGIN
            INSERT INTO {WORD_TABLE}(rowid, content) VALUES (new.id, new.content);
            INSERT INTO {TRIGRAM_TABLE}(rowid, content) VALUES (new.id, new.content);
        END""",
        f"""CREATE TRIGGER messages_search_ad AFTER DELETE ON messages WHEN {old_indexed} BEGIN
            INSERT INTO {WORD_TABLE}({WORD_TABLE}, rowid, content)
                VALUES ('delete', old.id, old.content);
            INSERT INTO {TRIGRAM_TABLE}({TRIGRAM_TABLE}, rowid, content)
                VALUES ('delete', old.id, old.content);
        END""",
        # Update of an indexed row: remove the old text, add the new one.
        f"""CREATE TRIGGER messages_search_au AFTER UPDATE OF content ON messages
            WHEN {old_indexed} BEGIN
            INSERT INTO {WORD_TABLE}({WORD_TABLE}, rowid, content)
                VALUES ('delete', old.id, old.content);
            INSERT INTO {TRIGRAM_TABLE}({TRIGRAM_TABLE}, rowid, content)
                VALUES ('delete', old.id, old.content);
            INSERT INTO {WORD_TABLE}(rowid, content) VALUES (new.id, new.content);
            INSERT INTO {TRIGRAM_TABLE}(rowid, content) VALUES (new.id, new.content);
        END""",
        *(
            f"INSERT INTO {table}({table}, rank) VALUES ('{name}', {value})"
            for table in (WORD_TABLE, TRIGRAM_TABLE)
            for name, value in MERGE_SETTINGS
        ),
    ]


def create(conn: Any) -> None:
    """Create the index on ``conn`` (the caller holds the write transaction: the migration's)."""
    for statement in schema_statements():
        conn.execute(statement)


def backfill_pending(conn: Any) -> bool:
    """True while rows created before the index still wait to be indexed."""
    return conn.execute("SELECT 1 FROM search_backfill").fetchone() is not None


def backfill_batch(conn: Any, batch: int = 500) -> bool:
    """Index the next ``batch`` unindexed rows; return True when the backfill is complete.

    Runs inside the caller's (short) write transaction. The cursor advances in the same
    transaction, so a crash between batches resumes exactly where it stopped.
    """
    row = conn.execute("SELECT done_id, end_id FROM search_backfill").fetchone()
    if row is None:
        return True
    done_id, end_id = row
    last = conn.execute(
        "SELECT max(id) FROM"
        " (SELECT id FROM messages WHERE id > ? AND id <= ? ORDER BY id LIMIT ?)",
        (done_id, end_id, batch),
    ).fetchone()[0]
    if last is None:
        conn.execute("DELETE FROM search_backfill")
        return True
    for table in (WORD_TABLE, TRIGRAM_TABLE):
        conn.execute(
            f"INSERT INTO {table}(rowid, content) "
            "SELECT id, content FROM messages WHERE id > ? AND id <= ?",
            (done_id, last),
        )
    if last >= end_id:
        conn.execute("DELETE FROM search_backfill")
        return True
    conn.execute("UPDATE search_backfill SET done_id = ?", (last,))
    return False


def backfill_step(engine: Any, batch: int = 500) -> bool:
    """One batch in its own write transaction; True while more work remains (schema hook)."""
    with engine.read() as conn:
        if not backfill_pending(conn):
            return False
    with engine.write() as conn:
        return not backfill_batch(conn, batch)


def backfill(engine: Any, *, batch: int = 500) -> int:
    """Run the pending backfill to the end, one short write transaction per batch.

    A live agent's append waits at most one batch (a few ms) behind it. Returns batches run.
    """
    batches = 0
    while True:
        with engine.write() as conn:
            done = backfill_batch(conn, batch)
        batches += 1
        if done:
            return batches


def merge_step(conn: Any, pages: int = 200) -> None:
    """One bounded slice of background segment merging (call in a short write transaction)."""
    for table in (WORD_TABLE, TRIGRAM_TABLE):
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('merge', ?)", (pages,))


def index_bytes(conn: Any) -> dict[str, int]:
    """Bytes used by each index's shadow tables and by the message content (dbstat)."""
    out: dict[str, int] = {}
    for table in (WORD_TABLE, TRIGRAM_TABLE):
        out[table] = conn.execute(
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE ?", (table + "%",)
        ).fetchone()[0]
    out["content"] = conn.execute(
        "SELECT coalesce(sum(length(CAST(content AS BLOB))), 0) FROM messages"
    ).fetchone()[0]
    return out


__all__ = [
    "MERGE_SETTINGS",
    "TRIGRAM_TABLE",
    "WORD_TABLE",
    "backfill",
    "backfill_batch",
    "backfill_pending",
    "backfill_step",
    "create",
    "index_bytes",
    "merge_step",
    "schema_statements",
]
