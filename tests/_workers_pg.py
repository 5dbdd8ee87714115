"""Worker functions for the multi-process PostgreSQL tests (importable by spawned children)."""

from __future__ import annotations

import json
import os
from typing import Any

import sessiondb


def append_worker(url: str, worker: int, n: int, barrier: Any) -> None:
    """Append n messages alternating between the worker's own session and a shared one."""
    store = sessiondb.open(url)
    barrier.wait()
    for i in range(n):
        session = "shared" if i % 2 == 0 else f"own-{worker}"
        store.append(session, "user", f"w{worker} m{i} " + "x" * (i % 300), key=f"{worker}:{i}")
    store.close()


def keyed_writer(url: str, worker: int, log: str, n: int) -> None:
    """Append keyed messages to a shared and an own session, logging each acknowledged one.

    A lost connection (``pg_terminate_backend`` from the test) leaves the outcome unknown: the
    same keyed append is sent again, which must return the stored message or store it once.
    """
    store = sessiondb.open(url)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for i in range(n):
        session = "shared" if i % 2 == 0 else f"own-{worker}"
        key = f"{worker}:{i}"
        for _attempt in range(20):
            try:
                m = store.append(session, "user", f"w{worker} m{i}", key=key)
                break
            except (sessiondb.ConnectionLost, sessiondb.StoreBusy):
                continue
        else:
            raise RuntimeError(f"{key}: no attempt got through")
        line = json.dumps({"s": session, "k": m.key, "q": m.seq, "pid": os.getpid()}) + "\n"
        os.write(fd, line.encode())
    os.close(fd)
    store.close()


def open_and_append(url: str, worker: int, barrier: Any) -> None:
    store = sessiondb.open(url)
    barrier.wait()
    store.append("race", "user", f"hello from {worker}", key=str(worker))
    store.ensure_session("race-2")
    store.close()
