"""sessiondb: one durable, searchable home for AI agents' sessions and transcripts.

``import sessiondb`` loads the errors only; the value types and the ``Store`` protocol load on
first use (PEP 562), and a backend when a store is opened: agents' hooks and one-shot scripts
start in a few milliseconds (benchmarks/startup.py).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import (
    ConnectionLost,
    CorruptDatabase,
    Error,
    InvalidInput,
    KeyConflict,
    LeaseHeld,
    QueryError,
    ReadOnlyStore,
    SessionExists,
    SessionNotFound,
    StaleSession,
    StoreBusy,
    StoreNotFound,
    UnsupportedStorage,
)
from .version import __version__

if TYPE_CHECKING:
    from . import aio as aio
    from .core.async_contract import AsyncStore
    from .core.blocks import Block
    from .core.contract import Backend, Store
    from .models import (
        BadLine,
        Check,
        DayStats,
        HealthReport,
        Hit,
        ImportReport,
        Message,
        PruneReport,
        Session,
        Stats,
        Tokens,
        Usage,
    )

_URL_SCHEMES = ("postgresql://", "postgres://")
_LAZY = {
    "Store": "core.contract",
    "AsyncStore": "core.async_contract",
    "Block": "core.blocks",
    "BadLine": "models",
    "Check": "models",
    "HealthReport": "models",
    "Hit": "models",
    "ImportReport": "models",
    "Message": "models",
    "PruneReport": "models",
    "Session": "models",
    "Stats": "models",
    "DayStats": "models",
    "Tokens": "models",
    "Usage": "models",
}


def __getattr__(name: str) -> Any:
    from importlib import import_module

    if name == "aio":  # the async API loads anyio: only when it is used
        return import_module(".aio", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sessiondb' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def open(
    location: str | os.PathLike[str] | None = None,
    *,
    readonly: bool = False,
    group_commit: bool | None = None,
    **options: Any,
) -> Store:
    """Open the store at ``location``: a SQLite file path (created when missing, unless
    ``readonly``), or a ``postgresql://`` URL.

    ``location`` defaults to ``$SESSIONDB_PATH``, else ``sessions.db`` in the platform data
    folder. ``readonly=True`` never creates, migrates or writes anything; a missing store raises
    ``StoreNotFound`` and a write raises ``ReadOnlyStore``.

    SQLite options: ``durability="normal"`` survives any application crash and may lose the last
    transactions on power loss, ``"full"`` syncs every commit; ``journal_mode="auto"`` picks WAL
    on local disks and the rollback journal on network and VM mounts; a write that cannot get in
    within ``write_timeout`` seconds (default 30) raises ``StoreBusy``.

    ``group_commit``: whether appends made at the same moment by several threads (or async
    tasks) of this process share one transaction, each returning once it is committed — on by
    default on SQLite, off on PostgreSQL (docs/adr/0011-group-commit.md).
    """
    from .core.store import SessionStore

    backend = open_backend(location, readonly=readonly, **options)
    return SessionStore(backend, group_commit=group_commit)


def open_backend(
    location: str | os.PathLike[str] | None, *, readonly: bool = False, **options: Any
) -> Backend:
    """The backend serving ``location`` (what :func:`open` wraps in the one Store)."""
    if isinstance(location, str) and location.startswith(_URL_SCHEMES):
        try:
            from .postgres.backend import PostgresBackend
        except ImportError as e:  # psycopg is the optional extra "postgres"
            raise UnsupportedStorage(
                f"a postgresql:// store needs psycopg: pip install 'sessiondb[postgres]' ({e})"
            ) from None
        return PostgresBackend.open(location, readonly=readonly, **options)
    from .sqlite.backend import SQLiteBackend

    return SQLiteBackend.open(location, readonly=readonly, **options)


__all__ = [
    "AsyncStore",
    "BadLine",
    "Block",
    "Check",
    "ConnectionLost",
    "CorruptDatabase",
    "DayStats",
    "Error",
    "HealthReport",
    "Hit",
    "ImportReport",
    "InvalidInput",
    "KeyConflict",
    "LeaseHeld",
    "Message",
    "PruneReport",
    "QueryError",
    "ReadOnlyStore",
    "Session",
    "SessionExists",
    "SessionNotFound",
    "StaleSession",
    "Stats",
    "Store",
    "StoreBusy",
    "StoreNotFound",
    "Tokens",
    "UnsupportedStorage",
    "Usage",
    "__version__",
    "open",
]
