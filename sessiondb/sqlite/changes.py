"""The SQLite backend's wake-up for ``wait_for_messages`` (core/wait.py): ``PRAGMA
data_version``.

``data_version`` changes on a connection whenever another connection (of any process) has
committed since that connection's last read; this thread's own connection is not writing while
it waits, so every append elsewhere — another process, another thread, the group commit's
leader — changes it. Reading it costs a shared-memory look in WAL mode (a header read in rollback
mode), never a query of the messages, so the waiter reads it on a short backoff
(:data:`POLL_MIN` to :data:`POLL_MAX`) and checks its condition only when it changed
(docs/adr/0017-wait-for-messages.md; the channel watches its files' change counters the same way,
sessiondb/channel/files.py ``data_version``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .engine import Engine

#: First and longest pause between two reads of ``data_version`` (seconds): the wake-up latency
#: of a waiter is at most POLL_MAX after a quiet spell, POLL_MIN right after it was armed.
POLL_MIN = 0.005
POLL_MAX = 0.05


class DataVersion:
    """One wait's wake-up (the contract's ``Changes``) on this thread's connection."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine

    def _version(self) -> int:
        with self._engine().read() as conn:  # translated errors, the fork gate
            return int(conn.execute("PRAGMA data_version").get)

    def arm(self) -> int:
        return self._version()

    def sleep(self, token: object, seconds: float, stop: threading.Event | None) -> None:
        deadline = time.monotonic() + seconds
        interval = POLL_MIN
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            pause = min(interval, left)
            if stop is None:
                time.sleep(pause)
            elif stop.wait(pause):
                return
            if self._version() != token:
                return
            interval = min(interval * 2, POLL_MAX)

    def done(self) -> None:
        """Nothing to release: the connection is the thread's own (engine.py)."""


__all__ = ["POLL_MAX", "POLL_MIN", "DataVersion"]
