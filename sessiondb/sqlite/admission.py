"""Write admission: writers queue on a kernel lock before they ask SQLite for the write lock.

Why (docs/design.md rule 4): SQLite's busy handler sleeps on a fixed schedule and retries, so under
load one eager process wins over and over while others starve for seconds ("database is locked"
after a 30 s timeout while the file was busy for microseconds at a time). An ``flock`` on a side
file puts waiters to sleep in the kernel and wakes the next one the moment the holder releases — on
Linux >= 4.19 waiters are chained so one release wakes one waiter, not a thundering herd.

flock locks belong to an open file description, so each (process, thread) opens its own
descriptor: two threads sharing one descriptor would both "hold" the lock at once, and a child
after fork must never use its parent's descriptor for the same reason.

Deadline: flock has no timeout. A writer first tries without blocking; when the lock is taken, a
helper thread of its handle blocks in the kernel queue on the handle's descriptor (a flock belongs
to the open file description, not to a thread) while the writer waits for it with its own deadline.
A writer whose deadline passes gives up with ``StoreBusy``; its handle is then spent — the helper
releases the lock at once if it is granted later, and closes the descriptor — and the writer's next
write queues on a new handle. So a writer of ours frozen inside its transaction (Ctrl-Z, SIGSTOP, a
debugger) delays the others only up to their own ``write_timeout``
(tests/sqlite/test_concurrency.py, ``test_a_stopped_writer_…``). The hand-over through the helper
costs about 6 µs per contended acquisition (16 processes, 80 µs critical sections: 10.4 k/s against
11.1 k/s blocking in the writer itself).

At the head of the queue the writer asks SQLite for the write lock *without* waiting, and if a
process outside the queue holds it, it leaves the queue and waits in SQLite's busy handler with
its own deadline (engine.write). The lock file is opened without following a symlink and must be
a regular file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from pathlib import Path

from ..errors import Error
from ..host.paths import open_private


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    """The admission lock file of a database: ``<db>.lock`` beside it (the one spelling of it)."""
    return Path(os.fspath(db_path) + ".lock")


class AdmissionLock:
    """One (process, thread)'s handle on the admission queue of one database."""

    __slots__ = ("_busy", "_fd", "_got", "_helper", "_mu", "_spent", "_want", "path", "pid")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd = _open_lock_file(path)
        self._mu = threading.Lock()
        self._want = threading.Event()
        self._got = threading.Event()
        self._helper: threading.Thread | None = None
        self._busy = False  # the helper is inside flock(LOCK_EX)
        self._spent = False  # given up on: the helper closes the descriptor

    @property
    def spent(self) -> bool:
        """True once a wait timed out: this handle must not be used again."""
        return self._spent

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return True

    def acquire(self, timeout: float | None = None) -> bool:
        """Wait in the kernel's queue for at most ``timeout`` seconds (None: as long as it
        takes); True once this handle holds the lock. False: the handle is spent (module
        docstring)."""
        if timeout is None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return True
        if self.try_acquire():
            return True
        if self._helper is None:
            self._helper = threading.Thread(
                target=self._wait_in_queue, name="sessiondb-admission", daemon=True
            )
            self._helper.start()
        self._want.set()
        if self._got.wait(max(0.0, timeout)):
            self._got.clear()
            return True
        with self._mu:
            if self._got.is_set():  # granted while we gave up
                self._got.clear()
                return True
            self._spent = True
        return False

    def _wait_in_queue(self) -> None:
        while True:
            self._want.wait()
            self._want.clear()
            with self._mu:
                if self._spent:
                    self._close_fd()
                    return
                self._busy = True
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._mu:
                self._busy = False
                if self._spent:  # the writer gave up: nobody will use this grant
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    self._close_fd()
                    return
                self._got.set()

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.pid != os.getpid():
            # Inherited through fork: the helper thread did not come along; our copy of the
            # descriptor is ours to close (the flock goes with the parent's copy).
            self._close_fd()
            return
        with self._mu:
            self._spent = True
            if self._busy:
                return  # the helper closes the descriptor when its wait ends
            if self._helper is None:
                self._close_fd()
                return
        self._want.set()  # wake the idle helper: it sees spent and closes the descriptor

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open_lock_file(path: Path) -> int:
    """Open ``<db>.lock`` without following a symlink; it must be a regular file (a FIFO or a
    device there would block or mislead the queue)."""
    fd = open_private(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Error(
            f"{path}: the admission lock is not a regular file — remove it (sessiondb makes a new "
            "one) and check who put it there"
        )
    return fd
