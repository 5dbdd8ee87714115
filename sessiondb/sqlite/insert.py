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

from ..models import Message
from . import selfindex

if TYPE_CHECKING:
    from ..core.append import Item

_INSERT_MESSAGE = (
    "INSERT INTO messages(sid, seq, role, content, key, meta, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_ALLOCATE_SEQS = (
    "UPDATE sessions SET message_count = message_count + ?, updated_at = max(updated_at, ?)"
    " WHERE id = ? RETURNING message_count"
)
_TOP = "SELECT max(id) FROM messages"
_CLAIM_SEQS = _ALLOCATE_SEQS.replace(" WHERE", f", {selfindex.CLAIM} = 1 WHERE")


def insert_batches(
    conn: apsw.Connection, batches: Sequence[tuple[int, str, Sequence[Item]]], now: float
) -> list[list[Message]]:
    """Insert each ``(session row id, session id, items)`` batch; the stored messages per batch.

    Two rows or more, of one session or of many (a group commit's, one row per session), are
    indexed set-based: every session is claimed, the rows go in with one statement and are
    indexed by their rowid range with one ``INSERT … SELECT`` per index table (selfindex.py,
    docs/adr/0010, "Groups"). A single row keeps the insert triggers."""
    rows: list[tuple[Any, ...]] = []
    out, spans = [], []
    claim = sum(len(items) for _, _, items in batches) >= selfindex.MIN_ROWS
    for ref, sid, items in batches:
        made, last = _allocate(conn, ref, sid, items, now, rows, claim)
        out.append(made)
        spans.append((ref, last - len(items) + 1, last))
    if not claim:
        conn.execute(_INSERT_MESSAGE, rows[0])
        return out
    # `messages.id` is an INTEGER PRIMARY KEY without AUTOINCREMENT, and _INSERT_MESSAGE gives
    # none: SQLite makes each new row's rowid max(rowid) + 1 (https://sqlite.org/autoinc.html),
    # and under the write lock no other writer adds rows, nor do the insert triggers add
    # messages. So the rows of this statement are exactly top + 1 .. top + len(rows). Only when
    # the table once held the largest rowid (2**63 - 1) does SQLite pick random free rowids;
    # last_insert_rowid() then differs from top + len(rows), and each batch is indexed by its
    # session and seqs instead (tests/sqlite/test_selfindex.py covers both).
    top = conn.execute(_TOP).get
    top = 0 if top is None else int(top)
    conn.executemany(_INSERT_MESSAGE, rows)
    ascii_only = all(row[3].isascii() for row in rows)  # content; O(1) per str
    if conn.last_insert_rowid() == top + len(rows):
        merge = sum(
            n for _, first, last in spans if (n := last - first + 1) >= selfindex.MERGE_ROWS
        )
        selfindex.index_rows(conn, top + 1, top + len(rows), merge, ascii_only)
    else:
        for ref, first, last in spans:
            selfindex.index_batch(conn, ref, first, last, ascii_only)
    selfindex.release_all(conn, [ref for ref, _, _ in spans])
    return out


def _allocate(
    conn: apsw.Connection,
    ref: int,
    session_id: str,
    items: Sequence[Item],
    now: float,
    rows: list[tuple[Any, ...]],
    claim: bool,
) -> tuple[list[Message], int]:
    """Allocate the next seqs of a session for ``items`` and add their rows to ``rows``,
    claiming the session if ``claim`` (selfindex.py): their messages and the last seq."""
    latest = now
    if items[0].created_at is not None or len(items) > 1:
        latest = max(now if i.created_at is None else i.created_at for i in items)
    last = int(
        conn.execute(_CLAIM_SEQS if claim else _ALLOCATE_SEQS, (len(items), latest, ref)).get
    )
    seq = last - len(items)
    out = []
    for item in items:
        seq += 1
        at = now if item.created_at is None else item.created_at
        rows.append((ref, seq, item.role, item.content, item.key, item.meta, at))
        meta = None if item.meta is None else json.loads(item.meta)
        out.append(Message(session_id, seq, item.role, item.content, item.key, meta, at))
    return out, last


__all__ = ["insert_batches"]
