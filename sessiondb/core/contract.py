"""The Store contract: what users call (:class:`Store`), what a backend provides (:class:`Backend`).

One Store (:mod:`sessiondb.core.store`) implements every verb once — validate, plan, call the
backend's primitives, assemble the result — for every backend. A backend implements primitives,
not verbs: short transactions (:class:`ReadTx`, :class:`WriteTx`) over session rows and messages
(key lookup, seq allocation and a set-based batch insert in one primitive), the execution of a
search request, a lease slot, and its own health checks. docs/adr/0005-store-contract.md says why
the line is drawn here.

Rules every backend keeps (tests/contract/ checks each one on every backend):

* A ``ReadTx`` is one consistent snapshot, short: everything is fetched inside it.
* A ``WriteTx`` is all or nothing and excludes every other writer of the same session rows; a
  failure inside rolls everything back. Nothing waits inside one but the database.
* ``seq`` is 1, 2, 3 … per session, gapless: ``insert_messages`` allocates it from the session
  row in the same transaction; the session's ``message_count`` is also its last seq.
* ``SessionRef`` is the backend's handle of a session row, valid only inside the transaction
  that returned it.
* No driver exception leaves a backend: each is translated into :mod:`sessiondb.errors`.

Nothing in ``sessiondb.core`` imports a database driver (tests/contract/test_layout.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..models import HealthReport, Hit, ImportReport, Message, PruneReport, Session, Stats

if TYPE_CHECKING:
    from .append import Item
    from .lease import Holder, Lease, LeaseBackend
    from .search import SearchRequest
    from .stats import ActivityRow

SessionRef = int
"""A backend's handle of one session row (its internal id), valid within one transaction."""

SessionField = Literal["title", "meta", "ended_at", "end_reason", "created_at", "updated_at"]
"""The session columns a verb may change (``update_session``, ``end_session``)."""

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` while a transcript is imported."""

MISSING: Any = object()
"""Default of ``update_session``'s arguments: leave that field as it is."""


# -- what a backend provides -------------------------------------------------------------------


class ReadTx(Protocol):
    """One short read transaction: a consistent snapshot, everything fetched inside."""

    def session_ref(self, session_id: str) -> SessionRef | None: ...

    def session(self, session_id: str) -> Session | None: ...

    def sessions(self, source: str | None, limit: int, offset: int) -> list[Session]:
        """Sessions by most recent activity (``updated_at``), newest first."""

    def session_ids(self, after: str | None, limit: int) -> list[str]:
        """Session ids ``> after`` in code point order (UTF-8 byte order; PostgreSQL:
        ``COLLATE "C"``), the first ``limit``."""

    def stale_sessions(
        self, cutoff: float, source: str | None, after: str | None, limit: int
    ) -> list[Session]:
        """Sessions whose last activity (``updated_at``) is before ``cutoff``, of one source or
        all, with ids ``> after`` in the order of ``session_ids``: the first ``limit``."""

    def message_bytes(self, session_id: str) -> int:
        """Bytes of a session's stored messages: content, key and meta in UTF-8 (0 when there
        is no such session). What a prune reports it removes, before the search index."""

    def totals(self) -> tuple[int, int]:
        """(sessions, messages) in the whole store."""

    def session_count(self, source: str | None) -> int:
        """Sessions in the store, or of one source."""

    def message_count(self, session_id: str) -> int:
        """Messages of one session (0 when there is no such session)."""

    def messages(
        self, session_id: str, after: int, limit: int, newest: bool = False
    ) -> list[Message]:
        """Messages with ``seq > after`` in seq order: the first ``limit`` of them, or with
        ``newest`` the last ``limit`` of them (still in seq order)."""

    def messages_by_key(
        self, ref: SessionRef, session_id: str, keys: Sequence[str]
    ) -> dict[str, Message]:
        """The stored messages of a session with these keys, by key."""

    def neighbours(
        self, hits: Sequence[Message], context: int
    ) -> list[tuple[list[Message], list[Message]]]:
        """For each message, up to ``context`` messages before and after it in its session."""

    def activity(
        self,
        first_day: int | None,
        last_day: int | None,
        source: str | None,
        session_id: str | None = None,
    ) -> tuple[list[ActivityRow], dict[int, int], int]:
        """The usage rollup for UTC days ``first_day..last_day`` (None: unbounded), of one
        source, one session or all: rows ``(day, source, model, sessions, messages, input, output,
        cache_read, cache_write)`` ordered by day, sessions active per day, and sessions active
        in the period. Kept in each write transaction (a response's tokens once, at its
        largest; docs/adr/0007-usage-rollup.md): never a scan of the messages."""


class WriteTx(ReadTx, Protocol):
    """One short write transaction (admission queued, all or nothing)."""

    def session_refs(self, session_ids: Sequence[str]) -> dict[str, SessionRef]:
        """``session_ref`` of each id, looked up in this order (a backend that locks the rows it
        looks up locks them in it); ids with no session are left out. A group commit's
        sessions (core/writes.py), in one statement where the backend can."""

    def insert_session(
        self,
        session_id: str,
        source: str,
        title: str | None,
        meta: str | None,
        created_at: float,
    ) -> SessionRef:
        """A new session row (the caller checked the id is free in this transaction)."""

    def update_session(self, ref: SessionRef, changes: Mapping[SessionField, object]) -> None: ...

    def insert_messages(
        self, ref: SessionRef, session_id: str, items: Sequence[Item], now: float
    ) -> list[Message]:
        """Insert fresh items set-based, with the next seqs of the session (an item's time is
        its ``created_at``, else ``now``); ``updated_at`` becomes the latest of itself and the
        items' times. Returns the stored messages in item order."""

    def insert_batches(
        self, batches: Sequence[tuple[SessionRef, str, Sequence[Item]]], now: float
    ) -> list[list[Message]]:
        """``insert_messages`` for several sessions at once (a group commit's fresh messages,
        core/writes.py), as set-based as the backend can: the stored messages per batch."""

    def copy_messages(self, source: SessionRef, target: SessionRef, upto: int) -> None:
        """Copy the messages of ``source`` with seq 1..``upto`` into the empty session
        ``target`` — same seqs, roles, content, keys, meta and times — and make ``upto`` its
        count and last seq (``fork_session``; docs/adr/0009-framework-primitives.md)."""

    def remove_newest(self, ref: SessionRef, session_id: str, now: float) -> Message | None:
        """Delete the newest message; the session's count and last seq drop by one and its
        ``revision`` changes. None when the session has no message."""

    def clear(self, ref: SessionRef, now: float) -> int:
        """Detach every message from the session at once (removed in batches later by
        ``Backend.purge``); count and last seq become 0, ``revision`` changes. Returns the
        number of messages it had."""

    def delete_session(self, ref: SessionRef) -> None:
        """Remove the session row and its usage rollup; its messages are removed in batches
        by ``Backend.purge``."""


class Changes(Protocol):
    """A backend's wake-up for ``wait_for_messages`` (core/wait.py): how a waiter learns,
    without reading messages, that something may have committed. It may wake for nothing (the
    waiter checks again); it must never sleep through a commit made after :meth:`arm`.
    """

    def arm(self) -> object:
        """A token of the store's state now, taken BEFORE the waiter checks its condition."""

    def sleep(self, token: object, seconds: float, stop: threading.Event | None) -> None:
        """Return when something may have committed since ``token`` was taken, after at most
        ``seconds``, or soon after ``stop`` is set."""

    def done(self) -> None:
        """The wait is over (keep or release what ``arm`` set up)."""


@runtime_checkable
class Backend(Protocol):
    """Where a store keeps its data. One object per open store, shared by threads."""

    @property
    def location(self) -> str:
        """The path or URL it was opened at (no password)."""

    @property
    def path(self) -> Path | None:
        """The database file, for file backends."""

    @property
    def readonly(self) -> bool: ...

    @property
    def write_timeout(self) -> float:
        """Seconds a write waits to get in before ``StoreBusy``."""

    @property
    def group_writes(self) -> bool:
        """Whether appends of several threads of this process should share one transaction by
        default (core/group.py; docs/adr/0011-group-commit.md says which backends and why)."""

    def combined_group_run(self) -> Callable[[list[Any]], Sequence[Any]] | None:
        """What commits a group of this process's appends (``core/writes.Request``s, one
        outcome each) when the backend can also take other processes' appends into it
        (sqlite/combine.py; docs/adr/0018-cross-process-combining.md); None: ``append_group``."""

    def read(self) -> AbstractContextManager[ReadTx]: ...

    def write(self) -> AbstractContextManager[WriteTx]:
        """Raises ``ReadOnlyStore`` on a store opened read-only."""

    def write_deferred(self) -> AbstractContextManager[WriteTx]:
        """A write transaction of a bulk import (``import_jsonl(bulk=True)``): the messages it
        inserts may stay out of the search index until :meth:`finish_index` — a backend that
        indexes every row as it is written returns an ordinary ``write()``
        (docs/adr/0015-bulk-import.md)."""

    def finish_index(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Index every message a deferred write left unindexed, in short write transactions,
        ``progress(done, total)`` after each; the messages (ids) it covered, 0 when none."""

    def append_plain(
        self, session_id: str, items: Sequence[Item], now: float
    ) -> list[Message] | None:
        """``items`` (no keys) stored at the end of session ``session_id`` — made when missing,
        as the general path makes it (source "unknown", starting when its first message does) —
        in one write transaction of its own that looks nothing up first, when the backend has
        such a step: one round trip on PostgreSQL instead of two (docs/adr/0013, amendment 3).
        Seqs, rollup and notification exactly as ``insert_messages``. None, having stored
        nothing: the backend has no such step for these items; core/writes.py then takes the
        general path."""

    def purge(self) -> None:
        """Finish removing detached messages (deleted or cleared sessions), in short batches."""

    def space(self) -> dict[str, int] | None:
        """Bytes the store takes, by part: ``messages`` (rows and their indexes),
        ``search_index``, ``other``, and ``free`` (space held but unused) where the backend can
        tell (not on PostgreSQL: postgres/space.py); None when it can tell nothing."""

    def reclaim(self, progress: Callable[[int], None] | None = None) -> int | None:
        """Give the space that removed messages freed back to the filesystem, in short write
        transactions (docs/design.md rule 5), calling ``progress(left)`` after each; returns
        the bytes given back, 0 when the backend needs nothing of the kind, None when this
        store can only do it by ``compact``. docs/adr/0006-retention.md."""

    def compact(self) -> int:
        """Rewrite the store to give every free byte back at once; returns the bytes given
        back. Every writer waits until it is done: only on a person's explicit request."""

    def search(self, request: SearchRequest) -> list[tuple[Message, float]]:
        """The best ``request.need`` matches, best first, each with its score (higher is
        better); the core's rules for what matches are in docs/search.md."""

    def changes(self, session_id: str | None) -> Changes:
        """The wake-up of a wait for new messages of one session, or of any when None
        (docs/adr/0017-wait-for-messages.md)."""

    def lease_slot(self, name: str) -> LeaseBackend:
        """Where the lease ``name`` is kept, for :class:`~sessiondb.core.lease.Lease`."""

    def leases(self) -> list[Holder]:
        """Every lease record kept in the store, stale ones included, oldest first."""

    def check(self, full: bool) -> HealthReport: ...

    def facts(self) -> dict[str, Any]:
        """What ``Store.info()`` shows beyond the counts: versions, sizes, modes."""

    def close(self) -> None: ...


# -- what users call -----------------------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """A sessiondb store: sessions, messages, search, transcripts and leases, on any backend.

    ``sessiondb.open(path_or_url)`` returns one; the README describes each verb, and
    tests/contract/ defines each behaviour once for every backend.
    """

    @property
    def location(self) -> str: ...

    @property
    def path(self) -> Path | None: ...

    @property
    def readonly(self) -> bool: ...

    # sessions
    def create_session(
        self,
        session_id: str | None = None,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session: ...

    def ensure_session(
        self,
        session_id: str,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session: ...

    def get_session(self, session_id: str) -> Session | None: ...

    def list_sessions(
        self, *, source: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Session]: ...

    def count_sessions(self, *, source: str | None = None) -> int: ...

    def session_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]: ...

    def update_session(
        self,
        session_id: str,
        *,
        title: str | None = MISSING,
        meta: Mapping[str, Any] | None = MISSING,
        ended_at: float | datetime | None = MISSING,
        end_reason: str | None = MISSING,
        created_at: float | datetime = MISSING,
        updated_at: float | datetime = MISSING,
        meta_patch: Mapping[str, Any] | None = None,
    ) -> Session: ...

    def end_session(self, session_id: str, reason: str = "ended") -> Session: ...

    def delete_session(self, session_id: str) -> bool: ...

    # messages
    def append(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        key: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
        expect_last: int | None = None,
        session_meta: Mapping[str, Any] | None = None,
        other_meta: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Message: ...

    def append_many(
        self,
        session_id: str,
        items: Iterable[Mapping[str, Any]],
        *,
        expect_last: int | None = None,
        session_meta: Mapping[str, Any] | None = None,
        other_meta: Mapping[str, Mapping[str, Any]] | None = None,
        replace: bool = False,
    ) -> list[Message]: ...

    def messages(
        self,
        session_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
        last: int | None = None,
    ) -> list[Message]: ...

    def message(self, session_id: str, key: str) -> Message | None: ...

    def fork_session(
        self,
        session_id: str,
        new_session_id: str | None = None,
        *,
        at: int | None = None,
        title: str | None = MISSING,
        meta: Mapping[str, Any] | None = MISSING,
    ) -> Session: ...

    def pop_message(self, session_id: str) -> Message | None: ...

    def clear_session(self, session_id: str) -> int: ...

    def count(self, session_id: str | None = None) -> int: ...

    def wait_for_messages(
        self,
        session_id: str | None = None,
        *,
        after: int,
        timeout: float,
        revision: int | None = None,
    ) -> bool: ...

    # transcripts
    def import_jsonl(
        self,
        path: str | os.PathLike[str],
        *,
        session_id: str | None = None,
        source: str = "import",
        strict: bool = False,
        progress: Progress | None = None,
        bulk: bool = False,
    ) -> ImportReport: ...

    def export_jsonl(
        self, session_id: str | None, dest: str | os.PathLike[str] | IO[bytes]
    ) -> int: ...

    def transcript(
        self, session_id: str, *, legacy_jsonl: str | os.PathLike[str] | None = None
    ) -> list[Message]: ...

    # search
    def search(
        self,
        query: str,
        *,
        session_id: str | None = None,
        source: str | None = None,
        role: str | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        context: int = 0,
        limit: int = 20,
        offset: int = 0,
        mode: str = "plain",
        markers: tuple[str, str] = ("[", "]"),
    ) -> list[Hit]: ...

    # leases
    def lease(
        self, name: str, owner: str, ttl: float = 300.0, *, pid: int | None = None
    ) -> Lease: ...

    def leases(self) -> list[Holder]: ...

    # housekeeping
    def stats(
        self,
        *,
        since: float | datetime | date | None = None,
        until: float | datetime | date | None = None,
        source: str | None = None,
        session_id: str | None = None,
    ) -> Stats: ...

    def prune(
        self,
        *,
        older_than: timedelta | datetime,
        source: str | None = None,
        session_id: str | None = None,
        dry_run: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> PruneReport: ...

    def compact(self) -> int: ...

    def check(self, *, full: bool = False) -> HealthReport: ...

    def info(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


__all__ = [
    "MISSING",
    "Backend",
    "Changes",
    "ReadTx",
    "SessionField",
    "SessionRef",
    "Store",
    "WriteTx",
]
