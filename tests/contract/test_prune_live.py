"""A prune beside live writers in other processes: exact counts afterwards — nothing outside
the selection touched, a session written to during the prune kept, no message lost or
duplicated (docs/adr/0006-retention.md)."""

from __future__ import annotations

import multiprocessing
import time
from datetime import timedelta
from pathlib import Path

import sessiondb
from sessiondb.core.prune import BATCH_SESSIONS
from tests import _workers_store as w
from tests.contract.test_stats import brute_force, from_stats

SPAWN = multiprocessing.get_context("spawn")
WRITERS = 3
OLD = time.time() - 60 * 86400
WAIT = 120.0  # generous: the machine may be loaded; the test waits for events, not time


def test_prune_beside_live_writers_counts_exact(location: str, tmp_path: Path) -> None:
    stale = [f"old-{i:03d}" for i in range(2 * BATCH_SESSIONS)]
    revive = {k: [f"zz-revive-{k}-{j}" for j in range(2)] for k in range(WRITERS)}
    outside = [f"other-{k}" for k in range(WRITERS)]  # old, but written to all along
    with sessiondb.open(location) as store:
        for sid in stale + [s for r in revive.values() for s in r] + outside:
            store.ensure_session(sid, source="cli", created_at=OLD)
            store.append_many(
                sid,
                [{"role": "user", "content": f"{sid} {i}", "created_at": OLD} for i in range(20)],
            )
        store.ensure_session("gw-old", source="gateway", created_at=OLD)
        store.append_many("gw-old", [{"role": "user", "content": "gw", "created_at": OLD}] * 7)

    go, stop = SPAWN.Event(), SPAWN.Event()
    revived = [SPAWN.Event() for _ in range(WRITERS)]
    logs = [tmp_path / f"w{k}.log" for k in range(WRITERS)]
    procs = [
        SPAWN.Process(
            target=w.prune_writer,
            args=(location, k, revive[k], go, revived[k], stop, str(logs[k])),
        )
        for k in range(WRITERS)
    ]
    for p in procs:
        p.start()
    phases: list[str] = []

    def between_batches(phase: str, done: int, total: int) -> None:
        # After the first batch (outside any transaction) the writers revive their sessions,
        # which the prune listed at the start: it must find them changed and keep them.
        if not phases:
            go.set()
            for e in revived:
                assert e.wait(WAIT), "a writer never revived its sessions"
        phases.append(phase)

    with sessiondb.open(location) as store:
        deadline = time.monotonic() + WAIT
        # Every writer live (its old "other" session active again) before the prune lists.
        while time.monotonic() < deadline:
            if all(store.count(f"live-{k}") >= 5 for k in range(WRITERS)):
                break
            time.sleep(0.01)
        report = store.prune(older_than=timedelta(days=30), source="cli", progress=between_batches)
        stop.set()
        for p in procs:
            p.join(WAIT)
            assert p.exitcode == 0
        appended = [int(log.read_text()) for log in logs]

        assert sorted(s.session_id for s in report.sessions) == stale
        assert report.messages == 20 * len(stale)
        assert report.kept == 2 * WRITERS  # the revived ones, found changed
        assert "remove" in phases
        for sid in stale:
            assert store.get_session(sid) is None and store.messages(sid) == []
        for k in range(WRITERS):
            for sid in revive[k]:
                contents = [m.content for m in store.messages(sid)]
                assert contents == [f"{sid} {i}" for i in range(20)] + [f"revived by {k}"]
            for sid in (f"live-{k}", f"other-{k}"):
                msgs = store.messages(sid)
                prefix = [] if sid.startswith("live") else [f"{sid} {i}" for i in range(20)]
                assert [m.content for m in msgs] == prefix + [
                    f"w{k} m{i}" for i in range(appended[k])
                ]
                assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
        assert [m.content for m in store.messages("gw-old")] == ["gw"] * 7  # other source
        expected = sum(20 + 1 for r in revive.values() for _ in r) + 7
        expected += sum(20 + 2 * n for n in appended)
        assert store.count() == expected
        assert from_stats(store.stats()) == brute_force(store)
