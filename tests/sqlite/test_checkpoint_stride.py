"""One background checkpoint pass per stride of the WAL, however many processes write it
(sqlite/checkpointer.py ``wake_due``; docs/benchmarks.md, "Checkpoint passes per stride of
the WAL"): the commit whose frames cross a multiple of the stride wakes its process's
checkpointer, not every commit past the threshold in every process."""

from __future__ import annotations

import itertools
import multiprocessing
from pathlib import Path

import sessiondb
from tests import _workers_store as w

SPAWN = multiprocessing.get_context("spawn")


def test_k_writer_processes_wake_one_checkpoint_per_stride(tmp_path: Path) -> None:
    path = tmp_path / "stride.db"
    sessiondb.open(path).close()
    k, n, stride = 4, 150, 64
    barrier, out = SPAWN.Barrier(k), SPAWN.Queue()
    procs = [
        SPAWN.Process(target=w.stride_writer, args=(str(path), i, n, stride, barrier, out))
        for i in range(k)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    commits = sorted(pages for got, _ in results for pages in got)
    woke = sorted(pages for _, got in results for pages in got)
    assert len(set(commits)) == len(commits) >= k * n  # one WAL, commits one after the other
    # Every commit's frames are (previous commit's count, its count]: a multiple of the stride
    # falls in exactly one of them, and only that commit wakes its checkpointer.
    crossing = [
        now for before, now in itertools.pairwise(commits) if now // stride != before // stride
    ]
    assert set(crossing) <= set(woke) <= {commits[0], *crossing}
    assert len(commits) >= 5 * len(woke), "the frames per commit left nothing to prove"
    # Each process woke its own checkpointer for its own crossings: more than one did.
    assert sum(1 for _, got in results if got) > 1
