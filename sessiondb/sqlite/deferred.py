"""Migration 8: appends leave their search index rows to a bounded backlog (docs/adr/0016).

A store's writer commits its messages without their index rows: they join the **backlog**, the
messages whose id is above the cursor ``search_deferred.done_id``. The index holds exactly the
messages at or below the cursor (and not pending in migration 2's backfill, ``fts.INDEXED``).
When a writer's insert takes the backlog to :data:`ROWS_BOUND` ids or :data:`BYTES_BOUND`
characters of content, that writer indexes the whole backlog, its own rows included, in its own
transaction: one ``INSERT … SELECT`` per index table by rowid range (:func:`catch_up`, the rule
of selfindex.statements), and moves the cursor to the newest message. Index rows and cursor move
in one transaction, so a writer killed in the middle leaves both as they were: no index row is
lost or written twice. Search scans the backlog through an in-memory index built with the same
rule and the same tokenizers (tail.py), so a message is found the moment its append returns.

The writer marks its sessions with the claim ``sessions.indexing = 2`` (:data:`DEFERRING`) in the
``UPDATE`` that allocates the seqs, and clears it before committing (selfindex.release_all);
it feeds the usage rollup itself, at once. The insert triggers tell the three kinds of writers
apart by the claim:

* 0 — a writer that does not know the cursor (a raw-SQL script, the sqlite3 shell, sessiondb
  before migration 7 for a single row): its row is indexed at once; when the row is above the
  cursor, the whole backlog with it, and the cursor moves to the newest message. Such writers
  never grow the backlog.
* 1 — sessiondb of migration 7, still running against the migrated file, which indexes its
  batch itself after inserting it: before each of its rows the trigger indexes the backlog
  below that row and moves the cursor to it, so the writer's own indexing finds nothing of
  another writer's left to do and nothing of its own done.
* 2 — this module's writers: nothing.

Deletes and edits of messages above the cursor leave the index alone (they are not in it); the
catch-up indexes what the backlog holds when it runs.
"""

from __future__ import annotations

import apsw

from . import fts, fts_v3, rollup, selfindex

CURSOR = "search_deferred"
#: The claim value of a writer that leaves its rows to the backlog (selfindex.CLAIM).
DEFERRING = 2
#: The backlog is indexed by the writer whose insert takes it to this many message ids above
#: the cursor (deleted ids included) …
ROWS_BOUND = 64
#: … or to this many characters of content in messages of :data:`LARGE` characters or more:
#: what search scans of the backlog stays bounded (below ROWS_BOUND * LARGE + BYTES_BOUND).
BYTES_BOUND = 128 * 1024
#: Messages this long are counted into the backlog's characters (one more page written per
#: commit); shorter ones are bounded by ROWS_BOUND alone, so a typical append only reads the
#: cursor.
LARGE = 2048

_DONE = f"(SELECT done_id FROM {CURSOR})"
_CLAIM_OF_NEW = f"coalesce((SELECT {selfindex.CLAIM} FROM sessions WHERE id = new.sid), 0)"
_NEWEST = "(SELECT max(id) FROM messages)"


def _trigger_statements() -> list[str]:
    old_indexed = f"{fts.INDEXED.format(row='old')} AND old.id <= {_DONE}"
    this_row = selfindex.statements(f"m.id = new.id AND new.id <= {_DONE}")
    backlog = selfindex.statements(f"m.id > {_DONE}")
    below_this = selfindex.statements(f"m.id > {_DONE} AND m.id < new.id")
    return [
        "DROP TRIGGER IF EXISTS messages_rollup_ai",
        rollup.insert_trigger(f"{_CLAIM_OF_NEW} = 0"),
        "DROP TRIGGER IF EXISTS messages_search_ai",
        "DROP TRIGGER IF EXISTS messages_search_ai_tri",
        "DROP TRIGGER IF EXISTS messages_search_ai_claimed",
        # Claim 0: this row if it is at or below the cursor (an id reused), else the backlog
        # with it; the cursor moves last, every statement before read the same cursor.
        f"""CREATE TRIGGER messages_search_ai AFTER INSERT ON messages
            WHEN {_CLAIM_OF_NEW} = 0 BEGIN
            {";".join(this_row)};
            {";".join(backlog)};
            UPDATE {CURSOR} SET done_id = {_NEWEST}, bytes = 0 WHERE {_NEWEST} > done_id;
        END""",
        # Claim 1 (migration 7's writer indexes its own rows): the backlog below this row.
        f"""CREATE TRIGGER messages_search_ai_claimed AFTER INSERT ON messages
            WHEN {_CLAIM_OF_NEW} = 1 AND new.id > {_DONE} BEGIN
            {";".join(below_this)};
            UPDATE {CURSOR} SET done_id = new.id;
        END""",
        "DROP TRIGGER IF EXISTS messages_search_ad",
        fts.word_delete_trigger(old_indexed),
        "DROP TRIGGER IF EXISTS messages_search_au",
        fts.word_update_trigger(old_indexed),
        "DROP TRIGGER IF EXISTS messages_search_au_tri",
        fts_v3.trigram_update_trigger(old_indexed),
        # messages_search_ad_tri stays: it acts on membership of the trigram rows, which
        # backlog rows do not have.
    ]


def install(conn: apsw.Connection) -> None:
    """Create the cursor if missing, put it at the newest message — everything stored is
    indexed, or pending in migration 2's backfill (``fts.INDEXED``) — and (re)create the
    triggers. Migration 8; also for tests that rebuild the index of a store."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {CURSOR}(id INTEGER PRIMARY KEY CHECK (id = 1),"
        " done_id INTEGER NOT NULL, bytes INTEGER NOT NULL)"
    )
    conn.execute(f"INSERT OR IGNORE INTO {CURSOR} VALUES (1, 0, 0)")
    conn.execute(f"UPDATE {CURSOR} SET done_id = max(done_id, coalesce({_NEWEST}, 0)), bytes = 0")
    for statement in _trigger_statements():
        conn.execute(statement)


def upgrade(conn: apsw.Connection) -> None:
    """Apply migration 8 on ``conn`` (inside the migration's write transaction)."""
    install(conn)


def reserve(conn: apsw.Connection, sizes: list[int]) -> tuple[int, int]:
    """Count the writer's messages of :data:`LARGE` characters or more (``sizes``: each
    message's) into the backlog's characters; the cursor and those characters so far (one
    statement, before the writer inserts its rows)."""
    large = sum(n for n in sizes if n >= LARGE)
    if large:
        sql = f"UPDATE {CURSOR} SET bytes = bytes + {large} RETURNING done_id, bytes"
    else:
        sql = f"SELECT done_id, bytes FROM {CURSOR}"
    row = conn.execute(sql).fetchone()
    assert row is not None  # the cursor's one row is made by the migration, never deleted
    done, total = row
    return int(done), int(total)


_BACKLOG = selfindex.statements("m.id > ?")
_RANGE = selfindex.statements("m.id BETWEEN ? AND ?")
_BATCH_BELOW = selfindex.statements("m.sid = ? AND m.seq BETWEEN ? AND ? AND m.id <= ?")


def catch_up(conn: apsw.Connection, done: int) -> int:
    """Index every message above cursor ``done`` and move the cursor to the newest message
    (in the caller's write transaction); returns the rows indexed."""
    rows = selfindex.index_only(conn, _BACKLOG, (done,), 0, False)
    if rows >= selfindex.MERGE_ROWS:
        selfindex.merge_step(conn, rows)
    conn.execute(f"UPDATE {CURSOR} SET done_id = max(done_id, coalesce({_NEWEST}, 0)), bytes = 0")
    return rows


def settle(
    conn: apsw.Connection,
    first: int,
    last: int,
    done: int,
    total: int,
    ascii_only: bool,
) -> None:
    """After a writer inserted the rowid range ``first..last`` above … or at the cursor
    ``done`` it read (:func:`reserve`, ``total`` characters of backlog): index now what is at or
    below the cursor (ids reused after the newest messages were deleted), leave the rest to the
    backlog, and catch up if that takes the backlog to its bound."""
    if first <= done:
        selfindex.index_only(conn, _RANGE, (first, min(last, done)), 0, ascii_only)
    if last > done and (last - done >= ROWS_BOUND or total >= BYTES_BOUND):
        catch_up(conn, done)


def settle_scattered(
    conn: apsw.Connection, spans: list[tuple[int, int, int]], done: int, ascii_only: bool
) -> None:
    """As :func:`settle` for rows SQLite gave random rowids (once the table held the largest
    rowid: sqlite/insert.py): each span ``(session, first seq, last seq)`` is indexed at once
    where it is at or below the cursor, and the backlog, these rows above it included, now."""
    for ref, first, last in spans:
        selfindex.index_only(conn, _BATCH_BELOW, (ref, first, last, done), 0, ascii_only)
    catch_up(conn, done)


def backlog(conn: apsw.Connection) -> int | None:
    """The cursor, or None on a file without one (older schema, read-only)."""
    try:
        row = conn.execute(f"SELECT done_id FROM {CURSOR}").fetchone()
    except apsw.SQLError:
        return None
    return None if row is None else int(row[0])


def finish(conn: apsw.Connection) -> int:
    """Index the whole backlog now (in the caller's write transaction): before an FTS5
    ``integrity-check`` with rank=1 or a ``rebuild`` (doctor), and in tests. Returns rows."""
    done = backlog(conn)
    if done is None:
        return 0
    return catch_up(conn, done)


__all__ = [
    "BYTES_BOUND",
    "CURSOR",
    "DEFERRING",
    "ROWS_BOUND",
    "backlog",
    "catch_up",
    "finish",
    "install",
    "reserve",
    "settle",
    "settle_scattered",
    "upgrade",
]
