"""The set-based insert of messages (``WriteTx.insert_messages`` / ``insert_batches``): seqs
allocated from each session row, every session's rows in one statement, and each session's
batch of several rows indexed set-based under its claim (selfindex.py, docs/adr/0010). A group
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
_CLAIM_SEQS = _ALLOCATE_SEQS.replace(" WHERE", f", {selfindex.CLAIM} = 1 WHERE")


def insert_batches(
    conn: apsw.Connection, batches: Sequence[tuple[int, str, Sequence[Item]]], now: float
) -> list[list[Message]]:
    """Insert each ``(session row id, session id, items)`` batch; the stored messages per batch."""
    rows: list[tuple[Any, ...]] = []
    out, claimed = [], []
    for ref, sid, items in batches:
        made, last, claim = _allocate(conn, ref, sid, items, now, rows)
        out.append(made)
        if claim:
            ascii_only = all(item.content.isascii() for item in items)  # O(1) per str
            claimed.append((ref, last - len(items) + 1, last, ascii_only))
    if len(rows) == 1:
        conn.execute(_INSERT_MESSAGE, rows[0])
    else:
        conn.executemany(_INSERT_MESSAGE, rows)
    for ref, first, last, ascii_only in claimed:
        selfindex.index_batch(conn, ref, first, last, ascii_only)
        selfindex.release(conn, ref)
    return out


def _allocate(
    conn: apsw.Connection,
    ref: int,
    session_id: str,
    items: Sequence[Item],
    now: float,
    rows: list[tuple[Any, ...]],
) -> tuple[list[Message], int, bool]:
    """Allocate the next seqs of a session for ``items`` and add their rows to ``rows``:
    their messages, the last seq, and whether the session is claimed (selfindex.py)."""
    latest = now
    if items[0].created_at is not None or len(items) > 1:
        latest = max(now if i.created_at is None else i.created_at for i in items)
    # A batch is indexed by this writer, set-based, under the session's claim (selfindex.py,
    # docs/adr/0010); the insert triggers then skip its rows. One row keeps the triggers.
    claim = len(items) >= selfindex.MIN_ROWS
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
    return out, last, claim


__all__ = ["insert_batches"]
