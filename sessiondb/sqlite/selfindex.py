"""Migration 7: the store writes the search index of a batch itself, set-based (docs/adr/0010).

Until migration 7 the AFTER INSERT triggers of :mod:`.fts` / :mod:`.fts_v3` wrote every message's
index rows one by one. Each row of an ``executemany`` is a statement of its own, run in a
statement savepoint, and FTS5 flushes its pending terms to a new segment at every savepoint once
the index has joined the transaction: 2 000 rows in one transaction wrote 6 115 index segments,
against 37 pages with one ``INSERT … SELECT`` (issue 18). :func:`index_batch` writes the index
rows of a whole batch with one ``INSERT … SELECT`` per index table, after the messages, in the
same write transaction: "searchable when append returns" (ADR 0003) holds as before.
A group commit's rows — one or a few per session, over many sessions — are indexed together by
:func:`index_rows`, by the rowid range their insert statement filled (sqlite/insert.py says why
that range is exactly theirs), every session of the group claimed (ADR 0010, "Groups").

The usage rollup (:mod:`.rollup`, ADR 0007) is fed the same way under the same claim: its
AFTER INSERT trigger ran once per row of the batch; :func:`index_batch` feeds the batch to the
rollup's views with one ``INSERT … SELECT`` (the rule stays written once, in the views).

The insert triggers stay, for every writer that does not index its rows itself: an older
sessiondb process still running against the migrated file, a raw-SQL script, the sqlite3 shell.
They fire unless the session row's **claim** (``sessions.indexing``) is 1. The writer that indexes
its batch itself sets the claim in the UPDATE that allocates the batch's seqs and clears it
before its transaction commits (:func:`release`), so a committed file never holds a claim: any
other writer — all writers are serialised by SQLite's write lock — sees 0 and its triggers index
its rows. A crash rolls the claim back with the batch. Deletes and updates keep their triggers
(one row each, no batch to gain).

Large batches leave FTS5 merge work behind: every commit adds one segment, and ``automerge``
makes the next writers merge them, a slice per commit. A batch of :data:`MERGE_ROWS` rows or
more (an import's) also runs :func:`merge_step` in its own transaction, about one page of merge
work per row it indexed, so that the segments it leaves are merged by batches like it and the
appends that follow do not pay for them (docs/benchmarks.md, "Search index written set-based").
"""

from __future__ import annotations

import json

import apsw

from . import fts, fts_v3, rollup

CLAIM = "indexing"  # sessions column: 1 while its writer indexes its batch itself
#: Batches of at least this many rows are indexed set-based; a single row gains nothing (one
#: statement, one flush either way) and keeps the trigger path, which costs it no extra UPDATE.
MIN_ROWS = 2
#: A batch of at least this many rows also does merge steps (:func:`merge_step`).
MERGE_ROWS = 50
#: Pages of merge work per indexed row of such a batch (``('merge', N)``, N per table).
MERGE_PAGES_PER_ROW = 1

_UNCLAIMED = f"(SELECT {CLAIM} FROM sessions WHERE id = new.sid) IS NOT 1"
_BATCH = "m.sid = ? AND m.seq BETWEEN ? AND ?"
#: The rows one insert statement added, by rowid (:func:`index_rows`).
_RANGE = "m.id BETWEEN ? AND ?"


def _trigger_statements() -> list[str]:
    w, t, rows = fts.WORD_TABLE, fts.TRIGRAM_TABLE, fts.TRIGRAM_ROWS
    new_indexed = fts.INDEXED.format(row="new")
    return [
        "DROP TRIGGER IF EXISTS messages_search_ai",
        "DROP TRIGGER IF EXISTS messages_rollup_ai",
        rollup.insert_trigger(_UNCLAIMED),
        "DROP TRIGGER IF EXISTS messages_search_ai_tri",
        # The claim is tested first: SQLite stops at the first false term of an AND.
        f"""CREATE TRIGGER messages_search_ai AFTER INSERT ON messages
            WHEN {_UNCLAIMED} AND {new_indexed} BEGIN
            INSERT INTO {w}(rowid, content) VALUES (new.id, new.content);
        END""",
        f"""CREATE TRIGGER messages_search_ai_tri AFTER INSERT ON messages
            WHEN {_UNCLAIMED} AND {fts.trigram_condition("new.content")} AND {new_indexed} BEGIN
            INSERT INTO {rows}(id) VALUES (new.id);
            INSERT INTO {t}(rowid, content) VALUES (new.id, new.content || {fts_v3.SENTINEL});
        END""",
    ]


def install_triggers(conn: apsw.Connection) -> None:
    """(Re)create the insert triggers with the claim test (they replace migration 2's and 3's
    on a file that has the claim column)."""
    for statement in _trigger_statements():
        conn.execute(statement)


def upgrade(conn: apsw.Connection) -> None:
    """Apply migration 7 on ``conn`` (inside the migration's write transaction)."""
    conn.execute(f"ALTER TABLE sessions ADD COLUMN {CLAIM} INTEGER NOT NULL DEFAULT 0")
    install_triggers(conn)


_INDEXED_M = fts.INDEXED.format(row="m")


def _statements(where: str) -> tuple[str, str, str]:
    """The word, trigram-row and trigram inserts for the messages ``m`` matching ``where``."""
    words = (
        f"INSERT INTO {fts.WORD_TABLE}(rowid, content)"
        f" SELECT m.id, m.content FROM messages m WHERE {where} AND {_INDEXED_M} ORDER BY m.id"
    )
    tri_rows = (
        f"INSERT INTO {fts.TRIGRAM_ROWS}(id) SELECT m.id FROM messages m"
        f" WHERE {where} AND {fts.trigram_condition('m.content')} AND {_INDEXED_M}"
    )
    tri = (
        f"INSERT INTO {fts.TRIGRAM_TABLE}(rowid, content)"
        f" SELECT m.id, m.content || {fts_v3.SENTINEL} FROM messages m"
        f" WHERE {where} AND EXISTS (SELECT 1 FROM {fts.TRIGRAM_ROWS} r WHERE r.id = m.id)"
        " ORDER BY m.id"
    )
    return words, tri_rows, tri


_BY_BATCH = _statements(_BATCH)
_BY_RANGE = _statements(_RANGE)


def _index(
    conn: apsw.Connection,
    where: str,
    statements: tuple[str, str, str],
    args: tuple[int, ...],
    rows: int,
    ascii_only: bool,
) -> int:
    words, tri_rows, tri = statements
    # The usage rollup first, through its views (one rule: rollup.py), in id order as its
    # trigger would see the rows; then the index.
    rollup.add_batch(conn, where, args)
    conn.execute(words, args)
    indexed = conn.changes()
    # The trigram side holds only messages with CJK-like text (fts.py): most batches have none,
    # and then the trigram table is not even opened.
    # ``ascii_only``: the caller knows every content is ASCII, which the trigram condition always
    # rejects (``fts.trigram_condition``: its first test), so its scan is skipped.
    if not ascii_only:
        before = conn.total_changes()
        conn.execute(tri_rows, args)
        if conn.total_changes() != before:
            conn.execute(tri, args)
    if rows >= MERGE_ROWS:
        merge_step(conn, rows)
    return indexed


def index_batch(
    conn: apsw.Connection, ref: int, first: int, last: int, ascii_only: bool = False
) -> int:
    """Index messages ``first..last`` (seqs) of session ``ref``, inserted in this transaction
    under the claim; returns the rows indexed. The caller then calls :func:`release`."""
    return _index(conn, _BATCH, _BY_BATCH, (ref, first, last), last - first + 1, ascii_only)


def index_rows(
    conn: apsw.Connection, first_id: int, last_id: int, merge_rows: int, ascii_only: bool = False
) -> int:
    """Index messages ``first_id..last_id`` (rowids): the rows of one insert statement, of
    every session of a group commit, each claimed (sqlite/insert.py; docs/adr/0010, "Groups").
    Merge steps as for a batch of ``merge_rows`` rows (0: none). Returns the rows indexed; the
    caller then calls :func:`release_all`. ``ascii_only`` as for :func:`index_batch`."""
    return _index(conn, _RANGE, _BY_RANGE, (first_id, last_id), merge_rows, ascii_only)


def defer_rows(conn: apsw.Connection, first_id: int, last_id: int) -> bool:
    """A bulk import's rows ``first_id..last_id`` (one insert statement's, claimed): the usage
    rollup fed now, the search index left to the backfill window (:func:`fts.defer`,
    docs/adr/0015-bulk-import.md). False, nothing done, when the window cannot take them: the
    caller indexes them with :func:`index_rows`."""
    if not fts.defer(conn, first_id, last_id):
        return False
    rollup.add_batch(conn, _RANGE, (first_id, last_id))
    return True


def release(conn: apsw.Connection, ref: int) -> None:
    """Clear the claim on session ``ref`` (before the transaction commits)."""
    conn.execute(f"UPDATE sessions SET {CLAIM} = 0 WHERE id = ?", (ref,))


def release_all(conn: apsw.Connection, refs: list[int]) -> None:
    """Clear the claim on every session of ``refs`` in one statement (before the commit)."""
    if len(refs) == 1:
        release(conn, refs[0])
        return
    conn.execute(
        f"UPDATE sessions SET {CLAIM} = 0 WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(refs),),
    )


def merge_step(conn: apsw.Connection, rows: int) -> None:
    """Merge work for a batch of ``rows`` self-indexed rows, in the batch's own transaction
    (module docstring): ``('merge', N)`` merges about N pages when some level of an index
    holds ``usermerge`` segments, and does nothing otherwise."""
    pages = max(16, rows * MERGE_PAGES_PER_ROW)
    for table in (fts.WORD_TABLE, fts.TRIGRAM_TABLE):
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('merge', ?)", (pages,))


__all__ = [
    "CLAIM",
    "MERGE_ROWS",
    "MIN_ROWS",
    "defer_rows",
    "index_batch",
    "index_rows",
    "install_triggers",
    "merge_step",
    "release",
    "release_all",
    "upgrade",
]
