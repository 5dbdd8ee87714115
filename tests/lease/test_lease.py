"""Lease semantics, defined once and run against every backend (file leases, store leases)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sessiondb
from sessiondb import LeaseHeld, lease
from sessiondb.errors import InvalidInput
from sessiondb.host import procinfo
from sessiondb.lease import Holder, Lease, LeaseWarning
from sessiondb.lease.files import FileBackend
from tests._workers_lease import hold_lease_worker
from tests.helpers import engine_of


@dataclass
class Env:
    backend: str
    make: Callable[..., Lease]
    inject: Callable[[dict[str, Any]], None]
    corrupt: Callable[[], None]
    spec: dict[str, Any]  # what a worker process needs to open the same lease


@pytest.fixture(params=["file", "store", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    if request.param == "file":
        ws = tmp_path / "ws"
        ws.mkdir()
        rt = tmp_path / "rt"

        def make_file(session_id: str, ttl: float = 300.0, pid: int | None = None) -> Lease:
            return lease.workspace(ws, session_id, ttl, pid=pid, directory=rt)

        def path() -> Path:
            backend = make_file("probe")._backend
            assert isinstance(backend, FileBackend)
            return backend.lease_path

        def inject_file(rec: dict[str, Any]) -> None:
            rt.mkdir(exist_ok=True, mode=0o700)
            path().write_text(json.dumps({"resource": str(ws), **rec}))

        def corrupt_file() -> None:
            rt.mkdir(exist_ok=True, mode=0o700)
            path().write_bytes(b'{"session_id": "X", "pid": 12')  # truncated mid-write

        spec = {"workspace": str(ws), "rt": str(rt)}
        yield Env("file", make_file, inject_file, corrupt_file, spec)
    elif request.param == "store":
        db = tmp_path / "store.db"
        store = sessiondb.open(db)

        def make_store(session_id: str, ttl: float = 300.0, pid: int | None = None) -> Lease:
            return store.lease("ws", session_id, ttl, pid=pid)

        def inject_store(rec: dict[str, Any]) -> None:
            with engine_of(store).write() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO leases VALUES ('ws', ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rec["session_id"],
                        rec["pid"],
                        rec["start_time"],
                        rec["host"],
                        rec["acquired_at"],
                        rec["refreshed_at"] + rec["ttl"],
                        rec["ttl"],
                    ),
                )

        def corrupt_store() -> None:
            with engine_of(store).write() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO leases VALUES "
                    "('ws', 'X', 'not-a-pid', NULL, 'h', 0, 0, 1)"
                )

        yield Env("store", make_store, inject_store, corrupt_store, {"db": str(db)})
        store.close()
    else:
        yield from _postgres_env()


def _postgres_env() -> Iterator[Env]:
    import psycopg

    from tests import pg

    url = pg.new_url()
    store = sessiondb.open(url)

    def make_pg(session_id: str, ttl: float = 300.0, pid: int | None = None) -> Lease:
        return store.lease("ws", session_id, ttl, pid=pid)

    def put(values: tuple[Any, ...]) -> None:
        from sessiondb.postgres.backend import split_schema

        conninfo, schema = split_schema(url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"SET search_path = {schema}")  # made and checked by tests/pg.py
            conn.execute(
                "INSERT INTO leases (name, owner, pid, start_time, host, acquired_at, expires_at,"
                " ttl) VALUES ('ws', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE"
                " SET owner = excluded.owner, pid = excluded.pid, start_time ="
                " excluded.start_time, host = excluded.host, acquired_at = excluded.acquired_at,"
                " expires_at = excluded.expires_at, ttl = excluded.ttl",
                values,
            )

    def inject_pg(rec: dict[str, Any]) -> None:
        put(
            (
                rec["session_id"],
                rec["pid"],
                rec["start_time"],
                rec["host"],
                rec["acquired_at"],
                rec["refreshed_at"] + rec["ttl"],
                rec["ttl"],
            )
        )

    def corrupt_pg() -> None:
        put(("X", 1, None, "h", 0, 0, -1))  # a ttl no lease can have

    yield Env("postgresql", make_pg, inject_pg, corrupt_pg, {"db": url})
    store.close()


def record(session_id: str = "X", **over: Any) -> dict[str, Any]:
    now = time.time()
    rec: dict[str, Any] = {
        "session_id": session_id,
        "pid": os.getpid(),
        "start_time": procinfo.process_start_time(os.getpid()),
        "host": procinfo.hostname(),
        "acquired_at": now - 10,
        "refreshed_at": now - 10,
        "ttl": 300.0,
    }
    rec.update(over)
    return rec


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_second_session_is_refused_with_the_holders_name(env: Env) -> None:
    a, b = env.make("A"), env.make("B")
    assert a.acquire() is True
    assert b.acquire() is False
    h = a.holder
    assert h is not None and h.session_id == "A" and h.pid == os.getpid()
    assert b.message is not None
    assert b.message.startswith(f"{a.kind} held by session A (pid {os.getpid()}) since ")
    assert b.message.endswith("Z — wait or close that session first")
    with pytest.raises(LeaseHeld) as exc, b:
        pytest.fail("entered a lease held by another session")
    assert exc.value.holder == h
    assert "held by session A" in str(exc.value)
    assert b.holder == h  # the refusal changed nothing


def test_with_statement_acquires_and_releases(env: Env) -> None:
    a, b = env.make("A"), env.make("B")
    with a as entered:
        assert entered is a
        assert a.held and not b.held
    assert a.holder is None and a.record is None
    assert b.acquire()


def test_same_session_reacquires_idempotently(env: Env) -> None:
    a = env.make("A")
    assert a.acquire()
    first = a.record
    time.sleep(0.01)
    assert env.make("A").acquire()  # another handle of the same session
    second = a.record
    assert first is not None and second is not None
    assert second.acquired_at == first.acquired_at  # "since" unchanged
    assert second.refreshed_at > first.refreshed_at
    assert a.last_takeover is None


def test_non_owner_refresh_and_release_do_nothing_and_say_so(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = env.make("A"), env.make("B")
    assert a.acquire()
    before = a.record
    with caplog.at_level(logging.WARNING, logger="sessiondb.lease"):
        assert b.refresh() is False
        assert b.release() is False
    assert a.record == before
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("not refreshing") and "held by session A" in m for m in msgs), msgs
    assert any(m.startswith("not releasing") and "held by session A" in m for m in msgs), msgs
    assert a.release() is True
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sessiondb.lease"):
        assert a.release() is False  # nothing left to release
    assert any("nobody holds it" in r.getMessage() for r in caplog.records)


def test_owner_refresh_extends_the_ttl(env: Env) -> None:
    a = env.make("A", ttl=50)
    assert a.acquire()
    r1 = a.record
    time.sleep(0.01)
    assert a.refresh() is True
    r2 = a.record
    assert r1 is not None and r2 is not None
    assert r2.expires_at > r1.expires_at and r2.acquired_at == r1.acquired_at


def test_expired_lease_is_taken_over_even_if_holder_lives(env: Env) -> None:
    env.inject(record("X", refreshed_at=time.time() - 400, ttl=300.0))
    b = env.make("B")
    assert b.acquire() is True
    assert b.last_takeover is not None and b.last_takeover.session_id == "X"
    assert b.holder is not None and b.holder.session_id == "B"


def test_fresh_lease_of_live_process_blocks(env: Env) -> None:
    env.inject(record("X"))
    b = env.make("B")
    assert b.acquire() is False
    assert b.message is not None and "session X" in b.message


def test_dead_pid_is_taken_over(env: Env) -> None:
    env.inject(record("X", pid=dead_pid(), start_time=None))
    b = env.make("B")
    assert b.acquire()
    assert b.last_takeover is not None and b.last_takeover.session_id == "X"


def test_reused_pid_is_stale(env: Env) -> None:
    """The pid is alive, but it is another process: its start time differs."""
    real = procinfo.process_start_time(os.getpid())
    assert real is not None
    env.inject(record("X", start_time=real + 1000))
    b = env.make("B")
    assert b.acquire() is True
    assert b.last_takeover is not None and b.last_takeover.start_time == real + 1000


def test_zombie_holder_is_dead(env: Env) -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while procinfo.process_state(p.pid) != "Z":
        assert time.monotonic() < deadline, "child never became a zombie"
        time.sleep(0.01)
    try:
        env.inject(record("X", pid=p.pid, start_time=procinfo.process_start_time(p.pid)))
        assert env.make("B").acquire() is True
    finally:
        p.wait()


def test_other_host_counts_only_its_ttl(env: Env) -> None:
    env.inject(record("X", host="elsewhere.example", pid=dead_pid()))
    b = env.make("B")
    assert b.acquire() is False  # pid means nothing on another host
    assert b.message is not None and "on elsewhere.example" in b.message
    env.inject(record("X", host="elsewhere.example", refreshed_at=time.time() - 301, ttl=300.0))
    assert b.acquire() is True


def test_corrupt_record_is_stale_with_a_warning(env: Env) -> None:
    env.corrupt()
    b = env.make("B")
    with pytest.warns(LeaseWarning, match="treating the lease as stale"):
        assert b.holder is None
    with pytest.warns(LeaseWarning):
        assert b.acquire() is True
    assert b.holder is not None and b.holder.session_id == "B"


def test_invalid_arguments(env: Env) -> None:
    for bad in ("", "x" * 257, "a\nb", "nul\0"):
        with pytest.raises(InvalidInput):
            env.make(bad)
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(InvalidInput):
            env.make("A", ttl=ttl)


def test_force_release_names_the_broken_holder(env: Env) -> None:
    a = env.make("A")
    assert a.acquire()
    broken = env.make("someone-else").force_release()
    assert isinstance(broken, Holder) and broken.session_id == "A"
    assert a.record is None
    assert env.make("B").acquire()


def test_killed_holder_is_taken_over_at_once(env: Env) -> None:
    """A holder killed with -9 is dead as soon as the kernel says so (not after its TTL, here
    300 s): the first acquire once its process is gone takes the lease over."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=hold_lease_worker, args=(env.backend, env.spec, "A", ready))
    p.start()
    try:
        assert ready.wait(60), "holder never acquired"
        b = env.make("B")
        assert b.acquire() is False
        os.kill(p.pid or 0, signal.SIGKILL)
        # No join: the victim stays a zombie until reaped, and must count as dead already.
        deadline = time.monotonic() + 60  # a bound for a hung test, far below the TTL
        while procinfo.process_state(p.pid or 0) not in ("Z", None):
            assert time.monotonic() < deadline, "the killed holder never died"
            time.sleep(0.005)
        assert b.acquire() is True
    finally:
        p.kill()
        p.join()
    assert b.last_takeover is not None and b.last_takeover.pid == p.pid


def test_fencing_tokens_increase_with_every_new_holding(env: Env) -> None:
    a, b = env.make("A"), env.make("B")
    assert a.fence is None
    assert a.acquire()
    first = a.fence
    assert first is not None and first >= 1
    assert a.record is not None and a.record.fence == first
    assert a.acquire() and a.fence == first  # re-acquire: the same holding, the same token
    assert a.refresh() and a.fence == first
    assert not b.acquire() and b.fence is None
    assert a.release()
    assert b.acquire()
    assert b.fence is not None and b.fence > first  # a release does not reset the count
    env.inject(record("C", pid=dead_pid()))  # a dead holder's record: taken over
    c = env.make("D")
    assert c.acquire() and c.last_takeover is not None
    assert c.fence is not None and c.fence > b.fence
