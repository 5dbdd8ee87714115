"""Schema and migrations of the PostgreSQL store.

Migrations are serialised by a row lock on the version table's lock row (``SELECT … FOR
UPDATE``; portable to engines without advisory locks, docs/scale-out.md): each runs in its
own transaction that first takes the lock and re-reads the version, so two processes opening a
new database at the same instant apply each migration exactly once.

The schema keeps to the portable subset of docs/scale-out.md:
no triggers, no custom text-search configuration (the tsvector is built by the client,
sessiondb.core.terms), ``meta`` as the canonical JSON *text* sessiondb produces (``jsonb``
rejects ``\\u0000``, reorders keys and rewrites ``1e2`` as ``100``). The one extension used,
pg_trgm, is optional: it indexes messages with CJK-like text for words of three or more such
characters; without it those searches scan the CJK rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pe
from psycopg import sql

from ..errors import UnsupportedStorage
from .connection import Connections


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[psycopg.Connection[Any]], None]


# Both GIN indexes update themselves in each insert: no pending list, so no flush of one lands
# inside an unlucky append (docs/postgres.md, evidence 8 and "GIN maintenance";
# benchmarks/pg_gin.py). Migrations 2 and 3 bring stores made before to it.
GIN_STORAGE = "fastupdate = off"
GIN_INDEXES = ("messages_search", "messages_cjk_trgm")

_V1 = [
    """CREATE TABLE sessions (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
        session_id    text COLLATE "C" NOT NULL UNIQUE,  -- code point order (session_ids)
        source        text NOT NULL,
        title         text,
        title_nul     integer[],                 -- NUL offsets (text.py)
        meta          text,                      -- canonical JSON text, not jsonb
        created_at    double precision NOT NULL,
        updated_at    double precision NOT NULL,
        ended_at      double precision,
        end_reason    text,
        reason_nul    integer[],
        message_count bigint NOT NULL DEFAULT 0,  -- also the last seq
        revision      bigint NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX sessions_by_activity ON sessions (updated_at DESC, id DESC)",
    "CREATE INDEX sessions_by_source ON sessions (source, updated_at DESC, id DESC)",
    # No foreign key to sessions: a deleted or cleared session's messages stay under its old id
    # until purged in batches (purge_queue), like the SQLite backend's.
    """CREATE TABLE messages (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        sid         bigint NOT NULL,               -- sessions.id
        seq         bigint NOT NULL,
        role        text NOT NULL,
        content     text NOT NULL,
        content_nul integer[],
        key         text,
        meta        text,
        created_at  double precision NOT NULL,
        tsv         tsvector NOT NULL,             -- client-built (core/terms.py)
        nterms      integer NOT NULL,              -- words indexed: BM25's document length
        cjk         boolean NOT NULL,              -- holds text of a script without spaces
        rid         text,                          -- usage rollup: the response of a shared one
        UNIQUE (sid, seq)
    )""",
    "CREATE UNIQUE INDEX messages_by_key ON messages (sid, key) WHERE key IS NOT NULL",
    f"CREATE INDEX messages_search ON messages USING gin (tsv) WITH ({GIN_STORAGE})",
    "CREATE INDEX messages_cjk ON messages (id) WHERE cjk",
    "CREATE INDEX messages_by_response ON messages (sid, rid) WHERE rid IS NOT NULL",
    "CREATE TABLE purge_queue (sid bigint PRIMARY KEY)",
    """CREATE TABLE leases (
        name        text PRIMARY KEY,
        owner       text NOT NULL,
        pid         integer NOT NULL,
        start_time  bigint,
        host        text NOT NULL,
        acquired_at double precision NOT NULL,
        expires_at  double precision NOT NULL,
        ttl         double precision NOT NULL,
        fence       bigint NOT NULL DEFAULT 0      -- the last fencing token handed out
    )""",
    """CREATE TABLE activity (
        sid bigint NOT NULL, day integer NOT NULL, model text NOT NULL,
        messages bigint NOT NULL DEFAULT 0,
        input_tokens bigint NOT NULL DEFAULT 0, output_tokens bigint NOT NULL DEFAULT 0,
        cache_read_tokens bigint NOT NULL DEFAULT 0, cache_write_tokens bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (sid, day, model))""",
    "CREATE INDEX activity_by_day ON activity (day)",
    """CREATE TABLE responses (
        sid bigint NOT NULL, response_id text NOT NULL, day integer NOT NULL, model text NOT NULL,
        input_tokens bigint NOT NULL DEFAULT 0, output_tokens bigint NOT NULL DEFAULT 0,
        cache_read_tokens bigint NOT NULL DEFAULT 0, cache_write_tokens bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (sid, response_id))""",
]


def _v1(conn: psycopg.Connection[Any]) -> None:
    conn.execute("; ".join(_V1))  # one round trip: a new store (a test's schema) opens quickly
    trgm = trigram_schema(conn)
    if trgm is not None:
        # Partial: only messages with CJK-like text (a full-content trigram index took 12.4 s
        # for one search at 1 M messages, docs/postgres.md, evidence 6).
        conn.execute(
            sql.SQL(
                "CREATE INDEX messages_cjk_trgm ON messages USING gin (content {}.gin_trgm_ops)"
                " WITH ({}) WHERE cjk"
            ).format(sql.Identifier(trgm), sql.SQL(GIN_STORAGE))
        )


def _gin_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """The store's GIN indexes (no trigram one when pg_trgm was missing at its creation)."""
    rows = conn.execute(
        "SELECT n FROM unnest(%s::text[]) AS n WHERE to_regclass(n) IS NOT NULL",
        (list(GIN_INDEXES),),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _v2(conn: psycopg.Connection[Any]) -> None:
    """``fastupdate = off`` on a store made before it was the rule for both GIN indexes (the
    trigram index had PostgreSQL's default, ``on``). ``ALTER INDEX … SET (fastupdate …)`` takes
    an ACCESS EXCLUSIVE lock on the index, so appends wait for it: this transaction does only
    the catalog change, and the pending entries are flushed by migration 3."""
    for name in _gin_indexes(conn):
        conn.execute(
            sql.SQL("ALTER INDEX {} SET ({})").format(sql.Identifier(name), sql.SQL(GIN_STORAGE))
        )


def _v3(conn: psycopg.Connection[Any]) -> None:
    """``ALTER INDEX`` does not flush what is already pending: ``gin_clean_pending_list`` moves
    it into the index now, in the migration rather than in some later append, under the ROW
    EXCLUSIVE lock appends take too (they go on meanwhile). A no-op on an empty pending list."""
    for name in _gin_indexes(conn):
        conn.execute("SELECT gin_clean_pending_list(to_regclass(%s))", (name,))


def _v4(conn: psycopg.Connection[Any]) -> None:
    """Who waits for notifications (notify.py): writers send none while nobody does."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS listeners"
        " (pid integer PRIMARY KEY, since double precision NOT NULL)"
    )


MIGRATIONS: list[Migration] = [
    Migration(1, "sessions, messages, search, leases, rollup", _v1),
    Migration(2, "GIN indexes without a pending list (fastupdate = off)", _v2),
    Migration(3, "GIN pending lists flushed", _v3),
    Migration(4, "listeners of notifications", _v4),
]
LATEST = max(m.version for m in MIGRATIONS)

_BOOTSTRAP = (
    "CREATE TABLE IF NOT EXISTS sessiondb_schema ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
)


def trigram_schema(conn: psycopg.Connection[Any]) -> str | None:
    """The schema pg_trgm is installed in, or None (then CJK words of 3+ characters scan)."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_trgm'"
    ).fetchone()
    return None if row is None else str(row[0])


def current_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('sessiondb_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM sessiondb_schema").fetchone()
    return int(row[0]) if row else 0


def _bootstrap(conns: Connections) -> None:
    """The version table and its lock row (version 0); concurrent first opens may race on the
    catalog, so a unique violation there means another process made it: try once more."""
    for attempt in range(3):
        try:
            with conns.write() as conn:
                conn.execute(_BOOTSTRAP)
                conn.execute(
                    "INSERT INTO sessiondb_schema VALUES (0, 'lock row', extract(epoch from now()))"
                    " ON CONFLICT DO NOTHING"
                )
            return
        except Exception as e:  # a sessiondb Error wrapping the catalog race
            if attempt == 2 or not _catalog_race(e):
                raise


def _catalog_race(e: BaseException) -> bool:
    cause = e.__cause__ or e.__context__
    return isinstance(cause, (pe.UniqueViolation, pe.DuplicateTable)) or "already exists" in str(e)


def migrate(conns: Connections) -> int:
    """Bring the database up to :data:`LATEST`; returns the version found before."""
    with conns.read() as conn:
        found = current_version(conn)
    if found > LATEST:
        raise UnsupportedStorage(
            f"{conns.where} has schema version {found}, newer than this sessiondb supports "
            f"({LATEST}); upgrade sessiondb to use it"
        )
    if found == LATEST:
        return found
    _bootstrap(conns)
    for m in MIGRATIONS:
        if m.version <= found:
            continue
        with conns.write() as conn:
            conn.execute("SET LOCAL lock_timeout = 0")  # a migration waits for the one before
            conn.execute("SELECT 1 FROM sessiondb_schema WHERE version = 0 FOR UPDATE")
            if current_version(conn) >= m.version:
                continue
            m.apply(conn)
            conn.execute(
                "INSERT INTO sessiondb_schema VALUES (%s, %s, extract(epoch from now()))",
                (m.version, m.name),
            )
    return found


__all__ = [
    "GIN_INDEXES",
    "GIN_STORAGE",
    "LATEST",
    "MIGRATIONS",
    "current_version",
    "migrate",
    "trigram_schema",
]
