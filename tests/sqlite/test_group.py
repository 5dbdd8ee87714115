"""Group commit on SQLite (core/group.py, docs/adr/0011-group-commit.md): appends of several
threads share one transaction, each returning after that commit; per-request failures stay
per request; a failed transaction fails its whole group and writes nothing; close and fork.

Groups are made deterministic by holding the write lock from another thread: the first append
leads a group of one and waits for the lock; every append made meanwhile queues and forms the
next group, whose composition and leader the test then knows.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest

import sessiondb
from sessiondb import Error, KeyConflict, StaleSession, StoreBusy
from sessiondb.core import writes
from sessiondb.core.store import SessionStore
from tests.helpers import engine_of
from tests.sqlite.test_concurrency import assert_consistent


def _store(path: Path, **options: Any) -> SessionStore:
    store = sessiondb.open(path, **options)
    assert isinstance(store, SessionStore)
    return store


@contextmanager
def write_lock_held(store: SessionStore) -> Iterator[threading.Event]:
    """Hold the store's write lock in another thread until the yielded event is set."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        with engine_of(store).write():
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    try:
        yield release
    finally:
        release.set()
        t.join(30)


def queued(store: SessionStore) -> int:
    group = store.group
    assert group is not None
    with group._lock:
        return len(group._queue)


def wait_until(cond: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + 20
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.005)


class Calls:
    """Run calls in threads, one by one in a known queue order; collect outcomes."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.threads: list[threading.Thread] = []
        self.out: dict[int, Any] = {}

    def start(self, fn: Callable[[], Any], expect_queued: int | None = None) -> None:
        i = len(self.threads)

        def body() -> None:
            try:
                self.out[i] = fn()
            except Exception as e:
                self.out[i] = e

        t = threading.Thread(target=body)
        self.threads.append(t)
        t.start()
        if expect_queued is not None:
            wait_until(lambda: queued(self.store) == expect_queued, "the call did not queue")

    def join(self) -> dict[int, Any]:
        for t in self.threads:
            t.join(60)
            assert not t.is_alive()
        return self.out


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group committed (or attempted) while the test runs."""
    sizes: list[int] = []
    real = writes.append_group_in  # every group's transaction, whoever commits it

    def counted(tx: Any, requests: list[writes.Request]) -> Any:
        sizes.append(len(requests))
        return real(tx, requests)

    monkeypatch.setattr(writes, "append_group_in", counted)
    return sizes


def _queue_group(store: SessionStore, calls: list[Callable[[], Any]]) -> dict[int, Any]:
    """Make ``calls[1:]`` one group (in this order) behind ``calls[0]``, a group of one."""
    runner = Calls(store)
    with write_lock_held(store):
        runner.start(calls[0])
        wait_until(lambda: store.group is not None and store.group._leading, "no leader")
        wait_until(lambda: queued(store) == 0, "the first call did not lead")
        for n, call in enumerate(calls[1:], 1):
            runner.start(call, expect_queued=n)
    return runner.join()


def test_appends_waiting_together_share_one_transaction(db_path: Path, groups: list[int]) -> None:
    with _store(db_path) as store:
        calls = [lambda: store.append("first", "user", "leader")]
        calls += [
            (lambda i=i: store.append(f"s{i % 3}", "user", f"m{i}", key=f"k{i}")) for i in range(20)
        ]
        groups.clear()
        out = _queue_group(store, calls)
        assert groups == [1, 20]
        for i in range(20):
            m = out[i + 1]
            assert (m.session_id, m.content, m.key) == (f"s{i % 3}", f"m{i}", f"k{i}")
        for s in range(3):
            got = store.messages(f"s{s}")
            assert [m.content for m in got] == [f"m{i}" for i in range(s, 20, 3)]
            assert [m.seq for m in got] == list(range(1, len(got) + 1))
            # What each caller got back is what is stored.
            assert got == [out[i + 1] for i in range(s, 20, 3)]
    assert_consistent(db_path)


def test_group_commit_off_commits_one_by_one(db_path: Path, groups: list[int]) -> None:
    with _store(db_path, group_commit=False) as store:
        assert store.group is None
        store.append("s", "user", "x")
        assert groups == []
        assert store.count("s") == 1


@pytest.mark.parametrize("handoff_after", [0, 1])
def test_per_request_failures_fail_only_their_caller(
    db_path: Path, groups: list[int], monkeypatch: pytest.MonkeyPatch, handoff_after: int
) -> None:
    # The second group's leader is the thread of calls[1] (handoff after 0 groups) or the
    # first group's leader, whose own append failed (after 1): either leader's own failure
    # fails only its own caller.
    from sessiondb.core import group

    monkeypatch.setattr(group, "HANDOFF_AFTER", handoff_after)
    with _store(db_path) as store:
        store.append("s", "user", "stored", key="old")
        calls: list[Callable[[], Any]] = [
            lambda: store.append("s", "user", "changed", key="old")  # the first leader's own
        ]
        # The front of the second group's queue fails alone too.
        calls.append(lambda: store.append("s", "user", "other text", key="old"))
        calls.append(lambda: store.append("s", "user", "a", key="a"))
        calls.append(lambda: store.append("s", "user", "b", expect_last=1))  # stale: a came
        calls.append(lambda: store.append("s", "user", "c", expect_last=2))
        calls.append(lambda: store.append_many("s", [{"role": "user", "content": "d"}] * 2))
        calls.append(  # all or nothing: its second item conflicts
            lambda: store.append_many(
                "s",
                [
                    {"role": "user", "content": "e", "key": "e"},
                    {"role": "user", "content": "changed", "key": "a"},
                ],
            )
        )
        calls.append(lambda: store.append("s", "user", "f", key="e"))  # e never stored
        groups.clear()
        out = _queue_group(store, calls)
        assert groups == [1, 7]
        assert isinstance(out[0], KeyConflict) and out[0].seq == 1
        assert isinstance(out[1], KeyConflict) and out[1].seq == 1
        assert out[2].seq == 2
        assert isinstance(out[3], StaleSession) and out[3].actual == 2
        assert out[4].seq == 3
        assert [m.seq for m in out[5]] == [4, 5]
        assert isinstance(out[6], KeyConflict) and out[6].seq == 2
        assert out[7].seq == 6 and out[7].content == "f"
        got = store.messages("s")
        assert [m.content for m in got] == ["stored", "a", "c", "d", "d", "f"]
        assert [m.seq for m in got] == [1, 2, 3, 4, 5, 6]
    assert_consistent(db_path)


def test_a_key_twice_in_one_group_is_stored_once(db_path: Path, groups: list[int]) -> None:
    with _store(db_path) as store:
        calls: list[Callable[[], Any]] = [lambda: store.append("x", "user", "leader")]
        calls += [lambda: store.append("s", "user", "same", key="k", meta={"n": 1})] * 3
        calls.append(lambda: store.append("s", "assistant", "same", key="k", meta={"n": 1}))
        calls.append(
            lambda: store.append_many(
                "s",
                [
                    {"role": "user", "content": "same", "key": "k", "meta": {"n": 1}},
                    {"role": "user", "content": "next", "key": "n"},
                ],
            )
        )
        groups.clear()
        out = _queue_group(store, calls)
        assert groups == [1, 5]
        assert out[1] == out[2] == out[3] == out[5][0]
        assert out[1].seq == 1 and out[1].meta == {"n": 1}
        assert isinstance(out[4], KeyConflict) and out[4].seq == 1
        assert out[5][1].seq == 2
        assert store.messages("s") == [out[1], out[5][1]]


def test_sessions_made_and_patched_in_a_group(db_path: Path, groups: list[int]) -> None:
    with _store(db_path) as store:
        calls: list[Callable[[], Any]] = [lambda: store.append("x", "user", "leader")]
        calls.append(lambda: store.append("new", "user", "a", expect_last=5))  # stale: no write
        calls += [
            (lambda i=i: store.append("new", "user", f"m{i}", session_meta={f"p{i}": i}))
            for i in range(4)
        ]
        calls.append(lambda: store.append("new", "user", "z", session_meta={"p0": None}))
        groups.clear()
        out = _queue_group(store, calls)
        assert groups == [1, 6]
        assert isinstance(out[1], StaleSession)
        session = store.get_session("new")
        assert session is not None and session.message_count == 5
        assert session.meta == {"p1": 1, "p2": 2, "p3": 3}
        assert session.created_at == out[2].created_at


def test_a_failed_transaction_fails_its_whole_group_and_writes_nothing(
    db_path: Path, groups: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiondb.sqlite import insert

    real = insert._rows  # the rows of one session, after the seqs of all, before the insert

    def failing(sid: str, *rest: Any) -> Any:
        if sid == "poison":
            raise apsw.FullError("database or disk is full")
        return real(sid, *rest)

    monkeypatch.setattr(insert, "_rows", failing)
    with _store(db_path) as store:
        calls: list[Callable[[], Any]] = [lambda: store.append("x", "user", "leader")]
        calls += [(lambda i=i: store.append("s", "user", f"m{i}", key=f"k{i}")) for i in range(3)]
        calls.append(lambda: store.append("poison", "user", "p"))
        calls += [lambda: store.append("t", "user", "keyless")]
        groups.clear()
        out = _queue_group(store, calls)
        assert groups == [1, 5]
        errors = [out[i] for i in range(1, 6)]
        assert all(isinstance(e, sessiondb.Error) for e in errors), errors
        assert store.count("s") == store.count("t") == store.count("poison") == 0
        # Nothing of the group was written: any retry is safe, keyless ones included.
        monkeypatch.setattr(insert, "_rows", real)
        for i in range(3):
            store.append("s", "user", f"m{i}", key=f"k{i}")
        store.append("t", "user", "keyless")
        assert store.count("s") == 3 and store.count("t") == 1
    assert_consistent(db_path)


def test_close_during_a_group_commits_it_and_refuses_the_queue(db_path: Path) -> None:
    store = _store(db_path)
    runner = Calls(store)
    with write_lock_held(store) as release:
        runner.start(lambda: store.append("s", "user", "in flight", key="a"))
        wait_until(lambda: queued(store) == 0 and store.group._leading, "no leader")  # type: ignore[union-attr]
        runner.start(lambda: store.append("s", "user", "queued", key="b"), expect_queued=1)
        closer = threading.Thread(target=store.close)
        closer.start()
        wait_until(lambda: queued(store) == 0, "close did not empty the queue")
        assert closer.is_alive()  # waits for the group in flight
        release.set()
        closer.join(30)
        assert not closer.is_alive()
    out = runner.join()
    assert out[0].seq == 1
    assert isinstance(out[1], Error) and "closed" in str(out[1])
    with pytest.raises(Error, match="closed"):
        store.append("s", "user", "after close")
    with sessiondb.open(db_path) as again:
        assert [m.key for m in again.messages("s")] == ["a"]


def test_a_queued_append_past_write_timeout_is_busy_and_unwritten(db_path: Path) -> None:
    with _store(db_path, write_timeout=0.5) as store:
        runner = Calls(store)
        with write_lock_held(store) as release:
            runner.start(lambda: store.append("s", "user", "leader"))
            wait_until(lambda: queued(store) == 0 and store.group._leading, "no leader")  # type: ignore[union-attr]
            runner.start(lambda: store.append("s", "user", "follower", key="f"), expect_queued=1)
            wait_until(lambda: len(runner.out) == 2, "nobody gave up")
            release.set()
        out = runner.join()
        assert isinstance(out[0], StoreBusy) and isinstance(out[1], StoreBusy)
        assert "nothing was written" in str(out[1])
        assert store.count("s") == 0
        store.append("s", "user", "follower", key="f")
        assert store.count("s") == 1


def test_many_threads_each_append_once_gapless(db_path: Path, groups: list[int]) -> None:
    threads, n = 16, 40
    with _store(db_path) as store:
        barrier = threading.Barrier(threads)
        failures: list[BaseException] = []

        def body(t: int) -> None:
            barrier.wait()
            try:
                for i in range(n):
                    sid = "shared" if i % 2 else f"own-{t}"
                    key = f"{t}:{i}" if i % 3 else None
                    m = store.append(sid, "user", f"{t}:{i}", key=key)
                    assert m.content == f"{t}:{i}"
            except BaseException as e:
                failures.append(e)

        ts = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert failures == []
        assert store.count() == threads * n
        contents = [m.content for m in store.messages("shared")]
        expected = [f"{t}:{i}" for t in range(threads) for i in range(1, n, 2)]
        assert sorted(contents) == sorted(expected)
        # Each thread's messages in the shared session in the order it appended them.
        for t in range(threads):
            mine = [c for c in contents if c.startswith(f"{t}:")]
            assert mine == [f"{t}:{i}" for i in range(1, n, 2)]
    assert sum(groups) == threads * n
    assert len(groups) < threads * n  # some appends did share a transaction
    assert_consistent(db_path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_store_used_after_fork_groups_in_the_child(db_path: Path) -> None:
    with _store(db_path) as store:
        stop = threading.Event()

        def busy() -> None:
            i = 0
            while not stop.is_set():
                store.append("parent", "user", f"p{i}")
                i += 1

        workers = [threading.Thread(target=busy) for _ in range(4)]
        for t in workers:
            t.start()
        time.sleep(0.2)
        pid = os.fork()
        if pid == 0:  # the child: the parent's threads (and their queue) do not exist here
            code = 1
            try:
                done: list[int] = []

                def child(t: int) -> None:
                    for i in range(20):
                        done.append(store.append(f"child-{t}", "user", f"c{i}").seq)

                ts = [threading.Thread(target=child, args=(t,)) for t in range(4)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(60)
                code = 0 if len(done) == 80 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        stop.set()
        for t in workers:
            t.join(30)
        assert os.waitstatus_to_exitcode(status) == 0
        for t in range(4):
            assert [m.seq for m in store.messages(f"child-{t}")] == list(range(1, 21))
        assert store.count("parent") > 0
    assert_consistent(db_path)


def test_no_thread_starves(db_path: Path) -> None:
    """First come, first served: every thread appending as fast as it can gets its share."""
    threads, seconds = 8, 1.5
    with _store(db_path) as store:
        done = [0] * threads
        barrier = threading.Barrier(threads)
        end: list[float] = []

        def body(t: int) -> None:
            barrier.wait()
            if not end:
                end.append(time.monotonic() + seconds)
            while time.monotonic() < end[0]:
                store.append(f"s{t}", "user", "x" * 300)
                done[t] += 1

        ts = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert min(done) > 0
        # Lenient for a loaded machine: the OS may keep one thread off the CPU for a while.
        assert min(done) >= max(done) / 4, done


# The group's rows are indexed together (sqlite/insert.py, docs/adr/0010 "Groups"): one
# INSERT … SELECT per index table over the rowid range of every session's rows, each claimed.


@pytest.fixture
def ranges(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every ``(first id, last id, rows indexed)`` of ``selfindex.index_rows`` in the test."""
    from sessiondb.sqlite import selfindex

    seen: list[tuple[int, int, int]] = []
    real = selfindex.index_rows

    def spy(conn: apsw.Connection, first: int, last: int, *rest: Any) -> int:
        indexed = real(conn, first, last, *rest)
        seen.append((first, last, indexed))
        return indexed

    monkeypatch.setattr(selfindex, "index_rows", spy)
    return seen


def test_a_group_of_single_rows_is_indexed_in_one_statement(
    db_path: Path, groups: list[int], ranges: list[tuple[int, int, int]]
) -> None:
    from tests.sqlite.test_selfindex import check_index, found, message_rows, word_rows

    with _store(db_path) as store:
        n = 24  # one append per session: every session's batch is a single row
        calls: list[Callable[[], Any]] = [lambda: store.append("x", "user", "leader")]
        calls += [
            (lambda i=i: store.append(f"s{i}", "user", f"grouped g{i} word")) for i in range(n)
        ]
        groups.clear()
        ranges.clear()
        out = _queue_group(store, calls)
        assert groups == [1, n]
        # The claim was used: the group's rows were indexed by one range, every one of them
        # once (had a trigger indexed them too, the integrity-check below would fail; had the
        # group fallen back to the triggers, index_rows would not have run).
        with engine_of(store).read() as conn:
            first, last = conn.execute(
                "SELECT min(m.id), max(m.id) FROM messages m JOIN sessions s ON s.id = m.sid"
                " WHERE s.session_id LIKE 's%'"
            ).fetchone()
        assert ranges == [(first, last, n)] and last - first + 1 == n
        assert [m.seq for m in out.values()] == [1] * (n + 1)
        check_index(store)
        assert word_rows(store) == message_rows(store) == n + 1
        assert found(store, "grouped") == sorted((f"s{i}", 1) for i in range(n))
        for i in range(n):  # searchable when each append returned (and by its own words)
            assert found(store, f"g{i}") == [(f"s{i}", 1)]


def test_cjk_in_a_group(
    db_path: Path, groups: list[int], ranges: list[tuple[int, int, int]]
) -> None:
    from tests.sqlite.test_selfindex import check_index, found

    with _store(db_path) as store:
        calls: list[Callable[[], Any]] = [lambda: store.append("x", "user", "leader")]
        texts = [f"東京タワー{i}" if i % 3 == 0 else f"plain p{i}" for i in range(12)]
        calls += [(lambda i=i: store.append(f"s{i}", "user", texts[i])) for i in range(12)]
        calls.append(
            lambda: store.append_many("s0", [{"role": "user", "content": "大阪城 two"}] * 2)
        )
        groups.clear()
        ranges.clear()
        _queue_group(store, calls)
        assert groups == [1, 13] and len(ranges) == 1 and ranges[0][2] == 14
        check_index(store)
        assert found(store, "東京タワー") == [(f"s{i}", 1) for i in range(0, 12, 3)]
        assert found(store, "大阪城") == [("s0", 2), ("s0", 3)]
        assert found(store, "p4") == [("s4", 1)]


def test_a_failed_group_leaves_no_claim_and_no_index_rows(
    db_path: Path, groups: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiondb.sqlite import selfindex
    from tests.sqlite.test_selfindex import check_index, found, message_rows, word_rows

    real = selfindex.index_rows
    failed: list[int] = []

    def index_then_fail(conn: apsw.Connection, first: int, last: int, *rest: Any) -> int:
        real(conn, first, last, *rest)  # the rows indexed, every session still claimed
        failed.append(last - first + 1)
        raise apsw.FullError("database or disk is full")

    with _store(db_path) as store:
        monkeypatch.setattr(selfindex, "index_rows", index_then_fail)
        calls: list[Callable[[], Any]] = [lambda: store.append("x", "user", "leader")]
        calls += [(lambda i=i: store.append(f"s{i}", "user", f"doomed {i} 京都")) for i in range(6)]
        groups.clear()
        out = _queue_group(store, calls)
        assert groups == [1, 6] and failed == [6]
        assert all(isinstance(out[i], sessiondb.Error) for i in range(1, 7)), out
        monkeypatch.setattr(selfindex, "index_rows", real)
        check_index(store)  # no claim committed, both indexes equal to their content
        assert word_rows(store) == message_rows(store) == 1
        assert found(store, "doomed") == [] and found(store, "京都") == []
        # The sessions are usable by the triggers' writers and by the next group alike.
        store.append("s0", "user", "after")
        store.append_many("s1", [{"role": "user", "content": "after 京都"}] * 2)
        check_index(store)
        assert found(store, "after") == [("s0", 1), ("s1", 1), ("s1", 2)]


def test_a_groups_sessions_are_looked_up_and_given_seqs_in_one_statement_each(
    db_path: Path,
) -> None:
    """A group of 16 sessions' single rows: one SELECT finds every session and one UPDATE
    gives them their seqs and claims them (sqlite/insert.py, CLAIM_SHAPES) — not a lookup and
    an UPDATE per session."""
    with _store(db_path) as store:
        n = 16
        for i in range(n):
            store.append(f"s{i}", "user", "first")
        with engine_of(store).write() as conn:  # this thread's connection: it leads the group
            pass
        seen: list[str] = []
        conn.exec_trace = lambda _cursor, sql, _bindings: seen.append(sql) or True
        try:
            requests = [
                writes.append_request(f"s{i}", "user", f"m{i}", None, None, None, None, None)
                for i in range(n)
            ]
            out = writes.append_group(store._backend, requests)  # type: ignore[attr-defined]
        finally:
            conn.exec_trace = None
        assert [m[0].seq for m in out if not isinstance(m, Exception)] == [2] * n
        lookups = [s for s in seen if s.startswith("SELECT") and "session_id" in s]
        seqs = [s for s in seen if s.startswith("UPDATE sessions SET message_count")]
        assert (len(lookups), len(seqs)) == (1, 1), seen
        for i in range(n):
            assert [m.content for m in store.messages(f"s{i}")] == ["first", f"m{i}"]
    assert_consistent(db_path)
