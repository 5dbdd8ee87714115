"""The PostgreSQL backend: the Store contract's primitives on one PostgreSQL database; its
transactions' reads and writes are :class:`.tx.PostgresTx` (the one-statement append, the
session-row lock that orders writers of a session).

Removed messages (a deleted or cleared session) leave the session at once and are deleted
afterwards in batches of :data:`PURGE_BATCH` rows (``purge_queue``), like SQLite's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg

from ..errors import InvalidInput, StoreBusy
from ..models import HealthReport, Message
from . import rollup, schema
from .connection import Connections
from .tx import PostgresTx

if TYPE_CHECKING:
    from ..core.append import Item
    from ..core.lease import Holder
    from ..core.search import SearchRequest
    from .leases import StoreLease
    from .notify import Listening, Notified

_URL_SCHEMES = ("postgresql://", "postgres://")

#: Rows deleted per write transaction when removed messages are purged (docs/design.md rule 5).
PURGE_BATCH = 2000


class _Transaction:
    """The context manager of ``PostgresBackend.read()`` / ``write()``: a pipelined, restartable
    transaction (connection.py ``Pipelined``) and its view (tx.py)."""

    __slots__ = ("_cm", "_tx")

    def __init__(self, cm: Any) -> None:
        self._cm = cm
        self._tx: PostgresTx | None = None

    def __enter__(self) -> PostgresTx:
        self._tx = PostgresTx(self._cm.__enter__())
        return self._tx

    def __exit__(self, *exc: Any) -> bool | None:
        result: bool | None = self._cm.__exit__(*exc)
        if exc[0] is None and self._tx is not None:
            self._tx.check()
        return result


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without sessiondb's own ``schema=`` query parameter (libpq would refuse it),
    and that parameter: the schema every transaction sets with ``SET LOCAL search_path``, which
    also works through pgbouncer in transaction mode (a startup ``options`` does not)."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in pairs if k == "schema"]
    if not schemas:
        return url, None
    if len(schemas) > 1:
        raise InvalidInput("the URL names more than one schema=")
    # %20, not +, for a space: libpq reads a URL's + as a plus (options=-c%20name%3Dvalue)
    rest = urlencode([(k, v) for k, v in pairs if k != "schema"], quote_via=quote)
    return urlunsplit((*parts[:3], rest, parts.fragment)), schemas[0]


def safe_location(url: str) -> str:
    """The URL without its password (what ``Store.location`` shows)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class PostgresBackend:
    """A store in one PostgreSQL database (the contract's ``Backend``)."""

    def __init__(self, conns: Connections, readonly: bool, durability: str) -> None:
        self._conns = conns
        self._readonly = readonly
        self._durability = durability
        self._ready = False
        self._version = 0
        self._listening: Listening | None = None  # opened by the first wait (notify.py)
        self._listening_lock = threading.Lock()
        try:
            if readonly:
                self._ensure_ready()  # never creates: a missing store is StoreNotFound at once
            else:
                with suppress(StoreBusy):  # a busy server must not disable the store (rule 10)
                    self._ensure_ready()
        except BaseException:
            conns.close()  # a pool opened for a store that did not open is not left running
            raise

    @classmethod
    def open(
        cls,
        url: str,
        *,
        readonly: bool = False,
        durability: str = "normal",
        write_timeout: float = 30.0,
        pool: int = 0,
        connect_timeout: float = 10.0,
        schema: str | None = None,
        listen_url: str | None = None,
    ) -> PostgresBackend:
        if durability not in ("normal", "full"):
            raise InvalidInput(f"durability must be 'normal' or 'full', not {durability!r}")
        if isinstance(write_timeout, bool) or not isinstance(write_timeout, (int, float)):
            raise InvalidInput(f"write_timeout must be a number of seconds, not {write_timeout!r}")
        if not write_timeout > 0:
            raise InvalidInput(f"write_timeout must be positive, not {write_timeout!r}")
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
            raise InvalidInput(f"pool must be a number of connections >= 0, not {pool!r}")
        if listen_url is not None and (
            not isinstance(listen_url, str) or not listen_url.startswith(_URL_SCHEMES)
        ):
            raise InvalidInput(
                "listen_url must be a postgresql:// URL straight to the server, "
                f"not {listen_url!r:.80}"
            )
        where = safe_location(url)
        url, in_url = split_schema(url)
        if in_url is not None:
            if schema is not None and schema != in_url:
                raise InvalidInput(f"two schemas given: {schema!r} and ?schema={in_url}")
            schema = in_url
        conns = Connections(
            url,
            where,
            readonly=readonly,
            durability=durability,
            write_timeout=float(write_timeout),
            pool=pool,
            connect_timeout=connect_timeout,
            schema=schema,
        )
        # Where waiters LISTEN (notify.py): the store's own URL unless it goes through a proxy
        # that cannot carry LISTEN (pgbouncer in transaction mode).
        conns.listen_conninfo = url if listen_url is None else split_schema(listen_url)[0]
        return cls(conns, readonly, durability)

    @property
    def location(self) -> str:
        return self._conns.where

    @property
    def path(self) -> Path | None:
        return None

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def write_timeout(self) -> float:
        return self._conns.write_timeout

    @property
    def group_writes(self) -> bool:
        # Writers of different sessions commit side by side on the server: measured in
        # docs/adr/0011-group-commit.md.
        return False

    def combined_group_run(self) -> None:
        # Writers do not queue behind one another on the server (group_writes).
        return None

    @property
    def connections(self) -> Connections:
        """The connections (for PostgreSQL-specific tools and tests)."""
        self._ensure_ready()
        return self._conns

    def read(self) -> _Transaction:
        self._ensure_ready()
        return _Transaction(self._conns.transaction(writing=False))

    def write(self) -> _Transaction:
        self._ensure_ready()
        return _Transaction(self._conns.transaction(writing=True))

    def write_deferred(self) -> _Transaction:
        # Each message's tsvector is built by the client and its GIN entry written with the row
        # (docs/postgres.md "Search"): there is nothing to leave for later (docs/adr/0015).
        return self.write()

    def finish_index(self, progress: Callable[[int, int], None] | None = None) -> int:
        return 0

    def append_plain(
        self, session_id: str, items: Sequence[Item], now: float
    ) -> list[Message] | None:
        # One round trip instead of two (docs/adr/0013, amendment 3): nothing looked up first;
        # the statement finds (or makes) the row by the session's id and goes out with COMMIT.
        times = [now if i.created_at is None else i.created_at for i in items]
        found = [rollup.facts(0, at, i.meta) for i, at in zip(items, times, strict=True)]
        if any(f.rid is not None for f in found):
            return None  # usage: its rollup statement needs the row's id before COMMIT
        cm = self.write()
        with cm as tx:
            tx.append_plain(session_id, items, times, found)
        return tx.appended()

    def purge(self) -> None:
        with self._conns.read() as conn:
            pending = [int(r[0]) for r in conn.execute("SELECT sid FROM purge_queue").fetchall()]
        for internal in pending:
            while True:
                with self._conns.write() as conn:
                    done = conn.execute(
                        "DELETE FROM messages WHERE id IN"
                        " (SELECT id FROM messages WHERE sid = %s LIMIT %s)",
                        (internal, PURGE_BATCH),
                    ).rowcount
                    if done == 0:
                        conn.execute("DELETE FROM purge_queue WHERE sid = %s", (internal,))
                        break

    def space(self) -> dict[str, int]:
        from . import space

        with self.read() as tx:
            return space.split(tx.conn)

    def reclaim(self, progress: Callable[[int], None] | None = None) -> int:
        from . import space

        self._ensure_ready()
        return space.reclaim(self._conns, progress)

    def compact(self) -> int:
        from . import space

        self._ensure_ready()
        return space.compact(self._conns)

    def search(self, request: SearchRequest) -> list[tuple[Message, float]]:
        from . import search

        self._ensure_ready()
        return search.execute(self._conns, request)

    def changes(self, session_id: str | None) -> Notified:
        from .notify import Listening, Notified

        self._ensure_ready()
        with self._listening_lock:
            if self._listening is None:
                self._listening = Listening(self._conns)
            return Notified(self._listening, session_id)

    def lease_slot(self, name: str) -> StoreLease:
        from .leases import StoreLease

        return StoreLease(self.connections, name)

    def leases(self) -> list[Holder]:
        from .leases import list_leases

        return list_leases(self.connections)

    def check(self, full: bool) -> HealthReport:
        from .health import diagnose

        return diagnose(self.connections, full=full)

    def facts(self) -> dict[str, Any]:
        with self._conns.read() as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), pg_database_size(current_database())"
            ).fetchone()
        assert row is not None
        return {
            "backend": "postgresql",
            "url": self.location,
            "server_version": row[0],
            "database_size": int(row[1]),
            "durability": self._durability,
            "schema_version": self._version,
            "psycopg_version": psycopg.__version__,
        }

    def close(self) -> None:
        if self._listening is not None:
            self._listening.close()
        self._conns.close()

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        if self._readonly:
            with self._conns.read() as conn:
                version = schema.current_version(conn)
            if version == 0:
                from ..errors import StoreNotFound

                raise StoreNotFound(self.location)
            if version > schema.LATEST:
                from ..errors import UnsupportedStorage

                raise UnsupportedStorage(
                    f"{self.location} has schema version {version}, newer than this sessiondb"
                    f" supports ({schema.LATEST}); upgrade sessiondb to read it"
                )
            self._version = version
        else:
            schema.migrate(self._conns)
            self._version = schema.LATEST
            self._ready = True
            self.purge()
        self._ready = True


__all__ = [
    "PURGE_BATCH",
    "PostgresBackend",
    "safe_location",
    "split_schema",
]
