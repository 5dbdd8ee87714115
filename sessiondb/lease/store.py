"""Leases kept in a store's own database: the same API as file leases, for workers on several
machines that share one store.

Every acquire/refresh/release is one ``engine.write()`` transaction (queued admission, then
``BEGIN IMMEDIATE``): the row is read, judged and replaced while no other writer can get in, so
the read-then-write race cannot happen. Across hosts the pid check cannot run; a holder on
another host is stale only past its TTL.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from ..errors import InvalidInput
from ._core import Holder, Lease, LeaseWarning

# The lead may move this into a schema migration; IF NOT EXISTS keeps first use idempotent.
LEASES_DDL = """CREATE TABLE IF NOT EXISTS leases(
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_time INTEGER,
    host TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    ttl REAL NOT NULL
)"""

_COLUMNS = "owner, pid, start_time, host, acquired_at, expires_at, ttl"
MAX_NAME = 1024


class _Engine(Protocol):
    def read(self) -> AbstractContextManager[Any]: ...

    def write(self) -> AbstractContextManager[Any]: ...


def _row_to_holder(name: str, row: Any, where: str) -> Holder | None:
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
    def __init__(self, conn: Any, backend: StoreBackend) -> None:
        self._conn = conn
        self._b = backend

    def read(self) -> Holder | None:
        rows = list(
            self._conn.execute(f"SELECT {_COLUMNS} FROM leases WHERE name = ?", (self._b.name,))
        )
        return _row_to_holder(self._b.name, rows[0], self._b.where) if rows else None

    def write(self, holder: Holder) -> None:
        self._conn.execute(
            f"INSERT OR REPLACE INTO leases(name, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._b.name,
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
        self._conn.execute("DELETE FROM leases WHERE name = ?", (self._b.name,))


class StoreBackend:
    """One named lease in the ``leases`` table of a store's database."""

    def __init__(self, engine: _Engine, name: str, *, where: str) -> None:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME or "\0" in name:
            raise InvalidInput(f"lease name must be 1–{MAX_NAME} characters, no NUL: {name!r}")
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
        with self._engine.write() as conn:
            conn.execute(LEASES_DDL)
            yield _StoreSlot(conn, self)

    def peek(self) -> Holder | None:
        with self._engine.read() as conn:
            if not _has_table(conn):
                return None
            rows = list(conn.execute(f"SELECT {_COLUMNS} FROM leases WHERE name = ?", (self.name,)))
        return _row_to_holder(self.name, rows[0], self.where) if rows else None


def _has_table(conn: Any) -> bool:
    sql = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'leases'"
    return bool(list(conn.execute(sql)))


def _engine_of(store: Any) -> _Engine:
    # A store opened while another process held the write lock migrates on first use
    # (doctrine 10); make sure the schema is in place before the lease touches the file.
    ready = getattr(store, "_ensure_ready", None)
    engine: _Engine = ready() if callable(ready) else store._engine
    return engine


def store_lease(
    store: Any, name: str, owner: str, ttl: float = 300.0, *, pid: int | None = None
) -> Lease:
    """The lease ``name`` for session ``owner``, kept in ``store``'s database
    (``SQLiteStore.lease(name, owner, ttl=…)`` delegates here)."""
    backend = StoreBackend(_engine_of(store), name, where=str(getattr(store, "path", "the store")))
    return Lease(backend, owner, ttl, pid=pid)


def list_store_leases(store: Any) -> list[Holder]:
    """Every lease row in the store (stale ones included), oldest first."""
    engine = _engine_of(store)
    where = str(getattr(store, "path", "the store"))
    with engine.read() as conn:
        if not _has_table(conn):
            return []
        rows = list(conn.execute(f"SELECT name, {_COLUMNS} FROM leases ORDER BY acquired_at"))
    out = [_row_to_holder(r[0], r[1:], where) for r in rows]
    return [h for h in out if h is not None]
