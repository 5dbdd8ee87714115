"""sessiondb for async code, under asyncio or trio (through anyio)::

    async with sessiondb.aio.open("state.db") as store:
        await store.append("chat-42", "user", "hi", key="turn-1")

Every verb of ``sessiondb.Store`` is here with the same arguments, results and errors, awaited
(the contract: :class:`~sessiondb.core.async_contract.AsyncStore`). The blocking store runs in
a few worker threads of the store's own, never in the event loop (docs/adr/0008-async-store.md).
Loaded only when used: ``import sessiondb`` does not import anyio.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..core.async_contract import AsyncLease, AsyncStore
from ..core.contract import Store
from ..errors import InvalidInput
from .lease import AsyncStoreLease
from .store import AsyncSessionStore
from .workers import Workers

#: Worker threads per store (each opens at most one connection). docs/adr/0008-async-store.md:
#: appends gain nothing from more (the database serializes writes) and each more thread makes
#: the event loop wait longer for the GIL; two let a search or a long import run beside the
#: appends instead of in front of them.
DEFAULT_WORKERS = 2


def open(
    location: str | os.PathLike[str] | None = None,
    *,
    readonly: bool = False,
    workers: int = DEFAULT_WORKERS,
    **options: Any,
) -> Opening:
    """Open the store at ``location`` for async code: ``async with sessiondb.aio.open(...) as
    store``, or ``store = await sessiondb.aio.open(...)`` and later ``await store.close()``.

    ``location``, ``readonly`` and ``options`` mean what they mean to :func:`sessiondb.open`;
    ``workers`` is the most threads (and so connections) the store uses at once.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInput(f"workers must be a positive number of threads, not {workers!r}")
    return Opening(location, readonly, workers, options)


def wrap(store: Store, *, workers: int = DEFAULT_WORKERS) -> AsyncSessionStore:
    """The async form of a store already open (no await needed: for a framework's sync
    constructor, e.g. the adapters in ``sessiondb.integrations``). Closing it closes ``store``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInput(f"workers must be a positive number of threads, not {workers!r}")
    pool = Workers(workers, name="sessiondb-aio")
    pool.where = store.location
    return AsyncSessionStore(store, pool)


class Opening:
    """What :func:`open` returns: awaitable (the store) and an async context manager (the
    store, closed on exit)."""

    def __init__(
        self,
        location: str | os.PathLike[str] | None,
        readonly: bool,
        workers: int,
        options: dict[str, Any],
    ) -> None:
        self._args = (location, readonly, workers, options)
        self._store: AsyncSessionStore | None = None

    def __await__(self) -> Generator[Any, None, AsyncSessionStore]:
        return _open(*self._args).__await__()

    async def __aenter__(self) -> AsyncSessionStore:
        self._store = await _open(*self._args)
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._store is not None:
            await self._store.close()


async def _open(
    location: str | os.PathLike[str] | None,
    readonly: bool,
    workers: int,
    options: dict[str, Any],
) -> AsyncSessionStore:
    from .. import open as open_sync

    pool = Workers(workers, name="sessiondb-aio")
    # Opening (perhaps creating and migrating the file) runs in a worker and is shielded: a
    # store opened for a task that was cancelled meanwhile is closed again, never leaked.
    try:
        with anyio.CancelScope(shield=True):
            store = await pool.run(open_sync, location, readonly=readonly, **options)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(pool.close)
        raise
    pool.where = store.location
    opened = AsyncSessionStore(store, pool)
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        await opened.close()
        raise
    return opened


def _keeps_the_contract(store: AsyncSessionStore, lease: AsyncStoreLease) -> None:
    """Never called: mypy --strict checks here that the classes match the async protocols."""
    checked_store: AsyncStore = store
    checked_lease: AsyncLease = lease
    del checked_store, checked_lease


__all__ = [
    "DEFAULT_WORKERS",
    "AsyncLease",
    "AsyncSessionStore",
    "AsyncStore",
    "AsyncStoreLease",
    "Opening",
    "open",
    "wrap",
]
