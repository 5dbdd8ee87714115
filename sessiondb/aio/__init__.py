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
from .store import AsyncSessionStore, Native
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
    native: bool | None = None,
    **options: Any,
) -> Opening:
    """Open the store at ``location`` for async code: ``async with sessiondb.aio.open(...) as
    store``, or ``store = await sessiondb.aio.open(...)`` and later ``await store.close()``.

    ``location``, ``readonly`` and ``options`` mean what they mean to :func:`sessiondb.open`;
    ``workers`` is the most threads (and so connections) the store uses at once.

    ``native``: a ``postgresql://`` store under asyncio runs its verbs natively async, on a
    pool of ``pool=`` async connections (``DEFAULT_POOL`` if not given), unless ``native=False``
    (docs/adr/0014-native-async-postgres.md); ``native=True`` insists (an error where it cannot:
    SQLite, trio, greenlet or psycopg_pool missing).
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidInput(f"workers must be a positive number of threads, not {workers!r}")
    if native not in (None, True, False):
        raise InvalidInput(f"native must be True, False or None, not {native!r}")
    return Opening(location, readonly, workers, {**options, "native": native})


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

    options = dict(options)
    if _goes_native(location, options.pop("native")):
        return await _open_native(str(location), readonly, workers, options)
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


def _goes_native(location: str | os.PathLike[str] | None, native: bool | None) -> bool:
    """Whether this store runs natively async (see :func:`open`); ``native=True`` where it
    cannot is an error saying why."""
    if native is False:
        return False
    why = ""
    if not (isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))):
        why = "only a postgresql:// store runs natively async"
    else:
        try:
            import greenlet  # noqa: F401
            import psycopg_pool  # noqa: F401
        except ImportError as e:
            why = f"the native path needs greenlet and psycopg_pool ({e})"
        else:
            from .postgres import under_asyncio

            if not under_asyncio():
                why = "psycopg's async connections run on asyncio only (not trio)"
    if why and native:
        raise InvalidInput(f"native=True: {why}")
    return not why


async def _open_native(
    url: str, readonly: bool, workers: int, options: dict[str, Any]
) -> AsyncSessionStore:
    from .. import open as open_sync
    from ..core.store import SessionStore
    from ..postgres.backend import PostgresBackend, safe_location
    from .green import spawn
    from .postgres import NativeCalls, NativeConnections

    calls = NativeCalls(safe_location(url))
    native_store: list[SessionStore] = []

    def open_native() -> None:
        backend = PostgresBackend.open(
            url, readonly=readonly, connections=NativeConnections, **options
        )
        native_store.append(SessionStore(backend))

    # Opening (perhaps creating and migrating the schema) is shielded like the worker path's:
    # a store opened for a task cancelled meanwhile is closed again, never leaked.
    with anyio.CancelScope(shield=True):
        await spawn(open_native)
    store = native_store[0]
    calls.where = store.location
    pool = Workers(workers, name="sessiondb-aio")
    pool.where = store.location

    def open_blocking() -> Store:
        return open_sync(url, readonly=readonly, **options)

    opened = AsyncSessionStore(store, pool, Native(calls, open_blocking))
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
