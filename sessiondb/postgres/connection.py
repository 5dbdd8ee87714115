"""Connections and transactions on one PostgreSQL database (docs/postgres.md, "Options").

* ``prepare_threshold=None`` on every connection: psycopg's automatic prepared statements give
  a search a generic plan blind to its words (CJK p90 1 476 ms vs 65 ms: docs/postgres.md,
  evidence 6), and they do not survive pgbouncer in transaction mode.
* A short-lived process (a CLI command, a hook) uses one direct connection per (process,
  thread), reopened after ``fork``; a long-lived one asks for ``pool=N``: a small psycopg_pool
  pool that checks a connection before lending it and drops idle ones after ``max_idle``
  seconds, below a server's or proxy's idle reaper.
* Transactions are explicit and carry their settings with ``SET LOCAL`` in the same round trip
  as ``BEGIN`` (no session state: pgbouncer in transaction mode may hand the next transaction
  another server connection). Reads run ``REPEATABLE READ READ ONLY`` (one snapshot, the
  contract's ``ReadTx``); writes ``READ COMMITTED`` with ``lock_timeout`` = ``write_timeout``
  and ``synchronous_commit`` from ``durability``: "normal" is ``off`` (a server crash may lose
  the last ~0.6 s of acknowledged commits; a client crash loses nothing), "full" is ``on``.
* A connection found broken when a transaction begins is replaced and the ``BEGIN`` sent again:
  nothing was sent yet, so that retry is always safe.
* The contract's transactions (``backend.read()`` / ``write()``, :meth:`Connections.transaction`)
  run in pipeline mode (:class:`Pipelined`): ``BEGIN`` and its settings travel with the first
  statement, ``COMMIT`` with the last, so an append costs two round trips, not four
  (docs/postgres.md, "Round trips"; tests/postgres/test_round_trips.py). The settings are one
  ``SELECT set_config(…, true)`` — ``SET LOCAL`` by another name, as pipeline mode allows one
  statement per query. When PostgreSQL rolls such a transaction back (a deadlock victim, a
  serialization failure) or its connection breaks before ``COMMIT`` was sent, nothing of it was
  committed: it is begun again and what it did replayed (tx.py), at most :data:`RESTARTS`
  times. A connection lost once ``COMMIT`` was sent is ``ConnectionLost``, never retried.
"""

from __future__ import annotations

import os
import random
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict

from ..errors import ConnectionLost, Error, InvalidInput, ReadOnlyStore, StoreBusy
from .errors import RETRYABLE, translate
from .wire import Wire

APPLICATION_NAME = "sessiondb"
#: Seconds a pooled connection may stay idle before the pool closes it (below the usual idle
#: reapers of servers and proxies: the anchors' complaint of docs/postgres.md, "Options").
POOL_MAX_IDLE = 60.0

_READ_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_WRITE_BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED"
#: What an engine without NOTIFY answers pg_notify (docs/scale-out.md): then none is sent again.
_NO_NOTIFY = (psycopg.errors.UndefinedFunction, psycopg.errors.FeatureNotSupported)
#: Times a contract transaction is begun again after PostgreSQL rolled it back (module doc).
RESTARTS = 3


#: What ``schema=`` accepts: a plain lower-case identifier (then quoted anyway).
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _search_path(schema: str | None) -> str:
    if schema is None:
        return ""
    if not SCHEMA_NAME.fullmatch(schema):
        raise InvalidInput(
            f"schema must be a lower-case SQL identifier (letters, digits, _), not {schema!r}"
        )
    return "; SET LOCAL search_path = " + sql.Identifier(schema).as_string(None)


def _write_begin(durability: str, write_timeout: float, schema: str | None) -> str:
    # Values from validated options only (a number, one of two words, a checked identifier).
    ms = max(1, int(write_timeout * 1000))
    sync = "on" if durability == "full" else "off"
    return (
        f"BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = {sync};"
        f" SET LOCAL lock_timeout = {ms}" + _search_path(schema)
    )


def _settings(
    writing: bool, durability: str, write_timeout: float, schema: str | None
) -> tuple[str, list[str]] | None:
    """The transaction's settings as ONE statement (``set_config(…, true)`` is ``SET LOCAL``),
    for pipeline mode; values from validated options only."""
    pairs: list[tuple[str, str]] = []
    if writing:
        pairs.append(("synchronous_commit", "on" if durability == "full" else "off"))
        pairs.append(("lock_timeout", str(max(1, int(write_timeout * 1000)))))
    if schema is not None:
        _search_path(schema)  # validates
        pairs.append(("search_path", sql.Identifier(schema).as_string(None)))
    if not pairs:
        return None
    calls = ", ".join("set_config(%s, %s, true)" for _ in pairs)
    return f"SELECT {calls}", [x for pair in pairs for x in pair]


class Connections:
    """Where transactions get their connection: direct (one per process and thread) or pooled."""

    def __init__(
        self,
        conninfo: str,
        where: str,
        *,
        readonly: bool = False,
        durability: str,
        write_timeout: float,
        pool: int = 0,
        connect_timeout: float = 10.0,
        schema: str | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.where = where
        self.readonly = readonly
        self.write_timeout = write_timeout
        self.schema = schema
        # A schema is set per transaction (SET LOCAL), never per connection: through pgbouncer
        # in transaction mode the next transaction may run on another server connection.
        self._write_begin = _write_begin(durability, write_timeout, schema)
        self._read_begin = _READ_BEGIN + _search_path(schema)
        self.durability = durability
        self._settings = {w: _settings(w, durability, write_timeout, schema) for w in (False, True)}
        self._connect_timeout = max(1, int(connect_timeout))
        self._local = threading.local()
        self._pool: Any = None
        self._pool_pid = 0
        self._opened: list[tuple[psycopg.Connection[Any], int]] = []
        #: Slow-changing facts of the store read by queries (search.py: the index's size and
        #: average message length), with the monotonic time they were read.
        self.cache: dict[str, tuple[float, Any]] = {}
        self._pool_size = pool
        self._lock = threading.Lock()
        self._closed = False
        #: Where waiters' LISTEN connections go (notify.py; ``listen_url``); whether commits
        #: are followed by a NOTIFY (off once the server refuses pg_notify: docs/scale-out.md).
        self.listen_conninfo = conninfo
        self.notify = True
        #: Whether a waiter was registered (notify.py ``listeners``) when this process's last
        #: write looked; None before its first: then it notifies.
        self.listeners: bool | None = None

    # -- connections ----------------------------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": None,
            "connect_timeout": self._connect_timeout,
        }
        # The URL's own application_name wins (how an operator tells its processes apart in
        # pg_stat_activity); else "sessiondb".
        if "application_name" not in conninfo_to_dict(self.conninfo):
            kwargs["application_name"] = APPLICATION_NAME
        return kwargs

    def connect(self, conninfo: str | None = None) -> psycopg.Connection[Any]:
        """A new direct connection (also for tools: migrations, health checks), to the store's
        URL or ``conninfo``."""
        try:
            return psycopg.Connection.connect(conninfo or self.conninfo, **self._kwargs())
        except psycopg.Error as e:
            err = translate(e, self.where)
            if isinstance(err, ConnectionLost):  # nothing was in flight: say what it is
                raise Error(
                    f"{self.where}: cannot connect to PostgreSQL ({str(e).strip()})"
                ) from None
            raise err from None

    def _get_pool(self) -> Any:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(
                    self.conninfo,
                    min_size=1,
                    max_size=self._pool_size,
                    max_idle=POOL_MAX_IDLE,
                    kwargs=self._kwargs(),
                    check=ConnectionPool.check_connection,
                    timeout=self.write_timeout,
                    open=True,
                    name=APPLICATION_NAME,
                )
                self._pool_pid = os.getpid()
            return self._pool

    def _direct(self) -> psycopg.Connection[Any]:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and (
            local.pid != os.getpid() or conn.closed or conn.broken or not _alive(conn)
        ):
            if local.pid == os.getpid():
                conn.close()
            conn = None  # a parent's connection is never used (nor closed) by a forked child
        if conn is None:
            conn = self.connect()
            local.conn, local.pid = conn, os.getpid()
            with self._lock:  # so that close() closes every thread's connection
                self._opened = [(c, p) for c, p in self._opened if not c.closed]
                self._opened.append((conn, os.getpid()))
        return conn

    def _drop_direct(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise Error(f"{self.where}: the store is closed")
        if not self._pool_size:
            yield self._direct()
            return
        from psycopg_pool import PoolTimeout

        try:
            cm = self._get_pool().connection()
            conn = cm.__enter__()
        except PoolTimeout as e:
            raise StoreBusy(
                f"{self.where}: no pooled connection free within {self.write_timeout} s ({e})",
                path=self.where,
            ) from None
        except psycopg.Error as e:
            raise translate(e, self.where) from None
        try:
            yield conn
        finally:
            cm.__exit__(None, None, None)

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection[Any]]:
        with self._transaction(self._read_begin, writing=False) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[psycopg.Connection[Any]]:
        if self.readonly:
            raise ReadOnlyStore(f"{self.where} was opened read-only: it cannot be written")
        with self._transaction(self._write_begin, writing=True) as conn:
            yield conn

    @contextmanager
    def _transaction(self, begin: str, *, writing: bool) -> Iterator[psycopg.Connection[Any]]:
        with self._connection() as conn:
            started = time.monotonic()
            try:
                conn.execute(begin)
            except psycopg.OperationalError:
                # Broken while idle (server restart, idle reaper, pg_terminate_backend): nothing
                # was sent, so a new connection and a second BEGIN are safe.
                if self._pool_size:
                    raise translate(psycopg.OperationalError("broken"), self.where) from None
                self._drop_direct()
                conn = self._direct()
                try:
                    conn.execute(begin)
                except psycopg.Error as e:
                    raise translate(e, self.where, conn, schema=self.schema) from None
            except psycopg.Error as e:
                raise translate(e, self.where, conn, schema=self.schema) from None
            try:
                yield conn
            except BaseException as e:
                self._rollback(conn)
                if isinstance(e, psycopg.Error):
                    raise translate(
                        e,
                        self.where,
                        conn,
                        time.monotonic() - started if writing else None,
                        self.schema,
                    ) from None
                raise
            try:
                conn.execute("COMMIT")
            except psycopg.Error as e:
                self._rollback(conn)
                raise translate(e, self.where, conn, schema=self.schema) from None

    @contextmanager
    def transaction(self, writing: bool) -> Iterator[Pipelined]:
        """A contract transaction in pipeline mode (module doc), restartable by its user."""
        if writing and self.readonly:
            raise ReadOnlyStore(f"{self.where} was opened read-only: it cannot be written")
        with self._connection() as conn:
            tx = Pipelined(self, conn, writing)
            try:
                tx.begin()
            except psycopg.OperationalError as e:
                tx.recover(e)  # broken while idle: nothing was sent
            except psycopg.Error as e:
                tx.abort()
                raise translate(e, self.where, tx.conn, schema=self.schema) from None
            try:
                yield tx
            except BaseException as e:
                tx.abort()
                if isinstance(e, psycopg.Error):
                    raise tx.translate(e) from None
                raise
            while True:
                try:
                    tx.commit()
                    return
                except psycopg.Error as e:
                    # Sent with COMMIT, but refused before it (wire.py ``refused``): nothing
                    # was committed, as when the connection breaks before COMMIT is sent.
                    tx.recover(e, committing=not tx.wire.refused)

    def reconnect(self, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any] | None:
        """A new direct connection in place of the broken ``conn``; None with a pool (the pool
        checks connections before lending them: a broken one there is not ours to replace)."""
        if self._pool_size:
            return None
        if getattr(self._local, "conn", None) is conn:
            self._drop_direct()
        return self._direct()

    @staticmethod
    def _rollback(conn: psycopg.Connection[Any]) -> None:
        if conn.closed or conn.broken:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            conn.close()  # a connection in an unknown state is never lent again

    def close(self) -> None:
        self._closed = True
        self._drop_direct()
        with self._lock:
            for conn, pid in self._opened:
                if pid == os.getpid():  # a forked child never closes its parent's
                    conn.close()
            self._opened = []
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None


class Diverged(Exception):
    """A replayed call answered otherwise than the first time: no replay (tx.py)."""


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection still stands. A server that ends a connection
    (``pg_terminate_backend``, ``idle_session_timeout``, a shutdown) sends its reason and closes
    it, so the socket of an idle connection is readable only then (or for a notice): seen before
    a transaction is sent, it is replaced with nothing sent. A plain append goes out with its
    ``COMMIT`` in one send (backend.py ``append_plain``): found broken after that, its outcome
    is unknown (``ConnectionLost``), so this check is what keeps an idle kill retryable.
    tests/postgres/test_backend.py::test_a_terminated_idle_connection_is_replaced."""
    pg = conn.pgconn
    poller = select.poll()
    poller.register(pg.socket, select.POLLIN)
    if not poller.poll(0):
        return True
    try:
        pg.consume_input()
    except psycopg.OperationalError:
        return False
    return pg.status == pq.ConnStatus.OK


def _lost(error: psycopg.Error, conn: psycopg.Connection[Any]) -> bool:
    """Whether ``error`` is the connection's end (the server closes it, or sends that it is
    terminating it before closing: ``pg_terminate_backend``, a shutdown)."""
    if conn.closed or conn.broken:
        return True
    state = error.sqlstate
    if state is None:
        return isinstance(error, psycopg.OperationalError)
    return state.startswith("08") or state in ("57P01", "57P02")


class Pipelined:
    """One contract transaction on one connection in pipeline mode (module doc).

    Statements whose results are not fetched are only queued (wire.py): ``BEGIN`` and the
    settings go out with the first statement fetched, in one send, and ``COMMIT`` with whatever
    is still queued, in one more. ``replay`` (set by tx.py) does again what the transaction did,
    on a new ``BEGIN``, after a failure that left nothing committed (:meth:`recover`).
    """

    def __init__(self, conns: Connections, conn: psycopg.Connection[Any], writing: bool) -> None:
        self.conns = conns
        self.conn = conn
        self.writing = writing
        self.replay: Callable[[], None] | None = None
        #: Queues statements right behind ``COMMIT``, in its pipeline (set by tx.py: the
        #: notifications of notify.py); they run only if the commit succeeded.
        self.after_commit: Callable[[Wire], None] | None = None
        self.restarts = 0
        #: The statements' way to the server (wire.py), new at each ``begin``.
        self.wire = Wire(conn)
        self._started = time.monotonic()

    def begin(self) -> None:
        wire = self.wire = Wire(self.conn)
        wire.enter()
        wire.execute(_WRITE_BEGIN if self.writing else _READ_BEGIN)
        settings = self.conns._settings[self.writing]
        if settings is not None:
            wire.execute(settings[0], settings[1])

    def commit(self) -> None:
        late = self.wire.commit(self.after_commit)
        if isinstance(late, _NO_NOTIFY):
            self.conns.notify = False  # an engine without pg_notify: waiters re-check

    def abort(self) -> None:
        """Leave pipeline mode and roll back whatever is open (a broken connection: nothing)."""
        try:
            self.wire.close()
        except psycopg.Error:
            self.conn.close()  # failed while leaving pipeline mode: never lent again
        Connections._rollback(self.conn)

    def translate(self, e: BaseException) -> Error:
        waited = time.monotonic() - self._started if self.writing else None
        return translate(e, self.conns.where, self.conn, waited, self.conns.schema)

    def recover(self, error: psycopg.Error, *, committing: bool = False) -> None:
        """Begin again and replay, when ``error`` left nothing committed; else raise it
        translated. Nothing was committed when PostgreSQL says it rolled the transaction back
        (:data:`~.errors.RETRYABLE`), or when the connection broke before ``COMMIT`` was sent
        (and a new one can be had): a lost reply to ``COMMIT`` is ``ConnectionLost``."""
        while True:
            lost = _lost(error, self.conn)
            self.abort()
            safe = isinstance(error, RETRYABLE) or (lost and not committing)
            if not safe or self.restarts >= RESTARTS:
                raise self.translate(error) from None
            if lost:
                fresh = self.conns.reconnect(self.conn)
                if fresh is None:
                    raise self.translate(error) from None
                self.conn = fresh
            self.restarts += 1
            if not lost:  # a deadlock's other party goes on meanwhile: a short random pause
                time.sleep(random.uniform(0.0, 0.01 * 2**self.restarts))
            try:
                self.begin()
                if self.replay is not None:
                    self.replay()
                return
            except Diverged:
                self.abort()
                raise self.translate(error) from None
            except psycopg.Error as e:
                error, committing = e, False


__all__ = ["APPLICATION_NAME", "POOL_MAX_IDLE", "RESTARTS", "Connections", "Diverged", "Pipelined"]
