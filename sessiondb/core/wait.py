"""``wait_for_messages``: block, for a bounded time, until a session (or the store) has changed
its count of messages — written once over every backend (docs/adr/0017-wait-for-messages.md).

The position is a number the caller read *before* it read the messages it has: a session's last
seq (seqs are gapless and given in commit order per session: core/contract.py), or for the whole
store ``store.count()``. The wait returns True as soon as that number is no longer the caller's:
messages were appended (or removed). No position is kept between calls, so nothing is lost
between one wait and the next.

A tailing reader also passes the session's ``revision`` it read with its messages: a removal
(``pop_message``, ``clear_session``) and an append that restore the same last seq between two
checks change nothing else it could see (docs/design.md, "Removing messages"), so the wait also
returns when the revision is no longer the caller's (ADR 17, amendment 2).

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
from typing import NamedTuple

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


class Args(NamedTuple):
    """The arguments of one wait, validated."""

    session_id: str | None
    after: int
    timeout: float
    revision: int | None


def check(session_id: str | None, after: object, timeout: object, revision: object = None) -> Args:
    """The arguments of ``wait_for_messages``, validated (the async store checks them before it
    hands the wait to a thread)."""
    sid = None if session_id is None else v.session_id(session_id)
    rev = None if revision is None else v.non_negative_int(revision, "revision")
    if rev is not None and sid is None:
        raise InvalidInput("revision is a session's: pass session_id with it")
    return Args(sid, v.non_negative_int(after, "after"), check_timeout(timeout), rev)


def position(backend: Backend, session_id: str | None) -> int:
    """The number the caller's ``after`` is compared with, read in one short read."""
    with backend.read() as tx:
        return tx.totals()[1] if session_id is None else tx.message_count(session_id)


def moved(backend: Backend, args: Args) -> bool:
    """Whether the store is no longer where the caller left it, read in one short read: the
    last seq (or the store's count), and with ``revision`` the session's revision too (a
    session that does not exist reads as revision 0, no messages)."""
    if args.revision is None:
        return position(backend, args.session_id) != args.after
    assert args.session_id is not None  # check() refuses a revision without a session
    with backend.read() as tx:
        s = tx.session(args.session_id)
    now = (0, 0) if s is None else (s.message_count, s.revision)
    return now != (args.after, args.revision)


def wait_for_messages(backend: Backend, args: Args, stop: threading.Event | None = None) -> bool:
    """True once :func:`moved`; False when the timeout passes or ``stop`` is set first."""
    deadline = time.monotonic() + args.timeout
    changes = backend.changes(args.session_id)
    try:
        while True:
            token = changes.arm()  # before the check: a commit after it changes the token
            if moved(backend, args):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                return False
            changes.sleep(token, remaining, stop)
    finally:
        changes.done()


__all__ = [
    "MAX_TIMEOUT",
    "Args",
    "check",
    "check_timeout",
    "moved",
    "position",
    "wait_for_messages",
]
