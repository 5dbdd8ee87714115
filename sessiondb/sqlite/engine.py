"""Connections, pragmas, transactions and error translation for one SQLite database file.

The rules this module carries (docs/design.md, "Concurrency rules", numbered there):

* One apsw connection per (process, thread), kept in a ``threading.local`` with the pid that
  opened it; after ``fork`` the child opens its own and never touches (or closes) the parent's —
  closing an inherited connection can run a checkpoint or drop POSIX locks the parent relies on.
* Every write is ``BEGIN IMMEDIATE`` after queued admission (see admission.py). A deferred
  transaction that later upgrades gets SQLITE_BUSY at once, whatever the timeout.
* Reads are short explicit transactions whose rows are fully fetched inside; no cursor escapes, so
  no snapshot lingers and pins the WAL.
* Checkpoints run off the hot path: SQLite's auto-checkpoint would make the unlucky committing
  writer do the checkpoint while it still holds the write lock. A WAL hook notes the WAL size after
  each commit and wakes a per-process background thread that runs PASSIVE checkpoints.
* A failure to open caches nothing, so the next call simply tries again (rule 10).
* A thread's connection is closed once the thread has ended (swept when another one opens), so a
  thread-per-request server does not run out of file descriptors.
* ``fork()`` waits until no thread of this process is inside a transaction (forkgate.py): a
  child that inherited a connection in the middle of one could never write, since SQLite's
  in-process lock bookkeeping would keep the inherited (abandoned) connection's locks held.
* A read-only engine opens the file with SQLITE_OPEN_READONLY: it never creates the file or its
  folder, never changes a pragma stored in the file, and refuses writes with ``ReadOnlyStore``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import apsw

from ..errors import (
    Error,
    InvalidInput,
    ReadOnlyStore,
    StoreBusy,
    StoreNotFound,
    UnsupportedStorage,
)
from ..host.paths import ensure_private_dir
from ..host.procinfo import command_line, process_state
from . import bootcheck, fsdetect, locks, rank
from .admission import AdmissionLock, lock_path_for
from .checkpointer import CHECKPOINT_INTERVAL, CHECKPOINT_PAGES, Checkpointer, wake_due
from .errors import translate
from .forkgate import FORK_GATE

Durability = Literal["normal", "full"]
JOURNAL_MODES = ("auto", "wal", "delete", "truncate", "persist")

# WAL pages after which the committing writer finishes the checkpoint itself before it lets the
# next writer in. Under sustained writes a background checkpoint never catches up with the end of
# the WAL, and SQLite restarts the WAL only when a writer begins with every frame copied back: the
# WAL then grows without bound (measured here: 1 GiB in 6 s with 4 writers and 2 readers). With
# writers paused for a moment behind the admission lock the remaining frames — few, since the
# background thread copied the rest — are copied, and the next transaction restarts the WAL.
CHECKPOINT_FORCE_PAGES = 4000
FORCE_WAIT_MS = 200
CHECKPOINT_RETRY_PAGES = 200
# Pause of bulk work between its write transactions, so that queued writers get in (step_aside).
BULK_PAUSE = 0.002
# Size the WAL file is truncated to when SQLite resets it, so a burst does not leave it huge.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024

# Connections inherited through fork are kept referenced here forever: garbage-collecting one in
# the child would close it, and closing a parent's connection in a child is what corrupts files.
_ABANDONED: list[Any] = []


class _Slot:
    """One (process, thread)'s connection and admission handle."""

    __slots__ = ("conn", "lock", "pid", "thread")

    def __init__(
        self, conn: apsw.Connection, lock: AdmissionLock | None, thread: threading.Thread
    ) -> None:
        self.pid = os.getpid()
        self.conn = conn
        self.lock = lock
        self.thread = thread

    def close(self) -> None:
        with contextlib.suppress(apsw.Error):
            self.conn.close()
        if self.lock is not None:
            self.lock.close()


class _Local(threading.local):
    slot: _Slot | None = None


class Engine:
    """All access to one database file goes through an Engine."""

    def __init__(
        self,
        path: Path,
        *,
        durability: str = "normal",
        journal_mode: str = "auto",
        write_timeout: float = 30.0,
        readonly: bool = False,
    ) -> None:
        if durability not in ("normal", "full"):
            raise InvalidInput(f"durability must be 'normal' or 'full', not {durability!r}")
        if journal_mode not in JOURNAL_MODES:
            raise InvalidInput(
                f"journal_mode must be one of {', '.join(JOURNAL_MODES)}, not {journal_mode!r}"
            )
        if (
            isinstance(write_timeout, bool)
            or not isinstance(write_timeout, (int, float))
            or write_timeout <= 0
        ):
            raise InvalidInput(
                f"write_timeout must be a positive number of seconds, not {write_timeout!r}"
            )
        self.path = path
        self.readonly = readonly
        self.durability = durability
        self.requested_journal_mode = journal_mode
        self.write_timeout = float(write_timeout)
        self.lock_path = lock_path_for(path)
        # Decided on the first successful connection of this process: (journal mode, use flock).
        self._mode: tuple[str, bool] | None = None
        self._local = _Local()
        self._registry_lock = threading.Lock()
        self._slots: list[_Slot] = []
        self._closed = False
        self._checkpointer: Checkpointer | None = None
        self._wal_pages = 0
        self._next_wake = 0.0
        self._force_at = CHECKPOINT_FORCE_PAGES

    # -- connections -------------------------------------------------------------------------

    @property
    def journal_mode(self) -> str:
        """The journal mode in use ("wal", "delete", …); opens a connection if needed."""
        self.connection()
        assert self._mode is not None
        return self._mode[0]

    def connection(self) -> apsw.Connection:
        return self.slot().conn

    def slot(self) -> _Slot:
        """This (process, thread)'s connection and admission handle."""
        slot = self._local.slot
        if slot is not None and slot.pid == os.getpid():
            return slot
        if self._closed:
            raise Error(f"{self.path}: the store is closed")
        if slot is not None:
            # Inherited through fork: keep it alive but never use it again in this process.
            _ABANDONED.append(slot.conn)
            if slot.lock is not None:
                # Our own descriptor of the lock file: safe to close (a flock is released only
                # when the parent's descriptor of the same open file is closed too).
                slot.lock.close()
            self._local.slot = None
        self._sweep_ended_threads()
        conn = self._open()
        lock = None
        if self._mode is not None and self._mode[1] and not self.readonly:
            try:
                lock = AdmissionLock(self.lock_path)
            except OSError as e:
                # A read-only folder: reads still work; writes fall back to SQLite's own locking.
                if not os.access(self.lock_path.parent, os.W_OK):
                    lock = None
                else:
                    conn.close()
                    raise Error(
                        f"{self.lock_path}: cannot open the admission lock file: {e}"
                    ) from e
        slot = _Slot(conn, lock, threading.current_thread())
        self._local.slot = slot
        with self._registry_lock:
            self._slots.append(slot)
        return slot

    def _sweep_ended_threads(self) -> None:
        """Close the connections of this process's threads that have ended."""
        pid = os.getpid()
        with self._registry_lock:
            ended = [s for s in self._slots if s.pid == pid and not s.thread.is_alive()]
            for s in ended:
                self._slots.remove(s)
        for s in ended:
            s.close()

    def _open(self) -> apsw.Connection:
        if self.readonly:
            return self._open_readonly()
        created = False
        if not self.path.exists():
            ensure_private_dir(self.path.parent)
            try:
                # 0600 from the first byte; O_EXCL so an existing file is never opened (and
                # closed) by us outside SQLite — that would drop SQLite's POSIX locks.
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                os.close(fd)
                created = True
            except FileExistsError:
                pass
            except OSError as e:
                raise Error(f"{self.path}: cannot create the database file: {e.strerror}") from e
        if not created:
            # Refuse a file that is not a usable database before SQLite touches it (and long
            # before a write would fail): never renames, deletes or recreates it.
            bootcheck.boot_check(self.path)
            if _read_only_filesystem(self.path):
                raise UnsupportedStorage(
                    f"{self.path} is on a read-only filesystem: a store opened for writing "
                    "cannot be used there — open it with readonly=True to read it (the "
                    "sessiondb commands that only read do)"
                )
        try:
            conn = apsw.Connection(str(self.path))
        except apsw.Error as e:
            raise translate(e, self.path) from e
        try:
            self._configure(conn, created)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_readonly(self) -> apsw.Connection:
        if not self.path.exists():
            raise StoreNotFound(str(self.path))
        if bootcheck.boot_check(self.path) is None:
            raise StoreNotFound(str(self.path), "the file is empty: no sessiondb store in it yet")
        uri = "file:" + quote(str(self.path))
        if _read_only_filesystem(self.path):
            # WAL needs its -shm index, which read-only media cannot hold: nothing can write
            # there, so reading the file as immutable is exact (sqlite.org/uri.html#uriimmutable).
            uri += "?immutable=1"
        try:
            conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        except apsw.Error as e:
            raise translate(e, self.path) from e
        try:
            conn.set_busy_timeout(int(self.write_timeout * 1000))
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # see _configure
            rank.register(conn)
            if self._mode is None:
                self._mode = (str(conn.execute("PRAGMA journal_mode").get).lower(), False)
        except apsw.Error as e:
            conn.close()
            raise translate(e, self.path) from e
        return conn

    def _configure(self, conn: apsw.Connection, created: bool) -> None:
        conn.set_busy_timeout(int(self.write_timeout * 1000))
        try:
            # SQLite opens the file lazily: read it first, so that what stops it (no descriptor
            # left, a full disk, a lock past write_timeout, unreadable media) is reported as
            # itself — registering the ranking function first turned each into a misleading
            # apsw.NoFTS5Error (tests/sqlite/test_backend.py::test_open_failures_say_what_happened).
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
            rank.register(conn)  # the search's ranking function (rank.py)
            if self._mode is None:
                self._mode = self._decide_journal_mode(conn, created)
            mode = self._mode[0]
            sync = "FULL" if self.durability == "full" else "NORMAL"
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            if mode == "wal":
                conn.execute("PRAGMA wal_autocheckpoint=0")
                conn.set_wal_hook(self._wal_hook)
        except apsw.Error as e:
            raise translate(e, self.path) from e

    def _decide_journal_mode(self, conn: apsw.Connection, created: bool) -> tuple[str, bool]:
        """Pick the journal mode, and whether writers queue on flock (local filesystems only).

        A file's journal mode is changed only when it is new, or when the caller asked for a mode
        explicitly and the file is not WAL on disk: switching a WAL file while other processes
        may use it (perhaps from another host through a shared mount) is how files get corrupted.
        """
        wanted, warning = fsdetect.choose_journal_mode(self.path, self.requested_journal_mode)
        local = _is_local(self.path)
        current = str(conn.execute("PRAGMA journal_mode").get).lower()
        fresh = created or self._is_empty(conn)
        if fresh:
            # Freed pages go back to the filesystem in bounded steps (space.py): possible only
            # if set before the first table, and before WAL mode writes the header (ADR 0006).
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if current == wanted:
            pass
        elif fresh or (self.requested_journal_mode != "auto" and current != "wal"):
            current = self._set_journal_mode(conn, wanted)
        elif current == "wal" and wanted != "wal":
            warning = (
                f"{self.path} is in WAL mode on disk; sessiondb does not switch it to {wanted} "
                "while other processes may use it. "
                + (warning or "")
                + " Run `sessiondb doctor` for advice."
            )
        if warning:
            fsdetect.warn_once(self.path, warning)
        return current, local

    def _set_journal_mode(self, conn: apsw.Connection, wanted: str) -> str:
        # Changing the journal mode needs an exclusive lock: take our admission lock so that two
        # processes creating the same file at once do not fight over it.
        lock = AdmissionLock(self.lock_path) if _is_local(self.path) else None
        try:
            if lock is not None and not lock.acquire(self.write_timeout):
                raise self.busy(time.monotonic() - self.write_timeout, None)
            return str(conn.execute(f"PRAGMA journal_mode={wanted}").get).lower()
        finally:
            if lock is not None:
                lock.release()
                lock.close()

    @staticmethod
    def _is_empty(conn: apsw.Connection) -> bool:
        return bool(conn.execute("SELECT count(*) FROM sqlite_schema").get == 0)

    # -- transactions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[apsw.Connection]:
        """A short read transaction: one consistent snapshot for the statements inside.

        Fetch everything inside the block (``list(conn.execute(...))``); nothing read here may
        be consumed lazily after it ends.
        """
        conn = self.connection()
        FORK_GATE.enter()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except apsw.Error as e:
            raise translate(e, self.path) from e
        finally:
            FORK_GATE.leave()

    @contextlib.contextmanager
    def write(self, held: bool = False) -> Iterator[apsw.Connection]:
        """Queued admission, then ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error);
        ``held``: the caller holds the admission lock and releases it (combine.py)."""
        if self.readonly:
            raise ReadOnlyStore(
                f"{self.path}: this store was opened read-only; open it without readonly=True "
                "to write"
            )
        slot = self.slot()
        conn, lock = slot.conn, None if held else slot.lock
        start = time.monotonic()
        deadline = start + self.write_timeout
        if lock is not None and not lock.acquire(self.write_timeout):
            # The queue did not move within write_timeout (a writer frozen in its transaction):
            # this handle is spent, the next write queues on a new one (admission.py).
            slot.lock = AdmissionLock(self.lock_path)
            raise self.busy(start, None)
        queued = lock is not None
        FORK_GATE.enter()
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.busy(start, None)
            try:
                if queued:
                    # At the head of our queue SQLite's write lock is normally free. If it is
                    # not, a process outside the queue holds it (a sqlite3 shell, another
                    # library): leave the queue and wait for SQLite like everyone else, each
                    # writer with its own deadline — a queued writer with a long timeout must
                    # not make a writer with a short one wait past its own.
                    conn.set_busy_timeout(0)
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    except apsw.BusyError:
                        assert lock is not None
                        lock.release()
                        queued = False
                if not conn.in_transaction:
                    remaining = deadline - time.monotonic()
                    conn.set_busy_timeout(max(1, int(remaining * 1000)))
                    conn.execute("BEGIN IMMEDIATE")
                else:
                    conn.set_busy_timeout(max(1, int(remaining * 1000)))
            except apsw.BusyError as e:
                raise self.busy(start, e) from e
            except apsw.Error as e:
                raise translate(e, self.path) from e
            try:
                yield conn
                try:
                    conn.execute("COMMIT")
                except apsw.BusyError as e:
                    # Rollback journal: COMMIT waits for readers to leave; they did not in time.
                    raise self.busy(start, e) from e
                if self._wal_pages >= self._force_at:
                    self._force_checkpoint(conn)
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(apsw.Error):
                        conn.execute("ROLLBACK")
                raise
        except apsw.Error as e:
            raise translate(e, self.path) from e
        finally:
            FORK_GATE.leave()
            if queued:
                assert lock is not None
                lock.release()

    def step_aside(self) -> None:
        """Between two transactions of bulk work (purge batches, incremental vacuum steps).

        A writer that just released the admission lock takes it again at once (``try_acquire``)
        before the waiter the kernel woke is running: bulk work that looped straight on made
        live writers wait several of its steps. And bulk work fills the WAL fast: past
        CHECKPOINT_FORCE_PAGES the next committing writer — a live agent — copies it back
        while every writer waits. So the bulk work copies its own WAL back here, PASSIVE (no
        lock held; writers go on), whenever it passed CHECKPOINT_PAGES
        (docs/benchmarks.md, "Retention (prune)")."""
        if (
            self._mode is not None
            and self._mode[0] == "wal"
            and self._wal_pages >= CHECKPOINT_PAGES
        ):
            self._wal_pages = 0
            with contextlib.suppress(StoreBusy):
                self.checkpoint("PASSIVE")
        time.sleep(BULK_PAUSE)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[apsw.Connection]:
        """The head of the write queue with no transaction open, for the one statement that
        cannot run inside one (``VACUUM``, space.py): every writer waits behind it for as long
        as it lasts — only for what a person asked for explicitly (ADR 0006)."""
        with self.write() as conn:
            conn.execute("COMMIT")  # keep the queue's head (the flock), give up the transaction
            try:
                yield conn
            finally:
                conn.execute("BEGIN IMMEDIATE")  # write() commits what it began

    def _force_checkpoint(self, conn: apsw.Connection) -> None:
        """FULL checkpoint while our writers wait behind the admission lock.

        FULL waits (briefly: a background checkpoint in another process, or readers finishing
        their snapshot) where PASSIVE would give up, so the WAL really gets copied back and the
        next writer restarts it. Bounded by FORCE_WAIT_MS; on timeout the next commit retries.
        """
        pages, self._wal_pages = self._wal_pages, 0
        conn.set_busy_timeout(FORCE_WAIT_MS)
        try:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_FULL)
            self._force_at = CHECKPOINT_FORCE_PAGES
        except apsw.BusyError:
            # A background checkpoint holds the checkpoint lock (SQLite does not wait for that
            # even in FULL mode): it is doing the copying. Retrying on every commit meanwhile
            # cost 160 failed calls per 7 000 appends; try again a little later instead.
            self._force_at = pages + CHECKPOINT_RETRY_PAGES
        except apsw.Error as e:
            # The caller's transaction has committed: a failed checkpoint must not turn a
            # stored append into an error the caller would retry (and duplicate, without a key).
            self._force_at = pages + CHECKPOINT_RETRY_PAGES
            warnings.warn(f"sessiondb: checkpoint of {self.path} failed: {e}", stacklevel=3)

    def busy(self, start: float, cause: BaseException | None) -> StoreBusy:
        """``StoreBusy`` for a wait that began at ``start``, naming the lock's holder."""
        waited = time.monotonic() - start
        holder = _find_write_lock_holder(self.path)
        who = f"; the write lock is held by pid {holder}" if holder else ""
        cmd = _command_of(holder) if holder else None
        if cmd:
            who += f" ({cmd})"
        next_step = "retry, raise write_timeout, or see `sessiondb doctor`"
        if holder is not None and process_state(holder) in ("T", "t"):
            who += ", which is stopped (Ctrl-Z, SIGSTOP or a debugger)"
            next_step = f"resume it (`fg`, or `kill -CONT {holder}`) or end it"
        return StoreBusy(
            f"{self.path}: could not get the write lock within {waited:.1f} s{who} — {next_step}",
            path=str(self.path),
            holder_pid=holder,
            waited=waited,
        )

    # -- checkpoints -------------------------------------------------------------------------

    def _wal_hook(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        self._wal_pages = pages
        # The frames this commit wrote: the pager's count of pages written, reset at each commit
        # (0.13 µs). Too high at worst (a checkpoint's writes on this connection): a spare wake.
        written = conn.status(apsw.SQLITE_DBSTATUS_CACHE_WRITE, True)[0]
        # Wake the background thread at most once per interval: waking it on every commit past
        # the threshold cost each append an Event.set and a GIL hand-off (measured: 93 µs per
        # append against the bare loop's 29 µs, profile in docs/benchmarks.md). And only for the
        # commit that crossed a stride of the WAL (checkpointer.wake_due).
        if wake_due(pages, written):
            now = time.monotonic()
            if now >= self._next_wake:
                self._next_wake = now + CHECKPOINT_INTERVAL
                try:
                    self._checkpoint_soon()
                except RuntimeError as e:  # no thread could be started: the forced pass remains
                    warnings.warn(f"sessiondb: no checkpoint thread: {e}", stacklevel=2)
        return 0  # SQLITE_OK

    def _checkpoint_soon(self) -> None:
        cp = self._checkpointer
        if cp is None or cp.pid != os.getpid():
            cp = self._checkpointer = Checkpointer(self.path)
        cp.wake()

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int]:
        """Run a checkpoint now; returns (WAL frames, frames checkpointed)."""
        conn = self.connection()
        try:
            mode_const = {
                "PASSIVE": apsw.SQLITE_CHECKPOINT_PASSIVE,
                "FULL": apsw.SQLITE_CHECKPOINT_FULL,
                "RESTART": apsw.SQLITE_CHECKPOINT_RESTART,
                "TRUNCATE": apsw.SQLITE_CHECKPOINT_TRUNCATE,
            }[mode]
        except KeyError:
            raise InvalidInput(
                f"checkpoint mode must be PASSIVE, FULL, RESTART or TRUNCATE, not {mode!r}"
            ) from None
        deadline = time.monotonic() + self.write_timeout
        while True:
            try:
                log, done = conn.wal_checkpoint(mode=mode_const)
                return int(log), int(done)
            except apsw.BusyError as e:
                # SQLite never waits for another checkpoint in progress (a background one of
                # this or another process): it is short, so wait for it here.
                if time.monotonic() >= deadline:
                    raise self.busy(deadline - self.write_timeout, e) from e
                time.sleep(0.002)
            except apsw.Error as e:
                raise translate(e, self.path) from e

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this process opened on the file (never a parent's)."""
        self._closed = True
        pid = os.getpid()
        with self._registry_lock:
            mine = [c for c in self._slots if c.pid == pid]
            self._slots = [c for c in self._slots if c.pid != pid]
        if self._checkpointer is not None and self._checkpointer.pid == pid:
            self._checkpointer.stop()
        for slot in mine:
            slot.close()
        self._local = _Local()


def _read_only_filesystem(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _is_local(path: Path) -> bool:
    """flock queues only work where every user of the file shares this kernel."""
    return not fsdetect.is_network_fs(fsdetect.filesystem_type(path))


def _find_write_lock_holder(path: Path) -> int | None:
    # Our own queue first (a writer of ours inside its transaction), then SQLite's lock bytes
    # (a foreign process, e.g. the sqlite3 shell, holding BEGIN IMMEDIATE).
    try:
        pid = locks.admission_lock_holder(path)
        if pid is None or pid == os.getpid():
            pid = locks.sqlite_write_lock_holder(path)
    except OSError:
        return None
    return pid


def _command_of(pid: int) -> str | None:
    cmd = command_line(pid)
    if cmd and len(cmd) > 120:
        cmd = cmd[:117] + "..."
    return cmd
