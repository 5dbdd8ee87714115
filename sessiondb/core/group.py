"""Group commit in one process: the appends of several threads (or async tasks) that arrive
while a transaction is running share the next one (docs/adr/0011-group-commit.md).

A leader/follower combiner, backend-neutral and database-free: a caller puts its request in
the queue (a :class:`Ticket`); the first caller to find no leader becomes the leader, takes the
queue from its front (up to :data:`MAX_REQUESTS` requests and :data:`MAX_ITEMS` items, at least
one) and hands the batch to ``run`` — one write transaction, core/writes.py — which returns one
outcome per request: its result, or the exception that request alone raised. The leader
publishes every outcome, then leads the next batch — up to :data:`HANDOFF_AFTER` batches after
its own — or hands the lead to the thread waiting on the oldest queued ticket, and returns its
own outcome. So:

* **each caller returns only after the commit that holds its request** (outcomes are published
  after ``run`` returned, i.e. after COMMIT);
* **first in, first served**: batches are taken from the front, and the lead passes to the
  oldest waiter — no caller starves;
* **a failure of ``run`` itself** (the transaction could not begin, a database error, a
  rollback) is every request's outcome in that batch: nothing of the batch was written, so any
  retry is safe (keyed or not) — the outcome is never unknown inside the process;
* **bounded waits**: a request still queued after ``patience`` seconds (the backend's
  ``write_timeout``) is taken out of the queue and gets ``StoreBusy`` (nothing written); one
  taken into a batch waits for that batch, which is bounded by the leader's own
  ``write_timeout``;
* **close** refuses new requests, fails those still queued (nothing written), and waits for the
  batch in flight (:meth:`Combiner.close`);
* **fork**: a child process starts with an empty queue and no leader (the parent's threads do
  not exist there): :func:`os.register_at_fork` resets every combiner.

Async callers (sessiondb/aio) :meth:`~Combiner.enqueue` a ticket with a callback and ask a
worker thread to :meth:`~Combiner.serve` it only when no leader is running; a leader that finds
the front ticket with no waiting thread keeps leading, so async tickets never wait for a thread
that is not there.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ..errors import Error, StoreBusy

Req = TypeVar("Req")
Res = TypeVar("Res")

#: Most requests one batch takes; more wait for the next one. 64 appends (the benchmark's
#: largest load) fit one batch; a batch of 256 one-message appends holds the write lock for
#: ~30 ms with the search index written by triggers (docs/benchmarks.md, "Group commit").
MAX_REQUESTS = 256
#: Most items (messages) one batch takes, unless its first request alone has more.
MAX_ITEMS = 2048

#: Batches a leader leads after its own request is done before it hands the lead to a waiting
#: thread: waking that thread (on a loaded machine, a scheduling delay) leaves the database idle
#: between two batches, where the leader, already running, goes straight on. Its own caller
#: waits for at most this many more batches (docs/benchmarks.md, "Group commit").
HANDOFF_AFTER = 1

_QUEUED, _TAKEN, _DONE = 0, 1, 2


class _Gate:
    """What ``threading.Event`` with ``wait`` then ``clear`` does for one waiting thread, on a
    bare lock: :meth:`open` releases it, :meth:`wait` takes it back (or times out). An Event is a
    Condition, a lock and a new lock per wait, all in Python, and every append creates, waits on
    and sets one: the combiner's CPU per append 29–40 µs with Events, 22–30 with gates
    (benchmarks/group_floor.py; docs/benchmarks.md, "Group commit")."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def open(self) -> None:
        """Let the waiter through (once; opening an open gate does nothing)."""
        with contextlib.suppress(RuntimeError):  # already open
            self._lock.release()

    def wait(self, timeout: float) -> None:
        """Wait until opened, at most ``timeout`` seconds; passing closes it again."""
        self._lock.acquire(timeout=timeout)


class Ticket(Generic[Req, Res]):
    """One request's place in the queue and, once published, its outcome."""

    __slots__ = (
        "_error",
        "_gate",
        "_result",
        "_size",
        "lead",
        "notify",
        "request",
        "state",
        "waiting",
    )

    def __init__(self, request: Req, size: int, notify: Callable[[], None] | None = None) -> None:
        self.request = request
        self.notify = notify
        self.state = _QUEUED
        self.lead = False  # told to lead the next batch (handoff)
        self.waiting = False  # a thread is blocked in serve() on this ticket
        self._gate = _Gate()
        self._result: Res | None = None
        self._error: BaseException | None = None
        self._size = size

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def outcome(self) -> Res:
        """The request's result, or raise its exception (only once ``done``)."""
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def _publish(self, result: Res | None, error: BaseException | None) -> None:
        self._result, self._error = result, error
        self.state = _DONE
        self._gate.open()
        if self.notify is not None:
            self.notify()


class Combiner(Generic[Req, Res]):
    """The queue and the lead of one store's appends (module docstring)."""

    def __init__(
        self,
        run: Callable[[list[Req]], Sequence[Res | BaseException]],
        *,
        patience: float,
        where: str,
    ) -> None:
        self._run = run
        self._patience = patience
        self._where = where
        self._setup()
        _ALL.add(self)

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: deque[Ticket[Req, Res]] = deque()
        self._leading = False
        self._closed = False

    # -- callers ----------------------------------------------------------------------------------

    def call(self, request: Req, size: int = 1) -> Res:
        """Submit ``request`` (``size`` items) and return its outcome once committed."""
        ticket, _ = self.enqueue(request, size)
        self.serve(ticket)
        return ticket.outcome()

    def enqueue(
        self, request: Req, size: int = 1, notify: Callable[[], None] | None = None
    ) -> tuple[Ticket[Req, Res], bool]:
        """Queue ``request``; returns the ticket and whether a leader is running (who will take
        it: then nobody need :meth:`serve` it). ``notify`` is called (in the leader's thread)
        once its outcome is published."""
        ticket: Ticket[Req, Res] = Ticket(request, size, notify)
        with self._lock:
            if self._closed:
                raise Error(f"{self._where}: the store is closed; open it again to use it")
            self._queue.append(ticket)
            return ticket, self._leading

    def withdraw(self, ticket: Ticket[Req, Res]) -> bool:
        """Take a ticket no batch has taken yet out of the queue (a cancelled async call):
        True if it was still queued — it will never be written."""
        with self._lock:
            if ticket.state != _QUEUED or ticket.lead:
                return False
            self._queue.remove(ticket)
            ticket.state = _DONE
            return True

    def serve(self, ticket: Ticket[Req, Res]) -> None:
        """Block until ``ticket`` is done, leading batches whenever the lead is free or handed
        to this thread. Never raises for the ticket: its outcome is published in it (a ticket
        left queued past ``patience``: ``StoreBusy``)."""
        deadline = time.monotonic() + self._patience
        with self._lock:
            while True:
                if ticket.state == _DONE:
                    return
                if not self._leading or ticket.lead:
                    ticket.lead = False
                    self._leading = True
                    break
                ticket.waiting = True
                left = deadline - time.monotonic()
                if ticket.state == _QUEUED and left <= 0:
                    self._queue.remove(ticket)
                    ticket.waiting = False
                    busy = StoreBusy(
                        f"{self._where}: this append waited {self._patience:.1f} s in the queue"
                        " of this process's group commit without getting into a transaction;"
                        " nothing was written — retry, or raise write_timeout",
                        path=self._where,
                        waited=self._patience,
                    )
                    ticket._publish(None, busy)
                    return
                self._lock.release()
                try:
                    ticket._gate.wait(max(0.001, left) if ticket.state == _QUEUED else 1.0)
                finally:
                    self._lock.acquire()
        self._lead(ticket)

    # -- the leader -------------------------------------------------------------------------------

    def _take(self) -> list[Ticket[Req, Res]]:
        batch: list[Ticket[Req, Res]] = []
        items = 0
        queue = self._queue
        while queue and len(batch) < MAX_REQUESTS:
            size = queue[0]._size
            if batch and items + size > MAX_ITEMS:
                break
            ticket = queue.popleft()
            ticket.state = _TAKEN
            batch.append(ticket)
            items += size
        return batch

    def _lead(self, mine: Ticket[Req, Res]) -> None:
        """Lead batches (the lock is not held) until ``mine`` is done, then until the front
        ticket has a thread waiting on it (hand it the lead) or the queue is empty. The lead is
        handed on before the batch's outcomes are published, so that the next leader wakes
        while this one wakes the batch's callers."""
        extra, mine_done = 0, False
        while True:
            with self._lock:
                batch = self._take()
            outcomes = self._commit(batch) if batch else []
            mine_done = mine_done or any(t is mine for t in batch)
            stop = False
            with self._lock:
                if not self._queue:
                    self._leading = False
                    self._idle.notify_all()
                    stop = True
                elif mine_done:
                    front = self._queue[0]
                    if front.waiting and extra >= HANDOFF_AFTER:
                        front.lead = True
                        front._gate.open()
                        stop = True
                    extra += 1
            for t, out in zip(batch, outcomes, strict=True):
                if isinstance(out, BaseException):
                    t._publish(None, out)
                else:
                    t._publish(out, None)
            if stop:
                return

    def _commit(self, batch: list[Ticket[Req, Res]]) -> Sequence[Res | BaseException]:
        """The batch's outcomes (not yet published)."""
        try:
            return self._run([t.request for t in batch])
        except Exception as e:
            return [e] * len(batch)
        except BaseException as e:
            # KeyboardInterrupt or SystemExit in the leading thread: the transaction was rolled
            # back (engine.write) unless it had committed. The followers get an error; the
            # leader's own caller gets the interruption itself.
            lost = Error(
                f"{self._where}: the thread that was committing this append was interrupted"
                f" ({type(e).__name__}); append again with the same key to find out if it was"
                " stored"
            )
            for t in batch:
                t._publish(None, lost)
            with self._lock:
                self._leading = False
                self._idle.notify_all()
                if self._queue and self._queue[0].waiting:
                    self._queue[0].lead = True
                    self._queue[0]._gate.open()
            raise

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Refuse new requests, fail the queued ones (nothing of them was written), and wait up
        to ``timeout`` seconds for the batch in flight to be committed and published."""
        closed = Error(f"{self._where}: the store was closed before this append was written")
        with self._lock:
            self._closed = True
            while self._queue:
                self._queue.popleft()._publish(None, closed)
            end = time.monotonic() + timeout
            while self._leading and time.monotonic() < end:
                self._idle.wait(end - time.monotonic())

    def _after_fork(self) -> None:
        self._setup()


_ALL: weakref.WeakSet[Combiner[Any, Any]] = weakref.WeakSet()


def _reset_after_fork() -> None:
    # The child has one thread: no leader, no waiter of the parent's exists in it, and a lock
    # held by one of the parent's threads at fork() would stay held forever.
    for combiner in list(_ALL):
        combiner._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


__all__ = ["MAX_ITEMS", "MAX_REQUESTS", "Combiner", "Ticket"]
