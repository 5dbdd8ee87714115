"""The Store API on SQLite: sessions and messages.

Every write is one short ``engine.write()`` transaction; ``seq`` is allocated inside it from the
session row (``message_count`` is also the last seq), so it is gapless per session whatever the
number of writers. Reads are short ``engine.read()`` transactions; long sessions are read page by
page, each page its own snapshot — safe because a session only ever grows at its end.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import apsw

from .. import validate as v
from ..errors import Error, InvalidInput, KeyConflict, SessionExists, SessionNotFound, StoreBusy
from ..models import Message, Session
from . import schema
from .engine import Engine
from .facets import StoreFacets
from .rows import ITEM_FIELDS, Item, created_at_of, message_of, session_of

_SESSION_COLS = (
    "session_id, source, title, meta, created_at, updated_at, ended_at, end_reason, message_count"
)
_MESSAGE_COLS = "s.session_id, m.seq, m.role, m.content, m.key, m.meta, m.created_at"
# Rows per read transaction when a caller asks for a whole long session, and rows per write
# transaction when a deleted session's messages are removed (doctrine 5 and 6).
READ_PAGE = 2000
DELETE_BATCH = 2000


class SQLiteStore(StoreFacets):
    """A sessiondb store in one SQLite file. Use :func:`sessiondb.open` to get one."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "normal",
        journal_mode: str = "auto",
        write_timeout: float = 30.0,
    ) -> None:
        p = Path(os.fspath(path)).expanduser()
        if p.is_dir():
            raise InvalidInput(f"path {str(p)!r} is a folder; give the database file's path")
        self._engine = Engine(
            p.absolute(),
            durability=durability,
            journal_mode=journal_mode,
            write_timeout=write_timeout,
        )
        self._ready = False
        # Doctrine 10: a lock at start-up must not disable the store; the next call retries.
        with contextlib.suppress(StoreBusy):
            self._ensure_ready()

    # -- plumbing ----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._engine.path

    @property
    def journal_mode(self) -> str:
        return self._engine.journal_mode

    def _ensure_ready(self) -> Engine:
        if not self._ready:
            schema.migrate(self._engine)
            self._finish_purges()
            self._ready = True
        return self._engine

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.close()

    def __repr__(self) -> str:
        return f"<sessiondb store {str(self.path)!r}>"

    @staticmethod
    def _sid(conn: apsw.Connection, session_id: str) -> int | None:
        row = conn.execute("SELECT id FROM sessions WHERE session_id = ?", (session_id,)).get
        return None if row is None else int(row)

    @staticmethod
    def _insert_session(
        conn: apsw.Connection,
        session_id: str,
        source: str,
        title: str | None,
        meta: str | None,
        now: float,
    ) -> int:
        return int(
            conn.execute(
                "INSERT INTO sessions(session_id, source, title, meta, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (session_id, source, title, meta, now, now),
            ).get
        )

    def _fetch_session(self, conn: apsw.Connection, session_id: str) -> Session | None:
        row = conn.execute(
            f"SELECT {_SESSION_COLS} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return None if row is None else session_of(row)

    # -- sessions ----------------------------------------------------------------------------

    def create_session(
        self,
        session_id: str | None = None,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create a session; ``SessionExists`` if the id is taken. A new id is made when None."""
        sid = uuid.uuid4().hex if session_id is None else v.session_id(session_id)
        src, ttl, mt = v.source(source), v.optional_text(title, "title", v.MAX_TITLE), v.meta(meta)
        with self._ensure_ready().write() as conn:
            if self._sid(conn, sid) is not None:
                raise SessionExists(sid)
            self._insert_session(conn, sid, src, ttl, mt, time.time())
            made = self._fetch_session(conn, sid)
        assert made is not None
        return made

    def ensure_session(
        self,
        session_id: str,
        *,
        source: str = "unknown",
        title: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Session:
        """Return the session, creating it first if missing (idempotent; never changes one)."""
        sid = v.session_id(session_id)
        src, ttl, mt = v.source(source), v.optional_text(title, "title", v.MAX_TITLE), v.meta(meta)
        engine = self._ensure_ready()
        with engine.read() as conn:
            found = self._fetch_session(conn, sid)
        if found is not None:
            return found
        with engine.write() as conn:
            if self._sid(conn, sid) is None:
                self._insert_session(conn, sid, src, ttl, mt, time.time())
            made = self._fetch_session(conn, sid)
        assert made is not None
        return made

    def get_session(self, session_id: str) -> Session | None:
        sid = v.session_id(session_id)
        with self._ensure_ready().read() as conn:
            return self._fetch_session(conn, sid)

    def list_sessions(
        self, *, source: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Session]:
        """Sessions, most recent activity first."""
        lim, off = v.non_negative_int(limit, "limit"), v.non_negative_int(offset, "offset")
        where, args = "", []
        if source is not None:
            where, args = "WHERE source = ?", [v.source(source)]
        with self._ensure_ready().read() as conn:
            rows = conn.execute(
                f"SELECT {_SESSION_COLS} FROM sessions {where}"
                " ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
                (*args, lim, off),
            ).fetchall()
        return [session_of(r) for r in rows]

    def end_session(self, session_id: str, reason: str = "ended") -> Session:
        sid = v.session_id(session_id)
        why = v.optional_text(reason, "reason", v.MAX_REASON)
        now = time.time()
        with self._ensure_ready().write() as conn:
            conn.execute(
                "UPDATE sessions SET ended_at = ?, end_reason = ?, updated_at = ?"
                " WHERE session_id = ?",
                (now, why, now, sid),
            )
            if conn.changes() == 0:
                raise SessionNotFound(sid)
            ended = self._fetch_session(conn, sid)
        assert ended is not None
        return ended

    def delete_session(self, session_id: str) -> bool:
        """Delete a session and its messages; False if there was none.

        The session row goes first (it disappears for readers at once, atomically), its messages
        follow in batches so a live writer never waits behind one huge DELETE. AUTOINCREMENT
        keeps the internal id from being reused by a new session meanwhile.
        """
        sid = v.session_id(session_id)
        engine = self._ensure_ready()
        with engine.write() as conn:
            internal = self._sid(conn, sid)
            if internal is None:
                return False
            conn.execute("DELETE FROM sessions WHERE id = ?", (internal,))
            conn.execute("INSERT OR IGNORE INTO purge_queue(sid) VALUES (?)", (internal,))
        self._purge(internal)
        return True

    def _purge(self, internal: int) -> None:
        engine = self._engine
        while True:
            with engine.write() as conn:
                conn.execute(
                    "DELETE FROM messages WHERE id IN"
                    " (SELECT id FROM messages WHERE sid = ? LIMIT ?)",
                    (internal, DELETE_BATCH),
                )
                if conn.changes() == 0:
                    conn.execute("DELETE FROM purge_queue WHERE sid = ?", (internal,))
                    return

    def _finish_purges(self) -> None:
        with self._engine.read() as conn:
            pending = [int(r[0]) for r in conn.execute("SELECT sid FROM purge_queue")]
        for internal in pending:
            self._purge(internal)

    # -- messages ----------------------------------------------------------------------------

    def append(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        key: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Message:
        """Append one message (creating the session if missing); ``seq`` is assigned here.

        With ``key``, a retry returns the stored message and writes nothing; the same key with
        different role, content or meta raises ``KeyConflict``.
        """
        sid = v.session_id(session_id)
        item = Item.of(role, content, key, meta)
        with self._ensure_ready().write() as conn:
            return self._append_items(conn, sid, [item])[0]

    def append_many(self, session_id: str, items: Iterable[Mapping[str, Any]]) -> list[Message]:
        """Append several messages in one transaction: all are stored or none is.

        Each item is a dict with ``role`` and ``content`` and optionally ``key`` and ``meta``;
        keyed items already stored are returned as stored, so re-sending a whole unsaved tail
        after a failure never duplicates anything.
        """
        sid = v.session_id(session_id)
        prepared: list[Item] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise InvalidInput(f"items[{i}] must be a dict, not {type(item).__name__}")
            extra = set(item) - ITEM_FIELDS
            if extra:
                raise InvalidInput(
                    f"items[{i}] has unknown field(s) {sorted(extra)};"
                    " allowed: role, content, key, meta, created_at"
                )
            if "role" not in item or "content" not in item:
                raise InvalidInput(f"items[{i}] needs both 'role' and 'content'")
            try:
                made = Item.of(item["role"], item["content"], item.get("key"), item.get("meta"))
                made.created_at = created_at_of(item.get("created_at"))
                prepared.append(made)
            except InvalidInput as e:
                raise InvalidInput(f"items[{i}]: {e}") from None
        if not prepared:
            return []
        with self._ensure_ready().write() as conn:
            return self._append_items(conn, sid, prepared)

    def _append_items(self, conn: apsw.Connection, sid: str, items: list[Item]) -> list[Message]:
        """Insert ``items`` inside the caller's write transaction, set-based: one key lookup,
        one seq allocation and one executemany per batch, so a 500-message import batch costs
        about what the bare INSERTs cost."""
        now = time.time()
        internal = self._sid(conn, sid)
        if internal is None:
            internal = self._insert_session(conn, sid, "unknown", None, None, now)
        stored = self._stored_keys(conn, sid, internal, items)
        out: list[Message | None] = [None] * len(items)
        fresh: list[int] = []  # indexes of the items to insert
        first_of_key: dict[str, int] = {}
        for i, item in enumerate(items):
            k = item.key
            if k is None:
                fresh.append(i)
                continue
            earlier = stored.get(k)
            if earlier is not None:
                if (earlier.role, earlier.content, earlier.meta) != (
                    item.role,
                    item.content,
                    v.load_meta(item.meta),
                ):
                    raise KeyConflict(sid, k, earlier.seq)
                out[i] = earlier
            elif k in first_of_key:
                first = items[first_of_key[k]]
                if (first.role, first.content, first.meta) != (item.role, item.content, item.meta):
                    raise KeyConflict(sid, k, None)
            else:
                first_of_key[k] = i
                fresh.append(i)
        if fresh:
            last = int(
                conn.execute(
                    "UPDATE sessions SET message_count = message_count + ?, updated_at = ?"
                    " WHERE id = ? RETURNING message_count",
                    (len(fresh), now, internal),
                ).get
            )
            seq = last - len(fresh)
            rows = []
            for i in fresh:
                item = items[i]
                seq += 1
                at = now if item.created_at is None else item.created_at
                rows.append((internal, seq, item.role, item.content, item.key, item.meta, at))
                out[i] = Message(
                    sid, seq, item.role, item.content, item.key, v.load_meta(item.meta), at
                )
            insert = (
                "INSERT INTO messages(sid, seq, role, content, key, meta, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
            )
            if len(rows) == 1:
                conn.execute(insert, rows[0])
            else:
                conn.executemany(insert, rows)
        result: list[Message] = []
        for i, item in enumerate(items):
            m = out[i]
            if m is None:  # a key repeated within this batch: the first occurrence's message
                assert item.key is not None
                m = out[first_of_key[item.key]]
            assert m is not None
            result.append(m)
        return result

    @staticmethod
    def _stored_keys(
        conn: apsw.Connection, sid: str, internal: int, items: list[Item]
    ) -> dict[str, Message]:
        keys = [item.key for item in items if item.key is not None]
        if not keys:
            return {}
        if len(keys) == 1:
            found = conn.execute(
                "SELECT ?, seq, role, content, key, meta, created_at FROM messages"
                " WHERE sid = ? AND key = ?",
                (sid, internal, keys[0]),
            ).fetchall()
        else:
            found = conn.execute(
                "SELECT ?, seq, role, content, key, meta, created_at FROM messages"
                " WHERE sid = ? AND key IN (SELECT value FROM json_each(?))",
                (sid, internal, json.dumps(keys)),
            ).fetchall()
        msgs = [message_of(row) for row in found]
        return {m.key: m for m in msgs if m.key is not None}

    def messages(
        self, session_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Message]:
        """Messages of a session with ``seq > after``, ordered by seq (empty if no session)."""
        sid = v.session_id(session_id)
        last = v.non_negative_int(after, "after")
        remaining = v.optional_limit(limit)
        engine = self._ensure_ready()
        out: list[Message] = []
        while remaining is None or remaining > 0:
            page = READ_PAGE if remaining is None else min(READ_PAGE, remaining)
            with engine.read() as conn:
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLS} FROM messages m JOIN sessions s ON s.id = m.sid"
                    " WHERE s.session_id = ? AND m.seq > ? ORDER BY m.seq LIMIT ?",
                    (sid, last, page),
                ).fetchall()
            out.extend(message_of(r) for r in rows)
            if rows:
                last = out[-1].seq
            if len(rows) < page:
                break
            if remaining is not None:
                remaining -= len(rows)
        return out

    def count(self, session_id: str | None = None) -> int:
        """Messages in one session, or in the whole store (0 for an unknown session)."""
        with self._ensure_ready().read() as conn:
            if session_id is None:
                return int(conn.execute("SELECT coalesce(sum(message_count), 0) FROM sessions").get)
            row = conn.execute(
                "SELECT message_count FROM sessions WHERE session_id = ?",
                (v.session_id(session_id),),
            ).get
        return 0 if row is None else int(row)

    # -- facts -------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Path, file sizes, counts, journal mode and versions (for `sessiondb info`)."""
        engine = self._ensure_ready()
        with engine.read() as conn:
            sessions = int(conn.execute("SELECT count(*) FROM sessions").get)
            messages = int(conn.execute("SELECT coalesce(sum(message_count), 0) FROM sessions").get)
            version = schema.current_version(conn)
        sizes: dict[str, int | None] = {}
        for suffix in ("", "-wal", "-shm"):
            try:
                sizes["db" + suffix] = os.stat(str(engine.path) + suffix).st_size
            except OSError:
                sizes["db" + suffix] = None
        return {
            "path": str(engine.path),
            "sizes": sizes,
            "sessions": sessions,
            "messages": messages,
            "journal_mode": engine.journal_mode,
            "durability": engine.durability,
            "schema_version": version,
            "sqlite_version": apsw.sqlite_lib_version(),
            "apsw_version": apsw.apsw_version(),
        }


def open_store(path: str | os.PathLike[str] | None, **options: Any) -> SQLiteStore:
    from ..paths import default_db_path

    if path is None:
        path = default_db_path()
    try:
        return SQLiteStore(path, **options)
    except TypeError as e:
        raise InvalidInput(str(e)) from None
    except OSError as e:
        raise Error(f"{path}: {e.strerror or e}") from e
