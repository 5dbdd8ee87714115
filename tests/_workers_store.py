"""Worker functions for multi-process store tests (importable by spawned children)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import sessiondb


def append_worker(path: str, worker: int, n: int, journal_mode: str, barrier: object) -> None:
    """Append n messages alternating between the worker's own session and a shared one."""
    store = sessiondb.open(path, journal_mode=journal_mode)
    barrier.wait()  # type: ignore[attr-defined]
    for i in range(n):
        session = "shared" if i % 2 == 0 else f"own-{worker}"
        store.append(session, "user", f"w{worker} m{i} " + "x" * (i % 300), key=f"{worker}:{i}")
    store.close()


def open_and_append(path: str, worker: int, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    store = sessiondb.open(path)
    store.append("race", "user", f"hello from {worker}", key=str(worker))
    store.close()


def keyed_writer_then_die(path: str, log: str, n: int) -> None:
    """Append n keyed messages, logging each key after its append returned, then exit hard."""
    store = sessiondb.open(path)
    with open(log, "a") as f:
        for i in range(n):
            m = store.append("retry", "user", f"message {i}", key=f"k{i}")
            f.write(json.dumps({"key": m.key, "seq": m.seq}) + "\n")
            f.flush()
    os._exit(0)


def hold_write_lock(path: str, seconds: float, ready: object) -> None:
    """A foreign process holding SQLite's write lock (no sessiondb admission) for a while."""
    import time

    import apsw

    conn = apsw.Connection(path)
    conn.execute("BEGIN IMMEDIATE")
    Path(path + ".held").write_text(str(os.getpid()))
    ready.set()  # type: ignore[attr-defined]
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def hold_sessiondb_write(path: str, ready: object) -> None:
    """A sessiondb writer inside its write transaction (admission queue and SQLite's lock),
    which the test then stops with SIGSTOP."""
    import time

    from tests.helpers import engine_of

    store = sessiondb.open(path)
    with engine_of(store).write() as conn:
        conn.execute("INSERT INTO purge_queue(sid) VALUES (-1)")
        ready.set()  # type: ignore[attr-defined]
        time.sleep(600)


def _fork_a_child_that_appends(store: sessiondb.Store) -> int:
    """Fork; the child appends one message to session "child" and exits 0 (1 if it failed).
    Returns the child's pid (in the parent)."""
    pid = os.fork()
    if pid == 0:
        try:
            store.append("child", "user", "written by the forked child")
            os._exit(0)
        except BaseException:
            os._exit(1)
    return pid


def fork_while_a_thread_is_inside(path: str, journal_mode: str, kind: str) -> int:
    """Fork while another thread is inside a write (or read) transaction of the same store;
    the child appends. Returns the child's exit status: 0 when its append was stored."""
    import threading

    from tests.helpers import engine_of

    store = sessiondb.open(path, journal_mode=journal_mode, write_timeout=20)
    store.append("parent", "user", "before the fork")
    inside, go = threading.Event(), threading.Event()

    def hold() -> None:
        engine = engine_of(store)
        with engine.write() if kind == "write" else engine.read() as conn:
            conn.execute("SELECT count(*) FROM messages").fetchall()
            inside.set()
            go.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    inside.wait(30)
    threading.Timer(0.3, go.set).start()  # the transaction ends while fork() waits for it
    pid = _fork_a_child_that_appends(store)
    t.join(30)
    _, status = os.waitpid(pid, 0)
    store.close()
    return os.waitstatus_to_exitcode(status)


def fork_during_a_checkpoint(path: str) -> tuple[bool, int]:
    """Fork while the background checkpointer is inside a checkpoint pass (held there 0.3 s);
    the child appends. Returns whether the pass had ended when fork() returned, and the
    child's exit status (0 when its append was stored)."""
    import threading
    import types

    import apsw

    from sessiondb.sqlite import checkpointer
    from tests.helpers import engine_of

    inside, done = threading.Event(), threading.Event()

    class Held:
        def __init__(self, conn: apsw.Connection) -> None:
            self._conn = conn

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

        def wal_checkpoint(self, **kw: object) -> object:
            inside.set()
            time.sleep(0.3)
            try:
                return self._conn.wal_checkpoint(**kw)
            finally:
                done.set()

    fake = types.SimpleNamespace(**{n: getattr(apsw, n) for n in dir(apsw) if n.isupper()})
    fake.Connection = lambda *a, **kw: Held(apsw.Connection(*a, **kw))
    fake.BusyError, fake.Error = apsw.BusyError, apsw.Error
    checkpointer.apsw = fake  # type: ignore[assignment]  # this spawned process only
    store = sessiondb.open(path, write_timeout=20)
    store.append("parent", "user", "before the fork")
    engine_of(store)._checkpoint_soon()
    inside.wait(30)
    pid = _fork_a_child_that_appends(store)
    ended = done.is_set()
    _, status = os.waitpid(pid, 0)
    store.close()
    return ended, os.waitstatus_to_exitcode(status)


def usage_worker(location: str, worker: int, n: int, barrier: object) -> None:
    """Append messages with usage to a session every worker shares, the responses' ids shared
    too (their tokens grow as other workers write), and pop now and then (tests/contract/
    test_stats.py)."""
    store = sessiondb.open(location)
    barrier.wait()  # type: ignore[attr-defined]
    for i in range(n):
        meta = {
            "model": f"m{i % 2}",
            "response_id": f"r{i // 3}",
            "usage": {"input_tokens": worker + i, "output_tokens": i % 7},
        }
        store.append("shared" if i % 2 else f"own-{worker}", "assistant", "x", meta=meta)
        if i % 25 == 24:
            store.pop_message("shared")
    store.close()


def prune_writer(
    location: str,
    worker: int,
    revive: list[str],
    go: object,
    revived: object,
    stop: object,
    log: str,
) -> None:
    """A live agent beside a prune (tests/contract/test_prune_live.py): appends keyed messages
    to its own session and to an old one outside the selection until ``stop``; once ``go`` is
    set (the prune has listed its candidates), appends once to each session of ``revive`` and
    sets ``revived``. Writes how many appends returned to ``log``."""
    store = sessiondb.open(location)
    own = f"live-{worker}"
    i = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        store.append(own, "user", f"w{worker} m{i}", key=f"{worker}:{i}")
        store.append(f"other-{worker}", "user", f"w{worker} m{i}", key=f"{worker}:{i}")
        i += 1
        if go.is_set() and not revived.is_set():  # type: ignore[attr-defined]
            for sid in revive:
                store.append(sid, "user", f"revived by {worker}", key=f"revive:{worker}")
            revived.set()  # type: ignore[attr-defined]
    Path(log).write_text(str(i))
    store.close()


def prune_and_log(path: str, log: str) -> None:
    """Prune everything idle for 30 days, logging each progress call (a line each) and "done"
    at the end, for a test that kills it mid-way (tests/sqlite/test_prune_crash.py)."""
    from datetime import timedelta

    store = sessiondb.open(path)

    def progress(phase: str, done: int, total: int) -> None:
        with open(log, "a") as f:
            f.write(f"{phase} {done} {total}\n")

    store.prune(older_than=timedelta(days=30), progress=progress)
    with open(log, "a") as f:
        f.write("done\n")
    store.close()


def shared_state_worker(location: str, worker: int, n: int, barrier: object) -> None:
    """Append to its own session and to one every worker shares, each append patching two
    shared sessions' meta (``other_meta``, a key per worker) in its transaction
    (tests/contract/test_framework_primitives.py)."""
    store = sessiondb.open(location)
    barrier.wait()  # type: ignore[attr-defined]
    for i in range(n):
        patch = {f"w{worker}": i}
        sid = "shared" if i % 2 else f"own-{worker}"
        store.append(sid, "user", f"{worker}:{i}", other_meta={"app/": patch, "user/": patch})
    store.close()


def stride_writer(
    path: str, worker: int, n: int, stride: int, barrier: object, out: object
) -> None:
    """Append n messages with the checkpointer replaced by a counter (nothing is checkpointed,
    so the WAL only grows); put (the WAL's frame count after each commit, those that woke the
    checkpointer) on ``out``."""
    from sessiondb.sqlite import checkpointer, engine

    checkpointer.CHECKPOINT_STRIDE = stride
    checkpointer.CHECKPOINT_PAGES = 0
    engine.CHECKPOINT_INTERVAL = 0.0
    engine.CHECKPOINT_FORCE_PAGES = 10**9
    commits: list[int] = []
    woke: list[int] = []
    hook = engine.Engine._wal_hook

    def counting_hook(self: engine.Engine, conn: object, dbname: str, pages: int) -> int:
        commits.append(pages)
        return hook(self, conn, dbname, pages)  # type: ignore[arg-type]

    engine.Engine._wal_hook = counting_hook  # type: ignore[method-assign]
    engine.Engine._checkpoint_soon = lambda self: woke.append(commits[-1])  # type: ignore[method-assign]
    # One commit per append of each process (no group, hence no cross-process combining).
    store = sessiondb.open(path, group_commit=False)
    barrier.wait()  # type: ignore[attr-defined]
    for i in range(n):
        store.append(f"w{worker}", "user", f"writer {worker} message {i} " + "words " * (i % 50))
    out.put((commits, woke))  # type: ignore[attr-defined]
    store.close()


def flag_holder(lock_path: str, ready: object, done: object) -> None:
    """Hold the waiting flag (host/flock.py, "Barging") as a waiter of another process does."""
    import fcntl

    from sessiondb.host.flock import _WAITING, QueuedLock

    lock = QueuedLock(Path(lock_path), barge_limit=1)
    fcntl.lockf(lock._fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, _WAITING)
    ready.set()  # type: ignore[attr-defined]
    done.wait(60)  # type: ignore[attr-defined]
    lock.close()


def flag_watcher(lock_path: str, hold: float, out: object) -> None:
    """Hold the lock ``hold`` seconds, noting when another process's waiter is first seen
    waiting; release, then look again once that waiter had its turn."""
    from sessiondb.host.flock import QueuedLock

    lock = QueuedLock(Path(lock_path), barge_limit=1)
    assert lock.acquire(10.0)
    out.put("holding")  # type: ignore[attr-defined]
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < hold:
        if seen is None and lock._others_waiting():
            seen = time.monotonic() - started
        time.sleep(0.002)
    lock.release()
    time.sleep(0.5)  # the waiter got its turn and released
    out.put((seen, lock._others_waiting()))  # type: ignore[attr-defined]
    lock.close()
