"""The channel's files: one writer connection per (process, thread) for a side's own database,
open-read-close readers for the peer's, the header probe that makes waiting cheap, and the
heartbeat file.

Why these rules (each prevents a failure seen with SQLite on shared folders):
- journal_mode=DELETE: WAL's shared-memory index does not work across a VM mount (Docker Desktop,
  virtiofs, 9p), so two kernels would corrupt a WAL database.
- Peer files are opened read-only and closed after each read: a cached connection can keep stale
  pages across a VM mount, and a read-only connection never rolls back the peer's journal, which
  (with locks that may not cross the mount) could be a live transaction rather than a hot one.
- Writes use BEGIN IMMEDIATE: a deferred transaction that upgrades gets SQLITE_BUSY at once.
- Writers of one side first queue on an flock: several agent-side processes writing at once
  starved one another for > 10 s on SQLite's busy handler alone. All writers of a file share one
  kernel (the host's or the container's), which is where flock works. The lock file lives in the
  side's private runtime folder, not in the channel folder: there the other side could replace
  it with a symlink or hold it for ever. Where flock is refused, the busy handler is the fallback.
- The folder is hostile ground (docs/channel.md, "What each side trusts"): every file is opened
  through guard.py (regular files only, no symlink, no FIFO); every connection runs with
  triggers and views disabled, an untrusted schema, SQLite's defensive mode, a cap on value
  sizes and a time bound, and checks that the tables it queries are the protocol's tables.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import apsw

from ..errors import InvalidInput, StoreBusy, UnsupportedStorage
from ..host.paths import ensure_private_dir, runtime_dir
from ..sqlite.admission import AdmissionLock
from ..sqlite.errors import translate
from . import guard
from .protocol import (
    APPLICATION_ID,
    FORMAT_VERSION,
    INBOUND_FILE,
    MAX_CONTENT_BYTES,
    ChannelError,
    NotAChannel,
)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_READONLY_ROLLBACK = 776  # SQLITE_READONLY_ROLLBACK: a hot journal a read-only reader may not undo

# Polling schedule for waits: every 0.5 ms for the first 20 ms (a reply to what was just sent
# usually lands then), then growing by half each time up to 25 ms while idle (no busy loop;
# an idle waiter costs ~40 header probes a second).
POLL_MIN = 0.0005
POLL_HOT = 0.020
POLL_MAX = 0.025
POLL_GROWTH = 1.5


# A value read from a channel file is at most the content limit plus room for the row around it
# (SQLITE_LIMIT_LENGTH bounds strings, blobs and rows): a larger one is refused, not allocated.
_VALUE_LIMIT = MAX_CONTENT_BYTES + 64 * 1024
_PROGRESS_STEPS = 1000


def header(path: Path) -> bytes | None:
    """Up to the first 100 bytes of ``path`` (None if missing): a fresh open each time."""
    try:
        fd, _ = guard.open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NotAChannel(f"{path}: cannot be read ({e.strerror})") from e
    try:
        data = os.pread(fd, 100, 0)
    finally:
        os.close(fd)
    return data


def data_version(path: Path) -> bytes | None:
    """A token that changes whenever a transaction commits to ``path``.

    Rollback-journal commits increment the header's file change counter (offset 24); reading it
    costs one open/pread/close instead of a SQLite connection.
    """
    h = header(path)
    return None if h is None else h[24:28] + h[92:96]


def check_header(path: Path, h: bytes | None) -> bool:
    """True if ``h`` is an initialised channel file; False if empty/uninitialised; else raise."""
    if not h:
        return False
    if len(h) < 100 or h[:16] != _SQLITE_MAGIC:
        raise NotAChannel(f"{path} is not a sessiondb channel file (not an SQLite database)")
    app_id = int.from_bytes(h[68:72], "big")
    version = int.from_bytes(h[60:64], "big")
    if app_id == 0 and version == 0:
        return False
    if h[18] != 1 or h[19] != 1:  # 2 = WAL, which a channel file never uses (see above)
        raise NotAChannel(
            f"{path} is not in rollback-journal mode (header bytes 18-19: {h[18]}, {h[19]}); "
            "channel files never use WAL — start a new channel folder"
        )
    if app_id != APPLICATION_ID:
        raise NotAChannel(
            f"{path} is an SQLite database but not a sessiondb channel file "
            f"(application_id {app_id:#x}) — point the channel at its own folder"
        )
    if version > FORMAT_VERSION:
        raise UnsupportedStorage(
            f"{path} uses channel format v{version}, this sessiondb reads up to "
            f"v{FORMAT_VERSION} — upgrade sessiondb on this side of the channel"
        )
    return True


# A damaged channel file is not a store: the store's repair would replace it with an empty store
# and the other side would silently see nothing (tests/channel/test_channel_input.py).
CORRUPT_HINT = (
    "this is a channel file, not a store: do not run `sessiondb doctor --repair` on it; stop "
    "both ends, move the channel folder aside and start a new channel (unfinished messages are "
    "sent again from the host's side)"
)


def _translate(path: Path, e: apsw.Error, doing: str, limit: float = 0.0) -> Exception:
    """Channel wording for the errors that mean something else here; translate() for the rest
    (a full disk is a full disk on a channel file too)."""
    if isinstance(e, apsw.InterruptError):  # the time bound below
        return ChannelError(
            f"{path}: {doing} took longer than {limit:g} s — the file holds far more than a "
            "channel file should, or the disk has stalled"
        )
    if isinstance(e, apsw.TooBigError):  # writes are checked first: only a read gets here
        return NotAChannel(
            f"{path}: holds a value larger than the channel protocol allows "
            f"({MAX_CONTENT_BYTES} bytes) — start a new channel folder"
        )
    if isinstance(e, (apsw.BusyError, apsw.LockedError)):
        return StoreBusy(
            f"{path}: {doing} could not get the lock in time — another process of the same "
            "side holds it; retry later",
            path=str(path),
        )
    if isinstance(e, apsw.CantOpenError):
        return NotAChannel(f"{path}: cannot open ({e}) — check the folder and its permissions")
    return translate(e, path, doing=doing, corrupt_hint=CORRUPT_HINT)


@functools.lru_cache(maxsize=8)
def _schema_rows(statements: tuple[str, ...]) -> frozenset[tuple[Any, ...]]:
    """The sqlite_schema rows that ``statements`` make (as SQLite stores them)."""
    conn = apsw.Connection(":memory:")
    try:
        for stmt in statements:
            conn.execute(stmt)
        return frozenset(
            tuple(r) for r in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema")
        )
    finally:
        conn.close()


class _Deadline:
    """The time bound of a connection's current transaction, checked by a progress handler.

    It starts once the transaction holds its lock (``_locked``): waiting for the lock is the
    busy timeout's to bound, and a reader that waited out most of it behind busy writers (seen
    in test_three_agent_side_writers_never_collide with CPU hogs) must still get its read.
    """

    __slots__ = ("at", "limit")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.at = math.inf

    def start(self) -> None:
        self.at = time.monotonic() + self.limit

    def stop(self) -> None:
        self.at = math.inf

    def passed(self) -> bool:
        return time.monotonic() > self.at


def _locked(conn: apsw.Connection, deadline: _Deadline) -> None:
    """Take the transaction's lock now (a read of the header's schema cookie), then start the
    time bound."""
    conn.execute("PRAGMA schema_version").fetchall()
    deadline.start()


def _harden(conn: apsw.Connection, deadline: _Deadline) -> None:
    """No trigger or view ever runs, functions in the schema are untrusted, the schema cannot be
    written around SQLite, values are capped, and statements are time-bounded."""
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    conn.config(apsw.SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_VIEW, 0)
    conn.limit(apsw.SQLITE_LIMIT_LENGTH, _VALUE_LIMIT)
    conn.set_progress_handler(deadline.passed, _PROGRESS_STEPS)


def _queue_path(db: Path) -> Path:
    """This side's private flock for the writers of ``db`` (see the module docstring)."""
    real = os.path.realpath(db)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return ensure_private_dir(runtime_dir() / "channel") / f"{digest}.lock"


class ChannelDB:
    """One of the two channel databases, seen from one side.

    ``schema`` makes the file; ``added`` are tables a later version adds (created when this side
    writes the file, accepted when missing). Any other object in the file is refused.
    """

    def __init__(
        self,
        path: Path,
        schema: tuple[str, ...],
        *,
        added: tuple[str, ...] = (),
        synchronous: str = "NORMAL",
        busy_timeout: float = 10.0,
    ) -> None:
        self.path = path
        self._schema = schema
        self._added = added
        self._required = _schema_rows(schema)
        self._allowed = _schema_rows(schema + added)
        self.present: frozenset[str] = frozenset()  # added tables seen at the last check
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout * 1000)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._queue = True  # cleared if the filesystem refuses flock

    # -- writer side -------------------------------------------------------------------------

    def _writer_conn(self) -> apsw.Connection:
        # One connection per (process, thread), reopened after fork (docs/design.md rule 2).
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        conn = self._open_writer()
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _open_writer(self) -> apsw.Connection:
        ready = check_header(self.path, header(self.path))
        deadline = _Deadline(self._busy_timeout)
        try:
            conn = apsw.Connection(
                str(self.path),
                flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE,
                vfs=guard.vfs_name(),
            )
            _harden(conn, deadline)
            conn.setbusytimeout(self._busy_ms)
            if not ready:
                self._refuse_foreign(conn)  # before any pragma could change someone's file
            conn.execute("PRAGMA journal_mode=DELETE").fetchall()
            conn.execute(f"PRAGMA synchronous={self._synchronous}").fetchall()
            # Queued like every write: a process opening while others write in the flock
            # queue would otherwise starve on the busy handler (seen with 3 busy writers).
            lock = self._admit()
            try:
                if not ready:
                    self._init_schema(conn)
                self._add_tables(conn)
            finally:
                if lock is not None:
                    lock.release()
        except apsw.Error as e:
            raise _translate(self.path, e, "opening for writing", deadline.limit) from e
        except OSError as e:
            raise NotAChannel(f"{self.path}: cannot be created ({e.strerror})") from e
        self._local.deadline = deadline
        return conn

    def _refuse_foreign(self, conn: apsw.Connection) -> None:
        # Read in one snapshot: another process may have initialised the file since the header
        # was looked at (its schema and marker commit together), which makes it ours, not foreign.
        conn.execute("BEGIN")
        try:
            tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()[0][0]
            app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
        finally:
            conn.execute("COMMIT")
        if tables and app_id != APPLICATION_ID:
            conn.close()
            raise NotAChannel(
                f"{self.path} is an SQLite database with other tables, not a channel file"
            )

    def _init_schema(self, conn: apsw.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
            version = conn.execute("PRAGMA user_version").fetchall()[0][0]
            if app_id == 0 and version == 0:
                tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()[0][0]
                if tables:
                    raise NotAChannel(
                        f"{self.path} is an SQLite database with other tables, not a channel file"
                    )
                for stmt in self._schema:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # The header check before opening saw the file unlocked; re-check now it is initialised.
        check_header(self.path, header(self.path))

    def _add_tables(self, conn: apsw.Connection) -> None:
        """Create the ``added`` tables a file made by an earlier version lacks (the writer's
        job: readers accept a file without them)."""
        if not self._added:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.check_schema(conn)
            for stmt in self._added:
                name = next(r[1] for r in _schema_rows((stmt,)) if r[0] == "table")
                if name not in self.present:
                    conn.execute(stmt)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def check_schema(self, conn: apsw.Connection) -> None:
        """Refuse a file whose schema is not the protocol's: a view or trigger, a table of
        another shape under one of our names, anything extra (inside a transaction)."""
        rows = frozenset(
            tuple(r) for r in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema")
        )
        if not self._required <= rows or not rows <= self._allowed:
            odd = sorted(f"{r[0]} {r[1]}" for r in (rows - self._allowed) | (self._required - rows))
            raise NotAChannel(
                f"{self.path}: its schema is not the channel protocol's ({', '.join(odd)[:200]}) "
                "— the file was changed by something other than sessiondb; stop both ends and "
                "start a new channel folder"
            )
        self.present = frozenset(r[1] for r in rows - self._required if r[0] == "table")

    def _admit(self) -> AdmissionLock | None:
        """Wait in the kernel's queue for this file's writers; None when flock is unavailable."""
        if not self._queue:
            return None
        lock: AdmissionLock | None = getattr(self._local, "lock", None)
        try:
            if lock is None or lock.pid != os.getpid():
                lock = AdmissionLock(_queue_path(self.path))
                self._local.lock = lock
            got = lock.acquire(self._busy_timeout)
        except OSError:
            self._queue = False
            return None
        if not got:
            # A writer of this side frozen inside its transaction: wait no longer than
            # busy_timeout (sessiondb/host/flock.py); the next write queues on a new handle.
            self._local.lock = None
            raise StoreBusy(
                f"{self.path}: waited {self._busy_timeout:.0f} s for another writer of this side "
                "of the channel (stopped or traced?) — retry later",
                path=str(self.path),
            )
        return lock

    @contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on this side's own file; ROLLBACK on any exception."""
        conn = self._writer_conn()
        lock = self._admit()
        try:
            with self._transaction(conn) as c:
                yield c
        finally:
            if lock is not None:
                lock.release()

    def _deadline(self) -> _Deadline:
        deadline: _Deadline = self._local.deadline
        deadline.stop()
        return deadline

    @contextmanager
    def _transaction(self, conn: apsw.Connection) -> Iterator[apsw.Connection]:
        deadline = self._deadline()
        limit = deadline.limit
        try:
            conn.execute("BEGIN IMMEDIATE")
            _locked(conn, deadline)
            self.check_schema(conn)
        except apsw.Error as e:
            with suppress(apsw.Error):
                conn.execute("ROLLBACK")
            raise _translate(self.path, e, "starting a write", limit) from e
        except BaseException:
            with suppress(apsw.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            yield conn
        except apsw.Error as e:
            with suppress(apsw.Error):
                conn.execute("ROLLBACK")
            raise _translate(self.path, e, "writing", limit) from e
        except BaseException:
            with suppress(apsw.Error):
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except apsw.Error as e:
            with suppress(apsw.Error):
                conn.execute("ROLLBACK")
            raise _translate(self.path, e, "committing", limit) from e

    @contextmanager
    def own_read(self) -> Iterator[apsw.Connection]:
        """A short read transaction on this side's own file through the writer connection."""
        conn = self._writer_conn()
        deadline = self._deadline()
        limit = deadline.limit
        try:
            conn.execute("BEGIN")
            _locked(conn, deadline)
            self.check_schema(conn)
        except apsw.Error as e:
            with suppress(apsw.Error):
                conn.execute("COMMIT")
            raise _translate(self.path, e, "starting a read", limit) from e
        except BaseException:
            with suppress(apsw.Error):
                conn.execute("COMMIT")
            raise
        try:
            yield conn
        except apsw.Error as e:
            raise _translate(self.path, e, "reading", limit) from e
        finally:
            with suppress(apsw.Error):
                conn.execute("COMMIT")

    def close(self) -> None:
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        lock: AdmissionLock | None = getattr(self._local, "lock", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        if lock is not None and lock.pid == os.getpid():
            lock.close()
        self._local = threading.local()

    # -- reader side (the peer's file) -------------------------------------------------------

    def read(self, fn: Callable[[apsw.Connection], Any]) -> Any:
        """Open read-only, run ``fn`` in one read transaction, close; None if the file is absent.

        A hot journal left by a writer that died cannot be rolled back read-only; we wait for
        a writer of that side to recover it, up to the busy timeout.
        """
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.002
        while True:
            if not check_header(self.path, header(self.path)):
                return None
            bound = _Deadline(self._busy_timeout)
            try:
                conn = apsw.Connection(
                    str(self.path), flags=apsw.SQLITE_OPEN_READONLY, vfs=guard.vfs_name()
                )
            except apsw.CantOpenError:
                return None
            except apsw.Error as e:
                raise _translate(self.path, e, "opening for reading", bound.limit) from e
            try:
                _harden(conn, bound)
                conn.setbusytimeout(self._busy_ms)
                conn.execute("BEGIN")
                try:
                    _locked(conn, bound)
                    self.check_schema(conn)
                    return fn(conn)
                finally:
                    conn.execute("COMMIT")
            except apsw.ReadOnlyError as e:
                if (
                    getattr(e, "extendedresult", None) != _READONLY_ROLLBACK
                    or time.monotonic() > deadline
                ):
                    raise StoreBusy(
                        f"{self.path} holds an unfinished transaction of a writer that stopped "
                        "(hot journal); it is rolled back when a writer of that side opens it — "
                        "start that side, then retry",
                        path=str(self.path),
                    ) from e
            except apsw.Error as e:
                raise _translate(self.path, e, "reading", bound.limit) from e
            finally:
                conn.close()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def wait_until(
    fetch: Callable[[], tuple[list[Any], float | None]],
    watched: list[Path],
    timeout: float | None,
) -> list[Any]:
    """Call ``fetch`` until it returns items, a watched file commits, or ``timeout`` passes.

    ``fetch`` returns (items, wake_at): ``wake_at`` is a ``time.monotonic()`` reading at which
    items may appear without any file changing (a backoff ending, judged by this side's clock).
    Between fetches only the files' change counters are probed, on an interval that grows from
    POLL_MIN to POLL_MAX.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        # Token first: a commit landing between the fetch and the probe is never missed.
        tokens = [data_version(p) for p in watched]
        items, wake_at = fetch()
        if items or deadline is None or time.monotonic() >= deadline:
            return items
        interval = POLL_MIN
        hot_until = time.monotonic() + POLL_HOT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(interval, remaining))
            if time.monotonic() > hot_until:
                interval = min(interval * POLL_GROWTH, POLL_MAX)
            if [data_version(p) for p in watched] != tokens:
                break
            if wake_at is not None and time.monotonic() >= wake_at:
                break


def channel_folder(folder: object, *, create: bool) -> Path:
    """Validate the folder argument; create it (0700) when ``create`` and it is missing."""
    if not isinstance(folder, (str, os.PathLike)) or not os.fspath(folder):
        raise InvalidInput(f"folder must be a path, got {folder!r:.80}")
    path = Path(os.fspath(folder)).expanduser()
    if path.exists() and not path.is_dir():
        raise NotAChannel(f"{path} is not a folder — a channel is a folder holding {INBOUND_FILE}")
    if not path.exists():
        if not create:
            raise NotAChannel(
                f"{path}: no such channel folder — the host end creates it (HostEnd(folder) or "
                "`sessiondb channel send FOLDER`)"
            )
        try:
            ensure_private_dir(path)
        except OSError as e:
            raise NotAChannel(f"{path}: cannot create the channel folder ({e.strerror})") from e
    # Resolved once, here, where the path is still the caller's: inside the folder nothing is
    # followed (guard.py), and SQLite gets names it need not resolve.
    return Path(os.path.realpath(path))
