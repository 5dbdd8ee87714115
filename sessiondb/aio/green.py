"""The sync core run natively async: a verb runs in a greenlet, and each blocking call it makes
to the database becomes an ``await`` in the caller's task (docs/adr/0014-native-async-postgres.md).

:func:`spawn` runs ``fn`` in a child greenlet of the awaiting task. When the code underneath
calls :func:`await_` with an awaitable (psycopg's ``AsyncConnection.execute`` and the like: the
connection facade of :mod:`.postgres`), the child switches back to the task, which awaits it in
its event loop and switches the result (or exception) back in. The core (core/store.py, the
PostgreSQL backend) stays written once, sync; the loop runs other tasks while this one waits for
the server. The technique is SQLAlchemy's asyncio extension's; this is our own code.

Cancellation (tests/aio/test_pg_native.py): a cancellation is thrown into the child at its
pending ``await_``, so the sync code unwinds as from any error — the transaction rolls back. The
awaits it makes while unwinding (``ROLLBACK``, handing the connection back) are shielded and
bounded by :data:`CLEANUP_TIMEOUT`: a cancelled write is rolled back whole or was committed
whole, never left half-done on a connection lent again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import greenlet

from ..errors import Error

T = TypeVar("T")

#: Seconds the awaits of a verb unwinding from an error or a cancellation may take (a ROLLBACK,
#: a connection handed back): past it they are cancelled too and the connection is dropped.
CLEANUP_TIMEOUT = 5.0


class _Verb(greenlet.greenlet):  # type: ignore[misc]  # greenlet ships no stubs for subclasses
    """A greenlet running one verb for :func:`spawn` (what :func:`await_` checks for)."""


def in_native_call() -> bool:
    """Whether the running code is a verb started by :func:`spawn` (so may call ``await_``)."""
    return isinstance(greenlet.getcurrent(), _Verb)


def await_(awaitable: Awaitable[T]) -> T:
    """The result of ``awaitable``, awaited by the task that runs this verb (see module doc)."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Verb):
        if hasattr(awaitable, "close"):
            awaitable.close()  # a coroutine never awaited would warn
        raise Error(
            "this store's PostgreSQL connections are async: call it through sessiondb.aio"
            " (its `wrapped` store is the blocking one)"
        )
    result: T = current.parent.switch(awaitable)
    return result


async def spawn(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run in a greenlet, its ``await_`` calls awaited here."""
    child = _Verb(fn, greenlet.getcurrent())
    request = child.switch(*args, **kwargs)
    first: BaseException | None = None  # what the verb is unwinding from, once it is
    while not child.dead:
        try:
            if first is None:
                value = await request
            else:
                with anyio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
                    value = await request
                if scope.cancelled_caught:
                    raise TimeoutError(f"no answer within {CLEANUP_TIMEOUT} s while unwinding")
        except BaseException as e:
            first = e if first is None else first
            try:
                request = child.throw(e)
            except BaseException as out:
                if out is not first and _is_cancellation(first):
                    raise first from out  # the task's cancellation is what it must see
                raise
        else:
            request = child.switch(value)
    if first is not None and _is_cancellation(first):
        raise first  # a verb that swallowed its cancellation: the task still gets it
    result: T = request
    return result


def _is_cancellation(e: BaseException) -> bool:
    return isinstance(e, anyio.get_cancelled_exc_class())


__all__ = ["CLEANUP_TIMEOUT", "await_", "in_native_call", "spawn"]
