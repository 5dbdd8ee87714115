"""A transcript's lines read and parsed (:func:`read_lines`) — in a child process, beside the import
that stores them, for bulk imports and plain imports of files of :data:`FORK_BYTES` or more
(:func:`parsed_lines`; docs/adr/0015-bulk-import.md, amendment 1).

Reading, decoding, parsing and checking a line costs about as much Python time as storing it
(docs/benchmarks.md, "Bulk import"), and one Python process runs one of them at a time (the GIL).
:func:`parsed_lines` forks a reader that runs the same :func:`read_lines` and sends its
results in chunks of :data:`CHUNK` lines through a pipe, messages flattened to tuples (a tenth
of a pickled dataclass's cost to load), while the importing process stores the chunk before.

* The reader is forked (``os.fork``), not spawned: it inherits the formats registered in this
  process (``formats.register_format``) and imports nothing again; and not through
  ``multiprocessing.Process``, which refuses to start one from a daemonic process (a pool's
  worker). sessiondb's fork gate (sqlite/forkgate.py) keeps the fork out of any transaction of
  this process's other threads; the reader touches no store and leaves with ``os._exit``.
* Bounded: one chunk being read, what the pipe holds (:data:`PIPE_BYTES`) and one being
  stored.
* Whatever ends the reader — an error reading the file, kill -9 — the importer raises an error
  after storing the chunks it received; whatever ends the importer, the reader's next send fails
  (the pipe is closed) and it exits.
* Where this process cannot fork, the lines are parsed in it, as a plain import does.
"""

from __future__ import annotations

import contextlib
import fcntl
import operator
import os
import signal
import time
import warnings
from collections.abc import Generator, Iterator
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import IO, Any

from ..errors import Error, InvalidInput
from ..models import BadLine
from .formats import MAX_LINE_BYTES, LineParser, Parsed, RawLine, Record, record_of

#: Bytes read at a time while an oversize line is skipped.
_SKIP_BYTES = 1024 * 1024
#: Lines per message through the pipe (~230 KB of typical chat lines).
CHUNK = 1000
#: Bytes the pipe may hold: a few chunks.
PIPE_BYTES = 1 << 20
#: A plain import parses in a reader from this file size on (a bulk import always does): below
#: it the fork and the pipe cost more than the parsing they move (docs/benchmarks.md, "Bulk
#: import").
FORK_BYTES = 1 << 20
#: Seconds to wait for the reader to leave once its last chunk arrived.
JOIN_SECONDS = 10.0

#: The reader's niceness (``os.nice``): live writers beside an import preempt its parsing.
READER_NICE = 10
#: Python 3.12+'s warning of ``os.fork`` in a multi-threaded process (:func:`_fork`).
_FORK_WARNING = r".*multi-threaded, use of fork\(\) may lead to deadlocks"

_FIELDS = operator.attrgetter(*Record.__dataclass_fields__)


def iter_raw_lines(
    f: IO[bytes], *, max_bytes: int = MAX_LINE_BYTES, stop_at: int | None = None
) -> Iterator[RawLine]:
    """Yield physical lines of a binary file with at most ``max_bytes`` held per line.

    ``stop_at`` ends reading at a byte offset (used to import exactly what strict mode validated
    even if the file grows meanwhile). A final line without a newline is still yielded.
    """
    number = 0
    offset = f.tell()
    while stop_at is None or offset < stop_at:
        limit = max_bytes + 1
        if stop_at is not None:
            limit = min(limit, stop_at - offset)
        data = f.readline(limit)
        if not data:
            return
        number += 1
        offset += len(data)
        if len(data) > max_bytes and not data.endswith(b"\n"):
            # Oversize: skip to the end of the line chunk by chunk, never holding it whole.
            while stop_at is None or offset < stop_at:
                size = _SKIP_BYTES if stop_at is None else min(_SKIP_BYTES, stop_at - offset)
                chunk = f.readline(size)
                if not chunk:
                    break
                offset += len(chunk)
                if chunk.endswith(b"\n"):
                    break
            yield RawLine(number, None, offset)
            continue
        yield RawLine(number, data, offset)


def open_file(path: str | os.PathLike[str]) -> IO[bytes]:
    p = Path(os.fspath(path))
    try:
        return p.open("rb")
    except IsADirectoryError:
        raise InvalidInput(f"{p} is a folder; give a .jsonl file") from None
    except OSError as e:
        raise InvalidInput(f"cannot read {p}: {e.strerror or e}") from None


def read_lines(
    path: str | os.PathLike[str], *, max_bytes: int, stop_at: int | None = None
) -> Generator[tuple[int, int, Parsed | BadLine], None, None]:
    """Yield ``(line, end offset, record | header | title | bad line)`` for every non-blank
    line that is not skipped bookkeeping."""
    parser = LineParser(os.fspath(path), max_bytes=max_bytes)
    f = open_file(path)
    with f:
        try:
            for raw in iter_raw_lines(f, max_bytes=max_bytes, stop_at=stop_at):
                parsed = parser.parse(raw)
                if parsed is not None:
                    yield raw.number, raw.end, parsed
        except OSError as e:
            raise Error(f"reading {os.fspath(path)} failed: {e.strerror or e}") from None


def _flat(item: tuple[int, int, Parsed | BadLine]) -> tuple[Any, ...]:
    line, end, parsed = item
    if type(parsed) is Record:
        return (line, end, *_FIELDS(parsed))
    return (line, end, parsed)  # headers, titles, bad lines: rare, pickled whole


def _reader(send: Connection, path: str, max_bytes: int, stop_at: int | None) -> int:
    """The forked reader's work; its exit status."""
    try:
        chunk: list[tuple[Any, ...]] = []
        for item in read_lines(path, max_bytes=max_bytes, stop_at=stop_at):
            chunk.append(_flat(item))
            if len(chunk) >= CHUNK:
                send.send(chunk)
                chunk = []
        send.send(chunk)
        send.send(None)
        return 0
    except OSError:
        return 1  # the importer is gone (the pipe's other end is closed)
    except BaseException as e:  # reported to the importer, which raises it
        with contextlib.suppress(OSError):
            send.send(("error", str(e) or type(e).__name__))
        return 1


def _widen(fd: int) -> None:
    """Let the pipe hold several chunks (Linux: up to ``fs.pipe-max-size``, 1 MiB by default),
    so that the reader parses ahead while the importer stores instead of waiting for each read."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _fork(path: str, max_bytes: int, stop_at: int | None) -> tuple[int, Connection] | None:
    """Fork the reader: its pid and the importer's end of the pipe; None where this process
    cannot fork (no ``os.fork``, or the kernel refused one)."""
    if not hasattr(os, "fork"):
        return None
    receive, send = Pipe(duplex=False)
    _widen(send.fileno())
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of fork() in a process with threads (the store's checkpointer,
            # an application's own): a child may find a lock held for ever. The reader takes
            # none that way: it parses with modules already imported, touches no store (the
            # fork gate keeps SQLite's own state whole) and leaves by os._exit (ADR 15).
            warnings.filterwarnings("ignore", _FORK_WARNING, DeprecationWarning)
            pid = os.fork()
    except OSError:
        receive.close()
        send.close()
        return None
    if pid == 0:  # the reader
        status = 1
        try:
            # The fork copied the importer's end of the pipe too: closed, so that once the
            # importer is gone nobody reads, and a send fails instead of waiting for ever.
            receive.close()
            # Below the store's writers in the CPU's queue: live writers beside a plain import
            # go first, the importer (which waits for it) takes what is left.
            with contextlib.suppress(OSError):
                os.nice(READER_NICE)
            status = _reader(send, path, max_bytes, stop_at)
        finally:
            os._exit(status)  # no atexit, no finalizer of the importer's objects
    send.close()
    return pid, receive


def _reap(pid: int) -> None:
    """Wait for the reader (it leaves once its pipe is closed); kill it past JOIN_SECONDS."""
    deadline = time.monotonic() + JOIN_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                time.sleep(0.005)
                continue
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def parsed_lines(
    path: str, *, max_bytes: int, stop_at: int | None
) -> Generator[tuple[int, int, Parsed | BadLine], None, None]:
    """What :func:`read_lines` yields, read and parsed by a forked reader (in this process
    where it cannot fork)."""
    forked = _fork(path, max_bytes, stop_at)
    if forked is None:
        yield from read_lines(path, max_bytes=max_bytes, stop_at=stop_at)
        return
    pid, receive = forked
    try:
        while True:
            try:
                chunk = receive.recv()
            except EOFError:
                raise Error(f"reading {path} stopped: the reader process ended") from None
            if chunk is None:
                break
            if isinstance(chunk, tuple):
                raise Error(f"reading {path} failed: {chunk[1]}")
            for values in chunk:
                if len(values) == 3:
                    yield values
                else:
                    yield values[0], values[1], record_of(values[2:])
    finally:
        receive.close()
        _reap(pid)


__all__ = ["CHUNK", "FORK_BYTES", "iter_raw_lines", "open_file", "parsed_lines", "read_lines"]
