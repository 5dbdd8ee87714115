"""The async Store contract: :class:`AsyncStore`, every verb of :class:`~.contract.Store` awaitable.

``sessiondb.aio.open(path_or_url)`` returns one (:mod:`sessiondb.aio`). Each verb keeps the
sync verb's name, arguments (keyword-only ones included), return type and errors; what is a
context manager in the sync API is an async one here (``async with store``, ``async with
store.lease(...)``), and ``close`` is awaited. tests/aio/test_parity.py compares this protocol
with ``Store`` verb by verb, so a verb added to one and not the other fails the suite.

Like the rest of ``sessiondb.core``, this module imports no driver and no event-loop library.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..models import HealthReport, Hit, ImportReport, Message, PruneReport, Session, Stats
from .contract import MISSING, Progress

if TYPE_CHECKING:
    from .lease import Holder


@runtime_checkable
class AsyncLease(Protocol):
    """A lease handle whose calls are awaited (``Lease`` in the sync API); ``async with``
    acquires it or raises ``LeaseHeld`` naming the holder, and releases it on exit."""

    @property
    def session_id(self) -> str: ...

    @property
    def ttl(self) -> float: ...

    @property
    def pid(self) -> int: ...

    @property
    def resource(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def message(self) -> str | None: ...

    @property
    def last_takeover(self) -> Holder | None: ...

    async def acquire(self) -> bool: ...

    async def refresh(self) -> bool: ...

    async def release(self) -> bool: ...

    async def force_release(self) -> Holder | None: ...

    async def holder(self) -> Holder | None: ...

    async def record(self) -> Holder | None: ...

    async def held(self) -> bool: ...

    async def __aenter__(self) -> AsyncLease: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    """A sessiondb store whose verbs are awaited; the same contract as ``sessiondb.Store``."""

    @property
    def location(self) -> str: ...

    @property
    def path(self) -> Path | None: ...

    @property
    def readonly(self) -> bool: ...

    # sessions
    async def create_session(
        self,
        session_id: str | None = None,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session: ...

    async def ensure_session(
        self,
        session_id: str,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session: ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def list_sessions(
        self, *, source: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Session]: ...

    async def count_sessions(self, *, source: str | None = None) -> int: ...

    async def session_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]: ...

    async def update_session(
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

    async def end_session(self, session_id: str, reason: str = "ended") -> Session: ...

    async def delete_session(self, session_id: str) -> bool: ...

    # messages
    async def append(
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

    async def append_many(
        self,
        session_id: str,
        items: Iterable[Mapping[str, Any]],
        *,
        expect_last: int | None = None,
        session_meta: Mapping[str, Any] | None = None,
        other_meta: Mapping[str, Mapping[str, Any]] | None = None,
        replace: bool = False,
    ) -> list[Message]: ...

    async def messages(
        self,
        session_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
        last: int | None = None,
    ) -> list[Message]: ...

    async def message(self, session_id: str, key: str) -> Message | None: ...

    async def fork_session(
        self,
        session_id: str,
        new_session_id: str | None = None,
        *,
        at: int | None = None,
        title: str | None = MISSING,
        meta: Mapping[str, Any] | None = MISSING,
    ) -> Session: ...

    async def pop_message(self, session_id: str) -> Message | None: ...

    async def clear_session(self, session_id: str) -> int: ...

    async def count(self, session_id: str | None = None) -> int: ...

    async def wait_for_messages(
        self,
        session_id: str | None = None,
        *,
        after: int,
        timeout: float,
        revision: int | None = None,
    ) -> bool:
        """``Store.wait_for_messages``, awaited; cancelling the task ends the wait."""

    # transcripts
    async def import_jsonl(
        self,
        path: str | os.PathLike[str],
        *,
        session_id: str | None = None,
        source: str = "import",
        strict: bool = False,
        progress: Progress | None = None,
        bulk: bool = False,
    ) -> ImportReport: ...

    async def export_jsonl(
        self, session_id: str | None, dest: str | os.PathLike[str] | IO[bytes]
    ) -> int: ...

    async def transcript(
        self, session_id: str, *, legacy_jsonl: str | os.PathLike[str] | None = None
    ) -> list[Message]: ...

    # search
    async def search(
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

    # leases: the handle is made at once (nothing is read); its calls are awaited
    def lease(
        self, name: str, owner: str, ttl: float = 300.0, *, pid: int | None = None
    ) -> AsyncLease: ...

    async def leases(self) -> list[Holder]: ...

    # housekeeping
    async def stats(
        self,
        *,
        since: float | datetime | date | None = None,
        until: float | datetime | date | None = None,
        source: str | None = None,
        session_id: str | None = None,
    ) -> Stats: ...

    async def prune(
        self,
        *,
        older_than: timedelta | datetime,
        source: str | None = None,
        session_id: str | None = None,
        dry_run: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> PruneReport: ...

    async def compact(self) -> int: ...

    async def check(self, *, full: bool = False) -> HealthReport: ...

    async def info(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> AsyncStore: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


__all__ = ["AsyncLease", "AsyncStore"]
