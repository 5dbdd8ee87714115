from __future__ import annotations

from typing import cast

import sessiondb
from sessiondb.core.store import SessionStore
from sessiondb.sqlite.backend import SQLiteBackend
from sessiondb.sqlite.engine import Engine


def engine_of(store: sessiondb.Store) -> Engine:
    """The SQLite engine under a store opened on a file (schema in place), for tests of the
    SQLite backend itself."""
    backend = cast(SessionStore, store).backend
    assert isinstance(backend, SQLiteBackend)
    return backend.engine
