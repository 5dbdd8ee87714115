"""The SQLite backend's own behaviour under the contract: private files, batched purges,
read-only opening of files of older schema versions, and the ``:memory:`` refusal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import apsw
import pytest

import sessiondb
from sessiondb.sqlite import schema
from sessiondb.sqlite.backend import PURGE_BATCH
from tests.helpers import engine_of


def _left(store: sessiondb.Store) -> tuple[int, int]:
    with engine_of(store).read() as conn:
        left = conn.execute("SELECT count(*) FROM messages").get
        queued = conn.execute("SELECT count(*) FROM purge_queue").get
    return int(left), int(queued)


def test_delete_large_session_in_batches(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        n = PURGE_BATCH * 2 + 7
        store.append_many("big", [{"role": "user", "content": f"m{i}"} for i in range(n)])
        store.append("keep", "user", "kept")
        assert store.delete_session("big")
        assert _left(store) == (1, 0)


def test_clear_purges_in_batches_and_a_crash_mid_purge_is_finished_on_open(
    db_path: Path,
) -> None:
    n = PURGE_BATCH + 5
    with sessiondb.open(db_path) as store:
        store.append_many("s", [{"role": "user", "content": f"m{i}"} for i in range(n)])
        with engine_of(store).write() as conn:  # what clear() leaves if killed before purging
            ref = conn.execute("SELECT id FROM sessions WHERE session_id = 's'").get
            conn.execute("INSERT INTO purge_queue(sid) VALUES (?)", (ref,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (ref,))
        assert _left(store) == (n, 1)
    with sessiondb.open(db_path) as store:  # the next open finishes the purge
        assert store.count() == 0
        assert _left(store) == (0, 0)
        store.append_many("s", [{"role": "user", "content": f"m{i}"} for i in range(n)])
        assert store.clear_session("s") == n
        assert _left(store) == (0, 0)


def _downgrade_to_v3(path: Path) -> None:
    """Make a file as sessiondb 0.1 (schema version 3) left it: no revision, no leases table."""
    conn = apsw.Connection(str(path))
    conn.execute(
        "ALTER TABLE sessions DROP COLUMN revision; DROP TABLE leases;"
        " DELETE FROM schema_version WHERE version = 4"
    )
    conn.close()


def test_readonly_reads_an_older_schema_without_migrating_it(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        store.append("s", "user", "written by an older sessiondb")
        store.lease("job", "w1").acquire()
    _downgrade_to_v3(db_path)
    with sessiondb.open(db_path, readonly=True) as ro:
        [s] = ro.list_sessions()
        assert (s.session_id, s.message_count, s.revision) == ("s", 1, 0)
        assert [m.content for m in ro.messages("s")] == ["written by an older sessiondb"]
        assert [h.message.seq for h in ro.search("older")] == [1]
        assert ro.leases() == []
        assert ro.info()["schema_version"] == 3
    with engine_of(sessiondb.open(db_path, readonly=True)).read() as conn:
        assert schema.current_version(conn) == 3  # nothing was migrated
    with sessiondb.open(db_path) as rw:  # a read-write open migrates
        assert rw.info()["schema_version"] == schema.LATEST
        assert rw.get_session("s") is not None


def test_memory_path_is_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(sessiondb.InvalidInput, match="memory"):
        sessiondb.open(":memory:")
    assert list(tmp_path.iterdir()) == []


def test_files_are_private(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(os, "umask", os.umask)  # keep the process umask as it is
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "deeper" / "s.db"
        with sessiondb.open(path) as s:
            s.append("a", "user", "x")
            for p in path.parent.iterdir():
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
            for d in (path.parent, path.parent.parent):
                assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    finally:
        os.umask(old)


def test_a_full_disk_says_so_and_writes_nothing(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        store.append("s", "user", "first")
        conn = engine_of(store).connection()
        pages = conn.execute("PRAGMA page_count").get
        conn.execute(f"PRAGMA max_page_count={pages}").fetchall()  # SQLite's own SQLITE_FULL
        with pytest.raises(sessiondb.Error, match="the disk is full") as info:
            store.append("s", "user", "x" * 200_000)
        assert not isinstance(info.value, sessiondb.CorruptDatabase)
        assert [m.content for m in store.messages("s")] == ["first"]
