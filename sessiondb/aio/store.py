"""The async Store: every verb of the Store contract, awaited, over any sync ``Store``.

Each verb hands the sync verb to the store's worker threads (:mod:`.workers`) and awaits it, so
validation, planning and every backend rule stay written once (core/store.py); the errors are
the sync verb's own. The async contract is :class:`~sessiondb.core.async_contract.AsyncStore`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, ParamSpec

import anyio
import anyio.lowlevel
import anyio.to_thread

from ..core.contract import MISSING, Progress
from ..core.store import SessionStore
from ..core.writes import Group, Request, append_many_request, append_request
from ..errors import Error
from ..models import HealthReport, Hit, ImportReport, Message, PruneReport, Session, Stats
from .lease import AsyncStoreLease
from .workers import Wakeups, Workers, call_soon

if TYPE_CHECKING:
    from ..core.contract import Store
    from ..core.lease import Holder
    from ..core.wait import Args


_P = ParamSpec("_P")

#: Seconds ``close`` gives the running waits (wait_for_messages) to notice their stop event.
CLOSE_WAITS = 30.0


def _in_caller_loop(progress: Callable[_P, None] | None) -> Callable[_P, None] | None:
    """A progress callback for a worker thread that runs ``progress`` in the calling task's
    event loop, never waiting for it (workers.call_soon): called from inside the async verb."""
    if progress is None:
        return None
    token, report = anyio.lowlevel.current_token(), progress

    def relay(*args: _P.args, **kwargs: _P.kwargs) -> None:
        call_soon(token, report, *args)

    return relay


class AsyncSessionStore:
    """A sessiondb store for async code (the ``AsyncStore`` contract); get one from
    ``sessiondb.aio.open``. Works under asyncio and trio."""

    def __init__(self, store: Store, workers: Workers) -> None:
        self._store = store
        self._workers = workers
        self._close_lock = threading.Lock()
        self._closed = False
        self._wakeups: dict[object, Wakeups] = {}  # by event loop (its native token)
        #: Stop events of the waits running (wait_for_messages), set when the store closes.
        self._waits: set[threading.Event] = set()
        self._waits_ended = threading.Condition(self._close_lock)

    # -- the store itself -----------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._store.location

    @property
    def path(self) -> Path | None:
        return self._store.path

    @property
    def readonly(self) -> bool:
        return self._store.readonly

    @property
    def wrapped(self) -> Store:
        """The sync store the workers run (its calls block; for tools and tests, not async
        code)."""
        return self._store

    async def close(self) -> None:
        """Refuse new calls, wait for the calls in flight to finish, then close the store and
        every connection its workers opened (tests/aio/test_lifecycle.py). Shielded: a
        cancelled close still closes."""
        self._workers.stop_accepting()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._close_now)

    aclose = close  # the name contextlib.aclosing and anyio's AsyncResource expect

    def _close_now(self) -> None:
        with self._close_lock:  # a second close waits for the first, then finds it done
            if self._closed:
                return
            for stop in self._waits:
                stop.set()
            # Each wait notices its stop within one sleep step (core/wait.py): the store is
            # closed under none of them (bounded all the same: a read stuck on a dead server).
            self._waits_ended.wait_for(lambda: not self._waits, timeout=CLOSE_WAITS)
            self._workers.close()
            self._store.close()
            self._closed = True

    async def __aenter__(self) -> AsyncSessionStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        ro = ", read-only" if self.readonly else ""
        return f"<sessiondb async store {self.location!r}{ro}>"

    # -- sessions -------------------------------------------------------------------------------

    async def create_session(
        self,
        session_id: str | None = None,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session:
        return await self._workers.run(
            self._store.create_session,
            session_id,
            source=source,
            title=title,
            meta=meta,
            created_at=created_at,
        )

    async def ensure_session(
        self,
        session_id: str,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
        created_at: float | datetime | None = None,
    ) -> Session:
        return await self._workers.run(
            self._store.ensure_session,
            session_id,
            source=source,
            title=title,
            meta=meta,
            created_at=created_at,
        )

    async def get_session(self, session_id: str) -> Session | None:
        return await self._workers.run(self._store.get_session, session_id)

    async def list_sessions(
        self, *, source: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Session]:
        return await self._workers.run(
            self._store.list_sessions, source=source, limit=limit, offset=offset
        )

    async def count_sessions(self, *, source: str | None = None) -> int:
        return await self._workers.run(self._store.count_sessions, source=source)

    async def session_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        return await self._workers.run(self._store.session_ids, after=after, limit=limit)

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
    ) -> Session:
        # MISSING travels as it is: the sync verb leaves those fields alone.
        return await self._workers.run(
            self._store.update_session,
            session_id,
            title=title,
            meta=meta,
            ended_at=ended_at,
            end_reason=end_reason,
            created_at=created_at,
            updated_at=updated_at,
            meta_patch=meta_patch,
        )

    async def end_session(self, session_id: str, reason: str = "ended") -> Session:
        return await self._workers.run(self._store.end_session, session_id, reason)

    async def delete_session(self, session_id: str) -> bool:
        return await self._workers.run(self._store.delete_session, session_id)

    # -- messages -------------------------------------------------------------------------------

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
    ) -> Message:
        """Append one message. If the awaiting task is cancelled the append has either been
        stored whole or not at all; append again with the same ``key`` to find out which."""
        if self._group() is not None and other_meta is None:
            request = append_request(
                session_id, role, content, key, meta, created_at, expect_last, session_meta
            )
            return (await self._grouped(request))[0]
        return await self._workers.run(
            self._store.append,
            session_id,
            role,
            content,
            key=key,
            meta=meta,
            created_at=created_at,
            expect_last=expect_last,
            session_meta=session_meta,
            other_meta=other_meta,
        )

    async def append_many(
        self,
        session_id: str,
        items: Iterable[Mapping[str, Any]],
        *,
        expect_last: int | None = None,
        session_meta: Mapping[str, Any] | None = None,
        other_meta: Mapping[str, Mapping[str, Any]] | None = None,
        replace: bool = False,
    ) -> list[Message]:
        if self._group() is not None and other_meta is None and replace is False:
            # (other_meta and replace commit in a transaction of their own: writes.commit)
            request = append_many_request(session_id, items, expect_last, session_meta)
            return [] if request is None else await self._grouped(request)
        return await self._workers.run(
            self._store.append_many,
            session_id,
            items,
            expect_last=expect_last,
            session_meta=session_meta,
            other_meta=other_meta,
            replace=replace,
        )

    def _group(self) -> Group | None:
        store = self._store
        return store.group if isinstance(store, SessionStore) else None

    async def _grouped(self, request: Request) -> list[Message]:
        """An append through the sync store's group commit (core/group.py) without holding a
        worker thread while it waits: the task queues its request and sleeps until the leader
        publishes its outcome; a worker is asked to lead only when no leader is running. So 64
        tasks share transactions although the store has 2 workers (ADR 0011)."""
        group = self._group()
        assert group is not None
        if self._workers.closing:
            raise Error(f"{self.location}: the store is closed; open it again to use it")
        token, done = anyio.lowlevel.current_token(), anyio.Event()
        wakeups = self._wakeups.get(token.native_token)
        if wakeups is None:
            if len(self._wakeups) > 8:  # loops come and go (tests): keep only recent ones
                self._wakeups.clear()
            wakeups = self._wakeups[token.native_token] = Wakeups(token)
        ticket, led = group.enqueue(
            request, len(request.items), notify=lambda: wakeups.set_soon(done)
        )
        try:
            if not led:
                self._workers.start(group.serve, ticket)
            await done.wait()
        except BaseException:
            # Cancelled (or the store closing): a request no batch took is never written; one
            # taken is committed whole or not at all — append again with its key to find out.
            group.withdraw(ticket)
            raise
        return ticket.outcome()

    async def messages(
        self,
        session_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
        last: int | None = None,
    ) -> list[Message]:
        return await self._workers.run(
            self._store.messages, session_id, after=after, limit=limit, last=last
        )

    async def message(self, session_id: str, key: str) -> Message | None:
        return await self._workers.run(self._store.message, session_id, key)

    async def fork_session(
        self,
        session_id: str,
        new_session_id: str | None = None,
        *,
        at: int | None = None,
        title: str | None = MISSING,
        meta: Mapping[str, Any] | None = MISSING,
    ) -> Session:
        return await self._workers.run(
            self._store.fork_session, session_id, new_session_id, at=at, title=title, meta=meta
        )

    async def pop_message(self, session_id: str) -> Message | None:
        return await self._workers.run(self._store.pop_message, session_id)

    async def clear_session(self, session_id: str) -> int:
        return await self._workers.run(self._store.clear_session, session_id)

    async def count(self, session_id: str | None = None) -> int:
        return await self._workers.run(self._store.count, session_id)

    async def wait_for_messages(
        self,
        session_id: str | None = None,
        *,
        after: int,
        timeout: float,
        revision: int | None = None,
    ) -> bool:
        """``Store.wait_for_messages``, awaited. The wait runs in a thread of its own, not in
        one of the store's workers (it would hold one for up to ``timeout``); cancelling the task
        returns at once and sets the wait's stop event, so its thread ends within one sleep
        step (core/wait.py). Closing the store ends every wait (False)."""
        from ..core.wait import check

        args = check(session_id, after, timeout, revision)
        stop = threading.Event()
        with self._close_lock:
            if self._closed or self._workers.closing:
                raise Error(f"{self.location}: the store is closed; open it again to use it")
            self._waits.add(stop)
        try:
            return await anyio.to_thread.run_sync(
                self._wait_in_thread, args, stop, abandon_on_cancel=True
            )
        finally:
            stop.set()

    def _wait_in_thread(self, args: Args, stop: threading.Event) -> bool:
        sid, after, timeout, revision = args
        try:
            if isinstance(self._store, SessionStore):
                return self._store.wait_for_messages(
                    sid, after=after, timeout=timeout, revision=revision, stop=stop
                )
            # Another Store implementation: ends by its timeout (the caller returned already).
            return self._store.wait_for_messages(
                sid, after=after, timeout=timeout, revision=revision
            )
        finally:
            with self._close_lock:
                self._waits.discard(stop)
                self._waits_ended.notify_all()

    # -- transcripts ----------------------------------------------------------------------------

    async def import_jsonl(
        self,
        path: str | os.PathLike[str],
        *,
        session_id: str | None = None,
        source: str = "import",
        strict: bool = False,
        progress: Progress | None = None,
        bulk: bool = False,
    ) -> ImportReport:
        """Import a JSONL transcript (idempotent). ``progress`` is called in the caller's event
        loop, never in a worker thread, and every call comes before this one returns."""
        return await self._workers.run(
            self._store.import_jsonl,
            path,
            session_id=session_id,
            source=source,
            strict=strict,
            progress=_in_caller_loop(progress),
            bulk=bulk,
        )

    async def export_jsonl(
        self, session_id: str | None, dest: str | os.PathLike[str] | IO[bytes]
    ) -> int:
        return await self._workers.run(self._store.export_jsonl, session_id, dest)

    async def transcript(
        self, session_id: str, *, legacy_jsonl: str | os.PathLike[str] | None = None
    ) -> list[Message]:
        return await self._workers.run(
            self._store.transcript, session_id, legacy_jsonl=legacy_jsonl
        )

    # -- search ---------------------------------------------------------------------------------

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
    ) -> list[Hit]:
        return await self._workers.run(
            self._store.search,
            query,
            session_id=session_id,
            source=source,
            role=role,
            since=since,
            until=until,
            context=context,
            limit=limit,
            offset=offset,
            mode=mode,
            markers=markers,
        )

    # -- leases ---------------------------------------------------------------------------------

    def lease(
        self, name: str, owner: str, ttl: float = 300.0, *, pid: int | None = None
    ) -> AsyncStoreLease:
        """A lease on ``name`` for session ``owner`` kept in this store: ``async with
        store.lease(...)``, or ``await lease.acquire()`` … ``await lease.release()``. Making
        the handle reads nothing (invalid arguments raise here, at once)."""
        return AsyncStoreLease(self._store.lease(name, owner, ttl, pid=pid), self._workers)

    async def leases(self) -> list[Holder]:
        return await self._workers.run(self._store.leases)

    # -- housekeeping ---------------------------------------------------------------------------

    async def stats(
        self,
        *,
        since: float | datetime | date | None = None,
        until: float | datetime | date | None = None,
        source: str | None = None,
        session_id: str | None = None,
    ) -> Stats:
        return await self._workers.run(
            self._store.stats, since=since, until=until, source=source, session_id=session_id
        )

    async def prune(
        self,
        *,
        older_than: timedelta | datetime,
        source: str | None = None,
        session_id: str | None = None,
        dry_run: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> PruneReport:
        """Remove sessions idle past a cutoff (``Store.prune``). ``progress`` is called in the
        caller's event loop, as ``import_jsonl``'s is."""
        return await self._workers.run(
            self._store.prune,
            older_than=older_than,
            source=source,
            session_id=session_id,
            dry_run=dry_run,
            progress=_in_caller_loop(progress),
        )

    async def compact(self) -> int:
        """Rewrite the store to give every free byte back (``Store.compact``: writers wait)."""
        return await self._workers.run(self._store.compact)

    async def check(self, *, full: bool = False) -> HealthReport:
        return await self._workers.run(self._store.check, full=full)

    async def info(self) -> dict[str, Any]:
        return await self._workers.run(self._store.info)


__all__ = ["AsyncSessionStore"]
