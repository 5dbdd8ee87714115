"""Write admission: writers queue on a kernel lock before they ask SQLite for the write lock.

Why (docs/design.md rule 4): SQLite's busy handler sleeps on a fixed schedule and retries, so under
load one eager process wins over and over while others starve for seconds ("database is locked"
after a 30 s timeout while the file was busy for microseconds at a time). An ``flock`` on a side
file puts waiters to sleep in the kernel and wakes the next one the moment the holder releases — on
Linux >= 4.19 waiters are chained so one release wakes one waiter, not a thundering herd.

flock locks belong to an open file description, so each (process, thread) opens its own
descriptor: two threads sharing one descriptor would both "hold" the lock at once, and a child
after fork must never use its parent's descriptor for the same reason.

Deadline: a writer waits in the queue (sessiondb/host/flock.py) at most its ``write_timeout``
and then raises ``StoreBusy``, so a writer of ours frozen inside its transaction (Ctrl-Z, SIGSTOP,
a debugger) delays the others only up to their own deadline (tests/sqlite/test_concurrency.py,
``test_a_stopped_writer_…``).

At the head of the queue the writer asks SQLite for the write lock *without* waiting, and if a
process outside the queue holds it, it leaves the queue and waits in SQLite's busy handler with
its own deadline (engine.write). The lock file is opened without following a symlink and must be
a regular file.

A writer that releases the lock and wants it again may take it at once only ``BARGE_LIMIT`` times
in a row while a writer of another process has waited past its patience (host/flock.py,
"Barging"; docs/adr/0001-flock-admission-queue.md, amendment 1).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..host.flock import QueuedLock


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    """The admission lock file of a database: ``<db>.lock`` beside it (the one spelling of it)."""
    return Path(os.fspath(db_path) + ".lock")


#: Turns a writer may take in a row right after releasing, while another process waits
#: (host/flock.py, "Barging"; docs/benchmarks.md, "Bounded barging").
BARGE_LIMIT = 4


class AdmissionLock(QueuedLock):
    """One (process, thread)'s handle on the admission queue of one database."""

    __slots__ = ()

    def __init__(self, path: Path) -> None:
        super().__init__(path, barge_limit=BARGE_LIMIT)


__all__ = ["AdmissionLock", "lock_path_for"]
