"""The lease record, its staleness rules, and the acquire/refresh/release logic over any backend.

Atomicity lives in the backend: every operation on one lease runs inside
``backend.transaction()``, a critical section that only one process at a time can be in (an
``flock`` on a side file for file leases, ``BEGIN IMMEDIATE`` for leases in a store). Inside it the
record is read, judged and replaced, so no two processes can both see "free" and both win — the
read-then-write race of a plain lock file.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..errors import LeaseHeld
from ..host import procinfo
from . import validate

if TYPE_CHECKING:
    import logging


def _log() -> logging.Logger:
    # Imported when there is something to log: a hook taking a lease on every tool call should
    # not pay for the logging package at start-up (benchmarks/startup.py).
    import logging

    return logging.getLogger("sessiondb.lease")


class LeaseWarning(UserWarning):
    """A lease record could not be read (corrupt, truncated, foreign); it is treated as stale."""


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Holder(NamedTuple):
    """Who holds a lease: the session, its process (pid + start time, since pids are reused),
    the host, and when the lease was taken and last refreshed (UTC epoch seconds)."""

    resource: str
    session_id: str
    pid: int
    start_time: int | None
    host: str
    acquired_at: float
    refreshed_at: float
    ttl: float
    fence: int = 0  # the fencing token of this holding (0: a record written before fences)

    @property
    def expires_at(self) -> float:
        return self.refreshed_at + self.ttl

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expires_at

    def alive(self) -> bool | None:
        """True/False when provable on this host; None for another host (only the TTL counts)."""
        if self.host != procinfo.hostname():
            return None
        alive = procinfo.process_alive(self.pid, self.start_time)
        # A kill -9ed holder stays a zombie until its parent reaps it; it can hold nothing.
        if alive and procinfo.process_state(self.pid) == "Z":
            return False
        return alive

    def stale(self, now: float | None = None) -> bool:
        """Past its TTL, or its holder provably dead on this host (pid gone or reused)."""
        return self.expired(now) or self.alive() is False

    def describe(self, kind: str) -> str:
        """The refusal a blocked session reads, naming the holder and the way out."""
        where = "" if self.host == procinfo.hostname() else f" on {self.host}"
        return (
            f"{kind} held by session {self.session_id} (pid {self.pid}{where}) since "
            f"{utc_iso(self.acquired_at)} — wait or close that session first"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "session_id": self.session_id,
            "pid": self.pid,
            "start_time": self.start_time,
            "host": self.host,
            "acquired_at": self.acquired_at,
            "refreshed_at": self.refreshed_at,
            "ttl": self.ttl,
            "expires_at": self.expires_at,
            "fence": self.fence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Holder:
        """Validate a stored record; ValueError says which field is wrong."""

        def num(name: str) -> float:
            v = data.get(name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"field {name!r} is {v!r}, not a number")
            return float(v)

        def text(name: str) -> str:
            v = data.get(name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"field {name!r} is {v!r}, not a string")
            return v

        pid = data.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"field 'pid' is {pid!r}, not a process id")
        start = data.get("start_time")
        if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
            raise ValueError(f"field 'start_time' is {start!r}, not an integer")
        ttl = num("ttl")
        if ttl <= 0:
            raise ValueError(f"field 'ttl' is {ttl!r}, not positive")
        return cls(
            resource=text("resource"),
            session_id=text("session_id"),
            pid=pid,
            start_time=start,
            host=text("host"),
            acquired_at=num("acquired_at"),
            refreshed_at=num("refreshed_at"),
            ttl=ttl,
            fence=_fence(data.get("fence", 0)),
        )


def _fence(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"field 'fence' is {value!r}, not a fencing token")
    return value


class Slot(Protocol):
    """The lease record as seen inside the backend's critical section."""

    def now(self) -> float:
        """The time every judgement inside this critical section uses: the clock of whatever
        keeps the lease, read after the critical section was entered (a store on a server
        uses the server's clock, so holders on several machines agree)."""

    def last_fence(self) -> int:
        """The highest fencing token this lease ever handed out (0: none yet), releases
        included: the next acquisition gets a larger one."""

    def read(self) -> Holder | None:
        """The stored record, or None when there is none or it is unreadable (warned)."""

    def write(self, holder: Holder) -> None: ...

    def clear(self) -> None: ...


class LeaseBackend(Protocol):
    """Where one lease is kept. ``transaction()`` must exclude every other process."""

    @property
    def resource(self) -> str: ...

    @property
    def kind(self) -> str:
        """How the refusal names the lease, e.g. "workspace lease on /src/app"."""

    def transaction(self) -> AbstractContextManager[Slot]: ...

    def peek(self) -> Holder | None:
        """The stored record without taking part in the critical section."""


class Lease:
    """One session's handle on a lease: ``acquire() -> bool``, ``holder``, ``refresh()``,
    ``release()``, and ``with lease:`` (raises :class:`LeaseHeld` naming the holder)."""

    def __init__(
        self,
        backend: LeaseBackend,
        session_id: str,
        ttl: float = 300.0,
        *,
        pid: int | None = None,
    ) -> None:
        self._backend = backend
        self.session_id = validate.session_id(session_id)
        self.ttl = validate.ttl(ttl)
        # pid=None means "the calling process", resolved on each call so a forked child that
        # uses its parent's Lease object records itself, not the parent.
        self._pid = pid
        self.last_takeover: Holder | None = None
        #: The fencing token of this session's holding, set by a successful ``acquire()``:
        #: strictly larger than every token handed out before for this lease, so a resource
        #: that remembers the largest token it saw can refuse a holder that lost the lease
        #: (paused past its TTL, taken over) and acts late.
        self.fence: int | None = None
        self._blocked_by: Holder | None = None

    @property
    def resource(self) -> str:
        return self._backend.resource

    @property
    def kind(self) -> str:
        return self._backend.kind

    @property
    def pid(self) -> int:
        return os.getpid() if self._pid is None else self._pid

    def _record(self, now: float, acquired_at: float, fence: int) -> Holder:
        pid = self.pid
        return Holder(
            resource=self.resource,
            session_id=self.session_id,
            pid=pid,
            start_time=procinfo.process_start_time(pid),
            host=procinfo.hostname(),
            acquired_at=acquired_at,
            refreshed_at=now,
            ttl=self.ttl,
            fence=fence,
        )

    @property
    def record(self) -> Holder | None:
        """The stored record as it is, stale or not (for status displays)."""
        return self._backend.peek()

    @property
    def holder(self) -> Holder | None:
        """The live holder (this session or another), or None when the lease is free."""
        rec = self._backend.peek()
        return None if rec is None or rec.stale() else rec

    @property
    def held(self) -> bool:
        """True when this session holds the lease now."""
        h = self.holder
        return h is not None and h.session_id == self.session_id

    def acquire(self) -> bool:
        """Take the lease, or confirm that this session has it; False when another live session
        holds it (see ``holder`` / ``message``). Takes over a stale lease (``last_takeover``)."""
        self.last_takeover = None
        self._blocked_by = None
        with self._backend.transaction() as slot:
            now = slot.now()
            cur = slot.read()
            acquired_at = now
            fence = 0
            if cur is not None:
                stale = cur.stale(now)
                if cur.session_id == self.session_id:
                    if not stale:
                        acquired_at = cur.acquired_at  # re-acquire: idempotent, same "since"
                        fence = cur.fence  # ... and the same fencing token
                elif not stale:
                    self._blocked_by = cur
                    return False
                else:
                    self.last_takeover = cur
            if not fence:  # a new holding: a token larger than any handed out before
                fence = slot.last_fence() + 1
            slot.write(self._record(now, acquired_at, fence))
        self.fence = fence
        if self.last_takeover is not None:
            t = self.last_takeover
            _log().info(
                "%s: session %s took over the stale lease of session %s (pid %d on %s)",
                self.kind,
                self.session_id,
                t.session_id,
                t.pid,
                t.host,
            )
        return True

    @property
    def message(self) -> str | None:
        """The refusal from the last acquire that failed, naming the holder."""
        return None if self._blocked_by is None else self._blocked_by.describe(self.kind)

    def refresh(self) -> bool:
        """Extend this session's lease by ``ttl`` from now. A non-owner changes nothing: False,
        with a warning on the ``sessiondb.lease`` logger naming the actual holder."""
        with self._backend.transaction() as slot:
            now = slot.now()
            cur = slot.read()
            if cur is None or cur.session_id != self.session_id:
                self._refuse("refreshing", cur)
                return False
            fence = cur.fence or slot.last_fence() + 1  # a record from before fences gets one
            slot.write(self._record(now, cur.acquired_at, fence))
        self.fence = fence
        return True

    def release(self) -> bool:
        """Give the lease up. Only the owner can: a non-owner changes nothing and gets False."""
        with self._backend.transaction() as slot:
            cur = slot.read()
            if cur is None or cur.session_id != self.session_id:
                self._refuse("releasing", cur)
                return False
            slot.clear()
        return True

    def force_release(self) -> Holder | None:
        """Break the lease whoever holds it (for a person at the keyboard); returns the record
        that was removed, so the caller can say whose lease was broken."""
        with self._backend.transaction() as slot:
            cur = slot.read()
            slot.clear()
        if cur is not None:
            _log().info(
                "%s: lease of session %s (pid %d on %s) broken by force",
                self.kind,
                cur.session_id,
                cur.pid,
                cur.host,
            )
        return cur

    def _refuse(self, verb: str, cur: Holder | None) -> None:
        if cur is None:
            why = "nobody holds it"
        else:
            why = f"it is held by session {cur.session_id} (pid {cur.pid}), not by this session"
        _log().warning("not %s %s for session %s: %s", verb, self.kind, self.session_id, why)

    def __enter__(self) -> Lease:
        if not self.acquire():
            blocked = self._blocked_by
            assert blocked is not None
            raise LeaseHeld(blocked.describe(self.kind), holder=blocked)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.kind!r}, session_id={self.session_id!r}, ttl={self.ttl})"


__all__ = ["Holder", "Lease", "LeaseBackend", "LeaseWarning", "Slot", "utc_iso"]
