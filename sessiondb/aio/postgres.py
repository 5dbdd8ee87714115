"""PostgreSQL natively async: the backend's transactions on psycopg's ``AsyncConnection``, lent
by a psycopg_pool ``AsyncConnectionPool``, under asyncio (docs/adr/0014-native-async-postgres.md).

The PostgreSQL backend (sessiondb/postgres) and the core above it stay sync and written once: a
verb runs in a greenlet (:mod:`.green`), and the connection it is handed is a facade whose
blocking-looking calls (``execute``, ``fetchone``, ``pipeline()``…) are awaits of the async
connection's own (:func:`.green.await_`). Only where connections come from changes: the seam is
:class:`~sessiondb.postgres.connection.Connections`, which :class:`NativeConnections` extends;
the transactions (``BEGIN`` with its settings, the retry on a connection broken while idle,
rollback, commit) and every statement are the sync backend's own.

psycopg's async connections run on asyncio only (psycopg.waiting uses asyncio's loop); under trio
the async store keeps its worker threads (sessiondb/aio/__init__.py decides).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import Error, StoreBusy
from ..postgres.connection import APPLICATION_NAME, POOL_MAX_IDLE, Connections
from ..postgres.errors import translate
from .green import await_, spawn

T = TypeVar("T")

#: Connections of a native store's pool when ``pool=`` is not given: how many transactions
#: of one event loop are in flight at once (docs/adr/0014-native-async-postgres.md, measured).
DEFAULT_POOL = 4
#: A pooled connection idle longer than this is checked (a round trip) before it is lent; one
#: handed back more recently is lent as it is — a round trip less per verb, and a connection
#: that broke meanwhile fails its BEGIN, before anything was sent (docs/postgres.md, "Options").
CHECK_AFTER_IDLE = 1.0


def under_asyncio() -> bool:
    """Whether the running event loop is asyncio's (psycopg's async connections need it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Green:
    """A blocking face on an async psycopg object: each call that returns an awaitable is
    awaited through :func:`await_`, an async context manager becomes a sync one, a cursor or
    pipeline comes back wrapped. Attributes that are not calls pass through."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return _green(attr(*args, **kwargs))

        return call


class GreenCursor(_Green):
    """An ``AsyncCursor`` used as a ``Cursor``."""

    __slots__ = ()

    def fetchone(self) -> Any:
        return await_(self._target.fetchone())

    def fetchall(self) -> list[Any]:
        rows: list[Any] = await_(self._target.fetchall())
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def __enter__(self) -> GreenCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        await_(self._target.close())


class GreenConnection(_Green):
    """An ``AsyncConnection`` used as a ``Connection`` by the sync backend."""

    __slots__ = ()

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> GreenCursor:
        return GreenCursor(await_(self._target.execute(query, params, **kwargs)))

    def cursor(self, *args: Any, **kwargs: Any) -> GreenCursor:
        return GreenCursor(self._target.cursor(*args, **kwargs))

    def close(self) -> None:
        await_(self._target.close())


class _GreenContext:
    """An async context manager (``AsyncConnection.pipeline()``, ``transaction()``) as a sync
    one; what it yields comes back wrapped."""

    __slots__ = ("_cm",)

    def __init__(self, cm: Any) -> None:
        self._cm = cm

    def __enter__(self) -> Any:
        return _green(await_(self._cm.__aenter__()))

    def __exit__(self, *exc: Any) -> bool | None:
        result: bool | None = await_(self._cm.__aexit__(*exc))
        return result


def _green(value: Any) -> Any:
    if hasattr(value, "__await__"):
        value = await_(value)
    if isinstance(value, psycopg.AsyncCursor):
        return GreenCursor(value)
    if isinstance(value, psycopg.AsyncConnection):
        return GreenConnection(value)
    if hasattr(value, "__aenter__"):
        return _GreenContext(value)
    if isinstance(value, psycopg.AsyncPipeline):
        return _Green(value)
    return value


class NativeConnections(Connections):
    """Transactions on connections lent by an ``AsyncConnectionPool`` of this event loop
    (``pool`` connections at most, :data:`DEFAULT_POOL` if not given), each seen by the backend
    through :class:`GreenConnection`. Used only inside verbs run by :func:`.green.spawn`."""

    def __init__(self, conninfo: str, where: str, **options: Any) -> None:
        options["pool"] = options.get("pool") or DEFAULT_POOL
        super().__init__(conninfo, where, **options)
        self._apool: AsyncConnectionPool[Any] | None = None
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def _new_connection(self) -> psycopg.Connection[Any]:
        conn = await_(psycopg.AsyncConnection.connect(self.conninfo, **self._kwargs()))
        facade: Any = GreenConnection(conn)  # the sync backend's duck type (module doc)
        return facade  # type: ignore[no-any-return]

    def _async_pool(self) -> AsyncConnectionPool[Any]:
        if self._apool is not None:
            return self._apool
        if self._closed:
            raise Error(f"{self.where}: the store is closed")
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self._pool_size,
            max_idle=POOL_MAX_IDLE,
            kwargs=self._kwargs(),
            check=self._check,
            timeout=self.write_timeout,
            open=False,
            name=APPLICATION_NAME,
        )
        try:
            await_(pool.open(wait=True, timeout=float(self._connect_timeout)))
        except PoolTimeout:
            await_(pool.close())
            self.connect().close()  # raises what is wrong (cannot connect, refused, …)
            raise
        self._apool = pool
        return pool

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > CHECK_AFTER_IDLE:
            await AsyncConnectionPool.check_connection(conn)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise Error(f"{self.where}: the store is closed")
        pool = self._async_pool()
        try:
            conn = await_(pool.getconn())
        except PoolTimeout as e:
            raise StoreBusy(
                f"{self.where}: no pooled connection free within {self.write_timeout} s ({e})",
                path=self.where,
            ) from None
        except psycopg.Error as e:
            raise translate(e, self.where) from None
        try:
            facade: Any = GreenConnection(conn)
            yield facade
        finally:
            # The pool rolls back a connection handed back inside a transaction and drops a
            # broken one (psycopg_pool's putconn): never lent again half-done.
            self._returned[conn] = time.monotonic()
            await_(pool.putconn(conn))

    def close(self) -> None:
        self._closed = True
        if self._apool is not None:
            pool, self._apool = self._apool, None
            await_(pool.close())


class NativeCalls:
    """The async store's runner for native verbs: each one a greenlet of the calling task
    (:func:`.green.spawn`); ``close`` waits for those in flight (as the worker pool does)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._pid = os.getpid()
        self._closing = False
        self._running: set[asyncio.Task[Any]] = set()
        self._idle: Any = None  # an anyio.Event while close waits
        self._finished = False

    @property
    def closing(self) -> bool:
        return self._closing

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` as a greenlet verb in a task of its own, awaited.

        Cancellation: the awaiting task gets its cancellation at once, and the verb's task is
        cancelled once — psycopg then asks the server to cancel the statement in flight and
        the transaction rolls back (a COMMIT already sent may still land: a keyed retry tells).
        One cancellation, not the caller's: anyio delivers a scope's cancellation again at
        every await, which would cut psycopg's own cancel-and-wait short and leave the server
        running the statement on a closed connection (tests/aio/test_pg_native.py). The verb
        unwinds on its own; ``finish`` waits for it."""
        if os.getpid() != self._pid:
            raise Error(
                f"{self.where}: this async store was opened in process {self._pid}; open it "
                "again in this process"
            )
        if self._closing:
            raise Error(f"{self.where}: the store is closed; open it again to use it")
        task = asyncio.get_running_loop().create_task(spawn(fn, *args, **kwargs))
        self._running.add(task)
        task.add_done_callback(self._ended)
        try:
            return await asyncio.shield(task)
        except BaseException:
            task.cancel()  # a no-op if it has ended
            raise

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller has it, or left (asyncio would warn)
        if not self._running and self._idle is not None:
            self._idle.set()

    def stop_accepting(self) -> None:
        self._closing = True

    async def finish(self, close: Callable[[], None]) -> None:
        """Refuse new verbs, wait for those running, then run ``close`` (closing the pool) as
        a verb, once however often called."""
        import anyio

        self._closing = True
        while self._running:
            self._idle = anyio.Event()
            await self._idle.wait()
        self._idle = None
        if not self._finished:
            self._finished = True
            await spawn(close)


__all__ = [
    "DEFAULT_POOL",
    "GreenConnection",
    "GreenCursor",
    "NativeCalls",
    "NativeConnections",
    "under_asyncio",
]
