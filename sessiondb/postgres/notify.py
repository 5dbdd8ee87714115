"""The PostgreSQL backend's wake-up for ``wait_for_messages`` (core/wait.py): ``NOTIFY`` after
the commit, ``LISTEN`` on a connection of its own, a bounded re-check when a notification is lost.

Writer side (:func:`queue`): a write transaction that changed a session's messages queues
``SELECT pg_notify(channel, session_id)`` right behind its ``COMMIT``, in the same pipeline
(connection.py ``Pipelined.commit``, wire.py ``Wire.commit``): no round trip (nor send) of its
own, and outside the transaction — a ``NOTIFY`` inside it takes the server's notification-queue
lock while the session row is still locked (issue 16 measured 0.30x the throughput). PostgreSQL
skips what follows a failed statement until the pipeline's sync, so a transaction that fails or
rolls back sends nothing; a notify that fails after a commit that succeeded never turns a
committed append into an error.
The channel name is fixed (``sessiondb``, or ``sessiondb_<schema>`` for a store in a schema of
its own, from the validated ``schema=`` option); the payload, a parameter, is the session id
(at most 256 characters, core/validate.py) or ``""`` for "any session" (more than
:data:`MAX_SESSIONS` sessions in one transaction, or a change not tied to one id).

Nobody waiting, nothing sent: a waiter's listening connection registers its backend's pid in the
store's ``listeners`` table (and removes rows of backends that are gone); each write transaction
learns whether the table holds a row, in a statement it runs anyway (the session row's lock, or
the plain append), and a process sends notifications while the last thing it learned is "yes", or
before it has learned anything. A ``pg_notify`` after the commit cost the server 70–100 µs of CPU
per append (docs/benchmarks.md, "Waiting for messages"). So a writer that learned "no" just
before a waiter registered sends nothing for that one write, and the waiter's re-check (below)
wakes it within :data:`RECHECK`; a waiter that vanished leaves a row, and writers notify for
nothing until the next waiter's registration clears it.

Waiter side (:class:`Listening`): each (process, thread) opens, on its first wait, a direct
autocommit connection of its own that runs ``LISTEN`` — never a pooled one, and it is not
transaction state: pgbouncer in transaction mode cannot carry it. The waiter drains what arrived,
checks its condition, then sleeps on the socket until a notification for its session (or for
any) arrives. Notifications can be lost (a listener behind pgbouncer, a broken connection, a
server restart), so the condition is checked again every :data:`RECHECK` seconds whatever comes:
``wait_for_messages`` is correct without ``NOTIFY`` at all, only slower to wake.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from ..errors import Error
from .connection import Connections
from .wire import Wire

CHANNEL = "sessiondb"
#: Sessions named one by one in a transaction's notifications; more send one "any" ("").
MAX_SESSIONS = 16
#: Seconds between two checks of a waiter's condition when no notification comes.
RECHECK = 1.0
#: First pause when there is no listening connection (then doubled up to RECHECK).
POLL_MIN = 0.05
#: Seconds a failed listening connection is not tried again (the waiter polls meanwhile).
RECONNECT_AFTER = 5.0
#: Longest sleep on the socket when a stop event may end the wait (it is not a file descriptor).
STOP_STEP = 0.1

_NOTIFY = "SELECT pg_notify(%s, s) FROM unnest(%s::text[]) AS s"


def _listeners(schema: str | None) -> str:
    """The store's table of listeners, named with its schema: the listening connection runs
    outside the store's transactions, so without the transaction's ``search_path`` (the
    validated ``schema=`` option, quoted)."""
    return "listeners" if schema is None else f"{sql.Identifier(schema).as_string(None)}.listeners"


def channel(schema: str | None) -> str:
    """The store's channel: at most 63 bytes (PostgreSQL's identifier length); ``schema`` was
    validated as a lower-case identifier (connection.py ``SCHEMA_NAME``)."""
    return CHANNEL if schema is None else f"{CHANNEL}_{schema}"[:63]


def queue(conn: Wire, schema: str | None, sessions: set[str]) -> None:
    """Queue the notifications of a transaction's changed sessions behind its ``COMMIT`` (in
    pipeline mode: sent with it, run only if it succeeded)."""
    payloads = sorted(sessions) if len(sessions) <= MAX_SESSIONS else [""]
    conn.execute(_NOTIFY, (channel(schema), payloads))


class _Slot:
    """One (process, thread)'s listening connection."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Any] | None = None
        self.pid = 0
        self.failed_at: float | None = None


class Listening:
    """The listening connections of one store, one per (process, thread), opened on first use."""

    def __init__(self, conns: Connections) -> None:
        self._conns = conns
        self._channel = channel(conns.schema)
        self._table = _listeners(conns.schema)
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Every thread's connection, to close with the store, or once its thread has ended (a
        #: thread pool's threads come and go: sessiondb.aio waits in anyio's).
        self._opened: list[tuple[psycopg.Connection[Any], int, threading.Thread]] = []

    def _slot(self) -> _Slot:
        slot: _Slot | None = getattr(self._local, "slot", None)
        if slot is None or slot.pid != os.getpid():
            slot = _Slot()  # a parent's connection is never used (nor closed) by a forked child
            slot.pid = os.getpid()
            self._local.slot = slot
        return slot

    def connection(self) -> psycopg.Connection[Any] | None:
        """This thread's listening connection, opened (and ``LISTEN`` run) if needed; None
        when it cannot be had now (the waiter polls)."""
        slot = self._slot()
        conn = slot.conn
        if conn is not None and not (conn.closed or conn.broken):
            return conn
        slot.conn = None
        if slot.failed_at is not None and time.monotonic() - slot.failed_at < RECONNECT_AFTER:
            return None
        try:
            conn = self._conns.connect(self._conns.listen_conninfo)
        except Error:
            slot.failed_at = time.monotonic()
            return None
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error:
            conn.close()
            slot.failed_at = time.monotonic()
            return None
        self._register(conn)
        slot.conn, slot.failed_at = conn, None
        pid, ended = os.getpid(), []
        with self._lock:
            for c, p, t in self._opened:
                if p == pid and not t.is_alive():
                    ended.append(c)
            self._opened = [
                (c, p, t) for c, p, t in self._opened if not c.closed and c not in ended
            ]
            self._opened.append((conn, pid, threading.current_thread()))
        for c in ended:
            self._close(c)
        return conn

    def _register(self, conn: psycopg.Connection[Any]) -> None:
        """This connection's backend in the listeners (module doc), rows of backends that are
        gone removed. Best effort: a role that may not write there leaves its waiters to the
        writers' other listeners and to the re-check."""
        try:
            conn.execute(
                f"DELETE FROM {self._table} WHERE pid NOT IN (SELECT pid FROM pg_stat_activity)"
            )
            conn.execute(
                f"INSERT INTO {self._table} (pid, since)"
                " VALUES (pg_backend_pid(), extract(epoch FROM clock_timestamp()))"
                " ON CONFLICT (pid) DO UPDATE SET since = excluded.since"
            )
        except psycopg.Error:
            pass

    def _close(self, conn: psycopg.Connection[Any]) -> None:
        if not (conn.closed or conn.broken):
            with contextlib.suppress(psycopg.Error):
                conn.execute(f"DELETE FROM {self._table} WHERE pid = pg_backend_pid()")
        conn.close()

    def drop(self) -> None:
        """This thread's connection broke: close it; the next wait opens another."""
        slot = self._slot()
        if slot.conn is not None:
            self._close(slot.conn)
        slot.conn, slot.failed_at = None, time.monotonic()

    def close(self) -> None:
        with self._lock:
            for conn, pid, _ in self._opened:
                if pid == os.getpid():  # a forked child never closes its parent's
                    self._close(conn)
            self._opened = []


class Notified:
    """One wait's wake-up (the contract's ``Changes``) through :class:`Listening`."""

    def __init__(self, listening: Listening, session_id: str | None) -> None:
        self._listening = listening
        self._session = session_id
        self._pause = POLL_MIN

    def _relevant(self, payload: str) -> bool:
        return self._session is None or payload in ("", self._session)

    def arm(self) -> None:
        """Listen (from now on nothing is missed), and drop what arrived before: the check
        that follows sees what it announced."""
        conn = self._listening.connection()
        if conn is None:
            return
        try:
            for _ in conn.notifies(timeout=0):
                pass
        except psycopg.Error:
            self._listening.drop()

    def sleep(self, token: object, seconds: float, stop: threading.Event | None) -> None:
        deadline = time.monotonic() + min(seconds, RECHECK)
        conn = self._listening.connection()
        if conn is None:  # no listening connection: poll, backing off up to RECHECK
            step = min(self._pause, seconds)
            self._pause = min(self._pause * 2, RECHECK)
            if stop is None:
                time.sleep(step)
            else:
                stop.wait(step)
            return
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return
            step = left if stop is None else min(left, STOP_STEP)
            try:
                for n in conn.notifies(timeout=step):
                    if self._relevant(n.payload):
                        return
            except psycopg.Error:
                self._listening.drop()
                return

    def done(self) -> None:
        """The listening connection stays for this thread's next wait."""


__all__ = [
    "CHANNEL",
    "MAX_SESSIONS",
    "RECHECK",
    "Listening",
    "Notified",
    "channel",
    "queue",
]
