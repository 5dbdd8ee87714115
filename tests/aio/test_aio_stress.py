"""Several processes, each with many concurrent tasks on the async store, appending to shared
sessions with random cancellations and keyed retries: exact counts, gapless seqs, each key
once (asyncio and trio processes side by side)."""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from pathlib import Path

import pytest

import sessiondb
from tests import _workers_aio as w
from tests.sqlite.test_concurrency import assert_consistent

SPAWN = mp.get_context("spawn")


@pytest.mark.stress
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_of_many_async_tasks_store_each_append_once(db_path: Path, backend: str) -> None:
    procs_per_loop, tasks, n = 2, 32, 20
    if backend == "postgresql":
        from tests import pg

        location = pg.new_url()
    else:
        location = str(db_path)
    sessiondb.open(location).close()
    loops = ["asyncio"] * procs_per_loop + ["trio"] * procs_per_loop
    barrier = SPAWN.Barrier(len(loops))
    procs = [
        SPAWN.Process(target=w.aio_append_worker, args=(location, i, tasks, n, loop, barrier))
        for i, loop in enumerate(loops)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    with sessiondb.open(location) as store:
        assert store.count() == len(loops) * tasks * n
        shared = [m for s in range(3) for m in store.messages(f"shared-{s}")]
        keys = Counter(m.key for m in shared)
        assert set(keys.values()) == {1} and len(keys) == len(loops) * tasks * n // 2
        for worker in range(len(loops)):
            for t in range(tasks):
                own = store.messages(f"own-{worker}-{t}")
                assert [m.key for m in own] == [f"{worker}:{t}:{i}" for i in range(1, n, 2)]
                assert [m.seq for m in own] == list(range(1, n // 2 + 1))
        # Each task's messages in a shared session appear in the order it wrote them.
        for s in range(3):
            seen: dict[str, int] = {}
            for m in store.messages(f"shared-{s}"):
                assert m.key is not None
                task, i = m.key.rsplit(":", 1)
                assert seen.get(task, -1) < int(i)
                seen[task] = int(i)
    if backend == "sqlite":
        assert_consistent(db_path)
