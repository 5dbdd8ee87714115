"""The per-process background thread that runs PASSIVE checkpoints when a commit asks for one
(docs/design.md rule 7, docs/adr/0002-checkpoints-off-the-hot-path.md)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from pathlib import Path

import apsw

from .forkgate import FORK_GATE

# At most one background pass per interval (seconds): a writer finishing a forced checkpoint
# then rarely finds this one holding the checkpoint lock.
CHECKPOINT_INTERVAL = 0.01
# How long close() waits for a checkpoint pass in progress (PASSIVE: it never waits on a lock).
STOP_TIMEOUT = 10.0
# WAL pages (4 KiB each) after which the background thread runs a PASSIVE checkpoint.
CHECKPOINT_PAGES = 1000
# Past CHECKPOINT_PAGES, the commit whose frames cross a multiple of this many WAL frames wakes
# its process's checkpointer: one pass per stride of the file's WAL, however many processes
# write it. Waking on every commit past the threshold (at most once per CHECKPOINT_INTERVAL
# per process) ran up to K passes per interval with K writer processes, each re-copying the
# same hot pages: 214-220 µs of CPU per append at K=16 against 164-172 with 16x the interval
# (docs/benchmarks.md, "Checkpoint passes per stride of the WAL"; ADR 2 amendment 1).
CHECKPOINT_STRIDE = 512


def wake_due(pages: int, written: int) -> bool:
    """Whether the commit that brought the WAL to ``pages`` frames, ``written`` of them its own,
    wakes its process's background pass: past CHECKPOINT_PAGES, when it crossed a stride."""
    return (
        pages >= CHECKPOINT_PAGES
        and pages // CHECKPOINT_STRIDE != (pages - written) // CHECKPOINT_STRIDE
    )


class Checkpointer:
    """A per-process daemon thread that runs PASSIVE checkpoints when a commit asks for one."""

    def __init__(self, path: Path) -> None:
        self.pid = os.getpid()
        self._path = path
        self._event = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sessiondb-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._event.set()

    def stop(self) -> None:
        """Stop the thread and wait (bounded) until it has closed its connection: the store's
        close then is the file's last close, which checkpoints the WAL into the main file and
        removes it (tests/sqlite/test_backend.py::test_close_leaves_the_main_file_whole)."""
        self._stopped = True
        self._event.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        conn: apsw.Connection | None = None
        try:
            while True:
                self._event.wait()
                self._event.clear()
                if self._stopped:
                    return
                # Inside the fork gate like every transaction (forkgate.py): a child forked in
                # the middle of this pass would inherit the checkpoint's locks as held, in
                # SQLite's in-process bookkeeping, for ever — and its writers would stall on
                # them holding the write lock (tests/sqlite/test_concurrency.py::
                # test_fork_waits_for_a_background_checkpoint).
                FORK_GATE.enter()
                try:
                    if conn is None:
                        conn = apsw.Connection(str(self._path))
                        # Never wait: another process's checkpoint in progress is as good as ours.
                        conn.set_busy_timeout(0)
                        # A connection learns the file is in WAL mode only when it first reads
                        # it; until then wal_checkpoint silently does nothing (returns -1, -1).
                        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
                    conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                except apsw.BusyError:
                    pass
                except apsw.Error as e:
                    warnings.warn(
                        f"sessiondb: checkpoint of {self._path} failed: {e}", stacklevel=1
                    )
                finally:
                    FORK_GATE.leave()
                # At most one pass per interval, so that a writer finishing a forced checkpoint
                # rarely finds this one holding the checkpoint lock.
                time.sleep(CHECKPOINT_INTERVAL)
        finally:
            if conn is not None:
                with contextlib.suppress(apsw.Error):
                    conn.close()


__all__ = [
    "CHECKPOINT_INTERVAL",
    "CHECKPOINT_PAGES",
    "CHECKPOINT_STRIDE",
    "STOP_TIMEOUT",
    "Checkpointer",
    "wake_due",
]
