"""Group commit across processes and under kill -9 (docs/adr/0011-group-commit.md): processes
of many threads, each process grouping its threads' appends, several processes on one file.

* exact counts, each keyed append once, batches consecutive, seqs gapless, per-call conflicts
  failing alone;
* kill -9 of a process at random moments — with 8 threads appending without pause, a group of
  that process is in flight (its leader inside the transaction or waiting for the lock) nearly
  all the time: every append that returned is stored exactly once; a group the kill cut short is
  not stored at all, and the keyed re-sends after the restart store what had not returned.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

import sessiondb
from tests import _workers_group as w
from tests.sqlite.test_concurrency import assert_consistent

SPAWN = mp.get_context("spawn")
DURATION = float(os.environ.get("SESSIONDB_CRASH_SECONDS", "12"))


@pytest.mark.stress
def test_processes_of_many_threads_store_each_append_once(db_path: Path) -> None:
    procs, threads, n = 4, 8, 60
    with sessiondb.open(db_path) as store:
        store.append("seeded", "user", "seed", key="seed")
    barrier = SPAWN.Barrier(procs)
    ps = [
        SPAWN.Process(target=w.stress_worker, args=(str(db_path), p, threads, n, barrier))
        for p in range(procs)
    ]
    for p in ps:
        p.start()
    for p in ps:
        p.join(timeout=300)
    assert [p.exitcode for p in ps] == [0] * procs
    calls = procs * threads
    with sessiondb.open(db_path) as store:
        assert store.count("seeded") == 1
        for p in range(procs):
            for t in range(threads):
                own = store.messages(f"own-{p}:{t}")
                assert [m.key for m in own] == [
                    f"{p}:{t}:{i}" for i in range(n) if i % 2 == 0 and i % 5 and i % 10 != 9
                ]
        shared = [m.content for s in range(3) for m in store.messages(f"shared-{s}")]
        assert len(shared) == len(set(shared))
        per_thread_keyless = sum(1 for i in range(n) if i % 2 and i % 5 and i % 10 != 9)
        per_thread_batches = sum(1 for i in range(n) if i % 5 == 0)
        assert len(shared) == calls * (per_thread_keyless + 3 * per_thread_batches)
    assert_consistent(db_path)


def _logged(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [x for x in log.read_text().split("\n")[:-1] if x]


def _starts(log: Path, threads: int) -> list[int]:
    nxt = [0] * threads
    for key in _logged(log):
        _, t, i = key.split(":")
        nxt[int(t)] = max(nxt[int(t)], int(i) + 1)
    return nxt


@pytest.mark.stress
def test_kill_9_while_groups_are_in_flight_loses_and_doubles_nothing(tmp_path: Path) -> None:
    procs, threads = 3, 8
    path = tmp_path / "crash.db"
    sessiondb.open(path).close()
    rng = random.Random(7)
    logs = [tmp_path / f"p{p}.log" for p in range(procs)]

    def start(p: int) -> mp.process.BaseProcess:
        proc = SPAWN.Process(
            target=w.crash_writer,
            args=(str(path), p, threads, str(logs[p]), _starts(logs[p], threads)),
        )
        proc.start()
        return proc

    running = [start(p) for p in range(procs)]
    kills = 0
    end = time.monotonic() + DURATION
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.3, 0.8))
        victim = rng.randrange(procs)
        os.kill(running[victim].pid, signal.SIGKILL)  # type: ignore[arg-type]
        running[victim].join()
        kills += 1
        running[victim] = start(victim)
    for proc in running:
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join()

    with sessiondb.open(path) as store:
        stored = [m for s in range(3) for m in store.messages(f"crash-{s}")]
        keys = Counter(m.key for m in stored)
        assert all(c == 1 for c in keys.values()), "a key is stored twice"
        logged = [k for log in logs for k in _logged(log)]
        assert len(logged) > procs * threads * 10, "the writers barely wrote: proves nothing"
        missing = [k for k in logged if k not in keys]
        assert missing == [], f"{len(missing)} appends returned but are not stored"
        for s in range(3):
            seqs = [m.seq for m in store.messages(f"crash-{s}")]
            assert seqs == list(range(1, len(seqs) + 1))
        # Each thread's keys form a prefix 0..k (a group is stored whole or not at all, and
        # the restarted thread re-sent what it had not logged).
        for p in range(procs):
            for t in range(threads):
                mine = sorted(int(k.split(":")[2]) for k in keys if k and k.startswith(f"{p}:{t}:"))
                assert mine == list(range(len(mine))), (p, t)
    assert_consistent(path)
    print(f"kills={kills} logged={len(logged)} stored={len(stored)}")
