"""Worker processes for tests/sqlite/test_deferred.py (spawned: module-level functions)."""

from __future__ import annotations

import os
import time

import apsw

import sessiondb
from sessiondb.sqlite import deferred


def slow_catch_up_appender(path: str, worker: int, log: str, start_at: int, pause: float) -> None:
    """Append keyed single messages forever; after each append returns, log ``n``. Each
    catch-up of the backlog (deferred.catch_up) logs ``c`` and then holds its transaction
    ``pause`` seconds after writing the index rows, so that a SIGKILL lands inside it often.
    On (re)start the last unlogged message is sent again (keys make it idempotent)."""
    real = deferred.catch_up
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def slow(conn: apsw.Connection, done: int) -> int:
        os.write(fd, b"c\n")
        rows = real(conn, done)
        time.sleep(pause)
        return rows

    deferred.catch_up = slow  # type: ignore[assignment]
    store = sessiondb.open(path)
    n = start_at
    while True:
        text = f"token{worker}x{n} " + ("東京タワー" if n % 5 == 0 else "plain words") * (1 + n % 7)
        store.append(f"w{worker}", "user", text, key=f"k{worker}-{n}")
        os.write(fd, f"{n}\n".encode())
        n += 1
