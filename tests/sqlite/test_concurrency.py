"""Many writers on one file: real processes (spawn), threads, fork, restarts, foreign lockers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import apsw
import pytest

import sessiondb
from sessiondb import StoreBusy
from tests import _workers_store as w
from tests.helpers import engine_of

SPAWN = mp.get_context("spawn")


def assert_consistent(path: Path) -> None:
    """Every session's seqs gapless, counts match, file integrity ok."""
    with sessiondb.open(path) as store:
        for s in store.list_sessions(limit=10_000):
            seqs = [m.seq for m in store.messages(s.session_id)]
            assert seqs == list(range(1, s.message_count + 1)), s.session_id
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA integrity_check").get == "ok"
    conn.close()


def _run_writers(path: Path, workers: int, n: int, journal_mode: str) -> None:
    barrier = SPAWN.Barrier(workers)
    procs = [
        SPAWN.Process(target=w.append_worker, args=(str(path), i, n, journal_mode, barrier))
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0, f"worker exit code {p.exitcode}"


@pytest.mark.stress
@pytest.mark.parametrize("journal_mode", ["auto", "delete"])
def test_many_processes_shared_and_separate_sessions(db_path: Path, journal_mode: str) -> None:
    workers, n = 8, 500
    sessiondb.open(db_path, journal_mode=journal_mode).close()
    _run_writers(db_path, workers, n, journal_mode)
    with sessiondb.open(db_path) as store:
        assert store.info()["journal_mode"] == ("wal" if journal_mode == "auto" else "delete")
        assert store.count() == workers * n
        shared = store.messages("shared")
        assert len(shared) == workers * n // 2
        keys = Counter(m.key for m in shared)
        assert set(keys.values()) == {1}
        assert len(keys) == workers * n // 2
        for i in range(workers):
            own = store.messages(f"own-{i}")
            assert [m.key for m in own] == [f"{i}:{j}" for j in range(1, n, 2)]
        # Each worker's messages in the shared session appear in the order it wrote them.
        for i in range(workers):
            mine = [int(m.key.split(":")[1]) for m in shared if m.key.startswith(f"{i}:")]
            assert mine == sorted(mine)
    assert_consistent(db_path)


def test_threads_share_one_store(db_path: Path) -> None:
    store = sessiondb.open(db_path)
    threads, n = 16, 100
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(n):
                store.append("shared" if i % 2 else f"t{t}", "user", f"{t}-{i}", key=f"{t}:{i}")
                if i % 25 == 0:
                    store.messages("shared", limit=10)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert store.count() == threads * n
    keys = Counter(m.key for m in store.messages("shared"))
    assert len(keys) == threads * n // 2 and set(keys.values()) == {1}
    store.close()
    assert_consistent(db_path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_reopens(db_path: Path) -> None:
    store = sessiondb.open(db_path)
    store.append("s", "user", "parent before fork")
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's connection
        code = 1
        try:
            for i in range(50):
                store.append("s", "user", f"child {i}", key=f"c{i}")
            code = 0
        finally:
            os._exit(code)
    for i in range(50):
        store.append("s", "user", f"parent {i}", key=f"p{i}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.count("s") == 101
    keys = Counter(m.key for m in store.messages("s"))
    assert keys[None] == 1 and all(v == 1 for k, v in keys.items() if k)
    store.close()
    assert_consistent(db_path)


def test_retry_with_same_key_across_process_restart(db_path: Path, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    p = SPAWN.Process(target=w.keyed_writer_then_die, args=(str(db_path), str(log), 30))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    # The "restarted" client re-sends everything it ever tried, including all logged keys.
    with sessiondb.open(db_path) as store:
        for i in range(30):
            m = store.append("retry", "user", f"message {i}", key=f"k{i}")
            assert m.seq == logged[i]["seq"]
        assert store.count("retry") == 30


@pytest.mark.stress
def test_two_processes_create_new_file_at_same_instant(tmp_path: Path) -> None:
    for attempt in range(5):
        path = tmp_path / f"race{attempt}.db"
        k = 6
        barrier = SPAWN.Barrier(k)
        procs = [
            SPAWN.Process(target=w.open_and_append, args=(str(path), i, barrier)) for i in range(k)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * k
        with sessiondb.open(path) as store:
            assert store.count("race") == k
            with engine_of(store).read() as conn:
                versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
        assert versions == sorted(set(versions))


def test_foreign_write_lock_then_success(db_path: Path) -> None:
    sessiondb.open(db_path).close()
    ready = SPAWN.Event()
    p = SPAWN.Process(target=w.hold_write_lock, args=(str(db_path), 1.5, ready))
    p.start()
    assert ready.wait(30)
    with sessiondb.open(db_path, write_timeout=20) as store:
        t0 = time.monotonic()
        m = store.append("s", "user", "waited for the lock")
        waited = time.monotonic() - t0
    p.join(30)
    assert m.seq == 1
    assert waited > 0.5  # it really had to wait for the foreign holder


def test_foreign_write_lock_timeout_names_holder(db_path: Path) -> None:
    sessiondb.open(db_path).close()
    ready = SPAWN.Event()
    p = SPAWN.Process(target=w.hold_write_lock, args=(str(db_path), 10, ready))
    p.start()
    try:
        assert ready.wait(30)
        with sessiondb.open(db_path, write_timeout=1.0) as store:
            t0 = time.monotonic()
            with pytest.raises(StoreBusy) as exc:
                store.append("s", "user", "cannot get in")
            waited = time.monotonic() - t0
        assert waited >= 0.9  # it waited its write_timeout (and returned: the call ended)
        assert exc.value.holder_pid == p.pid
        assert str(p.pid) in str(exc.value)
    finally:
        p.terminate()
        p.join(10)
    # The store was not disabled by the failure: the next call succeeds.
    with sessiondb.open(db_path) as store:
        assert store.append("s", "user", "after").seq == 1


def test_open_during_foreign_lock_retries_on_next_call(tmp_path: Path) -> None:
    path = tmp_path / "locked-at-birth.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")  # holds the write lock while sessiondb opens the new file
    store = sessiondb.open(path, write_timeout=0.3)  # migrations cannot run: no error here
    with pytest.raises(StoreBusy):
        store.append("s", "user", "x")
    conn.execute("ROLLBACK")
    conn.close()
    assert store.append("s", "user", "x").seq == 1  # the same handle works afterwards
    store.close()


@pytest.mark.stress
def test_ten_second_foreign_holder_waits_or_times_out_naming_it(db_path: Path) -> None:
    """A foreign process holds the write lock for 10 s. An append with the default
    timeout waits and then succeeds; one with write_timeout=2 raises StoreBusy after ~2 s
    naming the holder's pid. Both run at once, from two threads."""
    sessiondb.open(db_path).close()
    ready = SPAWN.Event()
    p = SPAWN.Process(target=w.hold_write_lock, args=(str(db_path), 10, ready))
    p.start()
    assert ready.wait(30)
    results: dict[str, object] = {}

    def patient() -> None:
        with sessiondb.open(db_path) as store:
            t0 = time.monotonic()
            results["patient"] = (store.append("s", "user", "patient").seq, time.monotonic() - t0)

    def hasty() -> None:
        with sessiondb.open(db_path, write_timeout=2) as store:
            t0 = time.monotonic()
            try:
                store.append("s", "user", "hasty")
            except StoreBusy as e:
                results["hasty"] = (e, time.monotonic() - t0)

    threads = [threading.Thread(target=patient), threading.Thread(target=hasty)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    p.join(30)
    seq, waited = results["patient"]  # type: ignore[misc]
    assert seq == 1 and waited >= 5
    err, hasty_waited = results["hasty"]  # type: ignore[misc]
    assert isinstance(err, StoreBusy) and err.holder_pid == p.pid
    assert hasty_waited >= 1.8  # its own deadline, not the patient one's
    assert hasty_waited < waited  # ... and it did not wait for the holder like the patient one


def test_a_stopped_writer_delays_others_only_up_to_their_timeout(db_path: Path) -> None:
    """A sessiondb writer frozen inside its transaction (Ctrl-Z) held every other writer in the
    admission queue for as long as it stayed stopped. Now each waits only its write_timeout and
    is told who holds the lock and that it is stopped; store leases likewise."""
    sessiondb.open(db_path).close()
    ready = SPAWN.Event()
    holder = SPAWN.Process(target=w.hold_sessiondb_write, args=(str(db_path), ready))
    holder.start()
    store = sessiondb.open(db_path, write_timeout=1.0)
    try:
        assert ready.wait(60)
        os.kill(holder.pid, signal.SIGSTOP)
        outcome: dict[str, object] = {}

        def attempt() -> None:
            for name, call in (
                ("append", lambda: store.append("s", "user", "blocked")),
                ("lease", lambda: store.lease("job", "w1").acquire()),
            ):
                try:
                    call()
                    outcome[name] = "went through"
                except StoreBusy as e:
                    outcome[name] = e

        t = threading.Thread(target=attempt)
        t.start()
        t.join(120)  # a bound for a hung call, far beyond the 2 x 1 s the calls may wait
        assert not t.is_alive(), "a write waited past its write_timeout"
        for name in ("append", "lease"):
            e = outcome[name]
            assert isinstance(e, StoreBusy), (name, e)
            assert e.holder_pid == holder.pid and "stopped" in str(e) and "kill -CONT" in str(e)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.terminate()
        holder.join(30)
    # The same store works again once the holder is gone (the spent queue handle was replaced).
    assert store.append("s", "user", "after").seq == 1
    store.close()


@pytest.mark.stress
def test_short_lived_threads_leave_the_descriptor_count_flat(db_path: Path) -> None:
    """A thread-per-request server: 10 000 threads, each appending once and ending. Their
    connections used to stay open (3 descriptors each) until appends failed for want of
    descriptors."""
    with sessiondb.open(db_path) as store:
        store.append("warm", "user", "x")
        before = len(os.listdir("/proc/self/fd"))
        errors: list[BaseException] = []

        def request(i: int) -> None:
            try:
                store.append(f"s{i % 7}", "user", f"request {i}")
            except BaseException as e:
                errors.append(e)

        for start in range(0, 10_000, 50):
            batch = [threading.Thread(target=request, args=(i,)) for i in range(start, start + 50)]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
        after = len(os.listdir("/proc/self/fd"))
        assert errors == []
        assert store.count() == 10_001
    assert after <= before + 3 * 50  # at most the last batch's connections, not 10 000


@pytest.mark.parametrize(
    ("journal_mode", "kind"), [("wal", "write"), ("delete", "write"), ("delete", "read")]
)
def test_fork_while_another_thread_is_inside_a_transaction(
    db_path: Path, journal_mode: str, kind: str
) -> None:
    """The child of a fork taken while another thread was inside a transaction could never
    write (SQLite's in-process locks of the inherited connection stayed held). fork() now
    waits for the transaction to end."""
    status = SPAWN.Pool(1).apply(
        w.fork_while_a_thread_is_inside, (str(db_path), journal_mode, kind)
    )
    assert status == 0
    with sessiondb.open(db_path) as store:
        assert [m.content for m in store.messages("child")] == ["written by the forked child"]


def test_fork_waits_for_a_background_checkpoint(db_path: Path) -> None:
    """A child forked in the middle of the background checkpointer's pass inherited its locks
    as held (sqlite/checkpointer.py): now fork() waits for the pass, as for a transaction
    (seen as a stalled child in tests/sqlite/test_group.py's fork test)."""
    ended, status = SPAWN.Pool(1).apply(w.fork_during_a_checkpoint, (str(db_path),))
    assert ended, "fork() returned while a checkpoint pass was running"
    assert status == 0
    with sessiondb.open(db_path) as store:
        assert [m.content for m in store.messages("child")] == ["written by the forked child"]
