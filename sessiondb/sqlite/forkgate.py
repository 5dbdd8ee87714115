"""``fork()`` against transactions in other threads of the process.

A child forked while another thread was inside a transaction could never write (WAL) or even
read (rollback journal): SQLite's in-process lock bookkeeping kept the inherited, abandoned
connection's locks held for ever (tests/sqlite/test_concurrency.py::
test_fork_while_another_thread_is_inside_a_transaction). Every transaction of the engine enters
this gate; ``os.fork`` waits (bounded) until none is inside, and none starts until it is done.
"""

from __future__ import annotations

import os
import threading
import time


class ForkGate:
    """Transactions of this process (any engine) against ``fork()``: a fork waits — up to
    FORK_WAIT seconds — until no thread is inside one, and none starts until it is done."""

    FORK_WAIT = 60.0

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False

    def enter(self) -> None:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0 and self._forking:
                self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()
        self._forking = True
        deadline = time.monotonic() + self.FORK_WAIT
        while self._active and time.monotonic() < deadline:
            self._cond.wait(deadline - time.monotonic())

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the other threads did not come along


FORK_GATE = ForkGate()
os.register_at_fork(
    before=FORK_GATE.before_fork,
    after_in_parent=FORK_GATE.after_fork_in_parent,
    after_in_child=FORK_GATE.after_fork_in_child,
)


__all__ = ["FORK_GATE", "ForkGate"]
