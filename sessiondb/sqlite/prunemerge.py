"""FTS5 merge work kept out of everybody's commits while a purge runs (ADR 0006, amendment 2).

A purge's deletes write a delete marker per word into the search index, as much index as the
messages once were. With ``automerge`` on (fts.MERGE_SETTINGS), every commit that makes the
index's write counter cross a multiple of 64 leaf pages merges 64 × (levels) pages inside that
commit — 500–1 900 WAL pages, 40–140 ms, in the purge's own tiny transactions and in single
live appends alike, while every other writer waits (docs/benchmarks.md, "Retention (prune)").

So while messages are queued for purging:

* :func:`hold` sets ``automerge`` to 0 on both indexes. It is a persistent value of the index
  (its ``%_config`` table), seen by every connection: no commit merges on its own.
* :func:`steps` does the merge work instead, in ``('merge', N)`` steps of :data:`STEP_PAGES`
  pages, each in its own short write transaction with the engine's step-aside between them,
  until a step finds nothing to merge (FTS5 merges only at a level of ``usermerge`` segments,
  so this is the same work automerge would do, in bounded slices) — after a purge batch at most
  :func:`budget` steps, once at the end of the purge at most :data:`MAX_STEPS`. Live writers
  beside the purge add a segment per commit that automerge no longer merges: without the budget
  each batch chased them to MAX_STEPS, and removing 2 000 messages beside three non-stop
  writers took 117 s, 131 s of it in merge steps (tests/contract/test_prune_live.py).
* :func:`release` puts ``automerge`` back, in a write transaction that first checks that no
  session is queued for purging any more (another process's purge may still be running: it
  releases when it empties the queue).

The rule a crash cannot break: ``automerge`` differs from its setting only while
``purge_queue`` holds a row, or until the next purge. A purge killed with ``kill -9`` leaves
its rows queued; the next read-write open runs ``purge()`` (purge.py), which finishes them
and then releases; a kill after the queue emptied is released by the next open's ``purge()``,
which always ends with :func:`release` (one read of the config when nothing is held).
Tests: tests/sqlite/test_prune_merge.py.
"""

from __future__ import annotations

import apsw

from . import fts
from .engine import Engine

#: Pages merged per write transaction (about 0.1 ms a page here: a few ms a step).
STEP_PAGES = 64
#: At most this many merge steps per :func:`steps` call, so a purge always gets on.
MAX_STEPS = 400
#: Merge steps allowed after a purge batch: one per this many messages it removed …
ROWS_PER_STEP = 4
#: … and at least this many. The 1 000 000-message prune benchmark took about one step per 27
#: messages removed (docs/benchmarks.md, "FTS5 merges out of commits during a purge"), and its
#: 2 000-message batches get MAX_STEPS, as before.
MIN_STEPS = 8

_TABLES = (fts.WORD_TABLE, fts.TRIGRAM_TABLE)
AUTOMERGE = dict(fts.MERGE_SETTINGS)["automerge"]


def _indexed(conn: apsw.Connection) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?",
            (fts.WORD_TABLE + "_config",),
        ).fetchone()
    )


def automerge(conn: apsw.Connection) -> list[int]:
    """Each index's ``automerge`` value (FTS5's default, 4, when it was never set)."""
    out = []
    for table in _TABLES:
        row = conn.execute(
            f"SELECT v FROM {table}_config WHERE k = 'automerge'"  # fixed names (_TABLES)
        ).fetchone()
        out.append(4 if row is None else int(row[0]))
    return out


def _set(conn: apsw.Connection, value: int) -> None:
    for table in _TABLES:
        conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('automerge', ?)", (value,))


def hold(conn: apsw.Connection) -> None:
    """Turn automerge off, in the caller's write transaction (a purge's first)."""
    if _indexed(conn) and automerge(conn) != [0, 0]:
        _set(conn, 0)


def budget(removed: int) -> int:
    """Merge steps allowed after a purge batch that removed ``removed`` messages."""
    return min(MAX_STEPS, max(MIN_STEPS, removed // ROWS_PER_STEP))


def steps(engine: Engine, max_steps: int = MAX_STEPS) -> int:
    """Merge in :data:`STEP_PAGES`-page steps, one write transaction each, until a step finds
    nothing to merge or ``max_steps`` were taken; returns the steps that did work."""
    done = 0
    for _ in range(max_steps):
        with engine.write() as conn:
            if not _indexed(conn):
                return done
            worked = False
            for table in _TABLES:
                # FTS5 docs: a 'merge' that did work changes total_changes() by 2 or more.
                before = conn.total_changes()
                conn.execute(
                    f"INSERT INTO {table}({table}, rank) VALUES ('merge', ?)", (STEP_PAGES,)
                )
                worked = worked or conn.total_changes() - before >= 2
        if not worked:
            return done
        done += 1
        engine.step_aside()
    return done


def release(engine: Engine) -> bool:
    """Put automerge back if nothing is queued for purging; returns whether it wrote."""
    with engine.read() as conn:
        if not _indexed(conn) or automerge(conn) == [AUTOMERGE, AUTOMERGE]:
            return False
    with engine.write() as conn:
        if conn.execute("SELECT 1 FROM purge_queue LIMIT 1").fetchone() is None:
            _set(conn, AUTOMERGE)
            return True
    return False


__all__ = [
    "AUTOMERGE",
    "MAX_STEPS",
    "MIN_STEPS",
    "ROWS_PER_STEP",
    "STEP_PAGES",
    "automerge",
    "budget",
    "hold",
    "release",
    "steps",
]
