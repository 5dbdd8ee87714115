"""Workers for the crash and starvation tests (importable by spawned children)."""

from __future__ import annotations

import os
import time

import sessiondb


def content_for(key: str) -> str:
    return f"{key} " + "payload " * (len(key) * 7 % 200)


def crash_writer(path: str, worker: int, log: str, start_at: int) -> None:
    """Append keyed messages forever; after each append returns, log its key.

    On (re)start it first re-sends the keys around where the previous incarnation was killed:
    the last ones it logged and the one it may have stored without logging.
    """
    store = sessiondb.open(path)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    for i in range(max(0, start_at - 3), start_at):
        key = f"w{worker}-{i}"
        store.append(f"crash-{worker % 3}", "user", content_for(key), key=key)
    i = start_at
    while True:
        key = f"w{worker}-{i}"
        store.append(f"crash-{worker % 3}", "user", content_for(key), key=key)
        os.write(fd, f"{key}\n".encode())
        i += 1


def busy_writer(path: str, seconds: float, ready: object) -> None:
    """Append as fast as possible for ``seconds`` (the eager process of the starvation test)."""
    store = sessiondb.open(path)
    ready.set()  # type: ignore[attr-defined]
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        store.append("eager", "assistant", "x" * 500, key=f"e{i}")
        i += 1
    store.close()


def wal_load_writer(path: str, worker: int, count: int) -> None:
    store = sessiondb.open(path)
    for i in range(count):
        store.append(f"load-{worker}", "user", "y" * 1500, key=str(i))
    store.close()


def wal_load_reader(path: str, stop_file: str) -> None:
    store = sessiondb.open(path)
    while not os.path.exists(stop_file):
        store.messages("load-0", limit=200)
        store.count()
    store.close()


def batch_writer(path: str, worker: int, log: str, start_at: int, batch: int) -> None:
    """Append keyed batches forever (``append_many``: the set-based index path); after each
    batch returns, log its first key. On (re)start, first re-send the batch the previous
    incarnation may have stored without logging (keys make it idempotent)."""
    store = sessiondb.open(path)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    b = start_at
    while True:
        keys = [f"b{worker}-{b}-{j}" for j in range(batch)]
        items = [
            {"role": "user", "content": f"token{worker}x{b}x{j} " + content_for(k), "key": k}
            for j, k in enumerate(keys)
        ]
        if b % 3 == 0:  # every third batch holds CJK text: the trigram side too
            items[0]["content"] += f" 東京タワー{worker}"
        store.append_many(f"batch-{worker % 2}", items)
        os.write(fd, f"{b}\n".encode())
        b += 1


def raw_sql_writer(path: str, session: str, rounds: int) -> None:
    """A writer that does not know the claim (as sessiondb before migration 7 or a script):
    in each transaction, the next seqs of ``session`` and one row per statement."""
    import apsw

    conn = apsw.Connection(path)
    conn.set_busy_timeout(60_000)
    for r in range(rounds):
        conn.execute("BEGIN IMMEDIATE")
        ref, count = conn.execute(
            "SELECT id, message_count FROM sessions WHERE session_id = ?", (session,)
        ).fetchone()
        for j in range(3):
            conn.execute(
                "INSERT INTO messages(sid, seq, role, content, created_at)"
                " VALUES (?, ?, 'user', ?, 1)",
                (ref, count + 1 + j, f"rawtoken r{r}x{j} 京都{r}"),
            )
        conn.execute("UPDATE sessions SET message_count = ? WHERE id = ?", (count + 3, ref))
        conn.execute("COMMIT")
    conn.close()


def claim_batch_writer(path: str, session: str, rounds: int) -> None:
    """sessiondb batches into the same session as :func:`raw_sql_writer`."""
    store = sessiondb.open(path)
    for r in range(rounds):
        store.append_many(
            session, [{"role": "user", "content": f"ourtoken r{r}x{j}"} for j in range(60)]
        )
    store.close()
