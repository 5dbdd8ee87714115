"""SQLite's lock bytes and sessiondb's admission lock: who holds a database's write lock.

The generic /proc/locks reading is in :mod:`sessiondb.host.procinfo`; this module knows where
SQLite and sessiondb put their locks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ..host.procinfo import covers, flock_holders, lock_holders
from .admission import lock_path_for

# SQLite's unix VFS locks with fcntl(F_SETLK) byte ranges (POSIX locks, owned by a process), so the
# kernel can tell us who holds them. The byte offsets are SQLite's on-disk locking protocol and
# are stable across versions (https://www.sqlite.org/lockingv3.html, walformat.html):
#   rollback journal (os_unix.c, os.h): PENDING_BYTE = 0x40000000, RESERVED_BYTE = PENDING_BYTE+1,
#     SHARED_FIRST = PENDING_BYTE+2, SHARED_SIZE = 510. A writer in BEGIN IMMEDIATE holds a write
#     lock on RESERVED_BYTE; while it commits it holds PENDING and then EXCLUSIVE, a write lock on
#     the whole shared range.
#   WAL (wal.c, os_unix.c): the shm locks start at UNIX_SHM_BASE = (22 + SQLITE_SHM_NLOCK) * 4
#     = 120 (WALINDEX_LOCK_OFFSET in wal.c), lock i is byte 120 + i; WAL_WRITE_LOCK is lock 0, so
#     the one writer holds a write lock on byte 120 of the -shm file.
PENDING_BYTE = 0x40000000
RESERVED_BYTE = PENDING_BYTE + 1
SHARED_FIRST = PENDING_BYTE + 2
SHARED_SIZE = 510
WAL_WRITE_LOCK_BYTE = 120


class WriteLock(NamedTuple):
    """Who holds SQLite's write lock on a database: ``lock`` names which one (``wal-write`` on
    the -shm file, or ``reserved`` / ``pending`` / ``exclusive`` on the database file)."""

    pid: int
    lock: str
    file: str


def database_files(db_path: str | os.PathLike[str]) -> list[Path]:
    """The database and the files SQLite and sessiondb keep beside it (for the doctor's
    permission and open-by checks, and the repair's exclusivity check)."""
    db = os.fspath(db_path)
    return [Path(db), *(Path(db + s) for s in ("-wal", "-shm", "-journal")), lock_path_for(db)]


def shm_path(db_path: str | os.PathLike[str]) -> str:
    return os.fspath(db_path) + "-shm"


def sqlite_write_lock(db_path: str | os.PathLike[str]) -> WriteLock | None:
    """The process holding SQLite's write lock on ``db_path`` right now, or None.

    Both journal modes are looked at, so the answer does not depend on knowing the mode. Locks
    without an owning process (OFD locks, pid -1) cannot be named and are ignored.
    """
    shm = shm_path(db_path)
    for lk in lock_holders(shm):
        is_write = lk.pid > 0 and lk.mode == "WRITE" and lk.kind != "FLOCK"
        if is_write and covers(lk, WAL_WRITE_LOCK_BYTE, WAL_WRITE_LOCK_BYTE):
            return WriteLock(lk.pid, "wal-write", shm)
    db = os.fspath(db_path)
    found: dict[str, int] = {}
    for lk in lock_holders(db):
        if lk.pid <= 0 or lk.mode != "WRITE" or lk.kind == "FLOCK":
            continue
        if covers(lk, SHARED_FIRST, SHARED_FIRST + SHARED_SIZE - 1):
            found.setdefault("exclusive", lk.pid)
        if covers(lk, RESERVED_BYTE, RESERVED_BYTE):
            found.setdefault("reserved", lk.pid)
        if covers(lk, PENDING_BYTE, PENDING_BYTE):
            found.setdefault("pending", lk.pid)
    for name in ("exclusive", "reserved", "pending"):
        if name in found:
            return WriteLock(found[name], name, db)
    return None


def sqlite_write_lock_holder(db_path: str | os.PathLike[str]) -> int | None:
    """Pid of the process holding SQLite's write lock on ``db_path`` (WAL or rollback), or None."""
    held = sqlite_write_lock(db_path)
    return held.pid if held else None


def admission_lock_holder(db_path: str | os.PathLike[str]) -> int | None:
    """Pid holding sessiondb's admission flock on ``<db>.lock``, or None.

    /proc/locks names the process that took the lock; the lock passes with its descriptor — a
    combining head hands its tenure on with it (sqlite/combine_baton.py) — so the holder is
    found among the processes with a descriptor of the file that holds it
    (host/procinfo.py, ``flock_holders``), the taker looked at first. When none can be read
    (another user's processes), the taker is the answer: the best the kernel tells.
    """
    path = lock_path_for(db_path)
    for lk in lock_holders(path):
        if lk.kind == "FLOCK" and lk.mode == "WRITE" and lk.pid > 0:
            holders = flock_holders(path, first=lk.pid)
            return holders[0] if holders else lk.pid
    return None


def wal_pinning_readers(path: str | os.PathLike[str]) -> list[int]:
    """Processes in a read transaction that uses the WAL: they hold a read lock on one of the
    shm bytes 124..127 (WAL_READ_LOCK(1..4); byte 120 + i is lock i, as above)."""
    first = WAL_WRITE_LOCK_BYTE + 4
    pids = {
        lk.pid
        for lk in lock_holders(shm_path(path))
        if lk.pid > 0
        and lk.mode == "READ"
        and lk.start <= first + 3
        and (lk.end is None or lk.end >= first)
    }
    pids.discard(os.getpid())
    return sorted(pids)
