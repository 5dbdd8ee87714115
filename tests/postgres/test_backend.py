"""PostgreSQL-specific behaviour: the plan traps of docs/postgres.md (evidence 6) forbidden and
checked, NUL and 16 MiB round trips, errors translated, pooling, durability settings."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

import sessiondb
from sessiondb.errors import StoreBusy
from tests import pg


@pytest.fixture
def url() -> str:
    return pg.new_url()


@pytest.fixture
def store(url: str) -> Any:
    with sessiondb.open(url) as s:
        yield s


def _conn(store: Any) -> Any:
    return store.backend.connections


def test_no_automatic_prepared_statements(store: Any) -> None:
    store.append("s", "user", "hello")
    with _conn(store).read() as conn:
        assert conn.prepare_threshold is None
    for _ in range(10):  # psycopg would prepare a query run 5 times with the default threshold
        store.search("hello")
    with _conn(store).read() as conn:
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert prepared == (0,)


def _plan(store: Any, sql: str, args: Any) -> str:
    with _conn(store).read() as conn:
        rows = conn.execute("EXPLAIN " + sql, args).fetchall()
    return "\n".join(r[0] for r in rows)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    original = psycopg.Connection.execute

    def spy(self: Any, query: Any, params: Any = None, *args: Any, **kw: Any) -> Any:
        seen.append((str(query), params))
        return original(self, query, params, *args, **kw)

    monkeypatch.setattr(psycopg.Connection, "execute", spy)
    return seen


def test_search_candidates_come_from_the_word_index_not_a_backward_scan(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement the backend runs for a rare word's candidates, EXPLAINed with its own
    parameters: the GIN index drives it, never the primary key walked backwards (docs/postgres.md,
    evidence 6: 22 of 40 rare-word searches hit a 10 s timeout that way); and no search statement
    is a CTE (834 ms vs 9.9 ms measured there)."""
    store.append_many("s", [{"role": "user", "content": f"common word {i}"} for i in range(3000)])
    store.append("s", "user", "a rare zebra")
    with _conn(store).write() as conn:
        conn.execute("ANALYZE messages")
    seen = _spy(monkeypatch)
    assert [h.message.content for h in store.search("zebra")] == ["a rare zebra"]
    monkeypatch.undo()
    searches = [(q, p) for q, p in seen if "tsv @@" in q or "m.id = ANY" in q]
    assert searches and not any(q.lstrip().upper().startswith("WITH") for q, _ in searches)
    fenced = [(q, p) for q, p in searches if "tsv @@" in q and "LIMIT" in q]
    query, params = fenced[0]
    plan = _plan(store, query, params)
    assert "messages_search" in plan and "Backward" not in plan, plan


def test_nul_round_trips_everywhere(store: Any) -> None:
    text = "a\x00b\x00\x00c \x00"
    store.create_session("s", title="t\x00itle")
    m = store.append("s", "user", text, meta={"x": "\x00"})
    store.end_session("s", reason="r\x00")
    assert store.messages("s")[0].content == text == m.content
    assert store.messages("s")[0].meta == {"x": "\x00"}
    session = store.get_session("s")
    assert session.title == "t\x00itle" and session.end_reason == "r\x00"
    assert [h.message.seq for h in store.search("b")] == [1]


def test_sixteen_mib_round_trip(store: Any) -> None:
    size = 16 * 1024 * 1024 - 8192 - 64
    text = ("0123456789abcdef" * (size // 16 + 1))[:size]
    m = store.append("big", "user", text)
    assert store.messages("big")[0].content == text and m.seq == 1
    # Distinct tokens beyond the bounded prefix do not break the append (docs/postgres.md,
    # evidence 7).
    import uuid

    noisy = " ".join(uuid.uuid4().hex for _ in range(60_000))
    store.append("big", "tool", noisy)
    assert store.count("big") == 2


def test_durability_maps_to_synchronous_commit(url: str) -> None:
    for durability, expected in (("normal", "off"), ("full", "on")):
        with sessiondb.open(url, durability=durability) as s:
            with s.backend.connections.write() as conn:  # type: ignore[attr-defined]
                row = conn.execute("SHOW synchronous_commit").fetchone()
            assert row == (expected,)


def test_lock_timeout_is_store_busy_naming_the_holder(url: str) -> None:
    with sessiondb.open(url) as s:
        s.append("s", "user", "x")
    from sessiondb.postgres.backend import split_schema

    conninfo, schema = split_schema(url)
    holder = psycopg.connect(conninfo, autocommit=False, application_name="the-holder")
    try:
        holder.execute(f"SET search_path = {schema}")  # a schema tests/pg.py made and checked
        holder.execute("SELECT 1 FROM sessions WHERE session_id = 's' FOR UPDATE")
        with sessiondb.open(url, write_timeout=0.3) as s, pytest.raises(StoreBusy) as info:
            s.append("s", "user", "y")
        assert "the-holder" in str(info.value)
        assert info.value.holder_pid == holder.info.backend_pid
    finally:
        holder.rollback()
        holder.close()


def test_pool_serves_threads(url: str) -> None:
    with sessiondb.open(url, pool=4) as s:
        errors: list[BaseException] = []

        def run(t: int) -> None:
            try:
                for i in range(50):
                    s.append("shared", "user", f"{t}:{i}", key=f"{t}:{i}")
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert [m.seq for m in s.messages("shared")] == list(range(1, 401))


def test_a_terminated_idle_connection_is_replaced(store: Any) -> None:
    store.append("s", "user", "one")
    with _conn(store).read() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(pg.BASE_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert store.append("s", "user", "two").seq == 2  # the BEGIN found it broken: reconnected


def test_password_never_shown(url: str) -> None:
    from sessiondb.postgres.backend import safe_location

    assert safe_location("postgresql://u:secret@h:5/db?x=1") == "postgresql://u@h:5/db?x=1"


def test_check_and_doctor_report_the_server(url: str) -> None:
    from click.testing import CliRunner

    from sessiondb.cli.app import cli as main

    with sessiondb.open(url) as s:
        s.append("s", "user", "x")
        report = s.check(full=True)
    names = {c.name for c in report.checks}
    assert {"schema", "connections", "extensions", "integrity", "vacuum", "transactions"} <= names
    assert report.status in ("ok", "warn")
    out = CliRunner().invoke(main, ["doctor", "--json", url])
    assert out.exit_code in (0, 1), out.output
    assert '"schema"' in out.output and '"connections"' in out.output
    down = CliRunner().invoke(main, ["doctor", "postgresql://postgres@127.0.0.1:1/none"])
    assert down.exit_code == 2 and "cannot connect" in down.output
    refused = CliRunner().invoke(main, ["doctor", "--repair", "--yes", url])
    assert refused.exit_code == 2 and "point in time" in refused.output
