"""sessiondb: one durable, searchable home for AI agents' sessions and transcripts."""

from __future__ import annotations

import os

from .errors import (
    CorruptDatabase,
    Error,
    InvalidInput,
    KeyConflict,
    LeaseHeld,
    QueryError,
    SessionExists,
    SessionNotFound,
    StoreBusy,
    UnsupportedStorage,
)
from .models import BadLine, Check, HealthReport, Hit, ImportReport, Message, Session
from .sqlite.store import SQLiteStore

__version__ = "0.1.0"

Store = SQLiteStore


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    durability: str = "normal",
    journal_mode: str = "auto",
    write_timeout: float = 30.0,
) -> SQLiteStore:
    """Open (creating if needed) the store at ``path``.

    ``path`` defaults to ``$SESSIONDB_PATH``, else ``sessions.db`` in the platform data folder.
    ``durability="normal"`` survives any application crash and may lose the last transactions
    on power loss; ``"full"`` syncs every commit. ``journal_mode="auto"`` picks WAL on local disks
    and the rollback journal on network and VM mounts. A write that cannot get in within
    ``write_timeout`` seconds raises ``StoreBusy``.
    """
    if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
        raise UnsupportedStorage(
            "this sessiondb has no PostgreSQL backend yet; use a SQLite file path"
        )
    from .sqlite.store import open_store

    return open_store(
        path, durability=durability, journal_mode=journal_mode, write_timeout=write_timeout
    )


__all__ = [
    "BadLine",
    "Check",
    "CorruptDatabase",
    "Error",
    "HealthReport",
    "Hit",
    "ImportReport",
    "InvalidInput",
    "KeyConflict",
    "LeaseHeld",
    "Message",
    "QueryError",
    "SQLiteStore",
    "Session",
    "SessionExists",
    "SessionNotFound",
    "Store",
    "StoreBusy",
    "UnsupportedStorage",
    "__version__",
    "open",
]
