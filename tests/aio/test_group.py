"""The async store on the group commit (ADR 0011): many tasks' appends share transactions
although the store has two worker threads; a task waiting in the queue holds no thread; a
cancelled task whose append no group took never writes it. Under asyncio and trio."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

import sessiondb
import sessiondb.aio
from sessiondb import KeyConflict, Message
from sessiondb.core import writes
from tests.helpers import engine_of
from tests.sqlite.test_concurrency import assert_consistent

pytestmark = pytest.mark.anyio


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real = writes.append_group_in  # every group's transaction, whoever commits it

    def counted(tx: Any, requests: list[writes.Request]) -> Any:
        sizes.append(len(requests))
        return real(tx, requests)

    monkeypatch.setattr(writes, "append_group_in", counted)
    return sizes


async def test_64_tasks_share_transactions_through_two_workers(
    tmp_path: Path, groups: list[int]
) -> None:
    path, tasks, n = tmp_path / "s.db", 64, 10
    results: dict[int, list[Message]] = {}
    async with sessiondb.aio.open(path, workers=2) as store:
        await store.append("conflict", "user", "stored", key="k")
        groups.clear()

        async def task(t: int) -> None:
            mine = results.setdefault(t, [])
            for i in range(n):
                mine.append(await store.append(f"s{t % 8}", "user", f"{t}:{i}", key=f"{t}:{i}"))
            if t % 16 == 0:  # one task's conflict fails that task's call alone
                with pytest.raises(KeyConflict):
                    await store.append("conflict", "user", "changed", key="k")

        async with anyio.create_task_group() as tg:
            for t in range(tasks):
                tg.start_soon(task, t)
        assert len(engine_of(store.wrapped)._slots) <= 2  # the workers' connections only
        assert await store.count() == tasks * n + 1
        for s in range(8):
            got = await store.messages(f"s{s}")
            assert [m.seq for m in got] == list(range(1, len(got) + 1))
            for t in range(s, tasks, 8):
                assert [m for m in got if m.content.startswith(f"{t}:")] == results[t]
    assert sum(groups) == tasks * n + 4
    # Far fewer transactions than appends: tasks waited in the queue, not in the two threads.
    assert len(groups) <= (tasks * n) // 4, groups
    assert_consistent(path)


async def test_a_cancelled_append_no_group_took_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with sessiondb.aio.open(path, workers=2) as store:
        await store.count()
        release, held = threading.Event(), threading.Event()

        def hold() -> None:
            with engine_of(store.wrapped).write():
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        group = store.wrapped.group  # type: ignore[attr-defined]
        first: list[Message] = []
        async with anyio.create_task_group() as tg:

            async def leader() -> None:
                first.append(await store.append("s", "user", "taken", key="a"))

            tg.start_soon(leader)
            with anyio.fail_after(10):
                while not (group._leading and not group._queue):
                    await anyio.sleep(0.005)
            # The leader's group (just "a") waits for the lock; "b" waits in the queue.
            with anyio.move_on_after(0.2) as scope:
                await store.append("s", "user", "cancelled", key="b")
            assert scope.cancelled_caught
            assert not group._queue  # withdrawn
            release.set()
        holder.join(30)
        assert [m.key for m in await store.messages("s")] == ["a"]
        assert first[0].seq == 1
        retry = await store.append("s", "user", "cancelled", key="b")
        assert retry.seq == 2
