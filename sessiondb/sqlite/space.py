"""Where a SQLite store's bytes are, and giving freed pages back to the filesystem (ADR 0006).

A SQLite file never shrinks by itself: deleted rows leave free pages that later writes reuse.
Files created by this version have ``auto_vacuum=INCREMENTAL`` (engine.py sets it before the
first table), so :func:`reclaim` moves the free pages to the end of the file and cuts them off
with ``PRAGMA incremental_vacuum(N)``, :data:`RECLAIM_PAGES` pages per write transaction: a live
writer waits behind one step at most (docs/design.md rule 5), never behind the whole job.

A file created before (``auto_vacuum=NONE``) can only switch by a full ``VACUUM``, which rewrites
the whole file while every writer waits: :func:`compact` does that, only when a person asks for
it (``sessiondb prune --compact``); from then on prunes give space back in steps. Rebuilding a
copy with ``VACUUM INTO`` and swapping it in was measured and rejected (ADR 0006): other
processes keep writing to the old file they hold open.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import apsw

from . import fts
from .engine import Engine

#: Pages moved and cut off per write transaction (ADR 0006: 256 held the lock up to 85 ms
#: beside live writers, 64 at most 23 ms alone).
RECLAIM_PAGES = 64

#: Pages of search-index segments merged per write transaction (fts.merge_all_step). A step
#: costs more than its pages (it reads whole doclists): 100 pages took up to 95 ms, 25 up to
#: 55 ms, 8 up to 32 ms on a 100 000-message store (ADR 0006).
MERGE_PAGES = 8

#: ``auto_vacuum`` values of ``PRAGMA auto_vacuum``.
AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}

# What ``dbstat`` names belong to which part (fts.py and fts_v3.py name the index's tables).
_INDEX_PREFIXES = ("messages_fts", "messages_tri", "search_")
_MESSAGE_NAMES = ("messages", "messages_by_key", "sqlite_autoindex_messages_1")


def file_size(engine: Engine) -> int:
    """The database file's size in bytes (the WAL and its index not included)."""
    try:
        return os.stat(engine.path).st_size
    except OSError:
        return 0


def auto_vacuum(conn: apsw.Connection) -> str:
    return AUTO_VACUUM.get(int(conn.execute("PRAGMA auto_vacuum").get), "none")


def split(conn: apsw.Connection) -> dict[str, int]:
    """Bytes of the file by what they hold: messages (table and its indexes), the search index,
    the rest (sessions, rollup, schema), and free pages. ``dbstat`` walks every page: a read of
    the whole file (about 1 s per GiB here), so only ``info`` asks for it."""
    page = int(conn.execute("PRAGMA page_size").get)
    free = int(conn.execute("PRAGMA freelist_count").get) * page
    parts = {"messages": 0, "search_index": 0, "other": 0}
    for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
        if name in _MESSAGE_NAMES:
            parts["messages"] += int(size)
        elif str(name).startswith(_INDEX_PREFIXES):
            parts["search_index"] += int(size)
        else:
            parts["other"] += int(size)
    return {**parts, "free": free}


def tidy_index(engine: Engine, *, pages: int = MERGE_PAGES) -> int:
    """Merge the search index's segments in short write transactions, so that the words of
    deleted messages leave the file (fts.merge_all_step); returns the steps taken. Pages it
    frees are reused by SQLite, and cut off by :func:`reclaim`.

    A step writes at least ``pages`` pages unless the merge ends, so one full merge of the
    index as it is now takes at most its pages / ``pages`` steps: the loop stops there. Live
    writers add a segment with every append, and a merge that waited for "no work left" never
    stopped beside them: it rewrote the whole index again and again (the file reached 632 MB
    from 167 MB in benchmarks/prune.py before this bound)."""
    with engine.read() as conn:
        budget = fts.index_pages(conn) // max(1, pages) + 16
    for steps in range(1, budget + 1):
        with engine.write() as conn:
            worked = fts.merge_all_step(conn, pages)
        if not worked:
            return steps
        engine.step_aside()
    return budget


def reclaim(
    engine: Engine, *, pages: int = RECLAIM_PAGES, progress: Callable[[int], None] | None = None
) -> int:
    """Give free pages back to the filesystem, ``pages`` per write transaction; returns the
    bytes the file shrank by. Nothing to do on a file without incremental auto-vacuum."""
    with engine.read() as conn:
        if auto_vacuum(conn) != "incremental":
            return 0
        left = int(conn.execute("PRAGMA freelist_count").get)
    if progress is not None:
        progress(left)
    before = file_size(engine)
    step = f"PRAGMA incremental_vacuum({int(pages)})"
    while True:
        with engine.write() as conn:
            conn.execute(step).fetchall()
            left = int(conn.execute("PRAGMA freelist_count").get)
        if progress is not None:
            progress(left)
        if left == 0:
            break
        engine.step_aside()
    _settle(engine)
    return max(0, before - file_size(engine))


def compact(engine: Engine) -> int:
    """Rewrite the whole file (``VACUUM``), switching it to incremental auto-vacuum; returns the
    bytes it shrank by. Every writer waits until it is done: only on a person's request."""
    before = file_size(engine)
    with engine.exclusive() as conn:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
    _settle(engine)
    return max(0, before - file_size(engine))


def _settle(engine: Engine) -> None:
    """In WAL mode the file is cut only when a checkpoint copies the last frames back."""
    if engine.journal_mode == "wal":
        engine.checkpoint("PASSIVE")


__all__ = [
    "MERGE_PAGES",
    "RECLAIM_PAGES",
    "auto_vacuum",
    "compact",
    "file_size",
    "reclaim",
    "split",
    "tidy_index",
]
