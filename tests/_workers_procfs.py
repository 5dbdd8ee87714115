"""Worker functions for multi-process tests of procinfo and doctor (spawned, so importable)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw


def hold_write_lock(db_path: str, journal_mode: str, ready: Any, release: Any) -> None:
    """Open ``db_path`` with a raw apsw connection, hold BEGIN IMMEDIATE until ``release``."""
    conn = apsw.Connection(db_path)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE IF NOT EXISTS t(x)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES (1)")
    ready.set()
    release.wait(30)  # bounded: a stuck test never leaves this process behind for long
    conn.execute("ROLLBACK")
    conn.close()


def hold_flock(path: str, ready: Any, release: Any) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    release.wait(30)
    os.close(fd)


def hold_open(path: str, ready: Any, release: Any) -> None:
    with open(path, "rb"):
        ready.set()
        release.wait(30)


@contextmanager
def holding(target: Callable[..., None], *args: Any) -> Iterator[int]:
    """Run ``target(*args, ready, release)`` in a spawned process; yield its pid while it holds."""
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=target, args=(*args, ready, release), daemon=True)
    proc.start()
    try:
        assert ready.wait(30), "worker did not get its lock in time"
        assert proc.pid is not None
        yield proc.pid
    finally:
        release.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
