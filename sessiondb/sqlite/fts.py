"""Full-text index of message content: DDL, triggers, merge settings and the batched backfill.

Two FTS5 *external-content* tables (no second copy of the text):

* ``messages_fts`` — word index over EVERY message, ``unicode61 remove_diacritics 2``,
  ``detail=full`` (phrases, NEAR and bm25 need positions). No extra ``tokenchars``: making
  ``.``/``-``/``/`` part of words would turn ``end.`` into a token and hide ``bar`` inside
  ``foo.bar``. Punctuated words (``foo.bar``, ``x:y``, ``C++``) are found through it as the
  phrase of their letter/digit runs and then checked verbatim with ``LIKE`` (search.py).
* ``messages_tri`` — trigram index, ``detail=none columnsize=0``, ONLY over messages that hold a
  character of a script written without spaces (CJK, kana, Hangul, Thai, …: the word index
  cannot cut those runs into words). Its content is the view ``messages_tri_src`` over the side
  table ``messages_tri_rows`` (ids of those messages), so FTS5's ``rebuild`` and
  ``integrity-check`` (doctor) see exactly the indexed subset. Indexing every message with
  trigrams cost ~5x the word index on the append path (docs/search.md); ~95 % of messages now
  pay nothing for it. The side table also bounds the scan for one-character CJK words.

Triggers keep both in sync inside the writer's own transaction. Rows that existed before the
index (a store created before search) are indexed by :func:`backfill` in short batches; until it
finishes, ``search_backfill`` holds the cursor and the delete/update triggers skip rows that were
never indexed (an external-content ``delete`` of an unindexed row would corrupt the index).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import apsw

if TYPE_CHECKING:
    from .engine import Engine

WORD_TABLE = "messages_fts"
# Rows indexed per write transaction while a migration backfills an existing store: the same
# size as an import batch, so a live writer waits a few milliseconds at most behind one.
BACKFILL_BATCH = 100
TRIGRAM_TABLE = "messages_tri"
TRIGRAM_ROWS = "messages_tri_rows"  # ids of the messages in TRIGRAM_TABLE
TRIGRAM_SOURCE = "messages_tri_src"  # view: TRIGRAM_TABLE's external content
TRIGGERS = (
    "messages_search_ai",
    "messages_search_ai_tri",
    "messages_search_ad",
    "messages_search_ad_tri",
    "messages_search_au",
    "messages_search_au_tri",
)

# Merge policy (see docs/search.md for the measurements): every append commits a tiny segment.
# automerge=4 lets each commit do a bounded slice of incremental merge work; crisismerge is raised
# so that a level reaching 16 segments does not trigger one large synchronous merge in some
# unlucky writer's transaction; usermerge bounds the explicit 'merge' steps of `merge_step`.
# A purge holds automerge at 0 while it runs and merges in steps itself (prunemerge.py).
MERGE_SETTINGS: tuple[tuple[str, int], ...] = (
    ("automerge", 4),
    ("crisismerge", 64),
    ("usermerge", 4),
)

INDEXED = (
    "NOT EXISTS (SELECT 1 FROM search_backfill b"
    " WHERE {row}.id > b.done_id AND {row}.id <= b.end_id)"
)


# Which messages enter the trigram index: a superset of the characters for which
# searchquery.Word.no_space is true (tests check every code point of those ranges). A GLOB class
# over all the ranges cost ~50 us per 1.2 KB message (SQLite re-parses the class at every
# position: more than the word index itself), so the test is made of cheap byte scans of the
# UTF-8 text: pure ASCII is rejected by a length comparison; then the lead bytes E3..ED
# (U+3000..U+D7FF: kana, CJK, Hangul) and two-byte prefixes of Thai/Lao, Myanmar, Khmer and CJK
# radicals are searched with instr() (a UTF-8 lead byte never occurs inside another character).
_LEAD_NEEDLES = (
    *(f"{b:02X}" for b in range(0xE3, 0xEE)),  # U+3000..U+D7FF
    "E0B8", "E0B9", "E0BA", "E0BB",  # U+0E00..U+0EFF Thai, Lao
    "E180", "E181", "E182",  # U+1000..U+10BF Myanmar
    "E19E", "E19F",  # U+1780..U+17FF Khmer
    "E2BA", "E2BB", "E2BC", "E2BD", "E2BE", "E2BF",  # U+2E80..U+2FFF CJK radicals
)  # fmt: skip
# Rarer ranges, searched only in text holding their lead byte (EF also carries the emoji
# variation selector U+FE0F, F0 every emoji): compatibility ideographs and halfwidth forms, then
# ideographs beyond the BMP, by a one-range GLOB (cheaper there than 32 two-byte needles).
_EF_NEEDLES = (*(f"EF{b:02X}" for b in range(0xA4, 0xAC)), "EFBD", "EFBE")
_BEYOND_BMP = f"*[{chr(0x20000)}-{chr(0x3FFFF)}]*"


def trigram_condition(expr: str) -> str:
    """SQL true when text ``expr`` holds a character of a script written without spaces."""
    blob = f"CAST({expr} AS BLOB)"

    def scan(needles: tuple[str, ...]) -> str:
        return " OR ".join(f"instr({blob}, x'{needle}')" for needle in needles)

    scans = [
        scan(_LEAD_NEEDLES),
        f"(instr({blob}, x'EF') AND ({scan(_EF_NEEDLES)}))",
        f"(instr({blob}, x'F0') AND {expr} GLOB '{_BEYOND_BMP}')",
    ]
    return f"(octet_length({expr}) > length({expr}) AND ({' OR '.join(scans)}))"


def _glob(expr: str) -> str:
    return trigram_condition(expr)


def schema_statements() -> list[str]:
    """Statements creating the index, its triggers and the backfill cursor (one transaction)."""
    old_indexed = INDEXED.format(row="old")
    new_indexed = INDEXED.format(row="new")
    in_tri = f"EXISTS (SELECT 1 FROM {TRIGRAM_ROWS} WHERE id = old.id)"
    w, t = WORD_TABLE, TRIGRAM_TABLE
    return [
        f"""CREATE VIRTUAL TABLE {w} USING fts5(
            content, content='messages', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2')""",
        f"CREATE TABLE {TRIGRAM_ROWS}(id INTEGER PRIMARY KEY)",
        f"""CREATE VIEW {TRIGRAM_SOURCE} AS SELECT r.id AS id, m.content AS content
            FROM {TRIGRAM_ROWS} r JOIN messages m ON m.id = r.id""",
        f"""CREATE VIRTUAL TABLE {t} USING fts5(
            content, content='{TRIGRAM_SOURCE}', content_rowid='id',
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
            INSERT INTO {w}(rowid, content) VALUES (new.id, new.content);
        END""",
        f"""CREATE TRIGGER messages_search_ai_tri AFTER INSERT ON messages
            WHEN {_glob("new.content")} AND {new_indexed} BEGIN
            INSERT INTO {TRIGRAM_ROWS}(id) VALUES (new.id);
            INSERT INTO {t}(rowid, content) VALUES (new.id, new.content);
        END""",
        f"""CREATE TRIGGER messages_search_ad AFTER DELETE ON messages WHEN {old_indexed} BEGIN
            INSERT INTO {w}({w}, rowid, content) VALUES ('delete', old.id, old.content);
        END""",
        # Membership of the side table, not the pattern, decides: it is what was indexed.
        f"""CREATE TRIGGER messages_search_ad_tri AFTER DELETE ON messages WHEN {in_tri} BEGIN
            INSERT INTO {t}({t}, rowid, content) VALUES ('delete', old.id, old.content);
            DELETE FROM {TRIGRAM_ROWS} WHERE id = old.id;
        END""",
        # Update of an indexed row: remove the old text, add the new one. An edit may add or
        # remove the last CJK character, so the trigram side is decided on both texts.
        f"""CREATE TRIGGER messages_search_au AFTER UPDATE OF content ON messages
            WHEN {old_indexed} BEGIN
            INSERT INTO {w}({w}, rowid, content) VALUES ('delete', old.id, old.content);
            INSERT INTO {w}(rowid, content) VALUES (new.id, new.content);
        END""",
        f"""CREATE TRIGGER messages_search_au_tri AFTER UPDATE OF content ON messages
            WHEN {old_indexed} BEGIN
            INSERT INTO {t}({t}, rowid, content)
                SELECT 'delete', old.id, old.content WHERE {in_tri};
            DELETE FROM {TRIGRAM_ROWS} WHERE id = old.id;
            INSERT INTO {TRIGRAM_ROWS}(id) SELECT new.id WHERE {_glob("new.content")};
            INSERT INTO {t}(rowid, content)
                SELECT new.id, new.content WHERE {_glob("new.content")};
        END""",
        *(
            f"INSERT INTO {table}({table}, rank) VALUES ('{name}', {value})"
            for table in (w, t)
            for name, value in MERGE_SETTINGS
        ),
    ]


def drop(conn: apsw.Connection) -> None:
    """Remove the index, its triggers and the backfill cursor (tests; a future re-design)."""
    for trigger in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for table in (
        "messages_tri_vocab",  # fts_v3.VOCAB and .PENDING (migration 3)
        "search_tri_pending",
        WORD_TABLE,
        TRIGRAM_TABLE,
        TRIGRAM_ROWS,
        "search_backfill",
    ):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"DROP VIEW IF EXISTS {TRIGRAM_SOURCE}")


def create(conn: apsw.Connection) -> None:
    """Create the index on ``conn`` (the caller holds the write transaction: the migration's)."""
    for statement in schema_statements():
        conn.execute(statement)


def backfill_pending(conn: apsw.Connection) -> bool:
    """True while rows created before the index still wait to be indexed."""
    return conn.execute("SELECT 1 FROM search_backfill").fetchone() is not None


def defer(conn: apsw.Connection, first: int, last: int) -> bool:
    """Leave messages ``first..last`` (rowids: the rows a bulk import's statement just
    inserted, their insert triggers held off by the claim) to the backfill instead of indexing
    them now (docs/adr/0015-bulk-import.md). The pending window ``(done_id, end_id]`` is one
    range, so it can only grow at its end: True when it was opened here or ended just before
    ``first``; False, nothing changed, when rows another writer added (indexed by it) lie
    between — the caller then indexes these rows itself."""
    row = conn.execute("SELECT end_id FROM search_backfill").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO search_backfill(id, done_id, end_id) VALUES (1, ?, ?)", (first - 1, last)
        )
        return True
    if int(row[0]) != first - 1:
        return False
    conn.execute("UPDATE search_backfill SET end_id = ?", (last,))
    return True


def backfill_size(conn: apsw.Connection) -> int:
    """Messages still waiting for the backfill (0 when none)."""
    row = conn.execute("SELECT done_id, end_id FROM search_backfill").fetchone()
    if row is None:
        return 0
    return int(
        conn.execute("SELECT count(*) FROM messages WHERE id > ? AND id <= ?", tuple(row)).get
    )


def backfill_batch(conn: apsw.Connection, batch: int = BACKFILL_BATCH) -> bool:
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
    ).get
    if last is None:
        conn.execute("DELETE FROM search_backfill")
        return True
    conn.execute(
        f"INSERT INTO {WORD_TABLE}(rowid, content) "
        "SELECT id, content FROM messages WHERE id > ? AND id <= ?",
        (done_id, last),
    )
    conn.execute(
        f"INSERT INTO {TRIGRAM_ROWS}(id) SELECT id FROM messages"
        f" WHERE id > ? AND id <= ? AND {_glob('content')}",
        (done_id, last),
    )
    conn.execute(
        f"INSERT INTO {TRIGRAM_TABLE}(rowid, content) SELECT id, content FROM {TRIGRAM_SOURCE}"
        " WHERE id > ? AND id <= ?",
        (done_id, last),
    )
    if last >= end_id:
        conn.execute("DELETE FROM search_backfill")
        return True
    conn.execute("UPDATE search_backfill SET done_id = ?", (last,))
    return False


def backfill_step(engine: Engine, batch: int = BACKFILL_BATCH) -> bool:
    """One batch in its own write transaction; True while more work remains (schema hook)."""
    with engine.read() as conn:
        if not backfill_pending(conn):
            return False
    with engine.write() as conn:
        return not backfill_batch(conn, batch)


def backfill(engine: Engine, *, batch: int = BACKFILL_BATCH) -> int:
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


def merge_step(conn: apsw.Connection, pages: int = 200) -> None:
    """One bounded slice of background segment merging (call in a short write transaction)."""
    for table in (WORD_TABLE, TRIGRAM_TABLE):
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('merge', ?)", (pages,))


def optimize(conn: apsw.Connection) -> None:
    """Merge every segment of both indexes into one, in the caller's write transaction: the
    words of deleted messages leave the file only when their segment is merged with the
    deletes' tombstones. Long (seconds per 100 MB of index): only ``compact()`` calls it.
    The incremental form (``'merge', -N`` per short transaction) was measured beside live
    writers and rejected: it never finished at 100 000 messages (each append adds a segment)
    and ran out of segment ids (SQLITE_FULL) at 1 000 000 (docs/adr/0006-retention.md)."""
    for table in (WORD_TABLE, TRIGRAM_TABLE):
        conn.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")


def index_bytes(conn: apsw.Connection) -> dict[str, int]:
    """Bytes used by each index's shadow tables and by the message content (dbstat)."""
    out: dict[str, int] = {}
    for table in (WORD_TABLE, TRIGRAM_TABLE):  # TRIGRAM_ROWS is counted with TRIGRAM_TABLE
        out[table] = int(
            conn.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE ?", (table + "%",)
            ).get
        )
    out["content"] = int(
        conn.execute("SELECT coalesce(sum(length(CAST(content AS BLOB))), 0) FROM messages").get
    )
    return out


__all__ = [
    "INDEXED",
    "MERGE_SETTINGS",
    "TRIGGERS",
    "TRIGRAM_ROWS",
    "TRIGRAM_SOURCE",
    "TRIGRAM_TABLE",
    "WORD_TABLE",
    "backfill",
    "backfill_batch",
    "backfill_pending",
    "backfill_size",
    "backfill_step",
    "create",
    "defer",
    "drop",
    "index_bytes",
    "merge_step",
    "optimize",
    "schema_statements",
    "trigram_condition",
]
