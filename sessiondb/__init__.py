"""sessiondb: one durable, searchable home for AI agents' sessions and transcripts."""

from __future__ import annotations

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

__version__ = "0.1.0"

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
    "Session",
    "SessionExists",
    "SessionNotFound",
    "StoreBusy",
    "UnsupportedStorage",
    "__version__",
]
