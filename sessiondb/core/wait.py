"""``wait_for_messages``: block, for a bounded time, until a session (or the store) has changed
its count of messages — written once over every backend (docs/adr/0017-wait-for-messages.md).

The position is a number the caller read *before* it read the messages it has: a session's last
seq (seqs are gapless and given in commit order per session: core/contract.py), or for the whole
store ``store.count()``. The wait returns True as soon as that number is no longer the caller's:
messages were appended (or removed). No position is kept between calls, so nothing is lost
between one wait and the next.

No lost wake-up: each round first *arms* the backend's wake-up (:class:`~.contract.Changes`:
SQLite's ``data_version`` read, PostgreSQL's ``LISTEN`` connection drained), then checks the
condition in a short read of its own, then sleeps until the backend says something may have
committed since it was armed, or a bounded interval passes. A commit that lands between the
check and the sleep changes what was armed, so the sleep returns at once.

Every wait is bounded: ``timeout`` is mandatory and at most :data:`MAX_TIMEOUT` seconds; a
``stop`` event ends it early (the viewer's shutdown, an async caller's cancellation).
"""

from __future__ import annotations

import math
import threading
import time

from ..errors import InvalidInput
from . import validate as v
from .contract import Backend

#: Longest single wait (seconds): a caller that wants longer loops, re-reading as it goes.
MAX_TIMEOUT = 3600.0


def check_timeout(timeout: object) -> float:
    """A number of seconds in [0, MAX_TIMEOUT] (mandatory: every wait is bounded)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidInput(f"timeout must be a number of seconds, not {timeout!r:.80}")
    if not math.isfinite(timeout) or timeout < 0 or timeout > MAX_TIMEOUT:
        raise InvalidInput(
            f"timeout must be between 0 and {MAX_TIMEOUT:g} seconds, not {timeout!r}"
        )
    return float(timeout)


def check(session_id: str | None, after: object, timeout: object) -> tuple[str | None, int, float]:
    """The arguments of ``wait_for_messages``, validated (the async store checks them before it
    hands the wait to a thread)."""
    sid = None if session_id is None else v.session_id(session_id)
    return sid, v.non_negative_int(after, "after"), check_timeout(timeout)


def position(backend: Backend, session_id: str | None) -> int:
    """The number the caller's ``after`` is compared with, read in one short read."""
    with backend.read() as tx:
        return tx.totals()[1] if session_id is None else tx.message_count(session_id)


def wait_for_messages(
    backend: Backend,
    session_id: str | None,
    after: int,
    timeout: float,
    stop: threading.Event | None = None,
) -> bool:
    """True once ``position(session_id) != after``; False when ``timeout`` passes or ``stop``
    is set first. Arguments already validated (:func:`check`)."""
    deadline = time.monotonic() + timeout
    changes = backend.changes(session_id)
    try:
        while True:
            token = changes.arm()  # before the check: a commit after it changes the token
            if position(backend, session_id) != after:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return False
            changes.sleep(token, remaining, stop)
    finally:
        changes.done()


__all__ = ["MAX_TIMEOUT", "check", "check_timeout", "position", "wait_for_messages"]
