"""Migration 3: two-character CJK words get an index (the trigram index ends each text with U+001F).

A trigram index cannot answer a two-character query: ``東京`` is no trigram. But every occurrence
of ``東京`` starts a trigram ``東京?`` — unless the text ends right after it. Migration 3 indexes
each CJK-like message as ``content || char(31)`` (:data:`SENTINEL`), so that every occurrence
starts one; a two-character word then becomes the OR of the trigrams that begin with it, read
from the index's vocabulary (``messages_tri_vocab``, an fts5vocab table). Before, such words were
found by scanning the CJK messages newest first: 18 ms at the 90th percentile with 50 000 CJK
messages among 1 000 000, and a full scan — seconds — for a rare word in a store written in
Chinese.

The migration replaces the trigram table, its view and its triggers in one short transaction and
moves the ids of the already indexed messages to ``search_tri_pending``; :func:`backfill_step` then
re-indexes them 100 per write transaction (docs/design.md rule 5). Membership of
``messages_tri_rows`` keeps meaning "indexed", so delete and update triggers stay exact while the
backfill runs; a pending row that is edited or deleted simply leaves the pending list (an edit
re-indexes it). Until the backfill ends, CJK words in pending messages are not found.
``search_tri_pending`` stays (empty) afterwards: the triggers name it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import apsw

from . import fts

if TYPE_CHECKING:
    from .engine import Engine

SENTINEL = "char(31)"  # SQL for U+001F, appended to every text in the trigram index
PENDING = "search_tri_pending"
VOCAB = "messages_tri_vocab"
TRIGGERS = ("messages_search_ai_tri", "messages_search_ad_tri", "messages_search_au_tri")


def trigram_update_trigger(old_indexed: str) -> str:
    """The trigram side's AFTER UPDATE OF content trigger; fires when ``old_indexed`` holds."""
    t, rows = fts.TRIGRAM_TABLE, fts.TRIGRAM_ROWS
    cjk = fts.trigram_condition
    in_tri = f"EXISTS (SELECT 1 FROM {rows} WHERE id = old.id)"
    return f"""CREATE TRIGGER messages_search_au_tri AFTER UPDATE OF content ON messages
            WHEN {old_indexed} BEGIN
            INSERT INTO {t}({t}, rowid, content)
                SELECT 'delete', old.id, old.content || {SENTINEL} WHERE {in_tri};
            DELETE FROM {rows} WHERE id = old.id;
            DELETE FROM {PENDING} WHERE id = old.id;
            INSERT INTO {rows}(id) SELECT new.id WHERE {cjk("new.content")};
            INSERT INTO {t}(rowid, content)
                SELECT new.id, new.content || {SENTINEL} WHERE {cjk("new.content")};
        END"""


def _statements() -> list[str]:
    t, rows, src = fts.TRIGRAM_TABLE, fts.TRIGRAM_ROWS, fts.TRIGRAM_SOURCE
    cjk = fts.trigram_condition
    new_indexed = fts.INDEXED.format(row="new")  # not pending in migration 2's backfill
    old_indexed = fts.INDEXED.format(row="old")
    in_tri = f"EXISTS (SELECT 1 FROM {rows} WHERE id = old.id)"
    return [
        *(f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS),
        f"DROP TABLE {t}",
        f"DROP VIEW {src}",
        f"ALTER TABLE {rows} RENAME TO {PENDING}",
        f"CREATE TABLE {rows}(id INTEGER PRIMARY KEY)",
        f"""CREATE VIEW {src} AS SELECT r.id AS id, m.content || {SENTINEL} AS content
            FROM {rows} r JOIN messages m ON m.id = r.id""",
        f"""CREATE VIRTUAL TABLE {t} USING fts5(
            content, content='{src}', content_rowid='id',
            {fts.TRIGRAM_OPTIONS})""",
        f"CREATE VIRTUAL TABLE {VOCAB} USING fts5vocab({t}, 'row')",
        f"""CREATE TRIGGER messages_search_ai_tri AFTER INSERT ON messages
            WHEN {cjk("new.content")} AND {new_indexed} BEGIN
            INSERT INTO {rows}(id) VALUES (new.id);
            INSERT INTO {t}(rowid, content) VALUES (new.id, new.content || {SENTINEL});
        END""",
        f"""CREATE TRIGGER messages_search_ad_tri AFTER DELETE ON messages BEGIN
            INSERT INTO {t}({t}, rowid, content)
                SELECT 'delete', old.id, old.content || {SENTINEL} WHERE {in_tri};
            DELETE FROM {rows} WHERE id = old.id;
            DELETE FROM {PENDING} WHERE id = old.id;
        END""",
        trigram_update_trigger(old_indexed),
        *(
            f"INSERT INTO {t}({t}, rank) VALUES ('{name}', {value})"
            for name, value in fts.MERGE_SETTINGS
        ),
    ]


def upgrade(conn: apsw.Connection) -> None:
    """Apply migration 3 on ``conn`` (inside the migration's write transaction)."""
    for statement in _statements():
        conn.execute(statement)


def backfill_batch(conn: apsw.Connection, batch: int = fts.BACKFILL_BATCH) -> bool:
    """Re-index the next ``batch`` pending messages; True when none remain."""
    ids = [r[0] for r in conn.execute(f"SELECT id FROM {PENDING} ORDER BY id LIMIT ?", (batch,))]
    if not ids:
        return True
    lo, hi = ids[0], ids[-1]
    conn.execute(
        f"INSERT INTO {fts.TRIGRAM_ROWS}(id) SELECT id FROM {PENDING} WHERE id BETWEEN ? AND ?",
        (lo, hi),
    )
    conn.execute(
        f"INSERT INTO {fts.TRIGRAM_TABLE}(rowid, content)"
        f" SELECT id, content FROM {fts.TRIGRAM_SOURCE} WHERE id BETWEEN ? AND ?",
        (lo, hi),
    )
    conn.execute(f"DELETE FROM {PENDING} WHERE id BETWEEN ? AND ?", (lo, hi))
    return len(ids) < batch


def backfill_step(engine: Engine, batch: int = fts.BACKFILL_BATCH) -> bool:
    """One batch in its own write transaction; True while more work remains (schema hook)."""
    with engine.read() as conn:
        if conn.execute(f"SELECT 1 FROM {PENDING} LIMIT 1").fetchone() is None:
            return False
    with engine.write() as conn:
        return not backfill_batch(conn, batch)


__all__ = ["PENDING", "SENTINEL", "VOCAB", "backfill_batch", "backfill_step", "upgrade"]
