"""Leases kept in a store's own database (``store.lease(name, owner)``): the same API as file
leases, for workers on several machines that share one store.

Every acquire/refresh/release is one ``engine.write()`` transaction (queued admission, then
``BEGIN IMMEDIATE``): the row is read, judged and replaced while no other writer can get in, so
the read-then-write race cannot happen. Across hosts the pid check cannot run; a holder on
another host is stale only past its TTL. The ``leases`` table comes with schema version 4.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from ..core.lease import Holder, LeaseWarning
from .engine import Engine

_COLUMNS = "owner, pid, start_time, host, acquired_at, expires_at, ttl"
# The fencing token of a lease row (lease_fences comes with schema version 6; a file opened
# read-only before its migration has none: 0).
_FENCE = "coalesce((SELECT f.fence FROM lease_fences f WHERE f.name = l.name), 0)"


def _row_to_holder(name: str, row: Any, where: str, fence: int = 0) -> Holder | None:
    owner, pid, start_time, host, acquired_at, expires_at, ttl = row
    try:
        ttl_f = float(ttl)
        return Holder.from_dict(
            {
                "resource": name,
                "session_id": owner,
                "pid": pid,
                "start_time": start_time,
                "host": host,
                "acquired_at": acquired_at,
                "refreshed_at": float(expires_at) - ttl_f,
                "ttl": ttl_f,
                "fence": fence,
            }
        )
    except (TypeError, ValueError) as e:
        warnings.warn(
            LeaseWarning(
                f"{where}: unreadable lease row {name!r} ({e}); treating the lease as stale"
            ),
            stacklevel=4,
        )
        return None


class _StoreSlot:
    """The lease row, inside the write transaction of :meth:`StoreLease.transaction`."""

    def __init__(self, conn: apsw.Connection, lease: StoreLease) -> None:
        self._conn = conn
        self._lease = lease

    def read(self) -> Holder | None:
        name = self._lease.name
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM leases WHERE name = ?", (name,)
        ).fetchall()
        if not rows:
            return None
        return _row_to_holder(name, rows[0], self._lease.where, self.last_fence())

    def now(self) -> float:
        return time.time()

    def last_fence(self) -> int:
        # The current holding's token is always the last one handed out (each new holding
        # takes the next): one row per lease name, kept when the lease is released.
        found = self._conn.execute(
            "SELECT fence FROM lease_fences WHERE name = ?", (self._lease.name,)
        ).get
        return int(found or 0)

    def write(self, holder: Holder) -> None:
        self._conn.execute(
            "INSERT INTO lease_fences(name, fence) VALUES (?, ?)"
            " ON CONFLICT(name) DO UPDATE SET fence = max(fence, excluded.fence)",
            (self._lease.name, holder.fence),
        )
        self._conn.execute(
            f"INSERT OR REPLACE INTO leases(name, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._lease.name,
                holder.session_id,
                holder.pid,
                holder.start_time,
                holder.host,
                holder.acquired_at,
                holder.expires_at,
                holder.ttl,
            ),
        )

    def clear(self) -> None:
        self._conn.execute("DELETE FROM leases WHERE name = ?", (self._lease.name,))


class StoreLease:
    """One named lease in the ``leases`` table (a :class:`~sessiondb.core.lease.LeaseBackend`).
    ``engine`` returns the store's engine once its schema is in place."""

    def __init__(self, engine: Callable[[], Engine], name: str, *, where: str) -> None:
        self._engine = engine
        self.name = name
        self.where = where

    @property
    def resource(self) -> str:
        return self.name

    @property
    def kind(self) -> str:
        return f"lease {self.name!r} in {self.where}"

    @contextmanager
    def transaction(self) -> Iterator[_StoreSlot]:
        with self._engine().write() as conn:
            yield _StoreSlot(conn, self)

    def peek(self) -> Holder | None:
        with self._engine().read() as conn:
            if not _has_table(conn):
                return None
            rows = conn.execute(
                f"SELECT {_COLUMNS}, {_fence(conn)} FROM leases l WHERE name = ?", (self.name,)
            ).fetchall()
        return (
            _row_to_holder(self.name, rows[0][:7], self.where, int(rows[0][7] or 0))
            if rows
            else None
        )


def _fence(conn: apsw.Connection) -> str:
    sql = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'lease_fences'"
    return _FENCE if conn.execute(sql).fetchall() else "0"


def _has_table(conn: apsw.Connection) -> bool:
    # A file of schema version < 4 opened read-only has no leases table: no leases.
    sql = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'leases'"
    return bool(conn.execute(sql).fetchall())


def list_leases(engine: Engine, where: str) -> list[Holder]:
    """Every lease row in the store (stale ones included), oldest first."""
    with engine.read() as conn:
        if not _has_table(conn):
            return []
        rows = conn.execute(
            f"SELECT name, {_COLUMNS}, {_fence(conn)} FROM leases l ORDER BY acquired_at"
        ).fetchall()
    out = [_row_to_holder(str(r[0]), r[1:8], where, int(r[8] or 0)) for r in rows]
    return [h for h in out if h is not None]


__all__ = ["StoreLease", "list_leases"]
