"""psycopg's exceptions translated into sessiondb.errors: no driver exception leaves the backend
(sessiondb/core/contract.py).

* ``lock_timeout`` / ``statement_timeout`` / too many connections / the server starting or
  shutting down -> :class:`~sessiondb.errors.StoreBusy`, naming the backend most likely in the
  way (the oldest other transaction holding a transaction id: the lock wait is over when the
  error arrives, so ``pg_blocking_pids()`` of our own pid no longer says who blocked us);
* the connection lost while a write was in flight -> :class:`~sessiondb.errors.ConnectionLost`:
  the commit may or may not have happened, and only a keyed append can safely be sent again
  (the key returns the stored message: docs/postgres.md, evidence 4);
* a unique violation on a session id -> :class:`~sessiondb.errors.SessionExists`;
* anything else -> :class:`~sessiondb.errors.Error` with the server's message.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pe

from ..errors import ConnectionLost, Error, SessionExists, StoreBusy

# SQLSTATEs that mean "could not get in in time": retrying later may work.
_BUSY = (
    pe.LockNotAvailable,  # 55P03 lock_timeout
    pe.QueryCanceled,  # 57014 statement_timeout
    pe.TooManyConnections,  # 53300
    pe.CannotConnectNow,  # 57P03 starting up / shutting down
)
# Transient conflicts between transactions (bounded retry by the caller, else StoreBusy).
RETRYABLE = (pe.SerializationFailure, pe.DeadlockDetected)

# The oldest other transaction holding a lock on this store's tables (a row lock takes one on its
# table: FOR UPDATE a RowShareLock), else the oldest holding a transaction id at all: a server
# shared by several stores has long transactions that are not in this store's way.
_BLOCKER_SQL = (
    "SELECT pid, application_name, host(client_addr), now() - xact_start"
    " FROM pg_stat_activity a WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND backend_xid IS NOT NULL ORDER BY EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
    " AND l.granted AND l.relation IN (SELECT to_regclass(coalesce(quote_ident(%(schema)s) || '.',"
    " '') || t) FROM unnest(ARRAY['sessions', 'messages', 'leases']) t)) DESC, xact_start LIMIT 1"
)


def _blocker(conn: Any, schema: str | None) -> tuple[int | None, str]:
    """Who most likely held us up: ``(pid, description)``; ``(None, "")`` when unknown."""
    if conn is None or conn.closed or conn.broken:
        return None, ""
    try:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        row = conn.execute(_BLOCKER_SQL, {"schema": schema}).fetchone()
    except psycopg.Error:
        return None, ""
    if row is None:
        return None, ""
    pid, app, addr, age = row
    who = f"backend pid {pid}"
    if app:
        who += f" ({app})"
    if addr:
        who += f" from {addr}"
    if age is not None:
        who += f", in its transaction for {age.total_seconds():.1f} s"
    return int(pid), who


def translate(
    e: BaseException,
    where: str,
    conn: Any = None,
    waited: float | None = None,
    schema: str | None = None,
) -> Error:
    """The sessiondb error for the psycopg exception ``e`` (``where``: the store's location,
    ``schema``: its schema, for naming who held it up)."""
    if isinstance(e, Error):
        return e
    if isinstance(e, pe.UniqueViolation) and _constraint(e) == "sessions_session_id_key":
        return SessionExists(_session_of(e))
    if isinstance(e, (*_BUSY, *RETRYABLE)):
        pid, who = _blocker(conn, schema)
        hint = f"; most likely in the way: {who}" if who else ""
        return StoreBusy(
            f"{where}: PostgreSQL could not let this write in ({_first_line(e)}){hint}"
            " — retry later, or find the long transaction with `sessiondb doctor`",
            path=where,
            holder_pid=pid,
            waited=waited,
        )
    if isinstance(e, psycopg.OperationalError):
        return ConnectionLost(
            f"{where}: connection to PostgreSQL lost ({_first_line(e)}); a write in flight may"
            " or may not have been committed — appends with a key can be sent again safely"
        )
    if isinstance(e, psycopg.Error):
        return Error(f"{where}: PostgreSQL error: {_first_line(e)}")
    return Error(f"{where}: {e}")


def _constraint(e: psycopg.Error) -> str | None:
    diag = getattr(e, "diag", None)
    return None if diag is None else diag.constraint_name


def _session_of(e: psycopg.Error) -> str:
    # "Key (session_id)=(abc) already exists." — the id is validated text without controls.
    detail = getattr(getattr(e, "diag", None), "message_detail", None) or ""
    start, end = detail.find(")=("), detail.rfind(") already exists")
    return detail[start + 3 : end] if 0 <= start < end else "?"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


__all__ = ["RETRYABLE", "translate"]
