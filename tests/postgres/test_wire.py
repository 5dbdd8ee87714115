"""The contract transactions' pipeline (sessiondb/postgres/wire.py): placeholders, and an error
of a statement whose answer was never read — raised at COMMIT, the connection usable after."""

from __future__ import annotations

from typing import Any

import pytest

import sessiondb
from sessiondb.errors import Error
from sessiondb.postgres.wire import _convert
from tests import pg


def test_placeholders() -> None:
    assert _convert("SELECT %s, %s, '%%'") == ("SELECT $1, $2, '%'", 2)
    assert _convert("SELECT %(a)s, %(b)s, %(a)s") == ("SELECT $1, $2, $1", ("a", "b"))
    assert _convert("COMMIT") == ("COMMIT", 0)


@pytest.fixture(params=["postgresql", "pgbouncer"])
def store(request: pytest.FixtureRequest) -> Any:
    with sessiondb.open(pg.new_url(via=request.param)) as s:
        yield s


def test_an_unread_error_is_raised_at_commit(store: Any) -> None:
    store.append("s", "user", "first")
    conns = store.backend.connections
    with pytest.raises(Error), conns.transaction(writing=True) as tx:
        tx.wire.execute("UPDATE sessions SET message_count = 1 / (message_count - 1)")
        tx.wire.execute("SELECT 1")  # answered "aborted", dropped with the rollback
    # nothing of it was committed, and the same connection carries the next transactions
    assert store.get_session("s").message_count == 1
    assert store.append("s", "user", "second").seq == 2
    with conns.transaction(writing=False) as tx:
        assert tx.wire.execute("SELECT %(x)s::int + %(x)s::int", {"x": 2}).fetchone() == (4,)
