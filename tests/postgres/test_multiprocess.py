"""Many writer processes on one PostgreSQL store: exact counts, gapless seqs, no duplicates, and
every acknowledged append exactly once after kill -9 of writers and ``pg_terminate_backend`` of
their server connections (docs/postgres.md)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

import sessiondb
from tests import _workers_pg as w
from tests import pg

SPAWN = mp.get_context("spawn")
APP = f"sessiondb-test-{os.getpid()}"


@pytest.fixture
def url() -> str:
    # A name of its own in pg_stat_activity: the kill test terminates only this test's
    # connections, never another store's on the same server.
    u = pg.new_url() + "&application_name=" + APP
    sessiondb.open(u).close()  # the schema in place before the crowd arrives
    return u


def assert_consistent(url: str) -> None:
    """Every session's seqs gapless and its count its last seq."""
    with sessiondb.open(url) as store:
        for s in store.list_sessions(limit=10_000):
            seqs = [m.seq for m in store.messages(s.session_id)]
            assert seqs == list(range(1, s.message_count + 1)), s.session_id


@pytest.mark.stress
@pytest.mark.timeout(300)
def test_sixteen_writers_shared_and_own_sessions(url: str) -> None:
    workers, n = 16, 500
    barrier = SPAWN.Barrier(workers)
    procs = [
        SPAWN.Process(target=w.append_worker, args=(url, i, n, barrier)) for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0, f"worker exit code {p.exitcode}"
    with sessiondb.open(url) as store:
        assert store.count() == workers * n
        shared = store.messages("shared")
        assert len(shared) == workers * n // 2
        keys = Counter(m.key for m in shared)
        assert set(keys.values()) == {1} and len(keys) == workers * n // 2
        for i in range(workers):
            own = store.messages(f"own-{i}")
            assert [m.key for m in own] == [f"{i}:{j}" for j in range(1, n, 2)]
            mine = [int(str(m.key).split(":")[1]) for m in shared if str(m.key).startswith(f"{i}:")]
            assert mine == sorted(mine)  # each writer's order kept in the shared session
    assert_consistent(url)


@pytest.mark.stress
def test_processes_creating_the_same_session_at_once(url: str) -> None:
    workers = 8
    barrier = SPAWN.Barrier(workers)
    procs = [
        SPAWN.Process(target=w.open_and_append, args=(url, i, barrier)) for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with sessiondb.open(url) as store:
        assert sorted(str(m.key) for m in store.messages("race")) == sorted(map(str, range(8)))
        assert store.get_session("race-2") is not None
    assert_consistent(url)


def _terminate_some(url: str, rng: random.Random) -> int:
    """pg_terminate_backend of a random sessiondb connection of this test's writers."""
    with psycopg.connect(pg.BASE_URL, autocommit=True) as conn:
        pids = [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
                " AND state = 'active'",
                (APP,),
            ).fetchall()
        ]
        if not pids:
            return 0
        conn.execute("SELECT pg_terminate_backend(%s)", (rng.choice(pids),))
        return 1


@pytest.mark.crash
@pytest.mark.timeout(300)
def test_kill_writers_and_their_connections_mid_append(url: str, tmp_path: Path) -> None:
    """kill -9 of writer processes and pg_terminate_backend of their connections at seeded
    random moments: every append a writer saw acknowledged is stored exactly once, seqs stay
    gapless, and a keyed retry after a lost connection never duplicates."""
    rng = random.Random(20261204)
    workers, n = 8, 300
    log = tmp_path / "acked.jsonl"
    procs = {
        i: SPAWN.Process(target=w.keyed_writer, args=(url, i, str(log), n)) for i in range(workers)
    }
    for p in procs.values():
        p.start()
    kills = terminations = 0
    deadline = time.monotonic() + 200
    while any(p.is_alive() for p in procs.values()):
        assert time.monotonic() < deadline, "writers did not finish"
        time.sleep(rng.uniform(0.05, 0.25))
        if rng.random() < 0.5:
            terminations += _terminate_some(url, rng)
        elif kills < workers // 2:
            alive = [i for i, p in procs.items() if p.is_alive()]
            if alive:
                victim = rng.choice(alive)
                pid = procs[victim].pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                procs[victim].join()
                kills += 1
    for p in procs.values():
        p.join()
    acked = [json.loads(line) for line in log.read_text().splitlines()]
    print(
        f"\n{len(acked)} acknowledged appends, {kills} writers killed, {terminations} server"
        " connections terminated"
    )
    assert acked and kills > 0 and terminations > 0
    with sessiondb.open(url) as store:
        stored: dict[tuple[str, str], int] = {}
        for sid in store.session_ids():
            for m in store.messages(sid):
                k = (sid, str(m.key))
                assert k not in stored, f"{k} stored twice"
                stored[k] = m.seq
        for a in acked:
            assert stored.get((a["s"], a["k"])) == a["q"], a
    assert_consistent(url)
