"""Worker functions for the wait_for_messages tests (importable by spawned children)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

import sessiondb
from sessiondb.core.append import items_of
from sessiondb.errors import KeyConflict

#: A wait's timeout in these tests: a wake-up must come long before it.
LONG = 120.0


class _Announcing:
    """A backend's ``Changes`` that says when the waiter first goes to sleep: from then on it is
    blocked, and only a wake-up (or its re-check interval) returns it before its timeout."""

    def __init__(self, inner: Any, asleep: Any) -> None:
        self._inner, self._asleep = inner, asleep

    def arm(self) -> object:
        return self._inner.arm()

    def sleep(self, token: object, seconds: float, stop: Any) -> None:
        self._asleep.set()
        self._inner.sleep(token, seconds, stop)

    def done(self) -> None:
        self._inner.done()


def listener(
    location: str,
    session_id: str | None,
    after: int,
    timeout: float,
    asleep: Any,
    results: Any,
    recheck: float | None = None,
    listen_url: str | None = None,
) -> None:
    """Block in ``wait_for_messages`` and report (result, seconds waited, count seen after).
    ``recheck``: the PostgreSQL waiter's re-check interval (notify.RECHECK) — set high, only a
    NOTIFY can wake it in time. ``listen_url``: the PostgreSQL store's option."""
    if recheck is not None:
        from sessiondb.postgres import notify

        notify.RECHECK = recheck
    store = sessiondb.open(location, **({} if listen_url is None else {"listen_url": listen_url}))
    backend: Any = store.backend  # type: ignore[attr-defined]
    changes = backend.changes
    backend.changes = lambda sid: _Announcing(changes(sid), asleep)
    started = time.monotonic()
    got = store.wait_for_messages(session_id, after=after, timeout=timeout)
    waited = time.monotonic() - started
    seen = store.count(session_id)
    store.close()
    results.put((got, waited, seen))


def writer(location: str, session_id: str, content: str) -> None:
    with sessiondb.open(location) as store:
        store.append(session_id, "user", content)


def failed_writes_then_one(location: str, failing: str, good: str) -> list[str]:
    """Writes that roll back (a KeyConflict; an exception inside a write transaction), then one
    append that commits. Returns what failed, by name."""
    failed = []
    with sessiondb.open(location) as store:
        try:
            store.append(failing, "user", "other content", key="k1")
        except KeyConflict:
            failed.append("KeyConflict")
        backend: Any = store.backend  # type: ignore[attr-defined]
        try:
            with backend.write() as tx:
                ref = tx.session_ref(failing)
                items = items_of([{"role": "user", "content": "never"}])
                tx.insert_messages(ref, failing, items, time.time())
                raise RuntimeError("rolled back")
        except RuntimeError:
            failed.append("exception")
        store.append(good, "user", "committed")
    return failed


def writer_without_notify(location: str, session_id: str, content: str) -> None:
    """An append whose NOTIFY is lost (as through a proxy that drops it): nothing is queued
    behind the commit."""
    from sessiondb.postgres import notify

    notify.queue = lambda *args, **kwargs: None
    writer(location, session_id, content)


def waited_until_woken(
    location: str,
    session_id: str | None,
    write: Callable[[str, str, str], None] = writer,
    write_location: str | None = None,
    recheck: float | None = None,
    listen_url: str | None = None,
) -> float:
    """A spawned :func:`listener` waits on ``location`` after one message; once it is asleep a
    spawned ``write`` appends a second to session "s" (through ``write_location``, default the
    same). Checks the wait returned True with both messages seen; returns the seconds it
    waited."""
    with sessiondb.open(location) as s:
        s.append("s", "user", "one")
    ctx = multiprocessing.get_context("spawn")
    asleep, results = ctx.Event(), ctx.Queue()
    args = (location, session_id, 1, LONG, asleep, results, recheck, listen_url)
    waiting = ctx.Process(target=listener, args=args)
    waiting.start()
    try:
        assert asleep.wait(60), "the listener never went to sleep"
        other = ctx.Process(target=write, args=(write_location or location, "s", "two"))
        other.start()
        other.join(60)
        assert other.exitcode == 0
        got, waited, seen = results.get(timeout=LONG + 30)
    finally:
        waiting.join(30)
        if waiting.is_alive():
            waiting.kill()
    assert (got, seen) == (True, 2)
    return float(waited)
