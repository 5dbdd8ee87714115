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
from tests.conftest import in_ci
from tests.helpers import downgrade_to_v6, engine_of


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
    """Make a file as sessiondb 0.1 (schema version 3) left it: no revision, no leases table,
    no usage rollup."""
    conn = apsw.Connection(str(path))
    downgrade_to_v6(conn)
    conn.execute(
        "DROP TRIGGER messages_rollup_ai; DROP TRIGGER messages_rollup_ad;"
        " DROP VIEW rollup_add; DROP VIEW rollup_remove; DROP TABLE activity;"
        " DROP TABLE responses; DROP TABLE rollup_scratch; DROP TABLE rollup_state;"
        " ALTER TABLE sessions DROP COLUMN revision; DROP TABLE leases;"
        " DELETE FROM schema_version WHERE version >= 4"
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
        with pytest.raises(sessiondb.UnsupportedStorage, match="sessiondb migrate"):
            ro.stats()  # the rollup came with version 5
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


_FD_EXHAUSTION = """
import os, resource, sys
import sessiondb
path, free = sys.argv[1], int(sys.argv[2])
warm = sessiondb.open(path + ".warm")  # every module loaded before descriptors run out
warm.append("s", "user", "x")
warm.close()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for fd in fds[:free]:
    os.close(fd)
try:
    sessiondb.open(path).append("s", "user", "x")
    print("stored")
except sessiondb.Error as e:
    print("sessiondb.Error:", e)
except BaseException as e:
    print("raw", type(e).__name__, e)
"""


@pytest.mark.parametrize("free", [0, 1, 2, 3, 4])
def test_open_failures_say_what_happened(db_path: Path, free: int) -> None:
    """With no file descriptor left (a leaking server), the append failed with a raw
    apsw.NoFTS5Error ("Is the extension included in SQLite?") when one or two were free."""
    import subprocess
    import sys

    sessiondb.open(db_path).close()
    out = subprocess.run(
        [sys.executable, "-c", _FD_EXHAUSTION, str(db_path), str(free)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
    assert out == "stored" or out.startswith("sessiondb.Error:"), out
    if out != "stored":
        assert "open" in out


def test_a_lock_held_at_open_under_the_rollback_journal_is_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "rollback.db"
    sessiondb.open(path, journal_mode="delete").close()
    foreign = apsw.Connection(str(path))
    foreign.execute("BEGIN EXCLUSIVE")  # readers cannot even read the schema
    try:
        store = sessiondb.open(path, write_timeout=0.3)  # a lock at open is retried later
        with pytest.raises(sessiondb.StoreBusy):
            store.count()
    finally:
        foreign.execute("ROLLBACK")
        foreign.close()
    assert store.count() == 0
    store.close()


@pytest.fixture
def read_only_mount(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A folder and a read-only bind mount of it (needs root; CI runs as root)."""
    import subprocess

    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True)
    if mounted.returncode != 0:
        if in_ci():
            pytest.fail(f"cannot bind-mount in CI: {mounted.stderr!r}")
        pytest.skip("bind mounts need root")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        yield src, ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_a_cleanly_closed_wal_store_on_read_only_media_is_readable(read_only_mount) -> None:  # type: ignore[no-untyped-def]
    src, ro = read_only_mount
    with sessiondb.open(src / "s.db") as store:
        assert store.info()["journal_mode"] == "wal"
        store.append("s", "user", "kept on a read-only disk")
    assert sorted(p.name for p in src.iterdir()) == ["s.db", "s.db.lock"]  # no -wal, no -shm
    with sessiondb.open(ro / "s.db", readonly=True) as reader:
        assert [m.content for m in reader.messages("s")] == ["kept on a read-only disk"]
        assert [h.message.seq for h in reader.search("read-only")] == [1]
    with pytest.raises(sessiondb.UnsupportedStorage, match="readonly=True"):
        sessiondb.open(ro / "s.db").append("s", "user", "x")


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_hostile_lock_file_is_refused_not_followed(tmp_path: Path, kind: str) -> None:
    """``<db>.lock`` made a symlink to a file elsewhere (or a FIFO) by someone sharing the
    folder: sessiondb neither creates nor writes through the link, nor blocks on the FIFO."""
    db = tmp_path / "s.db"
    lock = tmp_path / "s.db.lock"
    target = tmp_path / "elsewhere" / "precious"
    target.parent.mkdir()
    if kind == "symlink":
        target.write_bytes(b"keep me")
        lock.symlink_to(target)
    else:
        os.mkfifo(lock)
    with pytest.raises(sessiondb.Error, match="lock") as info:
        sessiondb.open(db).append("s", "user", "x")
    assert "Traceback" not in str(info.value)
    if kind == "symlink":
        assert target.read_bytes() == b"keep me" and stat.S_IMODE(target.stat().st_mode) != 0


def test_readonly_with_a_hot_journal_says_to_roll_it_back(tmp_path: Path) -> None:
    import shutil

    db = tmp_path / "rb.db"
    with sessiondb.open(db, journal_mode="delete") as store:
        store.append_many("s", [{"role": "user", "content": "x" * 900} for _ in range(300)])
    writer = apsw.Connection(str(db))
    writer.execute("PRAGMA cache_size = 5").fetchall()  # spill into the file mid-transaction
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE messages SET content = 'half-written ' || content")
    crashed = tmp_path / "crashed.db"
    shutil.copyfile(db, crashed)  # the files as a kill -9 leaves them
    shutil.copyfile(f"{db}-journal", f"{crashed}-journal")
    writer.execute("ROLLBACK")
    writer.close()
    with pytest.raises(sessiondb.Error, match="interrupted") as info:
        sessiondb.open(crashed, readonly=True).count()
    assert "NoFTS5" not in str(info.value)
    with sessiondb.open(crashed) as store:  # a writable open rolls the journal back
        assert store.count() == 300
        assert not any(m.content.startswith("half") for m in store.messages("s"))


def test_close_leaves_the_main_file_whole(tmp_path: Path) -> None:
    """After close() no connection of ours is left on the file — the background checkpointer's
    included — so the last close checkpoints the WAL into the main file: a copy of the main
    file alone holds every message (a backup script, or `cp` after the process is done)."""
    path = tmp_path / "s.db"
    store = sessiondb.open(path)
    text = "x" * 3000  # ~1 page a message: the background checkpointer starts after 1000 pages
    for i in range(60):
        store.append_many(f"s{i}", [{"role": "user", "content": text}] * 50)
    store.close()
    assert [c for c in apsw.connections() if c.filename == str(path)] == []
    assert not Path(f"{path}-wal").exists()
    copy = tmp_path / "copy" / "s.db"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    conn = apsw.Connection(str(copy))
    assert conn.execute("SELECT count(*) FROM messages").get == 3000
    conn.close()
