"""A blocking face on ``sessiondb.aio``: the contract suite (tests/contract/) drives the async
store end to end through it, every call a coroutine run in an event loop (asyncio or trio) on
anyio's blocking portal — so each behaviour the suite defines is checked on the async API too.

The facade is built from the ``Store`` protocol's own list of verbs: a verb added to the contract
is forwarded here at once, and fails the async runs until ``sessiondb.aio`` has it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

import sessiondb
import sessiondb.aio
from sessiondb.core.contract import Store

#: Sync names whose async form differs: context managers and the lease handle.
SPECIAL = {"__enter__", "__exit__", "close", "lease"}


def store_verbs(protocol: type) -> dict[str, Any]:
    """The public verbs and properties a store protocol declares, by name (``__enter__`` /
    ``__exit__`` and ``__aenter__`` / ``__aexit__`` included)."""
    out: dict[str, Any] = {}
    for name, value in vars(protocol).items():
        public = not name.startswith("_") or name in (
            "__enter__",
            "__exit__",
            "__aenter__",
            "__aexit__",
        )
        if public and (isinstance(value, property) or inspect.isfunction(value)):
            out[name] = value
    return out


class BlockingLease:
    """The sync ``Lease`` face of an async lease handle."""

    def __init__(self, portal: BlockingPortal, lease: sessiondb.aio.AsyncStoreLease) -> None:
        self._portal, self._lease = portal, lease

    def __getattr__(self, name: str) -> Any:  # session_id, ttl, resource, kind, message, …
        return getattr(self._lease, name)

    def acquire(self) -> bool:
        return self._portal.call(self._lease.acquire)

    def refresh(self) -> bool:
        return self._portal.call(self._lease.refresh)

    def release(self) -> bool:
        return self._portal.call(self._lease.release)

    def force_release(self) -> Any:
        return self._portal.call(self._lease.force_release)

    @property
    def holder(self) -> Any:
        return self._portal.call(self._lease.holder)

    @property
    def record(self) -> Any:
        return self._portal.call(self._lease.record)

    @property
    def held(self) -> bool:
        return self._portal.call(self._lease.held)

    def __enter__(self) -> BlockingLease:
        self._portal.call(self._lease.__aenter__)
        return self

    def __exit__(self, *exc: object) -> None:
        self._portal.call(self._lease.__aexit__, None, None, None)


class BlockingStore:
    """Every ``Store`` verb, each one awaited on the async store through the portal."""

    def __init__(self, portal: BlockingPortal, astore: sessiondb.aio.AsyncSessionStore) -> None:
        self._portal, self._astore = portal, astore

    @property
    def wrapped(self) -> Any:
        return self._astore.wrapped

    def lease(self, name: str, owner: str, ttl: float = 300.0, *, pid: int | None = None) -> Any:
        handle = self._portal.call(lambda: self._astore.lease(name, owner, ttl, pid=pid))
        return BlockingLease(self._portal, handle)

    def close(self) -> None:
        self._portal.call(self._astore.close)

    def __enter__(self) -> BlockingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<blocking face of {self._astore!r}>"


def _forward(name: str) -> Callable[..., Any]:
    def verb(self: BlockingStore, *args: Any, **kwargs: Any) -> Any:
        coro_fn = getattr(self._astore, name)
        return self._portal.call(functools.partial(coro_fn, *args, **kwargs))

    verb.__name__ = name
    return verb


def _forward_property(name: str) -> property:
    return property(lambda self: getattr(self._astore, name))


for _name, _value in store_verbs(Store).items():
    if _name in SPECIAL:
        continue
    setattr(
        BlockingStore,
        _name,
        _forward_property(_name) if isinstance(_value, property) else _forward(_name),
    )


@contextmanager
def blocking_async_store(backend: str, location: str, **options: Any) -> Iterator[BlockingStore]:
    """``sessiondb.aio.open(location)`` under ``backend`` ("asyncio" or "trio"), as a sync
    store; closed (through the async close) on exit."""
    with start_blocking_portal(backend) as portal:
        astore = portal.call(lambda: _open(location, options))
        with BlockingStore(portal, astore) as store:
            yield store


async def _open(location: str, options: dict[str, Any]) -> sessiondb.aio.AsyncSessionStore:
    return await sessiondb.aio.open(location, **options)


__all__ = ["BlockingStore", "blocking_async_store", "store_verbs"]
