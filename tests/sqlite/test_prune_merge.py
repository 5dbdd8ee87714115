"""A purge keeps FTS5's automerge out of every commit and puts it back, even after kill -9
(sessiondb/sqlite/prunemerge.py, docs/adr/0006-retention.md amendment 2)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import apsw
import pytest

import sessiondb
from sessiondb.sqlite import prunemerge
from tests.helpers import engine_of

SPAWN = mp.get_context("spawn")
OLD = time.time() - 60 * 86400


def _fill(path: Path, sessions: int = 20, messages: int = 30) -> None:
    with sessiondb.open(path) as store:
        for i in range(sessions):
            sid = f"old-{i:02d}"
            store.ensure_session(sid, created_at=OLD)
            for j in range(messages):  # one append each: many small segments
                store.append(
                    sid, "user", f"{sid} word{j} " + "lorem ipsum dolor " * 5, created_at=OLD
                )
        store.append("recent", "user", "still here")


def _automerge(path: Path) -> list[int]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return prunemerge.automerge(conn)
    finally:
        conn.close()


def _queued(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.execute("SELECT count(*) FROM purge_queue").get)
    finally:
        conn.close()


def test_a_purge_holds_automerge_off_merges_itself_and_puts_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.db"
    _fill(path)
    seen: list[list[int]] = []
    merged: list[int] = []
    real = prunemerge.steps

    def spy(engine: object, max_steps: int = prunemerge.MAX_STEPS) -> int:
        seen.append(_automerge(path))
        n = real(engine, max_steps)  # type: ignore[arg-type]
        merged.append(n)
        return n

    monkeypatch.setattr(prunemerge, "steps", spy)
    with sessiondb.open(path) as store:
        report = store.prune(older_than=timedelta(days=30))
        assert len(report.sessions) == 20
        assert [m.content for m in store.messages("recent")] == ["still here"]
    assert seen and all(v == [0, 0] for v in seen)  # no commit automerged during the purge
    assert sum(merged) > 0  # the purge did the merge work itself
    assert _automerge(path) == [prunemerge.AUTOMERGE] * 2


def _killed_purge(path: str, where: str) -> None:
    """Child: prune, and kill -9 itself at the first merge step (queue not empty) or at the
    prune's release (queue empty, automerge still off; the open's own release is call 1)."""
    calls = []

    def die(*_: object, **__: object) -> int:
        calls.append(1)
        if where == "steps" or len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0

    setattr(prunemerge, where, die)
    with sessiondb.open(path) as store:
        store.prune(older_than=timedelta(days=30))


def _kill_at(path: Path, where: str) -> None:
    p = SPAWN.Process(target=_killed_purge, args=(str(path), where))
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL


def test_merge_steps_after_a_batch_are_bounded_by_what_it_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Live writers' segments never stop coming while automerge is held: a batch may not chase
    # them to MAX_STEPS (ADR 6 amendment 3). Each 30-message session here is one batch.
    path = tmp_path / "s.db"
    _fill(path, sessions=5)
    allowed: list[int] = []
    real = prunemerge.steps

    def spy(engine: object, max_steps: int = prunemerge.MAX_STEPS) -> int:
        allowed.append(max_steps)
        return real(engine, max_steps)  # type: ignore[arg-type]

    monkeypatch.setattr(prunemerge, "steps", spy)
    with sessiondb.open(path) as store:
        assert len(store.prune(older_than=timedelta(days=30)).sessions) == 5
    assert allowed == [prunemerge.budget(30)] * 5 + [prunemerge.MAX_STEPS]
    assert prunemerge.budget(30) == prunemerge.MIN_STEPS < prunemerge.MAX_STEPS
    assert prunemerge.budget(2000) == prunemerge.MAX_STEPS  # a large batch: as before


def test_killed_mid_purge_the_next_open_finishes_and_puts_automerge_back(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _fill(path)
    _kill_at(path, "steps")
    assert _automerge(path) == [0, 0] and _queued(path) > 0  # the kill left it held
    with sessiondb.open(path) as store:  # the open finishes the purge
        assert store.get_session("recent") is not None
        with engine_of(store).read() as conn:
            assert conn.execute("SELECT count(*) FROM purge_queue").get == 0
    assert _automerge(path) == [prunemerge.AUTOMERGE] * 2


def test_killed_after_the_queue_emptied_the_next_open_puts_automerge_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    _fill(path, sessions=3)
    _kill_at(path, "release")
    assert _automerge(path) == [0, 0] and _queued(path) == 0
    with sessiondb.open(path) as store:
        assert store.get_session("recent") is not None
    assert _automerge(path) == [prunemerge.AUTOMERGE] * 2
