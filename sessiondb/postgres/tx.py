"""One transaction of the PostgreSQL backend: the contract's ``ReadTx`` and ``WriteTx``.

The append (:meth:`PostgresTx.insert_messages`, :meth:`PostgresTx.append_plain`) is ONE
statement, built in append.py.

Writers of one session exclude each other through its row: a write transaction locks the row
(``FOR UPDATE``) when it first looks the session up, so the key lookup, the append plan and the
insert of the Store (sessiondb/core/store.py) see no concurrent writer of that session, as on
SQLite. Two processes creating the same new session race on its unique id: the loser gets
``SessionExists``, which the Store's idempotent verbs answer by looking again.

Round trips (docs/postgres.md, "Round trips"): the transaction runs in pipeline mode
(connection.py). A plain append (no key, no usage: :meth:`PostgresTx.append_plain`) is its
statement alone, sent with ``BEGIN`` and ``COMMIT``: one round trip. Otherwise the session row's
lock also reads its counter, so the append statement needs no answer before ``COMMIT``: the seqs
it will give are known (the row is ours), and the statement goes out with ``COMMIT``. Its
``RETURNING`` is checked once the commit's reply is in (:meth:`PostgresTx.check`).

Restarts: every call of the contract is recorded with what it returned. When PostgreSQL rolls
the transaction back (a deadlock victim, a serialization failure) or its connection breaks
before ``COMMIT`` was sent, nothing was committed, and the transaction is begun again and the
calls replayed (connection.py ``Pipelined.recover``). A replay is the same transaction only if
every call returns what it returned before — the Store decided its next calls from those
answers — so the first answer that differs ends it: the original error is raised
(``StoreBusy``). tests/postgres/test_restart.py provokes a deadlock and a lost connection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import psycopg

from ..errors import Error, SessionExists
from ..models import Message, Session
from . import append, notify, rollup
from .connection import Diverged
from .rows import MESSAGE_COLUMNS, SESSION_COLUMNS, message_of, session_of
from .text import encode
from .wire import Rows, Wire

if TYPE_CHECKING:
    from ..core.append import Item
    from ..core.contract import SessionField, SessionRef
    from ..core.stats import ActivityRow
    from .connection import Pipelined

_F = TypeVar("_F", bound=Callable[..., Any])


def _recorded(method: _F) -> _F:
    """A contract call of :class:`PostgresTx`: recorded for a replay, replayed on a restart."""

    @functools.wraps(method)
    def call(self: PostgresTx, *args: Any, **kwargs: Any) -> Any:
        while True:
            try:
                out = method(self, *args, **kwargs)
            except psycopg.Error as e:
                self._tx.recover(e)  # raises unless begun again and replayed
                continue
            self._log.append((method, args, kwargs, out))
            return out

    return cast("_F", call)


#: Columns ``update_session`` may set, by the contract's field names (never built from input).
_SESSION_FIELDS: dict[str, str] = {
    "title": "title = %s, title_nul = %s",
    "meta": "meta = %s",
    "ended_at": "ended_at = %s",
    "end_reason": "end_reason = %s, reason_nul = %s",
    "created_at": "created_at = %s",
    "updated_at": "updated_at = %s",
}


class PostgresTx:
    """One transaction's view of the database (the contract's ``ReadTx`` / ``WriteTx``)."""

    __slots__ = ("_changed", "_counts", "_fast", "_lock", "_log", "_pending", "_tx")

    def __init__(self, tx: Pipelined) -> None:
        self._tx = tx
        # Inside a write transaction the session row is locked on first sight: see module doc.
        self._lock = " FOR UPDATE" if tx.writing else ""
        #: Message counts of the sessions whose row this transaction holds (the next seqs).
        self._counts: dict[int, int] = {}
        #: Append statements sent without waiting: (cursor, first seq - 1, messages).
        self._pending: list[tuple[Rows, int, int]] = []
        #: What append_plain sent: (cursor, session id, items, times), read after COMMIT.
        self._fast: tuple[Rows, str, list[Item], list[float]] | None = None
        self._log: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Any]] = []
        tx.replay = self._replay
        #: Sessions whose messages this transaction changed ("": any), notified after the
        #: commit (notify.py; wait_for_messages).
        self._changed: set[str] = set()
        if tx.writing:
            tx.after_commit = self._notify

    @property
    def conn(self) -> Wire:
        """Where statements go: the transaction's pipeline (wire.py), current after a restart."""
        return self._tx.wire

    def _notify(self, conn: Wire) -> None:
        conns = self._tx.conns
        if self._changed and conns.notify and conns.listeners is not False:
            notify.queue(conn, conns.schema, self._changed)

    def _replay(self) -> None:
        self._counts.clear()
        self._pending.clear()
        self._fast = None
        self._changed.clear()
        for method, args, kwargs, out in self._log:
            if method(self, *args, **kwargs) != out:
                raise Diverged(method.__name__)

    def check(self) -> None:
        """After the commit: the append statements sent without waiting gave the seqs
        announced (the session rows were this transaction's: they must have)."""
        for cursor, base, n in self._pending:
            rows = cursor.fetchall()
            seqs = [int(r[0]) for r in rows]
            if seqs != list(range(base + 1, base + n + 1)):  # pragma: no cover - a bug
                raise Error(f"internal error: the append gave seqs {seqs[:3]}…, not {base + 1}…")
            self._tx.conns.listeners = bool(rows[0][1])
        self._pending.clear()

    def _one(self, query: str, args: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(query, args).fetchone()
        return None if row is None else row[0]

    # -- reads ----------------------------------------------------------------------------------

    @_recorded
    def session_ref(self, session_id: str) -> SessionRef | None:
        # The lock reads the counter too: the append then needs no answer (module doc); and
        # whether anyone waits for notifications (notify.py), for this transaction's commit.
        listeners = ", EXISTS (SELECT 1 FROM listeners)" if self._lock else ""
        row = self.conn.execute(
            f"SELECT id, message_count{listeners} FROM sessions WHERE session_id = %s{self._lock}",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        if self._lock:
            self._counts[int(row[0])] = int(row[1])
            self._tx.conns.listeners = bool(row[2])
        return int(row[0])

    def session_refs(self, session_ids: Sequence[str]) -> dict[str, SessionRef]:
        # One locking read per session, in the caller's order (two groups locking the same
        # sessions in different orders could deadlock: core/writes.py); each one recorded.
        refs = {sid: self.session_ref(sid) for sid in session_ids}
        return {sid: ref for sid, ref in refs.items() if ref is not None}

    @_recorded
    def session(self, session_id: str) -> Session | None:
        row = self.conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = %s", (session_id,)
        ).fetchone()
        return None if row is None else session_of(row)

    @_recorded
    def sessions(self, source: str | None, limit: int, offset: int) -> list[Session]:
        where, args = ("WHERE source = %s", [source]) if source is not None else ("", [])
        rows = self.conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions {where}"
            " ORDER BY updated_at DESC, id DESC LIMIT %s OFFSET %s",
            [*args, limit, offset],
        ).fetchall()
        return [session_of(r) for r in rows]

    @_recorded
    def session_ids(self, after: str | None, limit: int) -> list[str]:
        # session_id is COLLATE "C": UTF-8 byte order, i.e. code point order, as SQLite's BINARY.
        rows = self.conn.execute(
            "SELECT session_id FROM sessions WHERE session_id > %s ORDER BY session_id LIMIT %s",
            ("" if after is None else after, limit),
        ).fetchall()
        return [str(r[0]) for r in rows]

    @_recorded
    def stale_sessions(
        self, cutoff: float, source: str | None, after: str | None, limit: int
    ) -> list[Session]:
        where, args = ("AND source = %s", [source]) if source is not None else ("", [])
        rows = self.conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE updated_at < %s {where}"
            " AND session_id > %s ORDER BY session_id LIMIT %s",
            [cutoff, *args, "" if after is None else after, limit],
        ).fetchall()
        return [session_of(r) for r in rows]

    @_recorded
    def message_bytes(self, session_id: str) -> int:
        # octet_length of a TOASTed value reads its stored size, not the value (a NUL kept out
        # of the text as a space has the same size: text.py).
        return int(
            self._one(
                "SELECT coalesce(sum(octet_length(m.content) + coalesce(octet_length(m.key), 0)"
                " + coalesce(octet_length(m.meta), 0)), 0)"
                " FROM messages m JOIN sessions s ON s.id = m.sid WHERE s.session_id = %s",
                (session_id,),
            )
        )

    @_recorded
    def totals(self) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT count(*), coalesce(sum(message_count), 0) FROM sessions"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    @_recorded
    def session_count(self, source: str | None) -> int:
        if source is None:
            return int(self._one("SELECT count(*) FROM sessions"))
        return int(self._one("SELECT count(*) FROM sessions WHERE source = %s", (source,)))

    @_recorded
    def message_count(self, session_id: str) -> int:
        found = self._one(
            f"SELECT message_count FROM sessions WHERE session_id = %s{self._lock}", (session_id,)
        )
        return 0 if found is None else int(found)

    @_recorded
    def messages(
        self, session_id: str, after: int, limit: int, newest: bool = False
    ) -> list[Message]:
        order = "DESC" if newest else ""
        rows = self.conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN sessions s ON s.id = m.sid"
            f" WHERE s.session_id = %s AND m.seq > %s ORDER BY m.seq {order} LIMIT %s",
            (session_id, after, limit),
        ).fetchall()
        out = [message_of(r) for r in rows]
        if newest:
            out.reverse()
        return out

    @_recorded
    def messages_by_key(
        self, ref: SessionRef, session_id: str, keys: Sequence[str]
    ) -> dict[str, Message]:
        rows = self.conn.execute(
            "SELECT %s::text, seq, role, content, content_nul, key, meta, created_at"
            " FROM messages WHERE sid = %s AND key = ANY(%s::text[])",
            (session_id, ref, list(keys)),
        ).fetchall()
        return {m.key: m for m in map(message_of, rows) if m.key is not None}

    @_recorded
    def neighbours(
        self, hits: Sequence[Message], context: int
    ) -> list[tuple[list[Message], list[Message]]]:
        rows = self.conn.execute(
            f"SELECT h.i, h.seq, {MESSAGE_COLUMNS}"
            " FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY AS h(session_id, seq, i)"
            " JOIN sessions s ON s.session_id = h.session_id"
            " JOIN messages m ON m.sid = s.id AND m.seq BETWEEN h.seq - %s AND h.seq + %s"
            " AND m.seq <> h.seq ORDER BY h.i, m.seq",
            ([m.session_id for m in hits], [m.seq for m in hits], context, context),
        ).fetchall()
        out: list[tuple[list[Message], list[Message]]] = [([], []) for _ in hits]
        for index, seq, *row in rows:
            before, after = out[int(index) - 1]
            (before if int(row[1]) < int(seq) else after).append(message_of(row))
        return out

    @_recorded
    def activity(
        self,
        first_day: int | None,
        last_day: int | None,
        source: str | None,
        session_id: str | None = None,
    ) -> tuple[list[ActivityRow], dict[int, int], int]:
        return rollup.activity(self.conn, first_day, last_day, source, session_id)

    # -- writes ---------------------------------------------------------------------------------

    @_recorded
    def insert_session(
        self,
        session_id: str,
        source: str,
        title: str | None,
        meta: str | None,
        created_at: float,
    ) -> SessionRef:
        # ON CONFLICT waits for a concurrent creator's commit, then yields no row: SessionExists,
        # with this transaction still usable (no unique violation aborted it).
        title_text, title_nul = encode(title)
        found = self._one(
            "INSERT INTO sessions (session_id, source, title, title_nul, meta, created_at,"
            " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (session_id) DO NOTHING RETURNING id",
            (session_id, source, title_text, title_nul, meta, created_at, created_at),
        )
        if found is None:
            raise SessionExists(session_id)
        self._counts[int(found)] = 0
        return int(found)

    @_recorded
    def update_session(self, ref: SessionRef, changes: Mapping[SessionField, object]) -> None:
        sets = ", ".join(_SESSION_FIELDS[name] for name in changes)
        args: list[Any] = []
        for name, value in changes.items():
            if name in ("title", "end_reason"):
                args.extend(encode(value if isinstance(value, str) else None))
            else:
                args.append(value)
        self.conn.execute(f"UPDATE sessions SET {sets} WHERE id = %s", [*args, ref])

    def insert_batches(
        self, batches: Sequence[tuple[SessionRef, str, Sequence[Item]]], now: float
    ) -> list[list[Message]]:
        # One statement per session: _APPEND allocates one session's seqs and writes its rollup
        # (each insert_messages recorded on its own for a replay).
        return [self.insert_messages(ref, sid, items, now) for ref, sid, items in batches]

    @_recorded
    def insert_messages(
        self, ref: SessionRef, session_id: str, items: Sequence[Item], now: float
    ) -> list[Message]:
        times = [now if i.created_at is None else i.created_at for i in items]
        found = [rollup.facts(0, at, item.meta) for item, at in zip(items, times, strict=True)]
        cursor = self._send_append(("ref", ref), items, times, found)
        self._changed.add(session_id)
        known = self._counts.get(ref)
        if known is None:  # a row not locked by this transaction: wait for the seqs
            base = int(cursor.fetchall()[0][0]) - 1
        else:  # the row is ours: the seqs are known, the statement goes out with COMMIT
            base = known
            self._pending.append((cursor, base, len(items)))
        self._counts[ref] = base + len(items)
        found = [
            f if f.rid is None or f.shared else f._replace(rid=f"#{base + i + 1}")
            for i, f in enumerate(found)
        ]
        rollup.add_usage(self.conn, ref, found)
        return append.messages(session_id, items, times, base)

    @_recorded
    def append_plain(
        self,
        session_id: str,
        items: Sequence[Item],
        times: Sequence[float],
        found: Sequence[rollup.Facts],
    ) -> None:
        """The backend's one-round-trip append (backend.py ``append_plain``): ``items`` at
        ``times`` (no keys; their rollup ``found``, no usage: its statement needs the row's id
        before ``COMMIT``) at the end of session ``session_id``, made if missing (starting when
        the first item does), by one statement sent with ``COMMIT``; the result is read after
        the commit (:meth:`appended`)."""
        cursor = self._send_append(("sid", session_id), items, times, found)
        self._changed.add(session_id)
        self._fast = (cursor, session_id, list(items), list(times))

    def appended(self) -> list[Message]:
        """After the commit: what :meth:`append_plain` stored."""
        assert self._fast is not None
        cursor, session_id, items, times = self._fast
        rows = cursor.fetchall()
        seqs = [int(r[0]) for r in rows]
        if not seqs or seqs != list(range(seqs[0], seqs[0] + len(items))):  # pragma: no cover
            raise Error(f"internal error: the append gave seqs {seqs[:3]}…")
        self._tx.conns.listeners = bool(rows[0][1])
        return append.messages(session_id, items, times, seqs[0] - 1)

    def _send_append(
        self,
        row: tuple[str, Any],
        items: Sequence[Item],
        times: Sequence[float],
        found: Sequence[rollup.Facts],
    ) -> Rows:
        """Queue the append statement (append.py) for the session ``row`` = ("ref", its row id)
        or ("sid", its session id: made if missing)."""
        query, args = append.statement(row, items, times, found)
        return self.conn.execute(query, args)

    @_recorded
    def copy_messages(self, source: SessionRef, target: SessionRef, upto: int) -> None:
        # The stored columns as they are (escaped content, search terms); the rollup counts the
        # copies as messages, their tokens staying the origin's (rollup.add_copies).
        rows = self.conn.execute(
            "INSERT INTO messages (sid, seq, role, content, content_nul, key, meta, created_at,"
            " tsv, nterms, cjk, rid)"
            " SELECT %s, seq, role, content, content_nul, key, meta, created_at, tsv, nterms,"
            " cjk, rid FROM messages WHERE sid = %s AND seq <= %s ORDER BY seq"
            " RETURNING seq, created_at, meta",
            (target, source, upto),
        ).fetchall()
        rollup.add_copies(self.conn, target, [rollup.facts(*r) for r in rows])
        self._counts[target] = upto
        self._changed.add("")  # the target's id is not at hand here: "any session"
        self.conn.execute(
            "UPDATE sessions SET message_count = %s, updated_at = greatest(updated_at,"
            " coalesce((SELECT max(created_at) FROM messages WHERE sid = %s), 0)) WHERE id = %s",
            (upto, target, target),
        )

    @_recorded
    def remove_newest(self, ref: SessionRef, session_id: str, now: float) -> Message | None:
        row = self.conn.execute(
            "DELETE FROM messages WHERE id ="
            " (SELECT id FROM messages WHERE sid = %s ORDER BY seq DESC LIMIT 1)"
            " RETURNING %s::text, seq, role, content, content_nul, key, meta, created_at",
            (ref, session_id),
        ).fetchone()
        if row is None:
            return None
        removed = message_of(row)
        self._counts.pop(ref, None)
        # The removed seq is the next append's: seqs stay gapless. revision tells tailing readers.
        self.conn.execute(
            "UPDATE sessions SET message_count = %s, revision = revision + 1, updated_at = %s"
            " WHERE id = %s",
            (removed.seq - 1, now, ref),
        )
        rollup.remove(self.conn, ref, rollup.facts(removed.seq, removed.created_at, row[6]))
        self._changed.add(session_id)
        return removed

    @_recorded
    def clear(self, ref: SessionRef, now: float) -> int:
        # The session moves to a new row id: its messages, still under the old id, leave it at
        # once for every reader, and are purged in batches afterwards (like a deleted session's).
        row = self.conn.execute(
            "DELETE FROM sessions WHERE id = %s RETURNING session_id, source, title, title_nul,"
            " meta, created_at, ended_at, end_reason, reason_nul, message_count, revision",
            (ref,),
        ).fetchone()
        assert row is not None
        self._forget(ref)
        self.conn.execute(
            "INSERT INTO sessions (session_id, source, title, title_nul, meta, created_at,"
            " updated_at, ended_at, end_reason, reason_nul, message_count, revision)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s)",
            (*row[:6], now, *row[6:9], int(row[10]) + 1),
        )
        self._changed.add(str(row[0]))
        return int(row[9])

    @_recorded
    def delete_session(self, ref: SessionRef) -> None:
        self.conn.execute("DELETE FROM sessions WHERE id = %s", (ref,))
        self._changed.add("")
        self._forget(ref)

    def _forget(self, ref: SessionRef) -> None:
        self._counts.pop(ref, None)
        rollup.forget_session(self.conn, ref)
        self.conn.execute(
            "INSERT INTO purge_queue (sid) VALUES (%s) ON CONFLICT DO NOTHING", (ref,)
        )


__all__ = ["PostgresTx"]
