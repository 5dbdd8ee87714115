"""Cross-process combining (sessiondb/sqlite/combine.py; docs/adr/0018-cross-process-combining.md):
a head — the holder of the admission lock — commits what writers of other processes hand it.

* kill -9 of the head after its COMMIT, before it answered: every waiter finds its append by its
  token (the ack row) and gets the stored messages; nothing is stored twice;
* kill -9 of the head inside its transaction: nothing of it is stored; every waiter commits its
  own append itself, once;
* per-request semantics through a head: a key conflict or a stale ``expect_last`` fails that
  request alone; a batch with a key already stored returns the stored message;
* bytes that are not a request are answered "commit it yourself" and written nowhere;
* a head whose backlog is full keeps no writer past its write_timeout; a child forked during a
  tenure keeps neither the lock nor the socket;
* many processes appending without pause: exact counts, seqs gapless, and requests of other
  processes were in fact committed by heads — also when every tenure is handed on to a waiting
  writer (sqlite/combine_baton.py), and when the writer handed a tenure is killed at once;
* a hand-over's descriptors are used only if they are this store's lock file and socket.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sessiondb
from sessiondb.errors import StoreBusy
from sessiondb.host.flock import QueuedLock
from sessiondb.sqlite import combine
from sessiondb.sqlite.admission import lock_path_for
from tests import _workers_combine as w
from tests.helpers import engine_of

SPAWN = mp.get_context("spawn")

pytestmark = pytest.mark.skipif(not combine.ENABLED, reason="abstract sockets are Linux's")


def _with_head(
    db_path: Path, stop_at: str, calls: list[str]
) -> tuple[Any, dict[str, list[Any]], Any]:
    """A head process held at "listening" while one waiter process per call starts its
    append; then the head goes on (and dies at ``stop_at``). Returns the head, the waiters'
    outcomes by call, and the head's queue."""
    listening, release, out, head_out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue(), SPAWN.Queue()
    head = SPAWN.Process(target=w.head, args=(str(db_path), stop_at, listening, release, head_out))
    head.start()
    assert listening.wait(60), "the head never listened"
    waiters = []
    for call in calls:
        started = SPAWN.Event()
        p = SPAWN.Process(target=w.waiter, args=(str(db_path), call, started, out))
        p.start()
        assert started.wait(60)
        waiters.append(p)
    time.sleep(1.0)  # each waiter finds the lock taken and hands its append over
    release.set()
    results: dict[str, list[Any]] = {}
    for _ in calls:
        call, _pid, result = out.get(timeout=120)
        results.setdefault(call, []).append(result)
    for p in waiters:
        p.join(60)
        assert p.exitcode == 0
    head.join(60)
    return head, results, head_out


def test_kill_9_of_the_head_after_commit_loses_and_doubles_nothing(db_path: Path) -> None:
    sessiondb.open(db_path).close()
    head, results, _ = _with_head(db_path, "committed", ["plain"] * 3)
    assert head.exitcode == -9  # killed after committing others' appends: it held some
    with sessiondb.open(db_path) as store:
        assert [m.content for m in store.messages("head")] == ["the head's own"]
        for [(sid, seq, content)] in results["plain"]:
            stored = store.messages(sid)
            assert [(m.seq, m.content) for m in stored] == [(seq, content)]
        # the ack rows were read back, never deleted by the dead head: kept for ACK_KEEP
        conn = engine_of(store).connection()
        assert conn.execute("SELECT count(*) FROM combine_acks").get >= 1


def test_kill_9_of_the_head_inside_its_transaction_stores_each_waiter_once(
    db_path: Path,
) -> None:
    sessiondb.open(db_path).close()
    head, results, _ = _with_head(db_path, "taken", ["plain"] * 3)
    assert head.exitcode == -9
    with sessiondb.open(db_path) as store:
        assert store.messages("head") == []  # its transaction never committed
        for [(sid, seq, content)] in results["plain"]:
            assert [(m.seq, m.content) for m in store.messages(sid)] == [(1, content)]
            assert seq == 1
        conn = engine_of(store).connection()
        assert conn.execute("SELECT count(*) FROM combine_acks").get == 0


def test_a_head_keeps_each_request_s_own_outcome(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        store.append("keyed", "user", "first", key="k")
    head, results, out = _with_head(db_path, "none", ["conflict", "stale", "batch", "plain"])
    assert head.exitcode == 0
    served = dict([out.get(timeout=60)])["served"]
    assert served == 4, "the waiters' appends were not committed by the head"
    assert results["conflict"] == ["KeyConflict"]
    assert results["stale"] == ["StaleSession"]
    [batch] = results["batch"]
    assert batch == [("keyed", 1, "first"), ("keyed", 2, "b1"), ("keyed", 3, "b2")]
    with sessiondb.open(db_path) as store:
        stored = store.messages("keyed")
        assert [(m.seq, m.content, m.key, m.meta) for m in stored] == [
            (1, "first", "k", None),
            (2, "b1", None, None),
            (3, "b2", "b2", {"n": 2}),
        ]


def test_a_head_stopped_holding_an_append_is_named_and_the_outcome_called_unknown(
    db_path: Path,
) -> None:
    """A head frozen (SIGSTOP) inside its transaction with another process's append: that
    writer waits its write_timeout, then gets StoreBusy naming the head and saying the outcome
    is unknown — not "nothing was written": resumed, the head commits it."""
    sessiondb.open(db_path).close()
    listening, release, head_out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    head = SPAWN.Process(
        target=w.head, args=(str(db_path), "stop-taken", listening, release, head_out)
    )
    head.start()
    try:
        assert listening.wait(60)
        store = sessiondb.open(db_path, write_timeout=2.0)
        threading.Timer(0.5, release.set).start()
        with pytest.raises(StoreBusy) as busy:
            store.append("frozen", "user", "handed over")
        assert busy.value.holder_pid == head.pid and "unknown" in str(busy.value)
    finally:
        os.kill(head.pid, signal.SIGCONT)
        head.join(60)
    assert head.exitcode == 0 and head_out.get(timeout=10) == ("served", 1)
    assert [m.content for m in store.messages("frozen")] == ["handed over"]
    assert store.append("frozen", "user", "after").seq == 2  # the store works on
    store.close()


def test_a_child_forked_during_a_tenure_keeps_neither_lock_nor_socket(db_path: Path) -> None:
    """A head's process forks (no exec) and is killed: the child lives on, but its copies of
    the admission lock and the listening socket were closed at the fork (host/inherited.py) —
    the lock is free, and a writer that finds it taken is not left connected to a socket that
    nobody answers (before: both waited out write_timeout, StoreBusy)."""
    sessiondb.open(db_path).close()
    got, out = SPAWN.Pipe(duplex=False)
    head = SPAWN.Process(target=w.forks_in_tenure, args=(str(db_path), out))
    head.start()
    assert got.poll(60), "the head never listened"
    child = got.recv()
    try:
        for _ in range(600):  # not join(): the child holds a copy of its sentinel
            if head.exitcode is not None:
                break
            time.sleep(0.1)
        assert head.exitcode == -9
        with sessiondb.open(db_path, write_timeout=10.0) as store:
            store.append("after", "user", "the lock is free")
            holder = QueuedLock(lock_path_for(db_path))
            assert holder.acquire(10.0)
            threading.Timer(0.5, holder.release).start()
            store.append("after", "user", "the lock was taken")  # connects, then queues
            holder.close()
            assert [m.content for m in store.messages("after")] == [
                "the lock is free",
                "the lock was taken",
            ]
            assert store.count("head") == 0  # killed before its transaction
        os.kill(child, 0)  # the child lived through it all
    finally:
        os.kill(child, signal.SIGKILL)


def _address(db_path: Path) -> bytes:
    st = os.stat(lock_path_for(db_path))
    return b"\0sessiondb-combine-%d-%d-%d" % (os.getuid(), st.st_dev, st.st_ino)


def test_a_head_whose_backlog_is_full_keeps_no_writer_past_its_write_timeout(
    db_path: Path,
) -> None:
    """More writers than a head's backlog holds, and the head takes none (stopped): a writer's
    connect used to wait for a place without bound; it gives up, queues, and gets StoreBusy
    once its write_timeout has passed — with nothing written."""
    store = sessiondb.open(db_path, write_timeout=2.0)
    store.append("warm", "user", "x")
    holder = QueuedLock(lock_path_for(db_path))
    assert holder.acquire(10.0)
    head = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # a head that takes nobody
    head.bind(_address(db_path))
    head.listen(0)
    filling = []
    while True:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.setblocking(False)
        try:
            c.connect(_address(db_path))
        except BlockingIOError:
            c.close()
            break  # the backlog is full
        filling.append(c)
    outcome: list[BaseException] = []
    t = threading.Thread(target=lambda: _append_catching(store, outcome))
    t.start()
    t.join(30)
    stuck = t.is_alive()
    for c in (head, *filling):
        c.close()  # unblocks a connect still waiting
    holder.release()
    holder.close()
    t.join(30)
    assert not stuck, "the writer waited past its write_timeout on a full backlog"
    assert len(outcome) == 1 and isinstance(outcome[0], StoreBusy), outcome
    assert store.count() == 1  # nothing of it was written
    store.close()


def _append_catching(store: sessiondb.Store, outcome: list[BaseException]) -> None:
    try:
        store.append("late", "user", "never written")
    except BaseException as e:  # the test looks at what it was
        outcome.append(e)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"garbage",
        b"S\x00",
        b"J[1,2,3]",
        b'J[["00000000000000000000000000000000","s",[["",5,null,null,null]],null,null]]',
        b'J[["00000000000000000000000000000000","s",[["user","x",null,"{bad",null]],null,null]]',
        b"S" + b"\x00" * 16 + b"\x05\x00\x04\x00" + b"s\xffabuserhello",
    ],
)
def test_what_is_not_a_request_is_answered_retry_and_written_nowhere(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, junk: bytes
) -> None:
    store = sessiondb.open(db_path)
    store.append("warm", "user", "x")
    listening, release = threading.Event(), threading.Event()

    def hook(stage: str) -> None:
        if stage == "listening":
            listening.set()
            release.wait(30)

    monkeypatch.setattr(combine, "_HOOK", hook)
    monkeypatch.setattr(combine, "CONTENDED_FOR", float("inf"))
    t = threading.Thread(target=lambda: store.append("head", "user", "own"))
    t.start()
    try:
        assert listening.wait(30)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(30)
        sock.connect(_address(db_path))
        sock.send(junk)
        time.sleep(0.1)
    finally:
        release.set()
        t.join(30)
    assert sock.recv(100) == b"R"
    sock.close()
    assert sorted(s.session_id for s in store.list_sessions()) == ["head", "warm"]
    assert store.count() == 2
    store.close()


def test_a_queued_writer_that_got_its_answer_leaves_the_queue(db_path: Path) -> None:
    """``acquire(poll=…)``: once ``poll`` says done the wait ends, and the handle's place in the
    queue is given up — a grant that comes later is released at once, not held."""
    sessiondb.open(db_path).close()
    path = lock_path_for(db_path)
    holder, waiter, other = QueuedLock(path), QueuedLock(path), QueuedLock(path)
    assert holder.acquire(1.0)
    polls = []

    def poll() -> bool:
        polls.append(time.monotonic())
        return len(polls) == 3

    assert waiter.acquire(10.0, poll=poll, every=0.01) is False
    assert waiter.polled_out and waiter.spent and len(polls) == 3
    holder.release()
    assert other.acquire(5.0), "the spent handle kept its grant"
    other.release()
    for lock in (holder, waiter, other):
        lock.close()


def _writers(db_path: Path, target: Any, procs: int, n: int) -> list[tuple[int, int, int]]:
    """``procs`` processes running ``target`` (a writer of tests/_workers_combine.py) at once;
    then every append is checked stored once, in order, seqs gapless. Returns each process's
    (proc, requests of others it committed, tenures it handed on)."""
    sessiondb.open(db_path).close()
    barrier, out = SPAWN.Barrier(procs), SPAWN.Queue()
    ps = [
        SPAWN.Process(target=target, args=(str(db_path), p, n, barrier, out)) for p in range(procs)
    ]
    for p in ps:
        p.start()
    results = [out.get(timeout=300) for _ in ps]
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    with sessiondb.open(db_path) as store:
        shared = store.messages("shared", limit=10_000)
        assert [m.seq for m in shared] == list(range(1, len(shared) + 1))
        assert sorted(m.content for m in shared) == sorted(
            f"{p}:{i}" for p in range(procs) for i in range(0, n, 2)
        )
        for p in range(procs):
            own = store.messages(f"own-{p}", limit=10_000)
            assert [m.content for m in own] == ["warm"] + [f"{p}:{i}" for i in range(1, n, 2)]
    return results


def test_processes_appending_without_pause_are_combined_and_stored_once(db_path: Path) -> None:
    results = _writers(db_path, w.writer, procs=6, n=150)
    assert sum(r[1] for r in results) > 0, "no head committed another process's append"


def test_tenures_handed_on_to_waiting_writers_store_everything_once(db_path: Path) -> None:
    results = _writers(db_path, w.handing_writer, procs=6, n=150)
    assert sum(r[1] for r in results) > 0, "no head committed another process's append"
    assert sum(r[2] for r in results) > 0, "no tenure was handed on"


def test_a_writer_killed_when_handed_the_tenure_loses_and_doubles_nothing(db_path: Path) -> None:
    procs = 5
    sessiondb.open(db_path).close()
    stop, out = SPAWN.Event(), SPAWN.Queue()
    ps = [
        SPAWN.Process(target=w.dies_when_handed, args=(str(db_path), p, stop, out))
        for p in range(procs)
    ]
    for p in ps:
        p.start()
    ps[0].join(120)
    stop.set()
    for p in ps[1:]:
        p.join(120)
        assert p.exitcode == 0
    assert ps[0].exitcode == -signal.SIGKILL, "process 0 was never handed a tenure"
    returned = [0] * procs
    while not out.empty():
        proc, done = out.get(timeout=5)
        returned[proc] = max(returned[proc], done)
    with sessiondb.open(db_path) as store:
        for p in range(procs):
            contents = [m.content for m in store.messages(f"own-{p}", limit=200_000)]
            # every append that returned is stored once; the one in flight when process 0
            # died was never taken by anyone
            assert contents == [f"{p}:{i}" for i in range(returned[p])]
        store.append("after", "user", "the lock was freed")  # within write_timeout


def test_a_hand_over_of_descriptors_not_this_store_s_is_refused(db_path: Path) -> None:
    from sessiondb.sqlite import combine_wire as wire
    from sessiondb.sqlite.combine_baton import ANCILLARY, Baton

    sessiondb.open(db_path).close()
    lock = QueuedLock(lock_path_for(db_path))
    st = os.fstat(lock.fileno())
    lock_id = (st.st_dev, st.st_ino)
    address = b"\0sessiondb-test-%d" % os.getpid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    other.bind(address + b"-other")
    read_end, write_end = os.pipe()

    def hand(fds: list[int]) -> tuple[bytes, Any]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            a.sendmsg([wire.HEAD], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array_of(fds))])
            data, ancillary, _, _ = b.recvmsg(16, ANCILLARY)
        return data, ancillary

    def received_fds(ancillary: Any) -> list[int]:
        return [fd for _, _, data in ancillary for fd in memoryview(data).cast("i")]

    try:
        for fds in ([read_end, listener.fileno()], [lock.fileno(), other.fileno()], [read_end]):
            data, ancillary = hand(fds)
            got = received_fds(ancillary)
            assert data == wire.HEAD
            assert Baton.received(ancillary, address, lock_id) is None
            for fd in got:  # every descriptor received was closed
                with pytest.raises(OSError):
                    os.fstat(fd)
        assert lock.acquire(1.0)
        data, ancillary = hand([lock.fileno(), listener.fileno()])
        baton = Baton.received(ancillary, address, lock_id)
        assert baton is not None and baton.listener.getsockname() == address
        lock.close()  # the baton's descriptor holds the lock on its own now
        probe = QueuedLock(lock_path_for(db_path))
        assert not probe.try_acquire()
        baton.release()
        assert probe.try_acquire()
        probe.release()
        probe.close()
        baton.listener.close()
    finally:
        for s in (listener, other):
            s.close()
        os.close(read_end)
        os.close(write_end)


def array_of(fds: list[int]) -> bytes:
    import array

    return array.array("i", fds).tobytes()
