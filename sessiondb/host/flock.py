"""A lock queued in the kernel, with a deadline: an ``flock`` on a file, waited for by a helper
thread so that the waiter can give up (flock itself has no timeout).

Used by the store's write admission (sqlite/admission.py) and by file leases (lease/files.py).
A waiter first tries without blocking; when the lock is taken, a helper thread of its handle
blocks in the kernel queue on the handle's descriptor (a flock belongs to the open file
description, not to a thread) while the waiter waits for it with its own deadline. A waiter whose
deadline passes gives up; its handle is then spent — the helper releases the lock at once if it
is granted later, and closes the descriptor — and the next attempt uses a new handle. Waiters are
woken in the kernel's order, one per release: fair, unlike polling with ``LOCK_NB``, which let
one of 32 lease takers starve past 10 s on a loaded machine
(tests/lease/test_lease_race.py). The hand-over through the helper costs about 6 µs per
contended acquisition (16 processes, 80 µs critical sections: 10.4 k/s against 11.1 k/s
blocking in the waiter itself).

The file is opened without following a symlink and must be a regular file: a FIFO or a device
there would block or mislead the queue.

Barging, bounded (``barge_limit``): a handle that released the lock a moment ago and wants it
again takes it at once when it is free (``try_acquire``) — usually before the waiter the kernel
woke has run, since the releasing process is already on a CPU. That keeps a warm writer going
(throughput), but under 64 processes it let some writers take 2.5-4.5x the turns of others
over seconds (docs/benchmarks.md, "Bounded barging"). With a limit, after that many such turns in a
row the handle checks whether another process is waiting and, if one is, goes through the queue
like everyone else. Waiters say so with a shared POSIX lock on byte 1 of the lock file while they
wait (POSIX locks and flocks are independent on Linux); the check is a non-blocking exclusive
request on that byte. A hint only: a flag lost (POSIX locks are the process's: another
descriptor of the file closed there, or another thread's check, drops it) or missed only lets a
handle barge once more.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import Error
from .inherited import not_inherited
from .paths import open_private

#: A handle that takes the lock again within this many seconds of releasing it is barging.
RECENT = 0.001
#: A waiter flags itself only after waiting this long: barging is bounded only for the
#: writers it would starve.
PATIENCE = 0.02
#: The byte of the lock file on which waiters hold a shared POSIX lock (module docstring).
_WAITING = 1


class QueuedLock:
    """One (process, thread)'s handle on a lock file's queue (module docstring)."""

    __slots__ = (
        "__weakref__",
        "_barge_limit",
        "_busy",
        "_fd",
        "_got",
        "_helper",
        "_mu",
        "_released",
        "_spent",
        "_streak",
        "_want",
        "path",
        "pid",
        "polled_out",
    )

    def __init__(self, path: Path, barge_limit: int | None = None) -> None:
        self.path = path
        self._barge_limit = barge_limit
        self._released = -1.0  # monotonic time of the last release
        self._streak = 0  # turns taken in a row right after releasing
        self.pid = os.getpid()
        self._fd = _open_lock_file(path)
        not_inherited(self)  # a child's copy would keep the lock held (host/inherited.py)
        self._mu = threading.Lock()
        self._want = threading.Event()
        self._got = threading.Event()
        self._helper: threading.Thread | None = None
        self._busy = False  # the helper is inside flock(LOCK_EX)
        self._spent = False  # given up on: the helper closes the descriptor
        self.polled_out = False  # the last wait was ended by its poll (acquire)

    @property
    def spent(self) -> bool:
        """True once a wait timed out: this handle must not be used again."""
        return self._spent

    def fileno(self) -> int:
        """The lock file's descriptor (its identity: ``os.fstat``)."""
        return self._fd

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        return True

    def acquire(
        self,
        timeout: float | None = None,
        poll: Callable[[], bool] | None = None,
        every: float = 0.0,
    ) -> bool:
        """Wait in the kernel's queue for at most ``timeout`` seconds (None: as long as it
        takes); True once this handle holds the lock. False: the handle is spent (module
        docstring). ``poll``: called every ``every`` seconds while waiting (``_wait_polling``)."""
        if timeout is None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._streak = 0
            return True
        if self.try_turn():
            return True
        if self._helper is None:
            self._helper = threading.Thread(
                target=self._wait_in_queue, name="sessiondb-admission", daemon=True
            )
            self._helper.start()
        self._want.set()
        deadline = time.monotonic() + timeout
        if poll is not None:
            return self._wait_polling(deadline, poll, every)
        got = self._barge_limit is not None and self._got.wait(min(timeout, PATIENCE))
        if not got:
            flagged = self._flag_waiting()
            try:
                got = self._wait_for_grant(deadline - time.monotonic())
            finally:
                if flagged:
                    self._unflag_waiting()
        else:
            self._got.clear()
        if got:
            self._streak = 0
        return got

    def _wait_polling(self, deadline: float, poll: Callable[[], bool], every: float) -> bool:
        """Wait for the grant, calling ``poll`` every ``every`` seconds. Once it returns True
        (or raises) the wait is given up — the handle is spent — unless the grant came first;
        False then, with :attr:`polled_out` set when ``poll`` ended it."""
        start = time.monotonic()
        flagged = False
        try:
            while True:
                left = deadline - time.monotonic()
                if self._got.wait(max(0.0, min(left, every))):
                    self._got.clear()
                    self._streak = 0
                    return True
                if not flagged and time.monotonic() - start >= PATIENCE:
                    flagged = self._flag_waiting()
                done = left <= 0
                try:
                    done = done or poll()
                except BaseException:
                    self._give_up()
                    raise
                if done:
                    if not self._give_up():
                        return True
                    self.polled_out = left > 0
                    return False
        finally:
            if flagged:
                self._unflag_waiting()

    def _give_up(self) -> bool:
        """Spend this handle unless the grant came already — granted while we gave up: keep
        it, False."""
        with self._mu:
            if self._got.is_set():
                self._got.clear()
                self._streak = 0
                return False
            self._spent = True
            return True

    def try_turn(self) -> bool:
        """Take the lock if it is free and barging is allowed ("Barging"), without waiting."""
        recent = time.monotonic() - self._released < RECENT
        if not recent:
            self._streak = 0
        if self._may_barge() and self.try_acquire():
            self._streak += recent
            return True
        return False

    def _wait_for_grant(self, timeout: float) -> bool:
        if self._got.wait(max(0.0, timeout)):
            self._got.clear()
            return True
        return not self._give_up()

    def _may_barge(self) -> bool:
        """Whether to take the lock at once if it is free (module docstring, "Barging")."""
        limit = self._barge_limit
        return limit is None or self._streak < limit or not self._others_waiting()

    def others_waiting(self) -> bool:
        """Whether a writer of another process has flagged itself waiting ("Barging")."""
        return self._others_waiting()

    def _others_waiting(self) -> bool:
        return self.others_waiting_on(self._fd)

    @staticmethod
    def others_waiting_on(fd: int) -> bool:
        """:meth:`others_waiting` through any descriptor of the lock file (a lock handed on
        to this process, sqlite/combine_baton.py)."""
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _WAITING)
        except OSError as e:
            # Taken: a waiter's flag. Any other failure (no POSIX locks here): nobody known.
            return e.errno in (errno.EAGAIN, errno.EACCES)
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, _WAITING)
        return False

    def _flag_waiting(self) -> bool:
        if self._barge_limit is None:
            return False
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, _WAITING)
        except OSError:  # a holder checking the flag this instant: this wait goes unflagged
            return False
        return True

    def _unflag_waiting(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _WAITING)

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
        self._released = time.monotonic()

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
            f"{path}: this lock file is not a regular file — remove it (sessiondb makes a new "
            "one) and check who put it there"
        )
    return fd


__all__ = ["QueuedLock"]
