"""Schema and migrations of the SQLite store.

Each migration runs in its own write transaction and first re-reads the version inside it, so
two processes opening a new file at the same instant apply each migration exactly once (the
second one finds the work done). A migration may also name a ``backfill``: bulk work that must
not run in one long transaction (docs/design.md rule 5), done afterwards in bounded batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import apsw

from ..errors import UnsupportedStorage
from . import fts, fts_v3, rollup, selfindex
from .engine import Engine


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[apsw.Connection], None]
    # Called repeatedly outside any transaction until it returns False (no more work).
    backfill: Callable[[Engine], bool] | None = None


def _v1_core(conn: apsw.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE sessions (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: see delete_session
            session_id    TEXT NOT NULL UNIQUE,
            source        TEXT NOT NULL,
            title         TEXT,
            meta          TEXT,
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            ended_at      REAL,
            end_reason    TEXT,
            message_count INTEGER NOT NULL DEFAULT 0           -- also the last seq
        );
        CREATE INDEX sessions_by_activity ON sessions(updated_at DESC);
        CREATE INDEX sessions_by_source ON sessions(source, updated_at DESC);
        CREATE TABLE messages (
            id         INTEGER PRIMARY KEY,
            sid        INTEGER NOT NULL,                        -- sessions.id
            seq        INTEGER NOT NULL,
            role       TEXT NOT NULL,
            content    TEXT NOT NULL,
            key        TEXT,
            meta       TEXT,
            created_at REAL NOT NULL,
            UNIQUE (sid, seq)
        );
        CREATE UNIQUE INDEX messages_by_key ON messages(sid, key) WHERE key IS NOT NULL;
        -- Sessions deleted whose messages are still being removed in batches (rule 5);
        -- a crash mid-way leaves the row here and the next delete or open finishes the job.
        CREATE TABLE purge_queue (sid INTEGER PRIMARY KEY);
        """
    )


def _v4_removal_and_leases(conn: apsw.Connection) -> None:
    # revision: bumped by pop_message / clear_session (docs/design.md, "Removing messages").
    # leases: store leases, created here instead of on first use (files that used leases
    # before this migration already have the table).
    conn.execute(
        """
        ALTER TABLE sessions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE IF NOT EXISTS leases(
            name TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            pid INTEGER NOT NULL,
            start_time INTEGER,
            host TEXT NOT NULL,
            acquired_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            ttl REAL NOT NULL
        );
        """
    )


def _v6_lease_fences(conn: apsw.Connection) -> None:
    # The last fencing token handed out per lease, kept when the lease is released (the row of
    # `leases` goes): the next holder always gets a larger one (sessiondb/core/lease.py).
    conn.execute(
        "CREATE TABLE IF NOT EXISTS lease_fences(name TEXT PRIMARY KEY, fence INTEGER NOT NULL)"
    )


def _v8_combine_acks(conn: apsw.Connection) -> None:
    # What a head of cross-process combining committed for other processes, one row per group
    # (token -> the requests' tokens and seqs), kept until its answers are delivered
    # (sqlite/combine.py; docs/adr/0018-cross-process-combining.md).
    conn.execute(
        "CREATE TABLE IF NOT EXISTS combine_acks("
        " token TEXT PRIMARY KEY, at REAL NOT NULL, body TEXT NOT NULL) WITHOUT ROWID"
    )


MIGRATIONS: list[Migration] = [
    Migration(1, "sessions and messages", _v1_core),
    Migration(2, "full-text search index", fts.create, backfill=fts.backfill_step),
    Migration(3, "two-character CJK words indexed", fts_v3.upgrade, backfill=fts_v3.backfill_step),
    Migration(4, "session revision; leases table", _v4_removal_and_leases),
    Migration(5, "usage rollup for stats", rollup.create, backfill=rollup.backfill_step),
    Migration(6, "lease fencing tokens", _v6_lease_fences),
    Migration(7, "search index written set-based by the store", selfindex.upgrade),
    Migration(8, "acks of cross-process combining", _v8_combine_acks),
]

LATEST = max(m.version for m in MIGRATIONS)


def current_version(conn: apsw.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type='table' AND name='schema_version'"
    ).get
    if not exists:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").get
    return int(row or 0)


def migrate(engine: Engine) -> int:
    """Bring the file up to ``LATEST``; returns the version found before migrating."""
    with engine.read() as conn:
        found = current_version(conn)
    if found > LATEST:
        raise UnsupportedStorage(
            f"{engine.path} has schema version {found}, newer than this sessiondb supports "
            f"({LATEST}); upgrade sessiondb to use it"
        )
    for m in MIGRATIONS:
        if m.version <= found:
            continue
        with engine.write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            if current_version(conn) >= m.version:
                continue
            m.apply(conn)
            conn.execute(
                "INSERT INTO schema_version(version, name, applied_at)"
                " VALUES (?, ?, unixepoch('subsec'))",
                (m.version, m.name),
            )
    for m in MIGRATIONS:
        if m.backfill is not None:
            while m.backfill(engine):
                pass
    return found
