"""Restarts of a transaction PostgreSQL rolled back (docs/postgres.md, "Retries and lost
replies"; postgres/connection.py ``Pipelined.recover``, postgres/tx.py): a deadlock victim and a
connection terminated before COMMIT left nothing committed, so the transaction is begun again and
replayed — once, and every message is stored once. A reply lost after COMMIT is the other case:
ConnectionLost, never sent again (tests/postgres/test_lost_reply.py)."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import psycopg

import sessiondb
from tests import pg

#: The store's connections detect the deadlock (the victim is the backend whose check finds
#: it); the intruder's own check comes far later. 3 s leaves the intruder time to close the
#: cycle on a loaded machine.
STORE_DEADLOCK_TIMEOUT = "3s"


def _raw(schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(pg.BASE_URL, autocommit=True)
    conn.execute("SET deadlock_timeout = '10min'")
    conn.execute(f"SET search_path = {schema}")  # a name made by tests/pg.py, never input
    return conn


def _waiting(app: str, timeout: float = 60.0) -> int:
    """The pid of the store's backend once it waits for a lock."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(pg.BASE_URL, autocommit=True) as admin:
        while time.monotonic() < deadline:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                " AND wait_event_type = 'Lock'",
                (app,),
            ).fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.01)
    raise AssertionError("the store never waited for the lock")


def _in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # reported by the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_deadlock_victim_is_restarted_and_stores_once() -> None:
    schema = pg.new_schema()
    app = "deadlock-" + secrets.token_hex(4)
    url = pg.url_for(schema) + f"&application_name={app}"
    url += f"&options=-c%20deadlock_timeout%3D{STORE_DEADLOCK_TIMEOUT}"
    with sessiondb.open(url) as store, _raw(schema) as intruder:
        store.append("s", "user", "one")
        ref = intruder.execute("SELECT id FROM sessions WHERE session_id = 's'").fetchone()[0]
        # The intruder takes seq 2 without the session's lock (no writer of sessiondb would)...
        intruder.execute("BEGIN")
        intruder.execute(
            "INSERT INTO messages (sid, seq, role, content, created_at, tsv, nterms, cjk)"
            " VALUES (%s, 2, 'user', 'intruder', 0, '', 0, false)",
            (ref,),
        )
        # ...the store's append locks the session row, then waits for the intruder's seq 2...
        t, out = _in_thread(lambda: store.append("s", "user", "two"))
        _waiting(app)
        # ...and the intruder waits for the session row: a deadlock. The store's backend finds
        # it and rolls its transaction back, which hands the row to the intruder.
        intruder.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (ref,))
        intruder.execute("ROLLBACK")
        t.join(120)
        assert not t.is_alive()
        assert "error" not in out, out.get("error")
        assert out["value"].seq == 2  # the replayed transaction stored it
        assert [(m.seq, m.content) for m in store.messages("s")] == [(1, "one"), (2, "two")]


def test_a_connection_terminated_before_commit_is_replayed_once() -> None:
    schema = pg.new_schema()
    app = "terminated-" + secrets.token_hex(4)
    url = pg.url_for(schema) + f"&application_name={app}"
    with sessiondb.open(url) as store, _raw(schema) as holder:
        store.append("s", "user", "one")
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM sessions WHERE session_id = 's' FOR UPDATE")
        t, out = _in_thread(lambda: store.append("s", "user", "two"))  # no key: still safe
        pid = _waiting(app)
        with psycopg.connect(pg.BASE_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _waiting(app)  # begun again on a new connection: waiting for the row again
        holder.execute("ROLLBACK")
        t.join(120)
        assert not t.is_alive()
        assert "error" not in out, out.get("error")
        assert out["value"].seq == 2
        assert [(m.seq, m.content) for m in store.messages("s")] == [(1, "one"), (2, "two")]


def _counter_moved_during_deadlock(key: str | None) -> tuple[sessiondb.Store, dict[str, Any]]:
    """The store's append of "two" deadlocked by an intruder that then commits its own seq 2
    and moves the session's counter; returns the store (open) and the append's outcome."""
    schema = pg.new_schema()
    app = "diverge-" + secrets.token_hex(4)
    url = pg.url_for(schema) + f"&application_name={app}"
    url += f"&options=-c%20deadlock_timeout%3D{STORE_DEADLOCK_TIMEOUT}"
    store = sessiondb.open(url)
    with _raw(schema) as intruder:
        store.append("s", "user", "one")
        ref = intruder.execute("SELECT id FROM sessions WHERE session_id = 's'").fetchone()[0]
        intruder.execute("BEGIN")
        intruder.execute(
            "INSERT INTO messages (sid, seq, role, content, created_at, tsv, nterms, cjk)"
            " VALUES (%s, 2, 'user', 'intruder', 0, '', 0, false)",
            (ref,),
        )
        t, out = _in_thread(lambda: store.append("s", "user", "two", key=key))
        _waiting(app)
        intruder.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (ref,))
        # the intruder commits its seq 2 and moves the counter: a replay would read another one
        intruder.execute("UPDATE sessions SET message_count = 2 WHERE id = %s", (ref,))
        intruder.execute("COMMIT")
        t.join(120)
        assert not t.is_alive()
    return store, out


def test_a_replay_that_would_differ_is_not_made() -> None:
    """A restart replays only a transaction whose reads answer as before: here the session's
    counter moved meanwhile (another writer committed), so the deadlock is reported. (A keyed
    append: it reads the session and its keys before it writes.)"""
    store, out = _counter_moved_during_deadlock(key="k2")
    with store:
        assert isinstance(out.get("error"), sessiondb.StoreBusy), out
        assert "deadlock" in str(out["error"])
        assert [(m.seq, m.content) for m in store.messages("s")] == [(1, "one"), (2, "intruder")]
        assert store.append("s", "user", "two", key="k2").seq == 3  # the caller's own retry


def test_a_plain_append_reads_nothing_and_is_replayed_after_the_counter_moved() -> None:
    """A plain append (no key) is one statement that reads nothing before it writes (ADR 0013,
    amendment 3): begun again after the deadlock, it takes the next seq — the same transaction."""
    store, out = _counter_moved_during_deadlock(key=None)
    with store:
        assert "error" not in out, out.get("error")
        assert out["value"].seq == 3
        assert [(m.seq, m.content) for m in store.messages("s")] == [
            (1, "one"),
            (2, "intruder"),
            (3, "two"),
        ]
