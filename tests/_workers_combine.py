"""Workers of tests/sqlite/test_combine.py (spawned processes: module-level functions)."""

from __future__ import annotations

import os
import signal
from typing import Any

import sessiondb
from sessiondb.errors import Error


def combine_of(store: sessiondb.Store) -> Any:
    """The store's cross-process combining (the group commit's run, a bound method)."""
    assert store.group is not None
    return store.group._run.__self__  # type: ignore[attr-defined]


def head(path: str, stop_at: str, listening: Any, release: Any, out: Any) -> None:
    """Become the head of a tenure: listen even though alone (CONTENDED_FOR), wait at
    "listening" until ``release``, and at ``stop_at`` ("taken": inside the transaction holding
    other processes' requests; "committed": right after its COMMIT) kill -9 this process;
    "stop-taken": stop itself there with SIGSTOP instead; "none": finish. Puts how many
    requests of others it committed in ``out`` if it finishes."""
    from sessiondb.sqlite import combine

    combine.CONTENDED_FOR = float("inf")

    def hook(stage: str) -> None:
        if stage == "listening":
            listening.set()
            release.wait(60)
        elif stage == stop_at:
            os.kill(os.getpid(), signal.SIGKILL)
        elif stage == stop_at.removeprefix("stop-"):  # frozen there until SIGCONT
            os.kill(os.getpid(), signal.SIGSTOP)

    combine._HOOK = hook
    store = sessiondb.open(path)
    store.append("head", "user", "the head's own")
    out.put(("served", combine_of(store).served))
    store.close()


def waiter(path: str, call: str, started: Any, out: Any) -> None:
    """One append (``call`` names it) while a head holds the lock; put its outcome in ``out``."""
    store = sessiondb.open(path)
    started.set()
    try:
        if call == "plain":
            m = store.append(f"w-{os.getpid()}", "user", f"from {os.getpid()}")
            result: Any = [(m.session_id, m.seq, m.content)]
        elif call == "conflict":
            store.append("keyed", "user", "different", key="k")
            result = "stored"
        elif call == "stale":
            store.append("keyed", "user", "late", expect_last=5)
            result = "stored"
        elif call == "batch":
            ms = store.append_many(
                "keyed",
                [
                    {"role": "user", "content": "first", "key": "k"},  # already stored
                    {"role": "assistant", "content": "b1"},
                    {"role": "assistant", "content": "b2", "key": "b2", "meta": {"n": 2}},
                ],
            )
            result = [(m.session_id, m.seq, m.content) for m in ms]
        else:
            raise AssertionError(call)
    except Error as e:
        result = type(e).__name__
    out.put((call, os.getpid(), result))
    store.close()


def writer(path: str, proc: int, n: int, barrier: Any, out: Any) -> None:
    """``n`` appends without pause: to its own session and to a shared one, alternately."""
    store = sessiondb.open(path)
    store.append(f"own-{proc}", "user", "warm")
    barrier.wait()
    for i in range(n):
        sid = f"own-{proc}" if i % 2 else "shared"
        store.append(sid, "user", f"{proc}:{i}")
    c = combine_of(store)
    out.put((proc, c.served, c.handed_on))
    store.close()


def handing_writer(path: str, proc: int, n: int, barrier: Any, out: Any) -> None:
    """:func:`writer` with tenures of one transaction: every tenure that ends with writers
    waiting on the head's socket is handed on (sqlite/combine_baton.py)."""
    from sessiondb.sqlite import combine

    combine.MAX_ROUNDS = 1
    combine.CONTENDED_FOR = float("inf")
    writer(path, proc, n, barrier, out)


def dies_when_handed(path: str, proc: int, stop: Any, out: Any) -> None:
    """Append to its own session until ``stop``; ``proc`` 0 kills itself (kill -9) the moment
    a head hands it the tenure, before it commits anything. Puts how many appends returned."""
    from sessiondb.sqlite import combine

    combine.MAX_ROUNDS = 1
    combine.CONTENDED_FOR = float("inf")

    def hook(stage: str) -> None:
        if stage == "handed" and proc == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    combine._HOOK = hook
    store = sessiondb.open(path)
    done = 0
    while not stop.is_set() and done < 100_000:
        store.append(f"own-{proc}", "user", f"{proc}:{done}")
        done += 1
        out.put((proc, done))
    store.close()


def forks_in_tenure(path: str, out: Any) -> None:
    """Become a head; while it listens, fork a child that sleeps on with whatever it inherited,
    send the child's pid on ``out`` (a pipe's end: sent before the kill, unlike a queue's put),
    and kill -9 this process (the lock and the socket held)."""
    import time

    from sessiondb.sqlite import combine

    combine.CONTENDED_FOR = float("inf")

    def hook(stage: str) -> None:
        if stage == "listening":
            child = os.fork()
            if child == 0:
                time.sleep(120)
                os._exit(0)
            out.send(child)
            os.kill(os.getpid(), signal.SIGKILL)

    combine._HOOK = hook
    sessiondb.open(path).append("head", "user", "the head's own")
