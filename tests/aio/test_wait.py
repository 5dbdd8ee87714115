"""The async ``wait_for_messages``: awaited in a thread of its own (never one of the store's
workers), woken by another process's append, cancellable at once, ended by ``close``
(sessiondb/aio/store.py; docs/adr/0017-wait-for-messages.md)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

import sessiondb
from tests._workers_wait import writer
from tests.conftest import new_location

pytestmark = pytest.mark.anyio

LONG = 120.0


def _append_in_another_process(location: str) -> int | None:
    ctx = multiprocessing.get_context("spawn")
    other = ctx.Process(target=writer, args=(location, "s", "two"))
    other.start()
    other.join(60)
    return other.exitcode


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_an_awaited_wait_is_woken_by_another_process_append(
    kind: str, tmp_path: Path
) -> None:
    location = new_location(kind, tmp_path)
    async with sessiondb.aio.open(location, workers=1) as store:
        await store.append("s", "user", "one")
        outcome: list[tuple[bool, float]] = []

        async def wait() -> None:
            started = time.monotonic()
            got = await store.wait_for_messages("s", after=1, timeout=LONG)
            outcome.append((got, time.monotonic() - started))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            # The wait holds no worker: the one worker still answers meanwhile.
            assert await store.count("s") == 1
            assert await anyio.to_thread.run_sync(_append_in_another_process, location) == 0
        [(got, waited)] = outcome
        assert got is True and waited < LONG / 2
        assert await store.count("s") == 2


async def test_an_awaited_wait_sees_a_removal_through_the_revision(tmp_path: Path) -> None:
    async with sessiondb.aio.open(tmp_path / "s.db", workers=1) as store:
        await store.append("s", "user", "one")
        before = await store.get_session("s")
        assert before is not None
        await store.pop_message("s")
        await store.append("s", "user", "two")  # seq 1 again
        assert await store.wait_for_messages("s", after=1, timeout=0.2) is False
        assert await store.wait_for_messages("s", after=1, revision=before.revision, timeout=LONG)
        with pytest.raises(sessiondb.InvalidInput):
            await store.wait_for_messages(None, after=0, revision=0, timeout=0)


async def test_a_cancelled_wait_returns_at_once_and_close_does_not_wait_for_its_timeout(
    tmp_path: Path,
) -> None:
    store = await sessiondb.aio.open(tmp_path / "s.db")
    started = time.monotonic()
    with anyio.move_on_after(0.2) as scope:
        await store.wait_for_messages("s", after=0, timeout=LONG)
    assert scope.cancelled_caught
    await store.close()  # the wait's thread noticed its stop event
    assert time.monotonic() - started < LONG / 2


async def test_close_ends_a_running_wait_with_false(tmp_path: Path) -> None:
    store = await sessiondb.aio.open(tmp_path / "s.db")
    outcome: list[bool] = []
    started = time.monotonic()

    async def wait() -> None:
        outcome.append(await store.wait_for_messages(None, after=0, timeout=LONG))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        with anyio.fail_after(60):
            while not store._waits:  # the wait's thread is running
                await anyio.sleep(0.01)
        await store.close()
    assert outcome == [False]
    assert time.monotonic() - started < LONG / 2
    with pytest.raises(sessiondb.Error):
        await store.wait_for_messages(None, after=0, timeout=1)
