"""store.stats(): per-day sessions, messages and tokens from the rollup, checked against a
brute-force count over the messages themselves (docs/adr/0007-usage-rollup.md)."""

from __future__ import annotations

import math
import multiprocessing
import tempfile
from collections import defaultdict
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiondb
from sessiondb.core.stats import iso_day
from sessiondb.core.usage import FIELDS
from tests import _workers_store as w
from tests.conftest import new_location

SPAWN = multiprocessing.get_context("spawn")

DAY = 86400


def brute_force(store: sessiondb.Store, source: str | None = None) -> dict[str, Any]:
    """What stats must say, from every stored message: messages per (day, source, model); a
    response's tokens (``response_id``, else the message alone) at their largest, on the day
    and model of its first message; sessions active per day."""
    messages: dict[tuple[str, str, str], int] = defaultdict(int)
    tokens: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    active: dict[str, set[str]] = defaultdict(set)
    for sid in store.session_ids(limit=10_000):
        s = store.get_session(sid)
        assert s is not None
        if source is not None and s.source != source:
            continue
        responses: dict[str, tuple[tuple[str, str, str], list[int]]] = {}
        for m in store.messages(sid):
            meta = m.meta or {}
            model = meta.get("model") if isinstance(meta.get("model"), str) else ""
            where = (iso_day(math.floor(m.created_at / DAY)), s.source, model)
            messages[where] += 1
            active[where[0]].add(sid)
            usage = meta.get("usage")
            if not isinstance(usage, dict):
                continue
            counts = [max(usage[f], 0) if type(usage.get(f)) is int else 0 for f in FIELDS]
            rid = meta.get("response_id")
            rid = rid if isinstance(rid, str) else f"#{m.seq}"
            first, best = responses.setdefault(rid, (where, [0, 0, 0, 0]))
            responses[rid] = (first, [max(a, b) for a, b in zip(best, counts, strict=True)])
        for where, counts in responses.values():
            tokens[where] = [a + b for a, b in zip(tokens[where], counts, strict=True)]
    rows = {}
    for where in set(messages) | {k for k, t in tokens.items() if any(t)}:
        rows[where] = (messages.get(where, 0), tuple(tokens[where]))
    return {"rows": rows, "active": {d: len(s) for d, s in active.items()}}


def from_stats(stats: sessiondb.Stats) -> dict[str, Any]:
    rows = {}
    for d in stats.days:
        for u in d.by:
            t = u.tokens
            rows[(d.day, u.source, u.model or "")] = (
                u.messages,
                (t.input, t.output, t.cache_read, t.cache_write),
            )
    return {"rows": rows, "active": {d.day: d.sessions for d in stats.days}}


ops = st.lists(
    st.tuples(
        st.sampled_from(["append", "append", "append", "pop", "clear", "delete"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 3),  # day offset
        st.sampled_from([None, "m1", "m2"]),  # model
        st.sampled_from([None, "r1", "r2", "r3"]),  # response id
        st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "input_tokens": st.integers(-5, 50),
                "output_tokens": st.integers(0, 50) | st.just("12"),
                "cache_read_tokens": st.integers(0, 500),
                "cache_write_tokens": st.floats(0, 9),
            },
        ),
    ),
    max_size=40,
)


def apply(store: sessiondb.Store, program: list[Any]) -> None:
    base = 1_750_000_000.0
    for op, sid, day, model, rid, usage in program:
        if op == "append":
            meta: dict[str, Any] = {}
            if model:
                meta["model"] = model
            if rid:
                meta["response_id"] = rid
            if usage is not None:
                meta["usage"] = usage
            store.ensure_session(sid, source="x" if sid == "c" else "y")
            store.append(sid, "assistant", "m", meta=meta or None, created_at=base + day * DAY)
        elif op == "pop":
            store.pop_message(sid)
        elif op == "clear":
            if store.get_session(sid) is not None:
                store.clear_session(sid)
        else:
            store.delete_session(sid)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(program=ops)
def test_stats_equal_a_count_of_the_messages(backend: str, program: Any) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        sessiondb.open(new_location(backend, Path(tmp))) as store,
    ):
        apply(store, program)
        assert from_stats(store.stats()) == brute_force(store)
        only = from_stats(store.stats(source="x"))
        assert only == brute_force(store, source="x")


def test_claude_code_tokens_count_each_response_once(store: sessiondb.Store) -> None:
    store.import_jsonl(Path(__file__).parent.parent / "data" / "claude_code_session.jsonl")
    stats = store.stats()
    # Three responses (msg_01A written as three entries, output_tokens 7 -> 21 -> 96).
    assert stats.tokens == sessiondb.Tokens(
        input=9, output=96 + 40 + 55, cache_read=3 * 12034, cache_write=3 * 512
    )
    (day,) = stats.days
    assert (day.day, day.sessions, day.messages) == ("2026-03-02", 1, 9)
    models = {u.model: u.messages for u in day.by}
    assert models == {None: 4, "claude-sonnet-4-5-20250929": 5}
    assert store.stats(since=date(2026, 3, 3)).days == ()
    one_day = store.stats(since=datetime(2026, 3, 2, tzinfo=timezone.utc), until=date(2026, 3, 2))
    assert one_day.days == stats.days and one_day.since == one_day.until == "2026-03-02"


def test_period_and_source(store: sessiondb.Store) -> None:
    t0 = datetime(2026, 1, 10, 23, 59, tzinfo=timezone.utc).timestamp()
    store.ensure_session("cli-1", source="cli")
    store.append("cli-1", "user", "late", created_at=t0)
    store.append("cli-1", "user", "next day", created_at=t0 + 120)
    store.ensure_session("gw-1", source="gateway")
    store.append("gw-1", "user", "x", created_at=t0 + 120)
    days = [(d.day, d.sessions, d.messages) for d in store.stats().days]
    assert days == [("2026-01-10", 1, 1), ("2026-01-11", 2, 2)]
    gateway = store.stats(source="gateway")
    assert [(d.day, d.messages) for d in gateway.days] == [("2026-01-11", 1)]
    assert gateway.sessions == 1 and store.stats().sessions == 2
    assert store.stats(until=t0).messages == 1


def test_stats_stay_exact_with_writers_in_many_processes(location: str) -> None:
    """The rollup is kept inside each write transaction: 4 processes appending (and popping)
    into a shared session, with shared response ids, leave it equal to a count of what is
    stored."""
    sessiondb.open(location).close()
    barrier = SPAWN.Barrier(4)
    procs = [
        SPAWN.Process(target=w.usage_worker, args=(location, i, 150, barrier)) for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    with sessiondb.open(location) as store:
        assert store.count() == 4 * 150 - 4 * 6
        assert from_stats(store.stats()) == brute_force(store)
