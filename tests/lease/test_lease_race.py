"""Atomic acquire under a real race: many processes, holders kill -9ed at seeded random moments.

File leases: 32 processes x 100 cycles (the issue's size) by default. Store leases: 16 x 40 by
default (every attempt, even a refused one, is a write transaction in the shared database);
SESSIONDB_LEASE_RACE_STORE_PROCS / _CYCLES raise it. SESSIONDB_LEASE_RACE_PROCS / _CYCLES /
_SEED change the file run. The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import sessiondb
from tests._workers_lease import check_race_log, log_line, open_lease, race_worker

SIZES = {
    "file": (
        int(os.environ.get("SESSIONDB_LEASE_RACE_PROCS", "32")),
        int(os.environ.get("SESSIONDB_LEASE_RACE_CYCLES", "100")),
    ),
    "store": (
        int(os.environ.get("SESSIONDB_LEASE_RACE_STORE_PROCS", "16")),
        int(os.environ.get("SESSIONDB_LEASE_RACE_STORE_CYCLES", "40")),
    ),
}
SEED = int(os.environ.get("SESSIONDB_LEASE_RACE_SEED", "20261122"))
# The bound for taking over a dead holder's lease on this host is 1 s, asserted with one
# waiter in test_lease.py::test_killed_holder_is_taken_over_within_one_second. Here 16-32
# processes share 2 cores with the rest of the suite, so a takeover's latency also measures the
# scheduler (a rare 1.4 s was seen on this busy machine): the run reports how many exceeded 1 s
# and fails only past this generous bound — still 100x shorter than the TTL, so a takeover
# by expiry could never pass.
TAKEOVER_BOUND = 5.0
# Generous: the run takes ~20 s here; this only stops a hung run.
RUN_DEADLINE = 240.0


@pytest.mark.stress
@pytest.mark.crash
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["file", "store", "postgresql"])
def test_race_no_overlap_and_dead_holders_taken_over(tmp_path: Path, backend: str) -> None:
    PROCS, CYCLES = SIZES["store" if backend == "postgresql" else backend]
    MAX_KILLS = max(4, PROCS // 2)
    ctx = multiprocessing.get_context("spawn")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    spec = {"workspace": str(workspace), "rt": str(tmp_path / "rt"), "db": str(tmp_path / "s.db")}
    log_path = tmp_path / "race.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    progress: Any = ctx.Array("i", PROCS, lock=False)
    generation = [0] * PROCS
    procs: dict[int, Any] = {}  # index -> Process
    rng = random.Random(SEED)
    # TTL far longer than the run: every takeover must come from a dead pid, never from expiry.
    ttl = 600.0

    def spawn(i: int) -> None:
        p = ctx.Process(
            target=race_worker,
            args=(
                i,
                generation[i],
                backend,
                spec,
                str(log_path),
                progress,
                CYCLES,
                SEED,
                ttl,
            ),
            daemon=True,
        )
        p.start()
        procs[i] = p

    if backend == "postgresql":
        from tests import pg

        spec["db"] = pg.new_url()
    if backend != "file":
        sessiondb.open(spec["db"]).close()  # create the store before the crowd arrives
    watcher = open_lease(backend, spec, "watcher")
    started = time.monotonic()
    for i in range(PROCS):
        spawn(i)
    kills = 0
    try:
        while procs:
            if time.monotonic() - started > RUN_DEADLINE:
                pytest.fail(f"race run exceeded {RUN_DEADLINE} s: {list(progress)}")
            time.sleep(rng.uniform(0.02, 0.2))
            for i, p in list(procs.items()):
                if not p.is_alive():
                    p.join()
                    assert p.exitcode == 0, f"worker {i} exited with {p.exitcode}"
                    del procs[i]
            if kills >= MAX_KILLS:
                continue
            rec = watcher.record
            by_pid = {p.pid: i for i, p in procs.items()}
            if rec is None or rec.pid not in by_pid:
                continue
            # Kill whoever the record names now: usually inside its hold, sometimes inside
            # acquire or release (mid critical section), since it may have moved on already.
            i = by_pid[rec.pid]
            log_line(log_fd, f"K {rec.pid} {time.monotonic():.9f}")
            os.kill(rec.pid, signal.SIGKILL)
            procs[i].join()
            kills += 1
            generation[i] += 1
            if progress[i] < CYCLES:
                spawn(i)
            else:
                del procs[i]
    finally:
        for p in procs.values():
            p.kill()
            p.join()
        os.close(log_fd)
    elapsed = time.monotonic() - started

    text = log_path.read_text()
    keep = os.environ.get("SESSIONDB_LEASE_RACE_KEEP")  # a folder to keep the log in
    if keep:
        Path(keep, f"race-{backend}.log").write_text(text)
    rep = check_race_log(text)
    lat = sorted(rep.takeover_latencies)
    print(
        f"\nlease race ({backend}): {PROCS} procs x {CYCLES} cycles in {elapsed:.1f} s: "
        f"{rep.cycles} completed cycles, {rep.kills} kills, {rep.takeovers} takeovers, "
        f"{len(rep.overlaps)} overlaps, {rep.fences} fences in order; takeover latency max "
        f"{(lat[-1] if lat else 0) * 1000:.1f} ms, median "
        f"{(lat[len(lat) // 2] if lat else 0) * 1000:.1f} ms, "
        f"{sum(x >= 1.0 for x in lat)} over 1 s"
    )
    assert rep.overlaps == []
    assert rep.problems == []
    assert sum(progress) == PROCS * CYCLES
    assert rep.cycles >= PROCS * CYCLES  # a holder killed after "X" redoes that cycle
    assert rep.kills == kills > 0
    # Kills that landed while the victim held the lease must each have been taken over.
    assert rep.takeovers > 0
    assert all(x < TAKEOVER_BOUND for x in lat), lat[-5:]
