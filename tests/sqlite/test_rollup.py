"""Migration 5 on a file that already holds messages: the backfill counts each message once, in
batches, while writers keep appending, popping and deleting (sessiondb/sqlite/rollup.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiondb
from sessiondb.sqlite import rollup, schema
from tests.contract.test_stats import brute_force, from_stats
from tests.helpers import engine_of, legacy_appends


def _fill_v4(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
    monkeypatch.setattr(schema, "LATEST", 4)
    legacy_appends(monkeypatch)  # a schema older than the deferred index
    with sessiondb.open(path) as st:
        for i in range(500):
            meta: dict[str, Any] = {"model": f"m{i % 3}", "response_id": f"r{i // 4}"}
            meta["usage"] = {"input_tokens": i % 5, "output_tokens": i % 11}
            st.append(f"s{i % 7}", "assistant", f"old {i}", meta=meta, created_at=1e9 + i * 900)
            if i % 50 == 0:  # one day and model throughout: its rows exist early in the backfill
                st.append("s9", "user", f"steady {i}", meta={"usage": {"input_tokens": 1}})
        # s6 deleted as a version-4 sessiondb does it: its messages wait in the purge queue.
        with engine_of(st).write() as conn:
            (sid,) = conn.execute("SELECT id FROM sessions WHERE session_id = 's6'").fetchone()
            conn.execute("DELETE FROM sessions WHERE id = ?", (sid,))
            conn.execute("INSERT INTO purge_queue(sid) VALUES (?)", (sid,))
    monkeypatch.undo()


def test_migration_counts_what_the_file_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _fill_v4(path, monkeypatch)
    with sessiondb.open(path) as st:
        assert from_stats(st.stats()) == brute_force(st)
        assert st.stats().messages == st.count() == 500 - len(range(6, 500, 7)) + 10


def test_writers_during_the_backfill_are_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    _fill_v4(path, monkeypatch)
    # Open with the migration applied but its backfill held back, then write meanwhile.
    idle = [
        dataclasses.replace(m, backfill=lambda engine: False) if m.version == 5 else m
        for m in schema.MIGRATIONS
    ]
    monkeypatch.setattr(schema, "MIGRATIONS", idle)
    with sessiondb.open(path) as st:
        # The newest message's id is taken again by the next append: the backfill still owes
        # that id, so the trigger must not count the new message as well.
        with engine_of(st).read() as conn:
            owner = conn.execute(
                "SELECT s.session_id FROM messages m JOIN sessions s ON s.id = m.sid"
                " ORDER BY m.id DESC LIMIT 1"
            ).get
        st.pop_message(owner)
        st.append(owner, "assistant", "takes the id again", meta={"usage": {"input_tokens": 3}})
        st.pop_message("s0")  # a message the backfill has not counted yet
        st.append("s0", "assistant", "re-taken seq", meta={"usage": {"input_tokens": 7}})
        st.append("s1", "user", "new", meta={"model": "m9", "response_id": "r1"})
        cleared, deleted = (x for x in ("s1", "s2", "s3") if x != owner)
        st.clear_session(cleared)
        st.append(cleared, "user", "after clear")
        st.delete_session(deleted)
        st.append("s7", "user", "a new session")
        engine = engine_of(st)
        steps = 0
        while rollup.backfill_step(engine, batch=37):
            steps += 1
            st.append("s4", "assistant", f"during {steps}", meta={"usage": {"output_tokens": 1}})
            if steps % 3 == 0:
                st.pop_message("s5")
            if steps == 4:  # s9's first rows are counted, its newest message not yet
                st.pop_message("s9")
        assert steps >= 10
        assert from_stats(st.stats()) == brute_force(st)


# -- the set-based feed of a batch (selfindex.index_batch / index_rows -> rollup.add_batch) ------

_BASE = 1_750_000_000.0
_item = st.tuples(
    st.integers(0, 2),  # day offset
    st.sampled_from([None, "m1", "m2"]),  # model
    st.sampled_from([None, "r1", "r2"]),  # response id
    st.sampled_from(["none", "empty", "usage", "usage", "not-an-object"]),
    st.integers(-3, 40),  # tokens
)
_batches = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(_item, min_size=1, max_size=6)),
    min_size=1,
    max_size=8,
)


def _meta(model: str | None, rid: str | None, kind: str, n: int) -> dict[str, Any] | None:
    meta: dict[str, Any] = {}
    if model:
        meta["model"] = model
    if rid:
        meta["response_id"] = rid
    if kind == "usage":
        meta["usage"] = {"input_tokens": n, "output_tokens": n * 2, "cache_read_tokens": "9"}
    elif kind == "not-an-object":
        meta["usage"] = [n]
    elif kind == "empty":
        meta["note"] = n
    return meta or None


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=_batches)
def test_batches_and_groups_count_exactly(tmp_path_factory: Any, batches: Any) -> None:
    """Batches (append_many: one session's rows, set-based) and groups (several sessions' rows in
    one transaction, writes.append_group) with and without usage, mixed days, models and
    responses: the rollup equals a count of the messages (tests/contract/test_stats.py)."""
    from sessiondb.core import writes

    path = tmp_path_factory.mktemp("rollup") / "s.db"
    with sessiondb.open(path) as store:
        backend = store._backend  # type: ignore[attr-defined]
        grouped: list[writes.Request] = []
        for n, (sid, items) in enumerate(batches):
            rows = [
                {
                    "role": "assistant",
                    "content": "m",
                    "meta": _meta(model, rid, kind, k),
                    "created_at": _BASE + day * 86400,
                }
                for day, model, rid, kind, k in items
            ]
            if n % 3 == 2:  # every third batch: one request of a group of several sessions
                request = writes.append_many_request(sid, rows, None, None)
                assert request is not None
                grouped.append(request)
                continue
            store.append_many(sid, rows)
        if grouped:
            out = writes.append_group(backend, grouped)
            assert not any(isinstance(x, Exception) for x in out), out
        assert from_stats(store.stats()) == brute_force(store)
