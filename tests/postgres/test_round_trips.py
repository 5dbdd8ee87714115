"""Round trips of the Store's verbs on PostgreSQL (docs/postgres.md, "Round trips"): BEGIN and its
settings travel with the first statement, COMMIT with the last; a plain append (no key, no usage)
is one statement that finds or makes the session row itself, sent with BEGIN and COMMIT (one round
trip, ADR 0013 amendment 3); otherwise the append statement needs no answer before the COMMIT (the
session row's lock read its counter). Counted from libpq's protocol
trace (tests/postgres/trips.py), directly and through pgbouncer in transaction mode; and each round
trip's messages leave in ONE send (sessiondb/postgres/wire.py), counted on the client's socket
(tests/postgres/sends.py)."""

from __future__ import annotations

from typing import Any

import pytest

import sessiondb
from tests import pg
from tests.postgres import sends, trips


@pytest.fixture(params=["postgresql", "pgbouncer"])
def store(request: pytest.FixtureRequest) -> Any:
    with sessiondb.open(pg.new_url(via=request.param)) as s:
        yield s


def _trips(store: Any, action: Any) -> tuple[int, list[str]]:
    with store.backend.connections.read() as conn:  # the thread's one direct connection
        pass
    return trips.count(conn, action)


def test_a_plain_append_is_one_round_trip(store: Any) -> None:
    store.append("s", "user", "first")
    n, lines = _trips(store, lambda: store.append("s", "assistant", "second"))
    assert n == 1, "\n".join(lines)
    assert store.messages("s")[-1].seq == 2
    # BEGIN, the append statement and COMMIT went out together, before the one Sync
    sent = [line.split("\t")[2].split()[0] for line in lines if line.startswith("F")]
    assert sent.count("Sync") == 1
    first = "\n".join(lines).split("Sync")[0]
    assert "BEGIN" in first and "INSERT INTO messages" in first and "COMMIT" in first


def test_a_batch_and_a_keyed_append(store: Any) -> None:
    store.append("s", "user", "first")
    items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    assert _trips(store, lambda: store.append_many("s", items))[0] == 1
    # a key is looked up first, under the session row's lock (two more round trips); a retry
    # stores nothing
    assert _trips(store, lambda: store.append("s", "user", "k", key="k1"))[0] == 3
    assert _trips(store, lambda: store.append("s", "user", "k", key="k1"))[0] == 3
    # usage in meta: its rollup statement needs the row's id first (the general path)
    used = {"usage": {"input_tokens": 3}}
    assert _trips(store, lambda: store.append("s", "assistant", "u", meta=used))[0] == 2
    assert [m.seq for m in store.messages("s")] == list(range(1, 9))


def test_a_new_session_and_a_read(store: Any) -> None:
    # a plain append makes its session in the same statement
    assert _trips(store, lambda: store.append("new", "user", "x"))[0] == 1
    # a keyed one looks the session up, makes its row (its id is needed), looks the key up,
    # then appends
    assert _trips(store, lambda: store.append("new2", "user", "x", key="a"))[0] == 4
    assert _trips(store, lambda: store.get_session("new"))[0] == 2
    assert _trips(store, lambda: store.messages("new"))[0] == 2
    made = store.get_session("new")
    assert made is not None and made.source == "unknown" and made.message_count == 1


@pytest.mark.skipif(not sends.supported(), reason="sends are counted from Linux's tcp_info")
def test_one_send_per_round_trip(store: Any) -> None:
    # psycopg's own pipeline wrote each statement as it was queued, and a Flush after its Sync:
    # 8 sends for an append's 2 round trips (docs/benchmarks.md). wire.py sends BEGIN, its
    # settings and the first statement read together, and the rest with COMMIT and the Sync.
    store.append("s", "user", "first")
    items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    verbs = {
        "append": (1, lambda: store.append("s", "assistant", "x")),
        "append_many": (1, lambda: store.append_many("s", items)),
        "keyed append": (3, lambda: store.append("s", "user", "k", key="k1")),
        "keyed retry": (3, lambda: store.append("s", "user", "k", key="k1")),
        "append to a new session": (1, lambda: store.append("new", "user", "x")),
        "keyed append to a new session": (4, lambda: store.append("new2", "user", "x", key="a")),
        "get_session": (2, lambda: store.get_session("s")),
        "messages": (2, lambda: store.messages("s")),
    }
    with store.backend.connections.read() as conn:  # the thread's one direct connection
        pass
    traced: list[int] = []
    for name, (expected, action) in verbs.items():
        sent = sends.count(conn, lambda a=action: traced.append(trips.count(conn, a)[0]))
        assert (traced[-1], sent) == (expected, expected), name
    assert [m.seq for m in store.messages("s")] == list(range(1, 9))
