"""Reconcile: ``store.transcript(session_id, legacy_jsonl=...)`` in every case: JSONL longer,
store longer, either empty, equal, truncated on both sides, a corrupt last line, two processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import sessiondb
from sessiondb.core.reconcile import BACKFILL_META
from tests._workers_transcripts import reconcile


def conv(n: int) -> list[tuple[str, str]]:
    return [("user" if i % 2 == 0 else "assistant", f"message {i}") for i in range(1, n + 1)]


def legacy(tmp_path: Path, pairs: list[tuple[str, str]], *, tail: bytes = b"") -> Path:
    f = tmp_path / "legacy.jsonl"
    lines = [json.dumps({"role": r, "content": c}).encode() + b"\n" for r, c in pairs]
    f.write_bytes(b"".join(lines) + tail)
    return f


def seed(store: Any, pairs: list[tuple[str, str]]) -> None:
    store.ensure_session("s", source="agent")
    for role, content in pairs:
        store.append("s", role, content)


def history(msgs: list[Any]) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in msgs]


def check_idempotent(store: Any, f: Path, expected: list[tuple[str, str]]) -> None:
    assert history(store.transcript("s", legacy_jsonl=f)) == expected
    count = store.count("s")
    assert history(store.transcript("s", legacy_jsonl=f)) == expected  # again: adds nothing
    assert store.count("s") == count
    assert history(store.transcript("s")) == expected  # the store alone is now complete


def test_jsonl_longer(store: Any, tmp_path: Path) -> None:
    seed(store, conv(3))
    check_idempotent(store, legacy(tmp_path, conv(10)), conv(10))
    assert store.count("s") == 10


def test_store_longer(store: Any, tmp_path: Path) -> None:
    seed(store, conv(10))
    check_idempotent(store, legacy(tmp_path, conv(4)), conv(10))
    assert store.count("s") == 10


def test_store_empty(store: Any, tmp_path: Path) -> None:
    check_idempotent(store, legacy(tmp_path, conv(5)), conv(5))
    assert store.get_session("s") is not None and store.count("s") == 5


def test_both_empty(store: Any, tmp_path: Path) -> None:
    assert store.transcript("s", legacy_jsonl=legacy(tmp_path, [])) == []
    assert store.get_session("s") is None


def test_equal(store: Any, tmp_path: Path) -> None:
    seed(store, conv(6))
    check_idempotent(store, legacy(tmp_path, conv(6)), conv(6))
    assert store.count("s") == 6
    assert all(m.meta is None for m in store.messages("s"))  # nothing was rewritten


def test_truncation_incident_first_two_and_a_later_two_of_994(store: Any, tmp_path: Path) -> None:
    full = conv(994)
    seed(store, [full[0], full[1], full[500], full[501]])
    check_idempotent(store, legacy(tmp_path, full), full)
    assert store.count("s") == 994
    # Backfilled rows say where they belong; live rows are untouched.
    by_seq = {m.seq: m for m in store.messages("s")}
    assert [by_seq[i].meta for i in (1, 2, 3, 4)] == [None, None, None, None]
    assert (by_seq[5].content, by_seq[5].meta) == ("message 3", {BACKFILL_META: {"after": 2}})
    assert (by_seq[503].content, by_seq[503].meta) == (
        "message 503",
        {BACKFILL_META: {"after": 4}},
    )


def test_corrupt_last_line(store: Any, tmp_path: Path) -> None:
    seed(store, conv(2))
    f = legacy(tmp_path, conv(5), tail=b'{"role": "assistant", "content": "cut sho')
    check_idempotent(store, f, conv(5))


def test_repeated_content_never_duplicates(store: Any, tmp_path: Path) -> None:
    pairs = [("user", "ok"), ("assistant", "done"), ("user", "ok"), ("assistant", "done")]
    seed(store, pairs[:2])
    check_idempotent(store, legacy(tmp_path, pairs), pairs)
    seed(store, [])  # no-op: still 4
    assert store.count("s") == 4


def test_legacy_keys_match_an_earlier_import(store: Any, tmp_path: Path) -> None:
    f = legacy(tmp_path, conv(4))
    store.import_jsonl(f, session_id="s")
    check_idempotent(store, f, conv(4))
    assert store.count("s") == 4


def test_two_processes_reconciling_at_once(tmp_path: Path, location: str) -> None:
    db = location
    full = conv(300)
    with sessiondb.open(db) as s:
        seed(s, [full[0], full[1], full[150], full[151]])
    f = str(legacy(tmp_path, full))
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Manager().Event()
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(reconcile, (db, "s", f, start)) for _ in range(2)]
        start.set()
        seen = [r.get(timeout=60) for r in results]
    assert seen == [300, 300]
    with sessiondb.open(db) as s:
        assert s.count("s") == 300
        assert history(s.transcript("s")) == full
        contents = [m.content for m in s.messages("s")]
        assert len(set(contents)) == 300


class _AgentInTheWindow:
    """The store, with the agent's append of the newest turn landing between a reconcile's
    read and its backfill (the race's window, made certain)."""

    def __init__(self, real: Any, turn: tuple[str, str]) -> None:
        self.real, self.turn, self.fired = real, turn, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def append_many(self, session_id: str, items: Any, **kw: Any) -> Any:
        if not self.fired:
            self.fired = True
            self.real.append(session_id, *self.turn)
        return self.real.append_many(session_id, items, **kw)


def test_a_backfill_never_adds_what_the_store_gained_meanwhile(store: Any, tmp_path: Path) -> None:
    from sessiondb.core.reconcile import transcript

    full = conv(5)
    seed(store, full[:3])
    f = legacy(tmp_path, full)  # the agent logged turn 5 and is storing it right now
    racing = _AgentInTheWindow(store, full[4])
    assert history(transcript(racing, "s", legacy_jsonl=f)) == full
    assert racing.fired and store.count("s") == 5


def test_reconciles_racing_a_live_agent_store_each_turn_once(tmp_path: Path, location: str) -> None:
    from tests._workers_transcripts import live_agent, reconcile_until

    log = tmp_path / "agent.jsonl"
    log.write_bytes(b"")
    sessiondb.open(location).close()
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()
    start, done = manager.Event(), manager.Event()
    agent = ctx.Process(target=live_agent, args=(location, str(log), 300, start))
    agent.start()
    with ctx.Pool(2) as pool:
        runs = [pool.apply_async(reconcile_until, (location, str(log), done, start)) for _ in "ab"]
        start.set()
        agent.join(120)
        done.set()
        calls = [r.get(timeout=120) for r in runs]
    assert agent.exitcode == 0 and min(calls) > 1
    with sessiondb.open(location) as s:
        contents = [m.content for m in s.messages("s")]
    assert sorted(contents) == sorted(f"turn {i}" for i in range(300))
