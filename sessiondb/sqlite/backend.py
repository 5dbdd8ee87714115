"""The SQLite backend: the Store contract's primitives on one SQLite file.

Every transaction goes through :class:`~sessiondb.sqlite.engine.Engine` (connections, admission,
checkpoints, error translation). ``seq`` is allocated inside the write transaction from the
session row — ``message_count`` is also the last seq — so it is gapless per session whatever
the number of writers; :meth:`SQLiteTx.insert_messages` is the set-based batch insert (one seq
allocation and a few multi-row inserts per batch, sqlite/insert.py).

Removed messages (a deleted or cleared session) leave the session at once and are deleted
afterwards in short write transactions by sqlite/purge.py (``purge_queue``; docs/design.md
rule 5): a crash mid-way is finished by the next open.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import apsw

from ..errors import Error, InvalidInput, StoreBusy, StoreNotFound, UnsupportedStorage
from ..models import HealthReport, Message, Session
from . import deferred, insert, purge, schema
from .engine import Engine
from .purge import PURGE_BATCH
from .rows import MESSAGE_COLUMNS, SESSION_COLUMNS, SESSION_COLUMNS_V3, message_of, session_of

if TYPE_CHECKING:
    from ..core.append import Item
    from ..core.contract import SessionField, SessionRef
    from ..core.lease import Holder
    from ..core.search import SearchRequest
    from ..core.stats import ActivityRow
    from .changes import DataVersion
    from .leases import StoreLease

#: Columns ``update_session`` may set, by the contract's field names (never built from input).
_SESSION_FIELDS: dict[str, str] = {
    "title": "title = ?",
    "meta": "meta = ?",
    "ended_at": "ended_at = ?",
    "end_reason": "end_reason = ?",
    "created_at": "created_at = ?",
    "updated_at": "updated_at = ?",
}


def _one(cursor: apsw.Cursor) -> tuple[Any, ...]:
    """The one row a statement must return (an aggregate, or a row this transaction holds)."""
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)


class SQLiteTx:
    """One transaction's view of the file (the contract's ``ReadTx`` / ``WriteTx``)."""

    __slots__ = ("_cols", "conn", "defer")

    def __init__(self, conn: apsw.Connection, session_columns: str, defer: bool = False) -> None:
        self.conn = conn
        self._cols = session_columns
        #: a bulk import's transaction (``write_deferred``): inserts may leave their search
        #: index to the backfill window (docs/adr/0015-bulk-import.md)
        self.defer = defer

    # -- reads ----------------------------------------------------------------------------------

    def session_ref(self, session_id: str) -> SessionRef | None:
        row = self.conn.execute("SELECT id FROM sessions WHERE session_id = ?", (session_id,)).get
        return None if row is None else int(row)

    def session_refs(self, session_ids: Sequence[str]) -> dict[str, SessionRef]:
        if len(session_ids) == 1:
            ref = self.session_ref(session_ids[0])
            return {} if ref is None else {session_ids[0]: ref}
        # The ids travel as one JSON array (strings round-trip exactly through SQLite's JSON).
        rows = self.conn.execute(
            "SELECT session_id, id FROM sessions"
            " WHERE session_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(session_ids)),),
        )
        return {str(sid): int(ref) for sid, ref in rows}

    def session(self, session_id: str) -> Session | None:
        row = self.conn.execute(
            f"SELECT {self._cols} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else session_of(row)

    def sessions(self, source: str | None, limit: int, offset: int) -> list[Session]:
        where, args = ("WHERE source = ?", (source,)) if source is not None else ("", ())
        rows = self.conn.execute(
            f"SELECT {self._cols} FROM sessions {where}"
            " ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return [session_of(r) for r in rows]

    def session_ids(self, after: str | None, limit: int) -> list[str]:
        # session_id is TEXT with the BINARY collation: UTF-8 byte order, i.e. code point order.
        rows = self.conn.execute(
            "SELECT session_id FROM sessions WHERE session_id > ? ORDER BY session_id LIMIT ?",
            ("" if after is None else after, limit),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def stale_sessions(
        self, cutoff: float, source: str | None, after: str | None, limit: int
    ) -> list[Session]:
        where, args = ("AND source = ?", (source,)) if source is not None else ("", ())
        rows = self.conn.execute(
            f"SELECT {self._cols} FROM sessions WHERE updated_at < ? {where}"
            " AND session_id > ? ORDER BY session_id LIMIT ?",
            (cutoff, *args, "" if after is None else after, limit),
        ).fetchall()
        return [session_of(r) for r in rows]

    def message_bytes(self, session_id: str) -> int:
        # octet_length reads a value's size from the record header, not the value itself
        # (SQLite >= 3.43): this walks the session's rows, never their overflow pages.
        return int(
            self.conn.execute(
                "SELECT coalesce(sum(octet_length(m.content) + coalesce(octet_length(m.key), 0)"
                " + coalesce(octet_length(m.meta), 0)), 0)"
                " FROM messages m JOIN sessions s ON s.id = m.sid WHERE s.session_id = ?",
                (session_id,),
            ).get
        )

    def totals(self) -> tuple[int, int]:
        n, total = _one(
            self.conn.execute("SELECT count(*), coalesce(sum(message_count), 0) FROM sessions")
        )
        return int(n), int(total)

    def session_count(self, source: str | None) -> int:
        if source is None:
            return int(self.conn.execute("SELECT count(*) FROM sessions").get)
        return int(
            self.conn.execute("SELECT count(*) FROM sessions WHERE source = ?", (source,)).get
        )

    def message_count(self, session_id: str) -> int:
        row = self.conn.execute(
            "SELECT message_count FROM sessions WHERE session_id = ?", (session_id,)
        ).get
        return 0 if row is None else int(row)

    def messages(
        self, session_id: str, after: int, limit: int, newest: bool = False
    ) -> list[Message]:
        order = "DESC" if newest else ""
        rows = self.conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.sid"
            f" WHERE s.session_id = ? AND m.seq > ? ORDER BY m.seq {order} LIMIT ?",
            (session_id, after, limit),
        ).fetchall()
        out = [message_of(r) for r in rows]
        if newest:
            out.reverse()
        return out

    def messages_by_key(
        self, ref: SessionRef, session_id: str, keys: Sequence[str]
    ) -> dict[str, Message]:
        cols = "?, seq, role, content, key, meta, created_at"
        if len(keys) == 1:
            found = self.conn.execute(
                f"SELECT {cols} FROM messages WHERE sid = ? AND key = ?",
                (session_id, ref, keys[0]),
            ).fetchall()
        else:
            found = self.conn.execute(
                f"SELECT {cols} FROM messages"
                " WHERE sid = ? AND key IN (SELECT value FROM json_each(?))",
                (session_id, ref, json.dumps(list(keys))),
            ).fetchall()
        return {m.key: m for m in map(message_of, found) if m.key is not None}

    def neighbours(
        self, hits: Sequence[Message], context: int
    ) -> list[tuple[list[Message], list[Message]]]:
        wanted = json.dumps([[m.session_id, m.seq] for m in hits])
        found: list[Any] = self.conn.execute(
            f"SELECT h.key, h.value ->> 1, {MESSAGE_COLUMNS} FROM json_each(?) h"
            " CROSS JOIN sessions s ON s.session_id = h.value ->> 0"
            " CROSS JOIN messages m ON m.sid = s.id"
            " AND m.seq BETWEEN (h.value ->> 1) - ? AND (h.value ->> 1) + ?"
            " AND m.seq != h.value ->> 1 ORDER BY m.seq",
            (wanted, context, context),
        ).fetchall()
        out: list[tuple[list[Message], list[Message]]] = [([], []) for _ in hits]
        for index, seq, *row in found:
            before, after = out[index]
            (before if row[1] < seq else after).append(message_of(row))
        return out

    def activity(
        self,
        first_day: int | None,
        last_day: int | None,
        source: str | None,
        session_id: str | None = None,
    ) -> tuple[list[ActivityRow], dict[int, int], int]:
        from . import rollup

        if not _has_table(self.conn, "activity"):
            raise UnsupportedStorage(
                "this store's schema predates usage stats — run `sessiondb migrate` once"
            )
        return rollup.activity(self.conn, first_day, last_day, source, session_id)

    # -- writes ---------------------------------------------------------------------------------

    def insert_session(
        self,
        session_id: str,
        source: str,
        title: str | None,
        meta: str | None,
        created_at: float,
    ) -> SessionRef:
        return int(
            self.conn.execute(
                "INSERT INTO sessions(session_id, source, title, meta, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (session_id, source, title, meta, created_at, created_at),
            ).get
        )

    def update_session(self, ref: SessionRef, changes: Mapping[SessionField, object]) -> None:
        sets = ", ".join(_SESSION_FIELDS[name] for name in changes)
        self.conn.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*changes.values(), ref))

    def insert_messages(
        self, ref: SessionRef, session_id: str, items: Sequence[Item], now: float
    ) -> list[Message]:
        return insert.insert_batches(self.conn, [(ref, session_id, items)], now, self.defer)[0]

    def insert_batches(
        self, batches: Sequence[tuple[SessionRef, str, Sequence[Item]]], now: float
    ) -> list[list[Message]]:
        return insert.insert_batches(self.conn, batches, now, self.defer)

    def copy_messages(self, source: SessionRef, target: SessionRef, upto: int) -> None:
        from .rollup import forget_copied_tokens

        # One INSERT … SELECT: the search index and the usage rollup follow by their triggers;
        # the copies' tokens are the origin's, counted there only (rollup.py).
        self.conn.execute(
            "INSERT INTO messages(sid, seq, role, content, key, meta, created_at)"
            " SELECT ?, seq, role, content, key, meta, created_at FROM messages"
            " WHERE sid = ? AND seq <= ? ORDER BY seq",
            (target, source, upto),
        )
        forget_copied_tokens(self.conn, target)
        self.conn.execute(
            "UPDATE sessions SET message_count = ?, updated_at = max(updated_at,"
            " coalesce((SELECT max(created_at) FROM messages WHERE sid = ?), 0)) WHERE id = ?",
            (upto, target, target),
        )

    def remove_newest(self, ref: SessionRef, session_id: str, now: float) -> Message | None:
        row = self.conn.execute(
            "DELETE FROM messages WHERE id ="
            " (SELECT id FROM messages WHERE sid = ? ORDER BY seq DESC LIMIT 1)"
            " RETURNING ?, seq, role, content, key, meta, created_at",
            (ref, session_id),
        ).fetchone()
        if row is None:
            return None
        removed = message_of(row)
        # The removed seq is the next append's: seqs stay gapless. revision tells tailing readers.
        self.conn.execute(
            "UPDATE sessions SET message_count = ?, revision = revision + 1, updated_at = ?"
            " WHERE id = ?",
            (removed.seq - 1, now, ref),
        )
        return removed

    def clear(self, ref: SessionRef, now: float) -> int:
        # The session moves to a new row id: its messages, still under the old id, leave it at
        # once for every reader, and are purged in batches afterwards (like a deleted session's).
        sid, source, title, meta, created, ended, reason, count, revision = _one(
            self.conn.execute(
                "SELECT session_id, source, title, meta, created_at, ended_at, end_reason,"
                " message_count, revision FROM sessions WHERE id = ?",
                (ref,),
            )
        )
        self.delete_session(ref)
        self.conn.execute(
            "INSERT INTO sessions(session_id, source, title, meta, created_at, updated_at,"
            " ended_at, end_reason, message_count, revision)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (sid, source, title, meta, created, now, ended, reason, revision + 1),
        )
        return int(count)

    def delete_session(self, ref: SessionRef) -> None:
        # AUTOINCREMENT keeps the row id from being reused by a new session while the old one's
        # messages are still being purged.
        from .rollup import forget_session

        self.conn.execute("DELETE FROM sessions WHERE id = ?", (ref,))
        forget_session(self.conn, ref)
        self.conn.execute("INSERT OR IGNORE INTO purge_queue(sid) VALUES (?)", (ref,))


class _WriteTx:
    """The context manager of ``SQLiteBackend.write()``: the engine's write transaction, seen
    as a :class:`SQLiteTx`."""

    __slots__ = ("_cm", "_cols", "_defer")

    def __init__(
        self, cm: AbstractContextManager[apsw.Connection], cols: str, defer: bool = False
    ) -> None:
        self._cm = cm
        self._cols = cols
        self._defer = defer  # a bulk import's transaction (``write_deferred``)

    def __enter__(self) -> SQLiteTx:
        return SQLiteTx(self._cm.__enter__(), self._cols, self._defer)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._cm.__exit__(exc_type, exc, tb)


class SQLiteBackend:
    """A store in one SQLite file (the contract's ``Backend``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._ready = False
        self._version = schema.LATEST
        self._session_columns = SESSION_COLUMNS
        # A lock at start-up must not disable the store: the next call retries (rule 10).
        if not engine.readonly:
            with suppress(StoreBusy):
                self._ensure_ready()

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | None,
        *,
        readonly: bool = False,
        durability: str = "normal",
        journal_mode: str = "auto",
        write_timeout: float = 30.0,
    ) -> SQLiteBackend:
        from ..host.paths import default_db_path

        if location is None:
            location = default_db_path()
        p = Path(os.fspath(location)).expanduser()
        if str(p) == ":memory:":
            raise InvalidInput(
                "':memory:' is not supported: a store is shared by processes through its file; "
                "give a file path (a temporary folder's, for a throwaway store)"
            )
        if p.is_dir():
            raise InvalidInput(f"path {str(p)!r} is a folder; give the database file's path")
        if readonly and not p.exists():
            raise StoreNotFound(str(p))
        try:
            engine = Engine(
                p.absolute(),
                durability=durability,
                journal_mode=journal_mode,
                write_timeout=write_timeout,
                readonly=readonly,
            )
            return cls(engine)
        except OSError as e:
            raise Error(f"{p}: {e.strerror or e}") from e

    # -- the contract's primitives ------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self._engine.path)

    @property
    def path(self) -> Path:
        return self._engine.path

    @property
    def readonly(self) -> bool:
        return self._engine.readonly

    @property
    def write_timeout(self) -> float:
        return self._engine.write_timeout

    @property
    def group_writes(self) -> bool:
        # One writer at a time per file: appends that queue behind each other gain by sharing a
        # commit (docs/adr/0011-group-commit.md).
        return True

    def combined_group_run(self) -> Callable[[list[Any]], Sequence[Any]] | None:
        # Writers of other processes hand their appends to the admission lock's holder
        # (combine.py; docs/adr/0018-cross-process-combining.md).
        from .combine import Combine

        return Combine(self).run

    def append_plain(
        self, session_id: str, items: Sequence[Item], now: float
    ) -> list[Message] | None:
        # One writer at a time: the general path's lookup costs no round trip here.
        return None

    @property
    def engine(self) -> Engine:
        """The engine, schema in place (for the SQLite-specific tests and benchmarks)."""
        return self._ensure_ready()

    @contextmanager
    def read(self) -> Iterator[SQLiteTx]:
        with self._ensure_ready().read() as conn:
            yield SQLiteTx(conn, self._session_columns)

    def write(self) -> _WriteTx:
        # A class, not a second @contextmanager generator: this is on every append's path.
        return _WriteTx(self._ensure_ready().write(), self._session_columns)

    def write_held(self) -> _WriteTx:
        """A write transaction of a caller that holds the admission lock (combine.py)."""
        return _WriteTx(self._ensure_ready().write(held=True), self._session_columns)

    def write_deferred(self) -> _WriteTx:
        # Rows of one insert statement leave their search index to the backfill window, when
        # it can take them (sqlite/fts.py ``defer``; docs/adr/0015-bulk-import.md).
        return _WriteTx(self._ensure_ready().write(), self._session_columns, defer=True)

    def finish_index(self, progress: Callable[[int, int], None] | None = None) -> int:
        return deferred.finish(self._ensure_ready(), progress)

    def purge(self) -> None:
        purge.run(self._ensure_ready())

    def space(self) -> dict[str, int]:
        from . import space

        with self._ensure_ready().read() as conn:
            return space.split(conn)

    def reclaim(self, progress: Callable[[int], None] | None = None) -> int | None:
        from . import space

        engine = self._ensure_ready()
        with engine.read() as conn:
            if space.auto_vacuum(conn) != "incremental":
                return None
        return space.reclaim(engine, progress=progress)

    def compact(self) -> int:
        from . import space

        return space.compact(self._ensure_ready())

    def search(self, request: SearchRequest) -> list[tuple[Message, float]]:
        from . import search

        engine = self._ensure_ready()
        if self._version < 3:
            raise UnsupportedStorage(
                f"{self.location} has schema version {self._version}: searching it needs the "
                f"index of version 3 — run `sessiondb --db {self.location} migrate` once"
            )
        return search.execute(engine, request)

    def changes(self, session_id: str | None) -> DataVersion:
        from .changes import DataVersion

        return DataVersion(self._ensure_ready)

    def lease_slot(self, name: str) -> StoreLease:
        from .leases import StoreLease

        return StoreLease(self._ensure_ready, name, where=self.location)

    def leases(self) -> list[Holder]:
        from .leases import list_leases

        return list_leases(self._ensure_ready(), self.location)

    def check(self, full: bool) -> HealthReport:
        from .doctor.checks import diagnose

        return diagnose(self._engine.path, full=full)

    def facts(self) -> dict[str, Any]:
        engine = self._ensure_ready()
        sizes: dict[str, int | None] = {}
        for suffix in ("", "-wal", "-shm"):
            try:
                sizes["db" + suffix] = os.stat(str(engine.path) + suffix).st_size
            except OSError:
                sizes["db" + suffix] = None
        return {
            "backend": "sqlite",
            "path": str(engine.path),
            "sizes": sizes,
            "journal_mode": engine.journal_mode,
            "durability": engine.durability,
            "schema_version": self._version,
            "sqlite_version": apsw.sqlite_lib_version(),
            "apsw_version": apsw.apsw_version(),
        }

    def close(self) -> None:
        self._engine.close()

    # -- readiness ------------------------------------------------------------------------------

    def _ensure_ready(self) -> Engine:
        """Migrate (read-write) or check the schema (read-only) on first use."""
        engine = self._engine
        if self._ready:
            return engine
        if engine.readonly:
            with engine.read() as conn:
                self._version = _readable_version(conn, self.location)
            if self._version < 4:
                self._session_columns = SESSION_COLUMNS_V3
        else:
            schema.migrate(engine)
            self._ready = True  # before purge(), which comes back here
            self.purge()
        self._ready = True
        return engine


def _has_table(conn: apsw.Connection, name: str) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
    )


def _readable_version(conn: apsw.Connection, location: str) -> int:
    """The schema version of a file opened read-only, if sessiondb can read it without
    migrating it: versions 1 to LATEST."""
    version = schema.current_version(conn)
    if version == 0:
        tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").get
        if not tables:
            raise StoreNotFound(location, "the database has no sessiondb tables yet")
        raise UnsupportedStorage(
            f"{location} is a SQLite database of another application, not a sessiondb store"
        )
    if version > schema.LATEST:
        raise UnsupportedStorage(
            f"{location} has schema version {version}, newer than this sessiondb supports "
            f"({schema.LATEST}); upgrade sessiondb to read it"
        )
    return version


__all__ = ["PURGE_BATCH", "SQLiteBackend", "SQLiteTx"]
