"""/proc/locks and /proc/*/fd: naming the process that holds a database's locks."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessiondb.host.procinfo import FileLock, lock_holders, open_by, parse_proc_locks
from sessiondb.sqlite.admission import lock_path_for
from sessiondb.sqlite.locks import (
    admission_lock_holder,
    sqlite_write_lock,
    sqlite_write_lock_holder,
)
from tests import _workers_procfs as workers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")


holding = workers.holding


SAMPLE = """\
1: POSIX  ADVISORY  WRITE 3777 fe:00:1474579 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 fe:00:99 0 EOF
3: OFDLCK ADVISORY  READ  -1 08:01:1234 1073741826 1073742335
3: -> POSIX ADVISORY  WRITE 555 fe:00:1474579 0 EOF
4: POSIX  ADVISORY  WRITE 77 103:02:17 120 120
nonsense line
"""


def test_parse_proc_locks_fields() -> None:
    entries = parse_proc_locks(SAMPLE)
    assert len(entries) == 4  # the blocked waiter and the nonsense are skipped
    first = entries[0]
    assert first.lock == FileLock(3777, "POSIX", "WRITE", 0, None)
    assert (first.major, first.minor, first.inode) == (0xFE, 0, 1474579)
    assert entries[1].lock.kind == "FLOCK"
    assert entries[2].lock == FileLock(-1, "OFDLCK", "READ", 0x40000002, 0x40000002 + 509)
    assert (entries[3].major, entries[3].minor) == (0x103, 0x02)


def test_lock_holders_matches_device_and_inode(tmp_path: Path) -> None:
    f = tmp_path / "x.db"
    f.write_bytes(b"")
    st = f.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    other_dev = f"{os.major(st.st_dev) + 1:02x}:{os.minor(st.st_dev):02x}"
    text = (
        f"1: POSIX  ADVISORY  WRITE 10 {dev}:{st.st_ino} 1073741825 1073741825\n"
        f"2: POSIX  ADVISORY  WRITE 11 {dev}:{st.st_ino + 1} 0 EOF\n"
        # Same inode number on another device, by a process that does not have it open:
        f"3: POSIX  ADVISORY  WRITE 999999999 {other_dev}:{st.st_ino} 0 EOF\n"
    )
    assert lock_holders(f, text) == [FileLock(10, "POSIX", "WRITE", 0x40000001, 0x40000001)]


def test_lock_holders_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert lock_holders(tmp_path / "missing.db", SAMPLE) == []


def test_no_holder_on_an_idle_database(tmp_path: Path) -> None:
    import apsw

    db = tmp_path / "idle.db"
    conn = apsw.Connection(str(db))
    conn.execute("PRAGMA journal_mode=wal; CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    try:
        assert sqlite_write_lock_holder(db) is None
    finally:
        conn.close()


@pytest.mark.parametrize(("mode", "which"), [("wal", "wal-write"), ("delete", "reserved")])
def test_write_lock_holder_is_named(tmp_path: Path, mode: str, which: str) -> None:
    db = tmp_path / f"{mode}.db"
    with holding(workers.hold_write_lock, str(db), mode) as pid:
        held = sqlite_write_lock(db)
        assert held is not None
        assert held.pid == pid
        assert held.lock == which
        assert sqlite_write_lock_holder(db) == pid
        assert pid in open_by(db)
    assert sqlite_write_lock_holder(db) is None  # released with the process


def test_admission_flock_holder_is_named(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with holding(workers.hold_flock, str(lock_path_for(db))) as pid:
        assert admission_lock_holder(db) == pid
        assert sqlite_write_lock_holder(db) is None  # an flock is not SQLite's lock
    assert admission_lock_holder(db) is None


def test_the_admission_flock_holder_is_who_holds_it_now_not_who_took_it(tmp_path: Path) -> None:
    """A lock taken here and passed on with its descriptor (as a combining head hands on its
    tenure, sqlite/combine_baton.py): /proc/locks still names this process, which holds
    nothing any more; the holder named is the process with the descriptor."""
    db = tmp_path / "s.db"
    fd = os.open(lock_path_for(db), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    also_open = os.open(lock_path_for(db), os.O_RDWR)  # a descriptor of it without the lock
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        pass_fds=(fd,),
    )
    try:
        os.close(fd)
        assert [lk.pid for lk in lock_holders(lock_path_for(db))] == [os.getpid()]
        assert admission_lock_holder(db) == holder.pid
    finally:
        holder.communicate(timeout=30)
        os.close(also_open)
    assert admission_lock_holder(db) is None


def test_open_by_lists_processes_with_the_file_open(tmp_path: Path) -> None:
    f = tmp_path / "o.db"
    f.write_bytes(b"data")
    assert os.getpid() not in open_by(f)
    with holding(workers.hold_open, str(f)) as pid:
        assert pid in open_by(f)
        assert pid not in open_by(tmp_path / "other.db")
    with open(f, "rb"):
        assert os.getpid() in open_by(f)


def test_open_by_missing_file_is_empty(tmp_path: Path) -> None:
    assert open_by(tmp_path / "nope.db") == []
