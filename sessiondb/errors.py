"""The error hierarchy of sessiondb: every failure a caller can see derives from :class:`Error`.

No raw driver exception (apsw, psycopg, OSError from the engine's own files) escapes the public
API; engines translate them here, adding the file, session or holder that the reader needs.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every sessiondb error."""


class StoreBusy(Error):
    """A write could not get in within ``write_timeout``.

    ``holder_pid`` names the process holding the write lock when it could be found.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        holder_pid: int | None = None,
        waited: float | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid
        self.waited = waited


class SessionNotFound(Error):
    """An operation on one existing session named a session that does not exist."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found")
        self.session_id = session_id


class SessionExists(Error):
    """``create_session`` named a session id that is already taken."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists (use ensure_session to reuse it)")
        self.session_id = session_id


class KeyConflict(Error):
    """The same ``(session_id, key)`` was appended again with different content."""

    def __init__(self, session_id: str, key: str, seq: int | None) -> None:
        where = (
            f"is already stored as seq {seq}" if seq is not None else "appears twice in one batch"
        )
        super().__init__(
            f"key {key!r} in session {session_id!r} {where} with different role, content or meta"
        )
        self.session_id = session_id
        self.key = key
        self.seq = seq


class StaleSession(Error):
    """A conditional append (``expect_last=N``) found the session's last seq no longer N:
    another writer appended or removed messages since the caller read it. Nothing was written;
    re-read the session and decide again."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"session {session_id!r} ends at seq {actual}, not {expected} as expected: it changed "
            "since it was read — re-read it and retry"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


class InvalidInput(Error, ValueError):
    """An argument is not acceptable; the message names the field."""


class QueryError(InvalidInput):
    """A ``mode="fts"`` search query is malformed."""


class CorruptDatabase(Error):
    """The file is not a usable sessiondb database; ``hint`` says what to do (by default: the
    repair command, which keeps a copy of the damaged file)."""

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        if hint is None:
            hint = f"run `sessiondb doctor --repair {path}` (it keeps a copy of the damaged file)"
        super().__init__(f"{path}: {reason} — {hint}")
        self.path = path
        self.reason = reason


class StoreNotFound(Error):
    """A store opened read-only (or a command that never creates one) found nothing there."""

    def __init__(self, location: str, detail: str = "no sessiondb store there") -> None:
        super().__init__(
            f"{location}: {detail} — check the path (--db, $SESSIONDB_PATH); "
            "opening read-only never creates a store"
        )
        self.location = location


class ConnectionLost(Error):
    """The connection to a database server broke while a request was in flight: a write may or
    may not have been committed. An append with a key can be sent again safely (the key returns
    the stored message); one without a key cannot be retried blindly (it could be stored twice).
    """


class ReadOnlyStore(Error):
    """A write was asked of a store opened with ``readonly=True``."""


class UnsupportedStorage(Error):
    """The storage cannot serve the request (newer schema, missing SQLite feature, bad URL)."""


class LeaseHeld(Error):
    """A lease is held by another owner; the message names the holder."""

    def __init__(self, message: str, holder: object | None = None) -> None:
        super().__init__(message)
        self.holder = holder


__all__ = [
    "ConnectionLost",
    "CorruptDatabase",
    "Error",
    "InvalidInput",
    "KeyConflict",
    "LeaseHeld",
    "QueryError",
    "ReadOnlyStore",
    "SessionExists",
    "SessionNotFound",
    "StaleSession",
    "StoreBusy",
    "StoreNotFound",
    "UnsupportedStorage",
]
