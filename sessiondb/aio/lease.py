"""A store lease for async callers: the sync :class:`~sessiondb.core.lease.Lease`, each call run
by the store's workers (the acquire/refresh/release rules stay written once, in core/lease.py)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from ..core.lease import Holder, Lease
    from .workers import Workers


class AsyncStoreLease:
    """``await lease.acquire()`` / ``refresh()`` / ``release()``, and ``async with lease:``
    (raises :class:`~sessiondb.LeaseHeld` naming the holder; releases on exit)."""

    def __init__(self, lease: Lease, workers: Workers) -> None:
        self._lease = lease
        self._workers = workers

    @property
    def session_id(self) -> str:
        return self._lease.session_id

    @property
    def ttl(self) -> float:
        return self._lease.ttl

    @property
    def pid(self) -> int:
        """The process the lease is recorded for (the calling one unless given)."""
        return self._lease.pid

    @property
    def resource(self) -> str:
        return self._lease.resource

    @property
    def kind(self) -> str:
        return self._lease.kind

    @property
    def message(self) -> str | None:
        """The refusal from the last acquire that failed, naming the holder."""
        return self._lease.message

    @property
    def last_takeover(self) -> Holder | None:
        return self._lease.last_takeover

    async def acquire(self) -> bool:
        return await self._workers.run(self._lease.acquire)

    async def refresh(self) -> bool:
        return await self._workers.run(self._lease.refresh)

    async def release(self) -> bool:
        return await self._workers.run(self._lease.release)

    async def force_release(self) -> Holder | None:
        return await self._workers.run(self._lease.force_release)

    async def holder(self) -> Holder | None:
        """The live holder (this session or another), or None when the lease is free."""
        return await self._workers.run(lambda: self._lease.holder)

    async def record(self) -> Holder | None:
        """The stored record as it is, stale or not."""
        return await self._workers.run(lambda: self._lease.record)

    async def held(self) -> bool:
        return await self._workers.run(lambda: self._lease.held)

    async def __aenter__(self) -> AsyncStoreLease:
        # The acquire is shielded, and undone if the task was cancelled meanwhile: a lease taken
        # for a body that never runs would stay held until its TTL (tests/aio/test_cancel.py).
        with anyio.CancelScope(shield=True):
            await self._workers.run(self._lease.__enter__)  # LeaseHeld names the holder
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._workers.run(self._lease.release)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):  # a cancelled body still gives the lease back
            await self._workers.run(self._lease.release)

    def __repr__(self) -> str:
        return f"AsyncStoreLease({self.kind!r}, session_id={self.session_id!r}, ttl={self.ttl})"


__all__ = ["AsyncStoreLease"]
