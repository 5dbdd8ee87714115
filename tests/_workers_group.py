"""Workers for the group commit's multi-process tests (importable by spawned children):
processes of many threads, each thread appending through the process's one store."""

from __future__ import annotations

import os
import threading
from typing import Any

import sessiondb
from sessiondb import KeyConflict


def stress_worker(path: str, proc: int, threads: int, n: int, barrier: Any) -> None:
    """``threads`` threads append ``n`` calls each: keyed to their own session, keyless and keyed
    to shared sessions, 3-item batches, and a conflicting key every 10th call (which must fail
    that call alone). Exits non-zero if any call misbehaves."""
    store = sessiondb.open(path)
    failures: list[str] = []
    barrier.wait()

    def body(t: int) -> None:
        me = f"{proc}:{t}"
        for i in range(n):
            try:
                if i % 10 == 9:
                    try:
                        store.append("seeded", "user", f"other {me}", key="seed")
                        failures.append(f"{me}:{i} no conflict")
                    except KeyConflict:
                        pass
                elif i % 5 == 0:
                    got = store.append_many(
                        f"shared-{i % 3}",
                        [{"role": "user", "content": f"{me}:{i}:{j}"} for j in range(3)],
                    )
                    if [m.seq - got[0].seq for m in got] != [0, 1, 2]:
                        failures.append(f"{me}:{i} batch not consecutive")
                elif i % 2:
                    store.append(f"shared-{i % 3}", "user", f"{me}:{i}")
                else:
                    m = store.append(f"own-{me}", "user", f"{me}:{i}", key=f"{me}:{i}")
                    if m.key != f"{me}:{i}":
                        failures.append(f"{me}:{i} wrong message back")
            except Exception as e:  # reported through the exit code
                failures.append(f"{me}:{i} {type(e).__name__}: {e}")

    ts = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    store.close()
    if failures:
        print("\n".join(failures[:20]), flush=True)
        os._exit(3)


def crash_writer(path: str, proc: int, threads: int, log: str, starts: list[int]) -> None:
    """``threads`` threads append keyed messages forever, each logging a key once its append
    returned (one ``write`` per line, O_APPEND: a kill cuts at most the last line). Thread ``t``
    starts at ``starts[t]``, first re-sending the keys around where it was killed before."""
    store = sessiondb.open(path)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def body(t: int) -> None:
        sid = f"crash-{(proc + t) % 3}"
        for i in range(max(0, starts[t] - 3), starts[t]):
            key = f"{proc}:{t}:{i}"
            store.append(sid, "user", f"payload {key} " * 20, key=key)
        i = starts[t]
        while True:
            key = f"{proc}:{t}:{i}"
            store.append(sid, "user", f"payload {key} " * 20, key=key)
            os.write(fd, f"{key}\n".encode())
            i += 1

    ts = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
