"""A contract transaction's statements on the wire: libpq's pipeline mode, one send per round trip
(ADR 0013, amendment; docs/benchmarks.md, "PostgreSQL: round trips and the search plan").

psycopg's own pipeline (``Connection.pipeline()``) writes each statement to the socket as soon as
it is queued, and a Flush after its Sync: an unkeyed append went out in 8 sends for its 2 round
trips (strace, tcp_info; docs/benchmarks.md). Here a statement is only written into libpq's
output buffer (in pipeline mode libpq sends that buffer by itself only once it passes its size
threshold); the buffer goes out when an answer is needed — a Flush message is added and the
statements still unanswered travel with it — or at the end, ``COMMIT`` and the Sync together.
So BEGIN, its settings and the first statement read leave in one send, and the last statements
with ``COMMIT`` in one more. tests/postgres/test_round_trips.py counts the sends (the client
socket's data segments) per round trip.

Parameters are adapted and rows loaded by psycopg's Transformer over the connection's adapters,
as ``Connection.execute`` does; the queries are this package's constants, whose ``%s`` and
``%(name)s`` placeholders become ``$n`` here (values never enter the SQL text).

Errors keep psycopg's meaning: a statement's error is raised by the first read that reaches its
result (or by :meth:`Wire.commit`), as the ``psycopg.errors`` class of its SQLSTATE; a broken
connection is ``psycopg.OperationalError``. Nothing is retried here (connection.py ``Pipelined``
decides).
"""

from __future__ import annotations

import functools
import re
import select
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

_PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?s|%%")
_FATAL = pq.ExecStatus.FATAL_ERROR
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_SYNCED = pq.ExecStatus.PIPELINE_SYNC
_BAD = pq.ConnStatus.BAD
#: Seconds one wait on the socket lasts before it is simply begun again (signals get a chance;
#: how long a statement may run is the server's lock_timeout / statement_timeout).
_POLL = 1.0


@functools.lru_cache(maxsize=512)
def _convert(query: str) -> tuple[str, tuple[str, ...] | int]:
    """The query with ``$n`` placeholders, and the parameters' names in order (named style) or
    their number (positional style)."""
    names: list[str] = []
    count = 0

    def one(m: re.Match[str]) -> str:
        nonlocal count
        if m.group(0) == "%%":
            return "%"
        name = m.group(1)
        if name is None:
            count += 1
            return f"${count}"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PLACEHOLDER.sub(one, query)
    if names and count:
        raise psycopg.ProgrammingError("a query mixes %s and %(name)s placeholders")
    return text, (tuple(names) if names else count)


def _values(query: str, spec: tuple[str, ...] | int, params: Any) -> list[Any]:
    if params is None:
        params = ()
    if isinstance(spec, tuple):
        if not isinstance(params, Mapping):
            raise psycopg.ProgrammingError(f"named placeholders need a mapping: {query[:60]}")
        return [params[name] for name in spec]
    values = list(params)
    if len(values) != spec:
        raise psycopg.ProgrammingError(f"{spec} placeholders, {len(values)} values: {query[:60]}")
    return values


class Rows:
    """One statement's answer, read from the wire when first asked for (a cursor's reading
    methods: ``fetchone``, ``fetchall``, iteration)."""

    __slots__ = ("_pos", "_results", "_rows", "_wire")

    def __init__(self, wire: Wire) -> None:
        self._wire = wire
        self._results: list[pq.abc.PGresult] | None = None
        self._rows: list[tuple[Any, ...]] | None = None
        self._pos = 0

    def _loaded(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            if self._results is None:
                self._wire.read_until(self)
            assert self._results is not None
            _raise_error(self._results, self._wire.conn)
            result = self._results[0]
            if result.status == _ABORTED:  # an earlier statement's error was already raised
                raise errors.PipelineAborted("pipeline aborted")
            loader = Transformer.from_context(self._wire.conn)
            loader.set_pgresult(result)
            self._rows = loader.load_rows(0, result.ntuples, tuple)
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._loaded()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._loaded()
        out, self._pos = rows[self._pos :], len(rows)
        return out

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row


class Wire:
    """One transaction's statements in libpq's pipeline mode on ``conn`` (module doc)."""

    __slots__ = (
        "_commit",
        "_dumper",
        "_encoding",
        "_pg",
        "_queue",
        "_unflushed",
        "conn",
        "refused",
    )

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._pg = conn.pgconn
        self._dumper = Transformer.from_context(conn)
        self._encoding = conn.info.encoding
        #: What the server owes an answer to, in order: statements, and None for a Sync.
        self._queue: deque[Rows | None] = deque()
        #: Statements written since the last Flush or Sync (the server has not been asked yet).
        self._unflushed = False
        #: The transaction's ``COMMIT`` once queued (:meth:`commit`).
        self._commit: Rows | None = None
        #: The server answered a statement queued before ``COMMIT`` with an error, so it never
        #: ran the ``COMMIT``: it answers in order, skips what follows an error up to the Sync,
        #: and ends the session after a FATAL one (``pg_terminate_backend`` while the statement
        #: waited). Nothing was committed then, even though ``COMMIT`` was sent: connection.py
        #: may begin the transaction again. An error libpq made itself (the connection closed
        #: with no answer) has no SQLSTATE and tells nothing: it does not count.
        self.refused = False

    def enter(self) -> None:
        self._pg.enter_pipeline_mode()

    def execute(self, query: str, params: Any = None) -> Rows:
        """Write one statement into the output buffer; its answer is read when asked for."""
        text, spec = _convert(query)
        values = _values(query, spec, params)
        if values:
            dumped = self._dumper.dump_sequence(values, [PyFormat.AUTO] * len(values))
            types, formats = self._dumper.types, self._dumper.formats
        else:
            dumped, types, formats = [], (), []
        self._pg.send_query_params(
            text.encode(self._encoding), dumped, types, formats, pq.Format.TEXT
        )
        rows = Rows(self)
        self._queue.append(rows)
        self._unflushed = True
        return rows

    def read_until(self, target: Rows) -> None:
        """Send what is buffered with a Flush (when the server was not asked yet), then read
        answers in order up to ``target``'s; the first error among them is raised."""
        if self._unflushed:
            self._pg.send_flush_request()
            self._unflushed = False
        self._send()
        while target._results is None:
            self._take()

    def commit(self, then: Callable[[Wire], None] | None = None) -> psycopg.Error | None:
        """``COMMIT`` and a Sync, sent with whatever is still buffered; every answer read, the
        first error raised; then out of pipeline mode.

        ``then`` queues statements behind the ``COMMIT``, before the Sync (the NOTIFY of
        notify.py): the server runs them only if the commit succeeded. An error of theirs after
        a commit that succeeded is returned, not raised: the transaction is committed."""
        committed = self._commit = self.execute("COMMIT")
        if then is not None:
            then(self)
        try:
            self._sync()
        except psycopg.Error as e:
            if then is None or not _committed(committed):
                raise
            self.close()  # the rest of the answers read, out of pipeline mode
            return e
        self._pg.exit_pipeline_mode()
        return None

    def close(self) -> None:
        """Out of pipeline mode whatever happened: a Sync, every answer read and its errors
        dropped (the caller rolls back). A broken connection: nothing to do. Raises only when
        the connection fails meanwhile (the caller closes it then)."""
        if self._pg.status == _BAD or self._pg.pipeline_status == pq.PipelineStatus.OFF:
            return
        self._pg.pipeline_sync()
        self._queue.append(None)
        self._unflushed = False
        self._send()
        while self._queue:
            self._take(raising=False)
        self._pg.exit_pipeline_mode()

    # -- the socket -----------------------------------------------------------------------------

    def _sync(self) -> None:
        self._pg.pipeline_sync()
        self._queue.append(None)
        self._unflushed = False
        self._send()
        while self._queue:
            self._take()

    def _wait(self, write: bool) -> bool:
        """Wait (at most :data:`_POLL` s) for the socket; whether it can be read."""
        poller = select.poll()
        poller.register(self._pg.socket, select.POLLIN | (select.POLLOUT if write else 0))
        return any(
            events & (select.POLLIN | select.POLLERR | select.POLLHUP)
            for _, events in poller.poll(_POLL * 1000)
        )

    def _send(self) -> None:
        while self._pg.flush():  # 1: more to send, the socket is full
            if self._wait(write=True):  # the server may wait for us to read before it reads
                self._pg.consume_input()

    def _take(self, raising: bool = True) -> None:
        """Read the next queued item's answer; raise it if it is an error (``raising``)."""
        results: list[pq.abc.PGresult] = []
        idle = 0
        while True:
            while self._pg.is_busy():
                self._wait(write=False)
                self._pg.consume_input()
            result = self._pg.get_result()
            if result is None:
                if results:
                    break
                if self._pg.status == _BAD:
                    raise psycopg.OperationalError(
                        "the connection was lost: "
                        + self._pg.error_message.decode(errors="replace").strip()
                    )
                idle += 1
                if idle > 2:  # pragma: no cover - more items than statements sent: a bug
                    raise psycopg.InternalError("no answer pending on the pipeline")
                continue  # between two items' answers
            results.append(result)
            if result.status == _SYNCED:
                break
        item = self._queue.popleft()
        if item is not None:
            item._results = results
        elif results[0].status != _SYNCED:  # pragma: no cover - a protocol bug
            raise psycopg.InternalError("the pipeline's answers are out of step")
        if raising:
            if (
                self._commit is not None
                and self._commit._results is None
                and item is not self._commit
                and any(_server_error(r) for r in results)
            ):
                self.refused = True
            _raise_error(results, self.conn)


def _committed(rows: Rows) -> bool:
    """Whether ``COMMIT`` answered ``COMMIT`` (a transaction already failed answers
    ``ROLLBACK``; one skipped after an error answers nothing of its own)."""
    results = rows._results
    return bool(
        results
        and results[0].status == pq.ExecStatus.COMMAND_OK
        and results[0].command_status == b"COMMIT"
    )


def _server_error(result: pq.abc.PGresult) -> bool:
    """An error the server sent (it has a SQLSTATE), not one libpq made for a lost connection."""
    return result.status == _FATAL and bool(result.error_field(pq.DiagnosticField.SQLSTATE))


def _raise_error(results: Sequence[pq.abc.PGresult], conn: psycopg.Connection[Any]) -> None:
    for result in results:
        if result.status == _FATAL:
            raise errors.error_from_result(result, encoding=conn.info.encoding)


__all__ = ["Rows", "Wire"]
