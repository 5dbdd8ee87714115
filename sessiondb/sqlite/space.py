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

The search index is the exception: an FTS5 delete writes a tombstone, and the deleted words
leave the file only when their segment is merged, which only :func:`compact` does (in one long
transaction; fts.optimize says why not in steps). A prune gives back its messages' pages.
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
    """Merge the search index whole (fts.optimize: the deleted messages' words leave it), then
    rewrite the whole file (``VACUUM``), switching it to incremental auto-vacuum; returns the
    bytes it shrank by. Every writer waits until it is done: only on a person's request."""
    before = file_size(engine)
    with engine.write() as conn:
        fts.optimize(conn)
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
    "RECLAIM_PAGES",
    "auto_vacuum",
    "compact",
    "file_size",
    "reclaim",
    "split",
]
