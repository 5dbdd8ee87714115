"""Removed messages deleted in short write transactions (``purge_queue``; docs/design.md rule 5,
docs/adr/0006-retention.md): a deleted or cleared session leaves its messages queued, and
:func:`run` deletes them in batches sized to take about :data:`PURGE_SECONDS` each, with the
search index's merge work done in bounded steps between them (sqlite/prunemerge.py). A crash
mid-way is finished by the next open."""

from __future__ import annotations

import time

from . import prunemerge
from .engine import Engine

#: Most rows deleted per write transaction when removed messages are purged. Deleting a
#: message also deletes its words from the search index: 44 µs a row for 0.2–2 kB messages here,
#: so 2000 rows held the write lock for 88 ms, past the 50 ms p99 a live writer is promised
#: (docs/benchmarks.md, "Retention (prune)"). The batch adapts so that one takes about
#: PURGE_SECONDS, starting at PURGE_FIRST rows.
PURGE_BATCH = 2000
PURGE_FIRST = 200
PURGE_MIN = 16
PURGE_SECONDS = 0.010


def run(engine: Engine) -> None:
    """Delete every queued session's messages (``SQLiteBackend.purge``)."""
    with engine.read() as conn:
        pending = [int(r[0]) for r in conn.execute("SELECT sid FROM purge_queue")]
    if pending:
        with engine.write() as conn:
            prunemerge.hold(conn)  # FTS5 merges out of every commit (prunemerge.py)
    batch = PURGE_FIRST
    for internal in pending:
        while True:
            with engine.write() as conn:
                began = time.perf_counter()
                conn.execute(
                    "DELETE FROM messages WHERE id IN"
                    " (SELECT id FROM messages WHERE sid = ? LIMIT ?)",
                    (internal, batch),
                )
                removed = conn.changes()
                if removed == 0:
                    conn.execute("DELETE FROM purge_queue WHERE sid = ?", (internal,))
                    break
            took = max(time.perf_counter() - began, 1e-4)
            engine.step_aside()
            prunemerge.steps(engine, prunemerge.budget(removed))
            batch = max(PURGE_MIN, min(PURGE_BATCH, 2 * batch, int(batch * PURGE_SECONDS / took)))
    if pending:
        prunemerge.steps(engine)  # what the batches' budgets left, bounded (prunemerge.py)
    prunemerge.release(engine)


__all__ = ["PURGE_BATCH", "PURGE_FIRST", "PURGE_MIN", "PURGE_SECONDS", "run"]
