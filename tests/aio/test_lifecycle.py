"""Opening and closing the async store: close waits for the calls in flight, nothing leaks
(threads, connections, file descriptors), the event loop never waits for the database, and
callbacks come back to the caller's loop. Under asyncio and trio."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import anyio
import pytest

import sessiondb
from sessiondb import Message
from tests.helpers import engine_of

from .helpers import aio_threads, gated_store, open_fds, settled

pytestmark = pytest.mark.anyio


async def _until(condition: object) -> None:
    with anyio.fail_after(60):
        while not condition():  # type: ignore[operator]
            await anyio.sleep(0.001)


async def test_close_waits_for_the_calls_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store, gated = gated_store(path, workers=2)
    results: list[Message] = []
    closed = anyio.Event()

    async def append(n: int) -> None:
        results.append(await store.append("s", "user", f"m{n}", key=f"k{n}"))

    async def close() -> None:
        await store.close()
        closed.set()

    async with anyio.create_task_group() as tg:
        for n in range(3):  # two run (held at the gate), the third waits in the queue
            tg.start_soon(append, n)
        await gated.running()
        await gated.running()
        tg.start_soon(close)
        await _until(lambda: store._workers.closing)
        with pytest.raises(sessiondb.Error, match="closed"):
            await store.count()
        assert not closed.is_set() and results == []
        gated.gate.set()
    assert closed.is_set()
    assert sorted(m.key or "" for m in results) == ["k0", "k1", "k2"]
    await store.close()  # a second close finds it closed
    with sessiondb.open(path) as s:
        assert [m.seq for m in s.messages("s")] == [1, 2, 3]


async def _mixed_calls(store: sessiondb.aio.AsyncSessionStore, sid: str, text: str) -> None:
    for i in range(5):
        await store.append(sid, "user", f"{text} item {i}")
        await store.messages(sid, last=3)
        await store.search(f"item {i}", session_id=sid, limit=3)


async def test_many_calls_leak_no_thread_connection_or_descriptor(tmp_path: Path) -> None:
    fds = open_fds()
    for round_ in range(2):
        async with sessiondb.aio.open(tmp_path / "s.db", workers=4) as store:
            async with anyio.create_task_group() as tg:
                for t in range(64):
                    tg.start_soon(_mixed_calls, store, f"s{t % 8}", f"round {round_} task {t}")
            assert len(aio_threads()) <= 4
            assert len(engine_of(store.wrapped)._slots) <= 4  # one connection per worker at most
            assert await store.count() == 320 * (round_ + 1)
        assert aio_threads() == []  # the workers are joined by close itself
        # Nothing else of sessiondb's is left either: no descriptor, no thread (the event loop's
        # own thread cache may keep idle threads; they hold nothing of the store's).
        assert await settled(fds) == (fds, [])


async def test_an_open_cancelled_midway_leaves_nothing_open(tmp_path: Path) -> None:
    fds = open_fds()
    with anyio.move_on_after(0) as scope:
        await sessiondb.aio.open(tmp_path / "s.db")
    assert scope.cancelled_caught
    assert aio_threads() == [] and await settled(fds) == (fds, [])


async def test_a_failed_open_raises_the_sync_error_and_leaves_nothing(tmp_path: Path) -> None:
    fds = open_fds()
    with pytest.raises(sessiondb.StoreNotFound):
        await sessiondb.aio.open(tmp_path / "missing.db", readonly=True)
    with pytest.raises(sessiondb.InvalidInput, match="durability"):
        async with sessiondb.aio.open(tmp_path / "s.db", durability="sometimes"):
            pass
    with pytest.raises(sessiondb.InvalidInput, match="workers"):
        sessiondb.aio.open(tmp_path / "s.db", workers=0)
    assert aio_threads() == [] and await settled(fds) == (fds, [])


async def test_the_loop_runs_on_while_a_call_is_held_in_a_worker(tmp_path: Path) -> None:
    store, gated = gated_store(tmp_path / "s.db")
    ticks = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(store.append, "s", "user", "slow"))
        await gated.running()
        for _ in range(100):  # the loop is free: other tasks run while the append waits
            await anyio.sleep(0)
            ticks += 1
        gated.gate.set()  # only the loop can let the append finish: a blocked loop would hang
    assert ticks == 100
    await store.close()


async def test_import_progress_is_reported_in_the_callers_loop(tmp_path: Path) -> None:
    source = tmp_path / "src.jsonl"
    with sessiondb.open(tmp_path / "a.db") as s:
        s.append_many("t", [{"role": "user", "content": f"line {i}"} for i in range(50)])
        s.export_jsonl("t", source)
    loop_thread = threading.get_ident()
    calls: list[tuple[int, int, int]] = []
    async with sessiondb.aio.open(tmp_path / "b.db") as store:
        report = await store.import_jsonl(
            source, progress=lambda done, total: calls.append((threading.get_ident(), done, total))
        )
        assert report.imported == 50 and await store.count("t") == 50
        assert calls, "no progress reported"
        assert {ident for ident, _, _ in calls} == {loop_thread}
        assert calls[-1][1] == calls[-1][2] == source.stat().st_size  # all of it, before return


async def test_open_is_awaitable_and_close_idempotent(tmp_path: Path) -> None:
    store = await sessiondb.aio.open(tmp_path / "s.db")
    assert repr(store).startswith("<sessiondb async store") and not store.readonly
    await store.append("s", "user", "x")
    await store.aclose()
    await store.close()
    with pytest.raises(sessiondb.Error, match="the store is closed; open it again") as info:
        await store.append("s", "user", "y")
    assert str(tmp_path / "s.db") in str(info.value)  # names the store
    async with sessiondb.aio.open(tmp_path / "s.db", readonly=True) as ro:
        assert ro.readonly and await ro.count() == 1
        with pytest.raises(sessiondb.ReadOnlyStore):
            await ro.append("s", "user", "z")


async def test_a_forked_child_is_told_to_open_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After fork the pool's threads are gone: a call would wait forever, so it is refused."""
    import os

    from sessiondb.aio import workers

    async with sessiondb.aio.open(tmp_path / "s.db") as store:
        parent = os.getpid()
        monkeypatch.setattr(workers.os, "getpid", lambda: parent + 1)
        with pytest.raises(sessiondb.Error, match=f"opened in process {parent}; open it again"):
            await store.count()
        monkeypatch.undo()
        assert await store.count() == 0
