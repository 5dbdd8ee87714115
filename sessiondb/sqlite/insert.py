"""The set-based insert of messages (``WriteTx.insert_messages`` / ``insert_batches``): seqs
allocated from each session row, every session's rows in one statement, indexed set-based
by their rowid range under every session's claim (selfindex.py, docs/adr/0010). A group
commit's transaction inserts the fresh messages of several sessions at once (core/writes.py,
docs/adr/0011-group-commit.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import apsw

from ..models import Message, new_message
from . import selfindex

if TYPE_CHECKING:
    from ..core.append import Item

_INSERT_MESSAGES = "INSERT INTO messages(sid, seq, role, content, key, meta, created_at) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
_INSERT_MESSAGE = _INSERT_MESSAGES + _ROW
_ALLOCATE_SEQS = (
    "UPDATE sessions SET message_count = message_count + ?, updated_at = max(updated_at, ?)"
    " WHERE id = ? RETURNING message_count"
)
_TOP = "SELECT max(id) FROM messages"
_CLAIM_SEQS = _ALLOCATE_SEQS.replace(" WHERE", f", {selfindex.CLAIM} = 1 WHERE")
# Several sessions' seqs in one statement (a group commit's): each row of the VALUES is
# (session row id, messages, latest time).
_CLAIM_MANY = (
    "UPDATE sessions SET message_count = message_count + v.n,"
    f" updated_at = max(updated_at, v.latest), {selfindex.CLAIM} = 1"
    " FROM (SELECT column1 AS ref, column2 AS n, column3 AS latest FROM (VALUES {rows})) AS v"
    " WHERE sessions.id = v.ref RETURNING sessions.id, sessions.message_count"
)

#: Rows per multi-row INSERT of a large batch. apsw's ``executemany`` puts its statement back
#: into the connection's 100-slot statement cache once per row, so a batch of ~90 rows or more
#: pushed every other statement out of the cache and the next transaction prepared them all
#: again — an import re-prepared 13 statements per batch of 100, the rollup feed's trigger
#: programs among them (docs/benchmarks.md, "Write path CPU"). A batch goes in BULK_ROWS rows
#: per statement (one cache slot each) and its remainder, fewer than BULK_ROWS, with
#: ``executemany``: every transaction then puts fewer than 100 statements into the ring.
#: One shape only: each statement text that inserts into ``messages`` costs ~0.5 ms to
#: prepare (its triggers are compiled with it), once per connection — per thread.
BULK_ROWS = 64
#: Sessions per seq-allocating UPDATE of a group, largest first (an UPDATE of ``sessions``,
#: which has no trigger, prepares in ~0.1 ms): a group of n sessions takes at most
#: n // 16 + 3 + 3 statements.
CLAIM_SHAPES = (16, 4, 1)


def chunks(n: int, shapes: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, size)`` of the statements for ``n`` rows, sizes from ``shapes``."""
    out, start = [], 0
    for size in shapes:
        while n - start >= size:
            out.append((start, size))
            start += size
    return out


def _values(template: str, width: int, size: int) -> str:
    return template + ", ".join(["(" + ", ".join(["?"] * width) + ")"] * size)


_INSERT_BULK = _values(_INSERT_MESSAGES, 7, BULK_ROWS)
_CLAIMS = {size: _CLAIM_MANY.format(rows=_values("", 3, size)) for size in CLAIM_SHAPES}


def insert_rows(conn: apsw.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert message rows (``sid, seq, role, content, key, meta, created_at``) in order:
    :data:`BULK_ROWS` per statement, the rest with ``executemany``. SQLite gives them
    consecutive rowids as one statement would (:func:`insert_batches`)."""
    bulk = len(rows) - len(rows) % BULK_ROWS
    for start in range(0, bulk, BULK_ROWS):
        conn.execute(
            _INSERT_BULK, [value for row in rows[start : start + BULK_ROWS] for value in row]
        )
    if bulk < len(rows):
        conn.executemany(_INSERT_MESSAGE, rows[bulk:])


def insert_batches(
    conn: apsw.Connection,
    batches: Sequence[tuple[int, str, Sequence[Item]]],
    now: float,
    defer: bool = False,
) -> list[list[Message]]:
    """Insert each ``(session row id, session id, items)`` batch; the stored messages per batch.

    Two rows or more, of one session or of many (a group commit's, one row per session), are
    indexed set-based: every session is claimed, the rows go in with one statement and are
    indexed by their rowid range with one ``INSERT … SELECT`` per index table (selfindex.py,
    docs/adr/0010, "Groups"). A single row keeps the insert triggers. A group's sessions get
    their seqs from ``UPDATE … FROM (VALUES …)`` statements (:data:`CLAIM_SHAPES`).
    ``defer``: a bulk import's transaction — rows of one statement are left to the search
    index's backfill window where it can take them (selfindex.defer_rows, docs/adr/0015)."""
    rows: list[tuple[Any, ...]] = []
    out, spans = [], []
    claim = sum(len(items) for _, _, items in batches) >= selfindex.MIN_ROWS
    lasts = _claim_many(conn, batches, now) if claim and len(batches) > 1 else None
    for ref, sid, items in batches:
        last = _allocate(conn, ref, items, now, claim) if lasts is None else lasts[ref]
        out.append(_rows(sid, ref, items, last, now, rows))
        spans.append((ref, last - len(items) + 1, last))
    if not claim:
        conn.execute(_INSERT_MESSAGE, rows[0])
        return out
    # `messages.id` is an INTEGER PRIMARY KEY without AUTOINCREMENT, and the inserts give none:
    # SQLite makes each new row's rowid max(rowid) + 1 (https://sqlite.org/autoinc.html), and
    # under the write lock no other writer adds rows, nor do the insert triggers add messages.
    # So the rows of these statements (insert_rows: in order, one after the other) are exactly
    # top + 1 .. top + len(rows). Only when
    # the table once held the largest rowid (2**63 - 1) does SQLite pick random free rowids;
    # last_insert_rowid() then differs from top + len(rows), and each batch is indexed by its
    # session and seqs instead (tests/sqlite/test_selfindex.py covers both).
    top = conn.execute(_TOP).get
    top = 0 if top is None else int(top)
    insert_rows(conn, rows)
    ascii_only = all(row[3].isascii() for row in rows)  # content; O(1) per str
    if conn.last_insert_rowid() != top + len(rows):
        for ref, first, last in spans:
            selfindex.index_batch(conn, ref, first, last, ascii_only)
    elif not (defer and selfindex.defer_rows(conn, top + 1, top + len(rows))):
        merge = sum(
            n for _, first, last in spans if (n := last - first + 1) >= selfindex.MERGE_ROWS
        )
        selfindex.index_rows(conn, top + 1, top + len(rows), merge, ascii_only)
    selfindex.release_all(conn, [ref for ref, _, _ in spans])
    return out


def _latest(items: Sequence[Item], now: float) -> float:
    """The session's new ``updated_at`` candidate: the latest of the items' times."""
    if items[0].created_at is None and len(items) == 1:
        return now
    return max(now if i.created_at is None else i.created_at for i in items)


def _allocate(
    conn: apsw.Connection, ref: int, items: Sequence[Item], now: float, claim: bool
) -> int:
    """Allocate the next seqs of session ``ref`` for ``items``, claiming it if ``claim``
    (selfindex.py): the last seq."""
    sql = _CLAIM_SEQS if claim else _ALLOCATE_SEQS
    return int(conn.execute(sql, (len(items), _latest(items, now), ref)).get)


def _claim_many(
    conn: apsw.Connection, batches: Sequence[tuple[int, str, Sequence[Item]]], now: float
) -> dict[int, int] | None:
    """Allocate the seqs of every batch's session and claim it, :data:`CLAIM_SHAPES` sessions
    per statement: each session's last seq. None (nothing done) if a session has two batches."""
    if len({ref for ref, _, _ in batches}) != len(batches):
        return None
    values = [(ref, len(items), _latest(items, now)) for ref, _, items in batches]
    lasts: dict[int, int] = {}
    for start, size in chunks(len(values), CLAIM_SHAPES):
        args = [v for row in values[start : start + size] for v in row]
        lasts.update((int(ref), int(last)) for ref, last in conn.execute(_CLAIMS[size], args))
    return lasts


def _rows(
    session_id: str,
    ref: int,
    items: Sequence[Item],
    last: int,
    now: float,
    rows: list[tuple[Any, ...]],
) -> list[Message]:
    """Add the rows of ``items`` (seqs up to ``last``) to ``rows``; their messages."""
    seq = last - len(items)
    out = []
    for item in items:
        seq += 1
        at = now if item.created_at is None else item.created_at
        rows.append((ref, seq, item.role, item.content, item.key, item.meta, at))
        meta = None if item.meta is None else json.loads(item.meta)
        out.append(new_message(session_id, seq, item.role, item.content, item.key, meta, at))
    return out


__all__ = ["BULK_ROWS", "CLAIM_SHAPES", "chunks", "insert_batches", "insert_rows"]
