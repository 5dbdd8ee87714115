"""PostgreSQL natively async (sessiondb/aio/postgres.py, docs/adr/0014-native-async-postgres.md):
under asyncio the verbs run in the caller's task on async connections of one pool, never in a
thread; a verb waiting for the server leaves the loop free; a cancelled write is rolled back
whole (a keyed retry tells), and the connection goes back to the pool clean. Under trio the store
keeps its worker threads (psycopg's async connections need asyncio)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import psycopg
import pytest

import sessiondb
import sessiondb.aio
from sessiondb.aio.green import await_
from tests import pg

pytestmark = pytest.mark.anyio
APP = "sdb-native-test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the native path; trio's is tested below with anyio.run


@pytest.fixture
def url() -> str:
    return pg.new_url() + "&application_name=" + APP


def _ours(state: str | None = None) -> int:
    """Server connections of this test's stores (by application_name), in ``state`` if given."""
    with psycopg.connect(pg.BASE_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND (%s::text IS NULL OR state = %s)",
            (APP, state, state),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def ours(state: str | None = None) -> int:
    return await anyio.to_thread.run_sync(_ours, state)


def aio_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("sessiondb-aio")]


@pytest.fixture
def row_lock(url: str) -> Iterator[threading.Event]:
    """Session "s" exists and another connection holds its row locked until the test sets the
    returned event (a writer of "s" waits on the lock meanwhile)."""
    with sessiondb.open(url) as s:
        s.ensure_session("s")
    locked, release = threading.Event(), threading.Event()
    schema = url.split("schema=")[1].split("&")[0]

    def hold() -> None:
        with psycopg.connect(pg.BASE_URL) as conn:
            conn.execute(f"SELECT 1 FROM {schema}.sessions WHERE session_id = 's' FOR UPDATE")
            locked.set()
            release.wait(60)
            conn.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(30)
    yield release
    release.set()
    holder.join(30)


async def test_many_tasks_share_the_pool_in_the_loop_thread_without_a_worker(url: str) -> None:
    async with sessiondb.aio.open(url, pool=3) as store:
        assert store.native

        async def task(t: int) -> None:
            for i in range(5):
                await store.append(f"s{t % 4}", "user", f"{t}:{i}", key=f"{t}:{i}")

        async with anyio.create_task_group() as tg:
            for t in range(64):
                tg.start_soon(task, t)
        assert await store.count() == 320
        assert aio_threads() == []  # no worker thread was started
        assert 1 <= await ours() <= 3  # the pool's connections, no more
        for s in range(4):
            assert [m.seq for m in await store.messages(f"s{s}")] == list(range(1, 81))
    assert await ours() == 0  # close closed them all


async def test_the_loop_runs_while_a_verb_waits_for_the_server(
    url: str, row_lock: threading.Event
) -> None:
    async with sessiondb.aio.open(url, write_timeout=30) as store:
        done = anyio.Event()
        ticks = 0

        async def append() -> None:
            await store.append("s", "user", "waits for the row lock")
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(append)
            # The append is blocked in the server; a blocked loop would never tick, and the
            # append could not finish before the lock goes (the holder waits for this test).
            while ticks < 20:
                await anyio.sleep(0.005)
                ticks += 1
            assert not done.is_set()
            row_lock.set()
        assert done.is_set() and await store.count("s") == 1


async def test_a_cancelled_write_is_rolled_back_and_its_connection_comes_back_clean(
    url: str, row_lock: threading.Event
) -> None:
    async with sessiondb.aio.open(url, pool=1, write_timeout=30) as store:
        started = anyio.Event()
        with anyio.CancelScope() as scope:

            async def cancel_soon() -> None:
                await anyio.sleep(0.2)  # the append is waiting on the lock by then
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_soon)
                started.set()
                await store.append("s", "user", "cancelled", key="k1")
        assert scope.cancelled_caught and started.is_set()
        # Rolled back, the lock still held: the one pooled connection is back and serves the
        # next call, and nothing of ours holds a transaction open or waits on the lock.
        assert await store.count("s") == 0
        assert await ours("idle in transaction") == 0 and await ours("active") == 0
        row_lock.set()
        retry = await store.append("s", "user", "cancelled", key="k1")
        assert retry.seq == 1 and await store.count("s") == 1
        assert await ours() == 1


async def test_close_waits_for_the_verbs_in_flight_and_refuses_new_ones(
    url: str, row_lock: threading.Event
) -> None:
    store = await sessiondb.aio.open(url, write_timeout=30)
    closed = anyio.Event()
    results: list[int] = []

    async def append() -> None:
        results.append((await store.append("s", "user", "in flight")).seq)

    async def close() -> None:
        await store.close()
        closed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(append)
        await anyio.sleep(0.2)
        tg.start_soon(close)
        await anyio.sleep(0.2)
        assert not closed.is_set()  # waiting for the append, held by the lock
        with pytest.raises(sessiondb.Error, match="the store is closed; open it again"):
            await store.count()
        row_lock.set()
    assert results == [1] and closed.is_set()
    assert await ours() == 0
    await store.close()  # idempotent


async def test_a_failed_open_raises_the_sync_error_and_leaves_nothing(url: str) -> None:
    before = set(asyncio.all_tasks())
    with pytest.raises(sessiondb.Error, match="cannot connect to PostgreSQL"):
        await sessiondb.aio.open("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
    with pytest.raises(sessiondb.StoreNotFound):
        await sessiondb.aio.open(url, readonly=True)  # an empty schema: no store there
    with anyio.move_on_after(0) as scope:
        await sessiondb.aio.open(url)
    assert scope.cancelled_caught
    await anyio.sleep(0.1)
    assert set(asyncio.all_tasks()) == before  # no pool task left running
    assert await ours() == 0 and aio_threads() == []


async def test_file_verbs_and_wrapped_use_the_blocking_twin(url: str, tmp_path: Path) -> None:
    source = tmp_path / "t.jsonl"
    with sessiondb.open(tmp_path / "a.db") as s:
        s.append_many("t", [{"role": "user", "content": f"line {i}"} for i in range(30)])
        s.export_jsonl("t", source)
    calls: list[int] = []
    async with sessiondb.aio.open(url) as store:
        report = await store.import_jsonl(source, progress=lambda d, t: calls.append(d))
        assert report.imported == 30 and await store.count("t") == 30 and calls
        assert await anyio.to_thread.run_sync(store.wrapped.count, "t") == 30
        assert await store.export_jsonl("t", tmp_path / "out.jsonl") == 30
    assert aio_threads() == [] and await ours() == 0


async def test_prune_progress_runs_in_the_callers_task(url: str) -> None:
    from datetime import timedelta

    async with sessiondb.aio.open(url) as store:
        await store.append("old", "user", "x", created_at=1_000_000.0)
        await store.update_session("old", updated_at=1_000_000.0)
        loop_thread = threading.get_ident()
        seen: list[int] = []
        report = await store.prune(
            older_than=timedelta(days=1), progress=lambda *a: seen.append(threading.get_ident())
        )
        assert [s.session_id for s in report.sessions] == ["old"]
        assert seen and set(seen) == {loop_thread}


def test_trio_keeps_the_worker_threads(url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with sessiondb.aio.open(url) as store:
            assert not store.native
            await store.append("s", "user", "through a worker")
            assert await store.count("s") == 1
        with pytest.raises(sessiondb.InvalidInput, match="asyncio only"):
            await sessiondb.aio.open(url, native=True)

    anyio.run(main, backend="trio")


async def test_native_is_refused_where_it_cannot_run_and_can_be_declined(
    url: str, tmp_path: Path
) -> None:
    with pytest.raises(sessiondb.InvalidInput, match="only a postgresql:// store"):
        await sessiondb.aio.open(tmp_path / "s.db", native=True)
    with pytest.raises(sessiondb.InvalidInput, match="native must be"):
        sessiondb.aio.open(url, native="yes")  # type: ignore[arg-type]
    async with sessiondb.aio.open(url, native=False) as store:
        assert not store.native and await store.count() == 0


def test_the_native_connections_refuse_a_call_outside_the_async_store() -> None:
    async def nothing() -> None:
        pass

    coro = nothing()
    with pytest.raises(sessiondb.Error, match=r"call it through sessiondb\.aio"):
        await_(coro)
