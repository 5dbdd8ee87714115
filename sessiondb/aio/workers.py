"""The store's own worker threads: where its blocking calls run, off the event loop.

Each async store owns a small pool (``workers`` threads, started as calls need them) fed by one
queue; a call is handed to the pool and the awaiting task sleeps until the pool wakes its event
loop. docs/adr/0008-async-store.md says why this and not a thread per call or anyio's shared
thread pool: a fixed set of threads is a fixed set of connections (the SQLite engine keeps one
per thread, docs/design.md rule 2), and closing the store closes every one of them.

Cancellation (tests/aio/test_cancel.py): a call the pool has not started when its task is
cancelled never runs; a call already running finishes in its thread — a write either commits or
does not, whole — and the task gets its cancellation. Retrying a keyed append tells which.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import anyio
from anyio.lowlevel import EventLoopToken, current_token

from ..errors import Error

T = TypeVar("T")


class Workers:
    """A fixed pool of threads that runs one store's blocking calls for async callers."""

    def __init__(self, threads: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._pid = os.getpid()
        #: What errors name: the store's location once it is open.
        self.where = name
        self._closing = False
        self._lock = threading.Lock()

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self, fn: Callable[..., object], /, *args: Any) -> None:
        """``fn(*args)`` in a worker thread, not awaited: the group commit's ``serve``, whose
        outcome reaches the caller through its ticket (sessiondb/aio/store.py)."""
        self._check()
        with self._lock:
            if self._closing:
                raise Error(f"{self.where}: the store is closed; open it again to use it")
            self._pool.submit(fn, *args)

    def _check(self) -> None:
        if os.getpid() != self._pid:
            # A forked child has the pool's queue but none of its threads: a call would wait
            # forever. The sync store reopens its connections after fork (engine.py); an async
            # store is opened again in the child, under the child's own event loop.
            raise Error(
                f"{self.where}: this async store was opened in process {self._pid}; open it "
                "again in this process"
            )

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread; its result or exception, awaited."""
        self._check()
        token = current_token()
        done = anyio.Event()
        with self._lock:
            if self._closing:
                raise Error(f"{self.where}: the store is closed; open it again to use it")
            fut = self._pool.submit(fn, *args, **kwargs)
        fut.add_done_callback(lambda _: call_soon(token, done.set))
        try:
            await done.wait()
        except BaseException:
            # Cancelled: a call not started yet is dropped (it never runs); one already running
            # finishes in its thread, committed or not as a whole.
            fut.cancel()
            raise
        return fut.result()

    def close(self) -> None:
        """Refuse new calls, wait for every queued and running one, end the threads (blocking:
        the async store calls it from a thread of its own)."""
        with self._lock:
            self._closing = True
        self._pool.shutdown(wait=True)

    def stop_accepting(self) -> None:
        with self._lock:
            self._closing = True


class Wakeups:
    """Events of one event loop, set from other threads with one loop hop for many: a group
    commit's leader publishes dozens of outcomes at once (core/group.py), and one
    ``run_sync_soon`` per batch of them wakes every waiting task."""

    def __init__(self, token: EventLoopToken) -> None:
        self._token = token
        self._lock = threading.Lock()
        self._pending: list[anyio.Event] = []

    def set_soon(self, event: anyio.Event) -> None:
        with self._lock:
            self._pending.append(event)
            first = len(self._pending) == 1
        if first:
            call_soon(self._token, self._flush)

    def _flush(self) -> None:
        with self._lock:
            events, self._pending = self._pending, []
        for event in events:
            event.set()


def call_soon(token: EventLoopToken, fn: Callable[..., object], *args: object) -> None:
    """Schedule ``fn(*args)`` in the event loop of ``token`` from any thread, without waiting
    (a worker never blocks on the loop); nothing happens if that loop has ended."""
    with contextlib.suppress(anyio.RunFinishedError, RuntimeError):
        token.backend_class.run_sync_soon(fn, args, token.native_token)


__all__ = ["Wakeups", "Workers", "call_soon"]
