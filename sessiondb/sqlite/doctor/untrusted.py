"""Connections to a database file the doctor does not trust.

The doctor is pointed at files it did not write: a store damaged by a crash, a file someone
sent, a file in a folder another machine controls. Such a file chooses its own schema, so its
table names, views and triggers are the author's code. Every connection the doctor opens on it
therefore:

* never runs SQL built from anything read from the file (callers use fixed statements, and
  names only from sessiondb's own constants); apsw runs every statement of a string, so a
  name that closes its quote would start the author's statements
  (tests/sqlite/test_doctor_hostile.py::test_fts_name_that_closes_its_quote_runs_nothing);
* runs none of the file's triggers (``SQLITE_DBCONFIG_ENABLE_TRIGGER`` off) and none of its
  views (``SQLITE_DBCONFIG_ENABLE_VIEW`` off), except the named views of sessiondb's own that
  a caller has checked to be exactly sessiondb's text (the trigram index's content view);
* treats the schema as untrusted (``trusted_schema`` off: no function with side effects from
  the schema), is in defensive mode (no writes to the schema or to FTS5's shadow tables by
  SQL), loads no extension, and cannot ATTACH anything (attach limit 0, and an authorizer that
  denies ATTACH/DETACH and, for inspection, every write).

Triggers on FTS5's shadow tables are more than a policy question: SQLite 3.54's FTS5 crashes
the process when such a trigger fires during ``'rebuild'``
(tests/sqlite/test_doctor_hostile.py::test_triggers_on_fts_shadow_tables_never_run).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from urllib.parse import quote

import apsw

# Pragmas the doctor's own statements use, and those SQLite's FTS5 runs internally.
_PRAGMAS = frozenset(
    {"quick_check", "integrity_check", "data_version", "journal_mode", "page_size", "page_count"}
)
_READS = frozenset(
    {
        apsw.SQLITE_SELECT,
        apsw.SQLITE_READ,
        apsw.SQLITE_FUNCTION,
        apsw.SQLITE_RECURSIVE,
        apsw.SQLITE_TRANSACTION,
        apsw.SQLITE_SAVEPOINT,
    }
)
_ROW_WRITES = frozenset({apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE})


class _Authorizer:
    """Allow reads (and, for maintenance, row writes); deny ATTACH, schema changes, unknown
    pragmas, and anything done on behalf of a trigger or a view not in ``views``."""

    def __init__(self, *, writes: bool, views: Collection[str]) -> None:
        self.writes = writes
        self.views = frozenset(views)

    def __call__(
        self,
        op: int,
        one: str | None,
        two: str | None,
        database: str | None,
        trigger_or_view: str | None,
    ) -> int:
        if trigger_or_view is not None and trigger_or_view not in self.views:
            return apsw.SQLITE_DENY
        if op in _READS:
            return apsw.SQLITE_OK
        if op == apsw.SQLITE_PRAGMA and (one or "").lower() in _PRAGMAS:
            return apsw.SQLITE_OK
        if self.writes and op in _ROW_WRITES and database in ("main", None):
            return apsw.SQLITE_OK
        return apsw.SQLITE_DENY


def harden(
    conn: apsw.Connection, *, writes: bool = False, views: Collection[str] = ()
) -> apsw.Connection:
    """Configure ``conn`` for a file whose content is not trusted (see the module docstring)."""
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    conn.config(apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_VIEW, 1 if views else 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, 0)
    conn.limit(apsw.SQLITE_LIMIT_ATTACHED, 0)
    conn.authorizer = _Authorizer(writes=writes, views=views)
    return conn


def open_untrusted(
    path: str | os.PathLike[str],
    *,
    readonly: bool = True,
    writes: bool = False,
    views: Collection[str] = (),
    no_checkpoint_on_close: bool = False,
    immutable: bool = False,
) -> apsw.Connection:
    """A hardened connection to ``path``. ``readonly`` opens with SQLITE_OPEN_READONLY;
    ``writes`` lets this connection's own statements change rows (maintenance of a store);
    ``no_checkpoint_on_close`` keeps a WAL as it is when the connection closes (a private copy
    being salvaged is read again, page by page, afterwards); ``immutable`` reads a file in a
    read-only folder without the WAL index (a live writer is then not seen)."""
    flags = apsw.SQLITE_OPEN_URI
    flags |= apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE
    conn = apsw.Connection(uri(path, **({"immutable": "1"} if immutable else {})), flags=flags)
    try:
        if no_checkpoint_on_close:
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        return harden(conn, writes=writes, views=views)
    except BaseException:
        conn.close()
        raise


def uri(path: str | os.PathLike[str], **params: str) -> str:
    """A ``file:`` URI for ``path`` (``?`` and ``#`` in a file name are not URI syntax)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return "file:" + quote(str(Path(os.fspath(path)))) + (f"?{query}" if query else "")


def shown(text: object, limit: int = 80) -> str:
    """Text read from a file, made safe to print in a terminal: control characters escaped,
    length bounded."""
    s = str(text)
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in s)
    return out if len(out) <= limit else out[: limit - 1] + "…"


__all__ = ["harden", "open_untrusted", "shown", "uri"]
