"""SQLite gives a prune's space back to the filesystem (docs/adr/0006-retention.md): new files
shrink in bounded steps; files made before incremental auto-vacuum need one compact()."""

from __future__ import annotations

import itertools
import os
import time
from datetime import timedelta
from pathlib import Path

import apsw

import sessiondb
from sessiondb.sqlite import space
from tests.helpers import engine_of

OLD = time.time() - 60 * 86400
MONTH = timedelta(days=30)


def _fill(store: sessiondb.Store, sessions: int = 60, messages: int = 40) -> None:
    for i in range(sessions):
        sid = f"old-{i:03d}"
        store.ensure_session(sid, created_at=OLD)
        store.append_many(
            sid,
            [
                {"role": "user", "content": f"{sid} {j} word{j} " * 30, "created_at": OLD}
                for j in range(messages)
            ],
        )
    store.append("recent", "user", "kept")


def _auto_vacuum(path: Path) -> int:
    conn = apsw.Connection(str(path))
    try:
        return int(conn.execute("PRAGMA auto_vacuum").get)
    finally:
        conn.close()


def test_a_new_file_shrinks_after_a_prune(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        _fill(store)
        assert _auto_vacuum(db_path) == 2  # incremental, set before the first table
        before = os.path.getsize(db_path)
        split = store.info()["space"]
        report = store.prune(older_than=MONTH)
        after = os.path.getsize(db_path)
        assert len(report.sessions) == 60 and not report.needs_compact
        assert after < before / 2, (before, after)
        assert report.freed >= before - after  # the purge may grow the file a little first
        left = store.info()["space"]
        assert left["free"] == 0
        assert left["messages"] < split["messages"] / 10
        # The index keeps the deleted words (and their tombstones) until compact() merges it.
        assert left["search_index"] >= split["search_index"] / 2
        assert store.compact() > 0
        assert store.info()["space"]["search_index"] < split["search_index"] / 4
        assert [m.content for m in store.messages("recent")] == ["kept"]
        assert [h.message.content for h in store.search("kept")] == ["kept"]


def test_space_comes_back_in_bounded_steps(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        _fill(store)
        for i in range(60):
            store.delete_session(f"old-{i:03d}")
        engine = engine_of(store)
        lefts: list[int] = []
        freed = space.reclaim(engine, pages=16, progress=lefts.append)
        assert freed > 0 and lefts[-1] == 0 and len(lefts) > 10
        steps = [a - b for a, b in itertools.pairwise(lefts)]
        assert all(0 < s <= 16 for s in steps), steps  # one write transaction, 16 pages


def test_the_split_accounts_for_the_file(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        _fill(store, sessions=10)
        store.delete_session("old-000")
        split = store.info()["space"]
        engine = engine_of(store)
        with engine.read() as conn:
            pages = conn.execute("PRAGMA page_count").get * conn.execute("PRAGMA page_size").get
        assert split["messages"] > split["other"] > 0 and split["search_index"] > 0
        assert split["free"] > 0
        # dbstat does not list the pointer-map pages of auto-vacuum: 1 in ~800.
        assert 0.98 * pages <= sum(split.values()) <= pages


def test_an_older_file_needs_one_compact_then_gives_space_back_in_steps(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        _fill(store, sessions=30)
    conn = apsw.Connection(str(db_path))  # as sessiondb 0.1 made it: no auto-vacuum
    conn.execute("PRAGMA auto_vacuum=NONE; VACUUM")
    conn.close()
    assert _auto_vacuum(db_path) == 0
    with sessiondb.open(db_path) as store:
        before = os.path.getsize(db_path)
        report = store.prune(older_than=timedelta(days=30))
        assert len(report.sessions) == 30 and report.needs_compact and report.freed == 0
        assert os.path.getsize(db_path) > 0.9 * before  # free pages inside: about as big
        freed = store.compact()
        assert freed > 0  # measured from the size when compact() began
        assert os.path.getsize(db_path) < before / 4
        assert [m.content for m in store.messages("recent")] == ["kept"]
        _fill(store, sessions=30)
        engine_of(store).checkpoint("PASSIVE")  # the new pages into the file itself
        grown = os.path.getsize(db_path)
        again = store.prune(older_than=timedelta(days=30))
        assert not again.needs_compact and again.freed > 0
        assert os.path.getsize(db_path) < grown / 2  # the index's share stays (see above)
    assert _auto_vacuum(db_path) == 2
