"""``sessiondb.aio.wrap`` (an async store over a store already open, for the sync constructors
of framework adapters) and the adapters' one rule for what a user may pass as a store."""

from __future__ import annotations

from pathlib import Path

import pytest

import sessiondb
import sessiondb.aio
from sessiondb import InvalidInput
from sessiondb.integrations._common import async_store

pytestmark = pytest.mark.anyio


async def test_wrap_serves_the_open_store_and_closes_it(tmp_path: Path) -> None:
    sync = sessiondb.open(tmp_path / "s.db")
    store = sessiondb.aio.wrap(sync)
    assert (await store.append("s", "user", "hi")).seq == 1
    assert [m.content for m in sync.messages("s")] == ["hi"]
    await store.close()
    with pytest.raises(sessiondb.Error):
        await store.count("s")


def test_wrap_refuses_a_bad_worker_count(tmp_path: Path) -> None:
    with sessiondb.open(tmp_path / "s.db") as sync, pytest.raises(InvalidInput):
        sessiondb.aio.wrap(sync, workers=0)


async def test_adapters_take_a_path_a_store_or_an_async_store(tmp_path: Path) -> None:
    opened = async_store(tmp_path / "a.db")
    await opened.append("s", "user", "from a path")
    with sessiondb.open(tmp_path / "a.db") as sync:
        wrapped = async_store(sync)
        assert [m.content for m in await wrapped.messages("s")] == ["from a path"]
        async with sessiondb.aio.open(tmp_path / "a.db") as native:
            assert async_store(native) is native
        await wrapped.close()  # closes the sync store too; its own close then does nothing
    await opened.close()
