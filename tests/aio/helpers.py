"""Doubles and probes for the async store's tests."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread

import sessiondb
from sessiondb.aio import AsyncSessionStore
from sessiondb.aio.workers import Workers


class Gated:
    """A sync store whose appends wait at a gate the test opens: the test knows the moment an
    append is running in a worker, and holds it there. The async store sees only the Store
    contract (everything else is the real store's)."""

    def __init__(self, store: sessiondb.Store) -> None:
        self._store = store
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def append(self, *args: Any, **kwargs: Any) -> sessiondb.Message:
        self.entered.release()
        if not self.gate.wait(60):
            raise AssertionError("the test never opened the gate")
        return self._store.append(*args, **kwargs)

    async def running(self) -> None:
        """Wait until one more append is running (held at the gate)."""
        assert await anyio.to_thread.run_sync(lambda: self.entered.acquire(timeout=60))


def gated_store(path: Path, workers: int = 1) -> tuple[AsyncSessionStore, Gated]:
    gated = Gated(sessiondb.open(path))
    return AsyncSessionStore(gated, Workers(workers, "sessiondb-aio")), gated  # type: ignore[arg-type]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def sessiondb_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sessiondb")]


async def settled(baseline: int) -> tuple[int, list[str]]:
    """Open descriptors and sessiondb's live threads, once back to ``baseline`` and none (or
    after 30 s): an admission lock's helper thread and the checkpointer end, and close their
    descriptors, just after the store closes (sessiondb/host/flock.py ``QueuedLock.close``,
    sessiondb/sqlite/checkpointer.py ``Checkpointer.stop``)."""
    with anyio.move_on_after(30):
        while open_fds() != baseline or sessiondb_threads():
            await anyio.sleep(0.01)
    return open_fds(), sessiondb_threads()


def aio_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sessiondb-aio")]
