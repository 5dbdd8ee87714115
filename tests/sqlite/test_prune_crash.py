"""kill -9 of a prune at random moments (seeded): the store stays consistent — each session
whole or gone, no orphan message, the rollup equal to a recount — and a re-run finishes the job
(docs/adr/0006-retention.md)."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

import sessiondb
from tests import _workers_store as w
from tests.contract.test_stats import brute_force, from_stats
from tests.helpers import engine_of

SPAWN = mp.get_context("spawn")
OLD = time.time() - 60 * 86400
SESSIONS, MESSAGES = 300, 30


def _content(sid: str, i: int) -> str:
    return f"{sid} message {i} " + "lorem ipsum dolor " * 15


def _consistent(path: Path) -> int:
    """Checks the store after a kill; returns how many old sessions are left."""
    with sessiondb.open(path) as store:  # the open finishes an interrupted purge
        with engine_of(store).read() as conn:
            assert conn.execute("PRAGMA integrity_check").get == "ok"
            rows = conn.execute("SELECT count(*) FROM messages").get
            assert conn.execute("SELECT count(*) FROM purge_queue").get == 0
        assert rows == store.count()  # no orphan message of a removed session
        left = 0
        for i in range(SESSIONS):
            sid = f"old-{i:03d}"
            msgs = store.messages(sid)
            if store.get_session(sid) is None:
                assert msgs == []
                continue
            left += 1
            assert [m.content for m in msgs] == [_content(sid, j) for j in range(MESSAGES)]
            assert [m.seq for m in msgs] == list(range(1, MESSAGES + 1))
        assert [m.content for m in store.messages("recent")] == ["still here"] * 3
        assert from_stats(store.stats()) == brute_force(store)
    return left


@pytest.mark.crash
def test_a_prune_killed_mid_way_leaves_a_consistent_store_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prune.db"
    with sessiondb.open(path) as store:
        for i in range(SESSIONS):
            sid = f"old-{i:03d}"
            store.ensure_session(sid, created_at=OLD)
            items = [
                {"role": "user", "content": _content(sid, j), "created_at": OLD + j}
                for j in range(MESSAGES)
            ]
            store.append_many(sid, items)
        store.append_many("recent", [{"role": "user", "content": "still here"}] * 3)
    full = os.path.getsize(path)
    rng = random.Random(20261204)
    lefts = [SESSIONS]
    for round_ in range(4):
        log = tmp_path / f"prune-{round_}.log"
        p = SPAWN.Process(target=w.prune_and_log, args=(str(path), str(log)))
        p.start()
        wanted = rng.randint(1, 3)  # progress lines to wait for before the kill
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.is_alive():
            lines = log.read_text().splitlines() if log.exists() else []
            if len(lines) >= wanted:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.03))  # anywhere in the next batch, purge or reclaim
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        p.join()
        lefts.append(_consistent(path))
    assert lefts[-1] < SESSIONS, "the kills always came before any removal: nothing tested"
    assert lefts == sorted(lefts, reverse=True)  # never a removed session back
    with sessiondb.open(path) as store:
        report = store.prune(older_than=timedelta(days=30))
        assert len(report.sessions) == lefts[-1]
        assert store.session_ids() == ["recent"]
    assert _consistent(path) == 0
    assert os.path.getsize(path) < full / 4  # the re-run also gave the space back
