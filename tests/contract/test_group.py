"""Group commit as the contract sees it (docs/adr/0011-group-commit.md): appends made at the
same moment by many callers — threads on the sync API, tasks on the async one — keep exactly
the semantics of appends made one after the other. One caller's ``KeyConflict`` or
``StaleSession`` fails that caller alone, a key sent by several callers at once is stored once
and every one of them gets that message, an ``append_many`` is all or nothing, seqs stay
gapless. Stores are opened with ``group_commit=True`` on every backend (PostgreSQL's default is
off; the semantics must hold either way)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import sessiondb
from sessiondb import KeyConflict, Message, StaleSession
from tests.conftest import Opener

THREADS = 12


def together(n: int, body: Callable[[int], Any]) -> list[Any]:
    """``body(i)`` in ``n`` threads released at once; each one's result or exception."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = body(i)
        except Exception as e:
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    return out


@pytest.fixture
def grouped(location: str, open_store: Opener) -> Any:
    with open_store(location, group_commit=True) as s:
        yield s


def _gapless(store: sessiondb.Store, sid: str) -> list[Message]:
    got = store.messages(sid)
    assert [m.seq for m in got] == list(range(1, len(got) + 1))
    session = store.get_session(sid)
    assert session is not None and session.message_count == len(got)
    return got


def test_a_failing_caller_fails_alone(grouped: sessiondb.Store) -> None:
    store = grouped
    store.append("s", "user", "stored", key="old")

    def body(t: int) -> list[Any]:
        out: list[Any] = []
        for i in range(6):
            try:
                if i % 3 == 1 and t % 2:
                    out.append(store.append("s", "user", f"changed {t}", key="old"))
                elif i % 3 == 2 and t % 2:
                    out.append(store.append("s", "user", f"{t}:{i}", expect_last=10**6))
                else:
                    out.append(store.append("s", "user", f"{t}:{i}", key=f"{t}:{i}"))
            except (KeyConflict, StaleSession) as e:
                out.append(e)
        return out

    results = together(THREADS, body)
    ok: list[Message] = []
    for t, out in enumerate(results):
        assert isinstance(out, list), out
        for i, r in enumerate(out):
            if i % 3 == 1 and t % 2:
                assert isinstance(r, KeyConflict) and r.seq == 1
            elif i % 3 == 2 and t % 2:
                assert isinstance(r, StaleSession) and r.expected == 10**6
            else:
                assert isinstance(r, Message) and r.key == f"{t}:{i}"
                ok.append(r)
    got = _gapless(store, "s")
    assert len(got) == 1 + len(ok)
    assert sorted(got[1:], key=lambda m: m.seq) == sorted(ok, key=lambda m: m.seq)
    # Each caller's messages in the order it appended them.
    for t in range(THREADS):
        mine = [m.key for m in got if m.key and m.key.startswith(f"{t}:")]
        assert mine == [m.key for m in ok if m.key and m.key.startswith(f"{t}:")]


def test_a_key_sent_by_many_callers_at_once_is_stored_once(grouped: sessiondb.Store) -> None:
    store = grouped
    for round_ in range(4):
        key = f"dup-{round_}"
        results = together(
            THREADS, lambda t, key=key: store.append("s", "user", f"same {key}", key=key)
        )
        assert all(isinstance(r, Message) for r in results), results
        assert len(set(results)) == 1
        assert store.message("s", key) == results[0]
    assert [m.key for m in _gapless(store, "s")] == [f"dup-{r}" for r in range(4)]

    # Two contents for one key: the first stored wins; the other content's callers conflict.
    results = together(
        THREADS, lambda t: store.append("s", "user", f"content {t % 2}", key="contested")
    )
    winner = store.message("s", "contested")
    assert winner is not None
    for t, r in enumerate(results):
        if winner.content == f"content {t % 2}":
            assert r == winner
        else:
            assert isinstance(r, KeyConflict) and r.seq == winner.seq
    assert len(_gapless(store, "s")) == 5


def test_append_many_stays_all_or_nothing_among_concurrent_callers(
    grouped: sessiondb.Store,
) -> None:
    store = grouped
    store.append("s", "user", "taken", key="taken")

    def body(t: int) -> list[Any]:
        out: list[Any] = []
        for b in range(5):
            items = [
                {"role": "user", "content": f"{t}:{b}:{j}", "key": f"{t}:{b}:{j}"} for j in range(3)
            ]
            if (t + b) % 3 == 0:  # its last item conflicts: none of the three is stored
                items[-1] = {"role": "user", "content": "other", "key": "taken"}
            try:
                out.append(store.append_many("s", items))
            except KeyConflict as e:
                out.append(e)
        return out

    results = together(THREADS, body)
    got = _gapless(store, "s")
    stored = Counter(m.key for m in got)
    assert set(stored.values()) == {1}
    by_seq = {m.seq: m for m in got}
    expected = 1
    for t, out in enumerate(results):
        assert isinstance(out, list), out
        for b, r in enumerate(out):
            if (t + b) % 3 == 0:
                assert isinstance(r, KeyConflict)
                assert all(f"{t}:{b}:{j}" not in stored for j in range(3))
            else:
                assert [m.key for m in r] == [f"{t}:{b}:{j}" for j in range(3)]
                # A batch's messages are consecutive: no other caller's message between them.
                assert [m.seq for m in r] == list(range(r[0].seq, r[0].seq + 3))
                assert [by_seq[m.seq] for m in r] == r
                expected += 3
    assert len(got) == expected


def test_callers_making_and_patching_one_new_session(grouped: sessiondb.Store) -> None:
    store = grouped
    results = together(
        THREADS,
        lambda t: store.append("fresh", "user", f"m{t}", session_meta={f"t{t}": t}),
    )
    assert all(isinstance(r, Message) for r in results), results
    assert sorted(r.seq for r in results) == list(range(1, THREADS + 1))
    session = store.get_session("fresh")
    assert session is not None and session.message_count == THREADS
    assert session.meta == {f"t{t}": t for t in range(THREADS)}
    assert len(_gapless(store, "fresh")) == THREADS


def test_many_sessions_at_once_each_gapless(grouped: sessiondb.Store) -> None:
    store = grouped

    def body(t: int) -> int:
        for i in range(10):
            sid = f"own-{t}" if i % 2 else f"shared-{i % 3}"
            store.append(sid, "user", f"{t}:{i}", key=None if i % 4 else f"{t}:{i}")
        return t

    assert together(THREADS, body) == list(range(THREADS))
    total = sum(len(_gapless(store, s.session_id)) for s in store.list_sessions(limit=100))
    assert total == store.count() == THREADS * 10
