"""Searches never block writers: 4 processes search in a loop while one appends."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

import sessiondb
from tests import _workers_search as w

# The bound. Generous on purpose: the typical append takes a few ms; this catches a
# search holding a lock or a snapshot that makes a writer wait (seconds), not machine noise.
MAX_APPEND_SECONDS = 0.250


@pytest.mark.stress
def test_writer_latency_stays_bounded_while_four_processes_search(tmp_path: Path) -> None:
    path = tmp_path / "stress.db"
    with sessiondb.open(path) as store:
        for s in range(20):
            store.append_many(
                f"s{s}",
                [
                    {"role": "user", "content": f"retry policy {i} agent status deploy {s}"}
                    for i in range(100)
                ],
            )
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 2.0  # spawn + import time of the workers
    stop_at = start_at + 4.0
    procs = [ctx.Process(target=w.searcher, args=(str(path), stop_at, out)) for _ in range(4)]
    procs.append(ctx.Process(target=w.writer, args=(str(path), start_at, stop_at, out)))
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    searches = sum(n for kind, n in results if kind == "searcher")
    [latencies] = [v for kind, v in results if kind == "writer"]
    assert searches > 100, "the searchers did not really run"
    assert len(latencies) > 50
    assert max(latencies) <= MAX_APPEND_SECONDS, sorted(latencies)[-5:]
    with sessiondb.open(path) as store:
        assert store.count("live") == len(latencies)
        assert len(store.search("step", session_id="live", limit=10_000)) == len(latencies)
