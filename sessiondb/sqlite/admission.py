"""Write admission: writers queue on a kernel lock before they ask SQLite for the write lock.

Why (docs/design.md rule 4): SQLite's busy handler sleeps on a fixed schedule and retries, so under
load one eager process wins over and over while others starve for seconds ("database is locked"
after a 30 s timeout while the file was busy for microseconds at a time). An ``flock`` on a side
file puts waiters to sleep in the kernel and wakes the next one the moment the holder releases — on
Linux >= 4.19 waiters are chained so one release wakes one waiter, not a thundering herd.

flock locks belong to an open file description, so each (process, thread) opens its own
descriptor: two threads sharing one descriptor would both "hold" the lock at once, and a child
after fork must never use its parent's descriptor for the same reason.

Deadline: flock has no timeout. A writer first tries without blocking; when the lock is taken it
blocks in the kernel queue. Every holder is one of our writers inside a transaction of a few
milliseconds: at the head of the queue it asks SQLite for the write lock *without* waiting, and if
a process outside the queue holds it, it leaves the queue and waits in SQLite's busy handler with
its own deadline (engine.write). So the queue only ever waits for short transactions, and a
waiter admitted after its deadline releases at once and raises ``StoreBusy``. What this cannot
bound: a writer of ours frozen (SIGSTOP, a debugger) inside its transaction holds the queue until
it resumes or dies.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ..host.paths import open_private


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    """The admission lock file of a database: ``<db>.lock`` beside it (the one spelling of it)."""
    return Path(os.fspath(db_path) + ".lock")


class AdmissionLock:
    """One (process, thread)'s handle on the admission queue of one database."""

    __slots__ = ("_fd", "path", "pid")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd = open_private(path, os.O_RDWR | os.O_CREAT)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return True

    def acquire(self) -> None:
        """Block in the kernel's queue until this handle holds the lock."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
