"""A bulk import's search index, built after loading (docs/adr/0015-bulk-import.md).

A bulk import's write transactions leave their messages to the backfill window
(``search_backfill``, sqlite/fts.py: rows ``(done_id, end_id]`` wait to be indexed, and the
delete/update triggers and the set-based index skip them; ``fts.defer``). :func:`finish` then
indexes the window in chunks of :data:`CHUNK` rows, each one ``INSERT … SELECT`` per index table
in a write transaction of its own with its merge steps, and returns once every message is
searchable.

The window's cursor moves in each chunk's transaction: whatever stops the import (an error,
kill -9), the rows loaded are committed and the rest of the window is indexed by the next open
(sqlite/schema.py runs the backfill), ``doctor --repair``, or another bulk import.

Indexing beside the loading, in a thread of its own, was measured and dropped: each chunk's
statements wait for the GIL the parsing thread holds, and the loading waits for the chunk's
write lock — 46 000–53 000 messages/s against 58 000–61 000 one after the other
(docs/benchmarks.md, "Bulk import").
"""

from __future__ import annotations

from collections.abc import Callable

from . import fts, selfindex
from .engine import Engine

#: Rows indexed per write transaction: 3.1–3.4 µs a row at 10 000–20 000, 3.7–4.1 at 5 000
#: (more, smaller segments to merge; 100 000-line imports); a live writer waits at most one
#: chunk (~40 ms at 1 000 000 messages) behind it (docs/benchmarks.md, "Bulk import").
CHUNK = 10_000


def _window(engine: Engine) -> tuple[int, int] | None:
    with engine.read() as conn:
        row = conn.execute("SELECT done_id, end_id FROM search_backfill").fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def finish(engine: Engine, progress: Callable[[int, int], None] | None = None) -> int:
    """Index every message the window holds, ``progress(done, total)`` (message ids) after each
    chunk; the ids the window spanned (0: nothing was waiting)."""
    window = _window(engine)
    if window is None:
        return 0
    start, end = window
    while window is not None:
        with engine.write() as conn:
            fts.backfill_batch(conn, CHUNK)
            selfindex.merge_step(conn, CHUNK)
            row = conn.execute("SELECT done_id, end_id FROM search_backfill").fetchone()
        window = None if row is None else (int(row[0]), int(row[1]))
        done, end = (end, end) if window is None else window
        if progress is not None:
            progress(done - start, end - start)
    return end - start


__all__ = ["CHUNK", "finish"]
