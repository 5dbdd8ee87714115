"""Leases kept in a PostgreSQL store (``store.lease(name, owner)``): the same API as file leases,
for workers on several machines that share one store.

A lease is a row of ``leases``. Every acquire/refresh/release is one write transaction that
first makes sure the row exists (``INSERT … ON CONFLICT DO NOTHING``, which waits for a
concurrent creator) and then locks it (``SELECT … FOR UPDATE``): the row is read, judged and
replaced while every other process waits on that lock, so the read-then-write race cannot
happen. Session advisory locks are not used: a SIGSTOPped holder or a vanished host kept one for
ever, and through pgbouncer in transaction mode one leaked (docs/postgres.md, evidence 9). Releasing
a lease empties the row rather than deleting it (``owner = ''``): the row stays as the lock, with
the lease's fencing token, which every new holding raises (the current holder's token is the
largest ever handed out: a resource that remembers the largest it saw refuses a late one).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from ..core.lease import Holder, LeaseWarning
from .connection import Connections

_COLUMNS = "owner, pid, start_time, host, acquired_at, expires_at, ttl, fence"


def _holder(name: str, row: Any, where: str) -> Holder | None:
    owner, pid, start_time, host, acquired_at, expires_at, ttl, fence = row
    if owner == "":
        return None  # released: the row stays as the lease's lock
    try:
        ttl_f = float(ttl)
        return Holder.from_dict(
            {
                "resource": name,
                "session_id": owner,
                "pid": pid,
                "start_time": None if start_time is None else int(start_time),
                "host": host,
                "acquired_at": float(acquired_at),
                "refreshed_at": float(expires_at) - ttl_f,
                "ttl": ttl_f,
                "fence": int(fence),
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


class _Slot:
    """The lease row, locked, inside the write transaction of :meth:`StoreLease.transaction`."""

    def __init__(self, conn: psycopg.Connection[Any], lease: StoreLease) -> None:
        self._conn = conn
        self._lease = lease

    def read(self) -> Holder | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM leases WHERE name = %s", (self._lease.name,)
        ).fetchone()
        return None if row is None else _holder(self._lease.name, row, self._lease.where)

    def now(self) -> float:
        # The server's clock, read after the row lock was granted (the transaction took it
        # first): computed before the lock, expiries let two holders overlap in 2 of 5 race
        # runs; after it, in none (docs/postgres.md, evidence 9). Holders on several machines agree.
        found = self._conn.execute("SELECT extract(epoch from clock_timestamp())").fetchone()
        assert found is not None
        return float(found[0])

    def last_fence(self) -> int:
        found = self._conn.execute(
            "SELECT fence FROM leases WHERE name = %s", (self._lease.name,)
        ).fetchone()
        return 0 if found is None else int(found[0])

    def write(self, holder: Holder) -> None:
        self._conn.execute(
            "UPDATE leases SET owner = %s, pid = %s, start_time = %s, host = %s,"
            " acquired_at = %s, expires_at = %s, ttl = %s, fence = greatest(fence, %s)"
            " WHERE name = %s",
            (
                holder.session_id,
                holder.pid,
                holder.start_time,
                holder.host,
                holder.acquired_at,
                holder.expires_at,
                holder.ttl,
                holder.fence,
                self._lease.name,
            ),
        )

    def clear(self) -> None:
        self._conn.execute(
            "UPDATE leases SET owner = '', expires_at = 0 WHERE name = %s", (self._lease.name,)
        )


class StoreLease:
    """One named lease in the ``leases`` table (a :class:`~sessiondb.core.lease.LeaseBackend`)."""

    def __init__(self, conns: Connections, name: str) -> None:
        self._conns = conns
        self.name = name
        self.where = conns.where

    @property
    def resource(self) -> str:
        return self.name

    @property
    def kind(self) -> str:
        return f"lease {self.name!r} in {self.where}"

    @contextmanager
    def transaction(self) -> Iterator[_Slot]:
        with self._conns.write() as conn:
            conn.execute(
                "INSERT INTO leases (name, owner, pid, host, acquired_at, expires_at, ttl)"
                " VALUES (%s, '', 0, '', 0, 0, 1) ON CONFLICT (name) DO NOTHING",
                (self.name,),
            )
            conn.execute("SELECT 1 FROM leases WHERE name = %s FOR UPDATE", (self.name,))
            yield _Slot(conn, self)

    def peek(self) -> Holder | None:
        with self._conns.read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM leases WHERE name = %s", (self.name,)
            ).fetchone()
        return None if row is None else _holder(self.name, row, self.where)


def list_leases(conns: Connections) -> list[Holder]:
    """Every lease held or left stale in the store, oldest first (released ones are not)."""
    with conns.read() as conn:
        rows = conn.execute(
            f"SELECT name, {_COLUMNS} FROM leases WHERE owner <> '' ORDER BY acquired_at, name"
        ).fetchall()
    out = [_holder(str(r[0]), r[1:], conns.where) for r in rows]
    return [h for h in out if h is not None]


__all__ = ["StoreLease", "list_leases"]
