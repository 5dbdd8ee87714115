"""PostgreSQL's wake-up for ``wait_for_messages`` (sessiondb/postgres/notify.py): each append
sends a NOTIFY after its commit — also through pgbouncer in transaction mode — a rolled-back one
sends none, none is sent while nobody listens, and a waiter whose notification is lost is still
woken by its bounded re-check."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import psycopg
import pytest

import sessiondb
from sessiondb.postgres import notify
from tests import pg
from tests._workers_wait import (
    LONG,
    failed_writes_then_one,
    waited_until_woken,
    writer,
    writer_without_notify,
)


def _urls(via: str) -> tuple[str, str]:
    """(a direct URL, the writer's URL: direct or through pgbouncer) of one fresh schema."""
    schema = pg.new_schema()
    direct = pg.url_for(schema)
    return direct, pg.url_for(schema, pg.pgbouncer()) if via == "pgbouncer" else direct


@pytest.mark.parametrize("via", ["postgresql", "pgbouncer"])
def test_a_listener_is_woken_by_the_notify_of_another_process_append(via: str) -> None:
    """The listener's re-check is set far beyond its timeout: only the NOTIFY wakes it."""
    direct, write_url = _urls(via)
    assert waited_until_woken(direct, "s", writer, write_url, recheck=10 * LONG) < LONG / 2


def test_a_store_through_pgbouncer_listens_on_its_listen_url() -> None:
    """LISTEN cannot go through pgbouncer in transaction mode: ``listen_url`` sends it straight
    to the server, and the NOTIFY (re-check set beyond the timeout) wakes the waiter."""
    direct, bounced = _urls("pgbouncer")
    assert (
        waited_until_woken(bounced, "s", writer, bounced, 10 * LONG, listen_url=direct) < LONG / 2
    )


def test_listen_url_must_be_a_postgresql_url() -> None:
    direct, _ = _urls("postgresql")
    for bad in ("/tmp/x.db", 5, "http://x"):
        with pytest.raises(sessiondb.InvalidInput):
            sessiondb.open(direct, listen_url=bad)


def test_a_notify_refused_after_the_commit_fails_nothing_and_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An engine without pg_notify (docs/scale-out.md): the append that met the refusal was
    committed and returns; the store sends no NOTIFY after it (waiters re-check)."""
    direct, _ = _urls("postgresql")
    monkeypatch.setattr(notify, "_NOTIFY", "SELECT sessiondb_no_such_notify(%s, %s)")
    with sessiondb.open(direct) as s:
        assert s.append("s", "user", "one").seq == 1
        assert s.backend.connections.notify is False  # type: ignore[attr-defined]
        assert s.append("s", "user", "two").seq == 2
        assert [m.content for m in s.messages("s")] == ["one", "two"]


def test_a_listener_whose_notification_is_lost_is_woken_by_its_recheck() -> None:
    direct, _ = _urls("postgresql")
    assert waited_until_woken(direct, "s", writer_without_notify, direct, recheck=None) < LONG / 2


@pytest.mark.parametrize("via", ["postgresql", "pgbouncer"])
def test_a_rolled_back_write_sends_no_notification(via: str) -> None:
    direct, write_url = _urls(via)
    schema = direct.rsplit("schema=", 1)[1]
    with _raw_listener(schema, registered=True) as raw:
        with sessiondb.open(write_url) as s:
            s.append("bad", "user", "content", key="k1")
        assert _payloads_until(raw, "bad") == ["bad"]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            failed = pool.apply(failed_writes_then_one, (write_url, "bad", "good"))
        assert failed == ["KeyConflict", "exception"]
        # Notifications come in commit order: one of a rolled-back write would come first.
        assert _payloads_until(raw, "good") == ["good"]
    with sessiondb.open(direct) as s:
        assert s.count("bad") == 1 and s.count("good") == 1


def _raw_listener(schema: str, registered: bool) -> psycopg.Connection[Any]:
    """A bare connection listening on the store's channel; ``registered``: in its listeners
    table too, as sessiondb's own waiters are."""
    sessiondb.open(pg.url_for(schema)).close()  # the store's tables made
    raw = psycopg.connect(pg.BASE_URL, autocommit=True)
    raw.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(notify.channel(schema))))
    if registered:
        _register(raw, schema)
    return raw


def _register(raw: psycopg.Connection[Any], schema: str) -> None:
    raw.execute(
        psycopg.sql.SQL("INSERT INTO {}.listeners VALUES (pg_backend_pid(), 0)").format(
            psycopg.sql.Identifier(schema)
        )
    )


def _listeners(schema: str) -> list[int]:
    with psycopg.connect(pg.BASE_URL, autocommit=True) as admin:
        rows = admin.execute(
            psycopg.sql.SQL("SELECT pid FROM {}.listeners ORDER BY pid").format(
                psycopg.sql.Identifier(schema)
            )
        ).fetchall()
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("via", ["postgresql", "pgbouncer"])
def test_no_notification_is_sent_while_nobody_listens(via: str) -> None:
    """A process notifies until a write of its own finds no listener registered, then not —
    plain appends and keyed ones alike — and again from its write after one registered (the
    write that finds it still sends none: its waiter's re-check covers it, notify.py)."""
    direct, write_url = _urls(via)
    schema = direct.rsplit("schema=", 1)[1]
    with _raw_listener(schema, registered=False) as raw, sessiondb.open(write_url) as s:
        s.append("a1", "user", "first: nothing learned yet")
        s.append("a2", "user", "plain: learned that nobody listens")
        s.append("a2", "user", "keyed", key="k")
        _register(raw, schema)
        s.append("a3", "user", "learns that someone does")
        s.append("a4", "user", "plain, notified")
        s.append("a4", "user", "keyed, notified", key="k")
        s.append("a5", "user", "last")
        assert _payloads_until(raw, "a5") == ["a1", "a4", "a4", "a5"]


def test_a_waiter_registers_while_it_listens_and_clears_the_rows_of_gone_ones() -> None:
    direct, _ = _urls("postgresql")
    schema = direct.rsplit("schema=", 1)[1]
    sessiondb.open(direct).close()  # the store's tables made
    with psycopg.connect(pg.BASE_URL, autocommit=True) as admin:
        gone = admin.execute("SELECT max(pid) + 100000 FROM pg_stat_activity").fetchone()
        assert gone is not None
        admin.execute(
            psycopg.sql.SQL("INSERT INTO {}.listeners VALUES (%s, 0)").format(
                psycopg.sql.Identifier(schema)
            ),
            (gone[0],),
        )
    with sessiondb.open(direct) as s:
        assert s.wait_for_messages("s", after=0, timeout=0.05) is False
        conn = s.backend.connections  # type: ignore[attr-defined]
        listening = s.backend._listening.connection()  # type: ignore[attr-defined]
        assert conn is not None and listening is not None
        assert _listeners(schema) == [listening.info.backend_pid]  # the gone one's row cleared
    assert _listeners(schema) == []  # removed when the store closed


def _payloads_until(conn: psycopg.Connection[Any], last: str) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + 60
    while last not in got and time.monotonic() < deadline:
        got += [n.payload for n in conn.notifies(timeout=1.0)]
    return got


def test_the_channel_name_fits_postgresql_and_is_the_schemas() -> None:
    assert notify.channel(None) == "sessiondb"
    assert notify.channel("s_0123") == "sessiondb_s_0123"
    assert len(notify.channel("a" * 63).encode()) == 63


def test_a_thread_s_listening_connection_is_closed_once_the_thread_has_ended() -> None:
    """Threads come and go (sessiondb.aio waits in anyio's pool): each one's LISTEN connection
    is closed when a later thread opens its own, not kept until the store closes."""
    direct, _ = _urls("postgresql")
    schema = direct.rsplit("schema=", 1)[1]

    def listening() -> int:
        """Live backends listening on the store's channel (each registers: notify.py)."""
        with psycopg.connect(pg.BASE_URL, autocommit=True) as admin:
            row = admin.execute(
                psycopg.sql.SQL(
                    "SELECT count(*) FROM pg_stat_activity a JOIN {}.listeners l ON l.pid = a.pid"
                ).format(psycopg.sql.Identifier(schema))
            ).fetchone()
        return int(row[0]) if row else 0

    with sessiondb.open(direct) as s:
        for _ in range(4):
            t = threading.Thread(
                target=s.wait_for_messages, args=("s",), kwargs={"after": 0, "timeout": 0.05}
            )
            t.start()
            t.join(60)
        assert listening() == 1  # the last thread's (ended, swept by the next thread's opening)
    assert listening() == 0  # closed with the store
