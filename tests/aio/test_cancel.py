"""Cancellation: a cancelled append either committed or did not, whole, and a retry with its key
tells which (sessiondb/aio/workers.py). Under asyncio and trio, on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import random
from collections import Counter
from pathlib import Path

import anyio
import pytest

import sessiondb
from sessiondb import Message

from .helpers import gated_store

pytestmark = pytest.mark.anyio


async def test_an_append_cancelled_while_running_commits_and_the_task_returns_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store, gated = gated_store(path)
    scope = anyio.CancelScope()
    outcome: list[str] = []

    async def call() -> None:
        with scope:
            await store.append("s", "user", "hello", key="k1")
            outcome.append("returned")
        if scope.cancelled_caught:
            outcome.append("cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await gated.running()
        scope.cancel()
    # The task has its cancellation while the append is still held in the worker: the loop and
    # the task never wait for the database.
    assert outcome == ["cancelled"] and not gated.gate.is_set()
    gated.gate.set()
    await store.close()  # waits for the running append, which commits
    async with sessiondb.aio.open(path) as again:
        retry = await again.append("s", "user", "hello", key="k1")
        assert (retry.seq, await again.count("s")) == (1, 1)  # stored once: the retry wrote nothing


async def test_an_append_cancelled_before_it_ran_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store, gated = gated_store(path, workers=1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(store.append, "s", "user", "first", key="k1"))
        await gated.running()  # the one worker is busy: the next append waits in the queue
        with anyio.move_on_after(0):
            await store.append("s", "user", "second", key="k2")
        gated.gate.set()
    await store.close()
    async with sessiondb.aio.open(path) as again:
        assert [m.key for m in await again.messages("s")] == ["k1"]
        retry = await again.append("s", "user", "second", key="k2")
        assert retry.seq == 2 and await again.count("s") == 2


def _location(backend: str, tmp_path: Path) -> str | Path:
    if backend == "postgresql":
        from tests import pg

        return pg.new_url()
    return tmp_path / "s.db"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_appends_cancelled_at_random_moments_then_retried_are_stored_once(
    tmp_path: Path, seed: int, backend: str
) -> None:
    """Many tasks append with keys, each cancelled at a random moment (or at once, or never);
    then every key is appended again: each key is stored exactly once, seqs gapless, and every
    append that returned kept its seq."""
    rng = random.Random(seed)
    sessions, per_task = 6, 300
    keys = [f"k{i}" for i in range(per_task)]
    deadlines = {k: rng.choice([0.0, None, rng.uniform(0, 0.03)]) for k in keys}
    returned: dict[str, Message] = {}
    cancelled: list[str] = []

    def session_of(key: str) -> str:
        return f"s{int(key[1:]) % sessions}"

    async def one(store: sessiondb.aio.AsyncSessionStore, key: str) -> None:
        deadline = deadlines[key]
        with anyio.move_on_after(float("inf") if deadline is None else deadline) as scope:
            returned[key] = await store.append(session_of(key), "user", f"text {key}", key=key)
        if scope.cancelled_caught:
            cancelled.append(key)

    async with sessiondb.aio.open(_location(backend, tmp_path)) as store:
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(one, store, key)
        assert len(returned) + len(cancelled) == len(keys)
        assert returned and cancelled  # both outcomes happened
        stored_before_retry = await store.count()
        assert len(returned) <= stored_before_retry <= len(keys)
        for key in keys:
            again = await store.append(session_of(key), "user", f"text {key}", key=key)
            if key in returned:
                assert again == returned[key]
        assert await store.count() == len(keys)
        for s in range(sessions):
            msgs = await store.messages(f"s{s}")
            assert [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
            assert set(Counter(m.key for m in msgs).values()) == {1}
            assert {m.key for m in msgs} == {k for k in keys if session_of(k) == f"s{s}"}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_lease_taken_for_a_cancelled_task_is_given_back(
    tmp_path: Path, backend: str
) -> None:
    ran = False
    async with sessiondb.aio.open(_location(backend, tmp_path)) as store:
        with anyio.move_on_after(0) as scope:
            async with store.lease("job", "w1"):
                ran = True
        assert scope.cancelled_caught and not ran
        assert await store.leases() == []
        async with store.lease("job", "w2") as lease:  # free for the next one
            assert await lease.held()
            holder = await lease.holder()
            assert holder is not None and holder.session_id == "w2"
        assert await store.leases() == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_lease_held_elsewhere_names_its_holder(tmp_path: Path, backend: str) -> None:
    async with sessiondb.aio.open(_location(backend, tmp_path)) as store:
        first = store.lease("job", "w1", ttl=60)
        assert await first.acquire()
        with pytest.raises(sessiondb.LeaseHeld, match="w1") as info:
            async with store.lease("job", "w2"):
                pass
        assert info.value.holder is not None and info.value.holder.session_id == "w1"
        assert await first.refresh() and await first.release()
