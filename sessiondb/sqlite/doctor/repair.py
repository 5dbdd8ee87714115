"""``sessiondb doctor --repair``: fix what can be fixed without ever losing the damaged original.

Only a sessiondb store is repaired. A channel file, another application's database, or a store
of a newer schema is refused with the file untouched: rebuilding it would turn it into an empty
sessiondb store (docs/doctor.md, "What --repair refuses").

A healthy file gets maintenance: a pending search-index backfill finished, sessiondb's own
full-text indexes rebuilt (by their fixed names), the WAL checkpointed and truncated, and a WAL
file on a network/VM mount switched to the rollback journal. The file is untrusted
(docs/doctor.md, "Untrusted files"): every connection to it, and to the scratch copy a rebuild
reads, is hardened (``untrusted.py``), and no SQL is built from what it holds.

A corrupt file is never modified. It is copied next to itself under a name that starts with the
database's name and says when (``state.db.corrupt-20261122T040512Z``, plus ``-wal`` when there
is one); every readable session and message is salvaged from a private scratch copy, first
through SQL (rowid ranges bisected around the damage) and then by parsing the remaining leaf
pages directly (rows under a damaged interior page); the rows go into a fresh store, which is
verified (``integrity_check``, counts) and then renamed over the original — one atomic rename.

Every repair refuses to start while another process has the file open, naming those processes,
and holds the store's admission lock so that no sessiondb writer gets in meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw

from ...errors import CorruptDatabase, Error, InvalidInput, StoreBusy, UnsupportedStorage
from ...host.checks import describe_process, other_processes
from ...host.paths import open_private
from ...models import RepairResult
from .. import fsdetect, fts, fts_v3, locks, schema
from ..admission import lock_path_for
from ..bootcheck import MAGIC, boot_check
from .checks import channel_file, diagnose, fts_tables, read_prefix
from .pagescan import PageFile
from .untrusted import open_untrusted, shown

SESSION_COLS = (
    "id, session_id, source, title, meta, created_at, updated_at, ended_at, end_reason, "
    "message_count"
)
MESSAGE_COLS = "id, sid, seq, role, content, key, meta, created_at"
BATCH = 1000  # rows per write transaction into the fresh store (docs/design.md rule 5)
_NUM = (int, float)


def needs_rebuild(path: str | os.PathLike[str]) -> bool:
    """True when the file itself is damaged (not just its FTS index or WAL size)."""
    report = diagnose(path, lock_watch=0.0)
    return any(c.status == "fail" and c.name in ("file", "integrity") for c in report.checks)


@contextmanager
def _exclusive(db: Path) -> Iterator[None]:
    """Refuse if anyone has the file open; hold the admission lock for the whole repair."""
    others = other_processes(locks.database_files(db)[:-1])
    if others:
        names = "; ".join(describe_process(p) for p in others)
        raise StoreBusy(
            f"{db}: not repairing while other processes have it open: {names} — "
            "stop them (or wait for them to finish) and run the repair again",
            path=str(db),
            holder_pid=others[0],
        )
    lock_fd = None
    with suppress(OSError):  # a read-only folder: the repair will fail later with a clear error
        lock_fd = open_private(lock_path_for(db), os.O_RDWR | os.O_CREAT)
    try:
        if lock_fd is not None:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = locks.admission_lock_holder(db)
                raise StoreBusy(
                    f"{db}: a sessiondb writer is active"
                    + (f" ({describe_process(holder)})" if holder else "")
                    + " — stop it and run the repair again",
                    path=str(db),
                    holder_pid=holder,
                ) from None
        yield
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def repair(path: str | os.PathLike[str], *, mountinfo: str | None = None) -> RepairResult:
    """Repair the store at ``path``; see the module docstring. Raises StoreBusy when other
    processes have it open, InvalidInput/UnsupportedStorage for a file that is not a sessiondb
    store this version can write, CorruptDatabase when nothing could be salvaged."""
    db = Path(os.fspath(path)).expanduser().absolute()
    if not db.exists():
        raise Error(f"{db}: no such database — check the path")
    _refuse_foreign(db)
    with _exclusive(db):
        if needs_rebuild(db):
            return _rebuild(db)
        return _maintain(db, mountinfo)


# -- what may be repaired -----------------------------------------------------------------------


def _refuse_foreign(db: Path) -> None:
    """Refuse a file that is not a sessiondb store this version can write; the file untouched."""
    channel = channel_file(db)
    if channel is not None:
        raise InvalidInput(
            f"{db} is {channel}, not a store: `--repair` would replace it with an empty store "
            "and the other end would silently see nothing. Stop both ends, move the channel "
            "folder aside and start a new channel (unfinished messages are sent again from the "
            "host's side)"
        )
    head = read_prefix(db, 100)
    if head[:16] != MAGIC:
        return  # not readable as SQLite: perhaps a store with a destroyed header (salvaged)
    app_id = int.from_bytes(head[68:72], "big")
    if app_id != 0:
        raise InvalidInput(
            f"{db} is the database of another application (application_id {app_id:#010x}), "
            "not a sessiondb store: repair refuses to touch it"
        )
    try:
        conn = open_untrusted(db)
    except apsw.Error:
        return
    try:
        tables = [
            str(r[0]) for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        ]
        version = schema.current_version(conn) if "schema_version" in tables else None
    except apsw.Error:
        return  # the schema is damaged: the rebuild reads what it can
    finally:
        conn.close()
    if tables and version is None:
        names = ", ".join(shown(t, 40) for t in sorted(tables)[:6])
        raise InvalidInput(
            f"{db} is not a sessiondb store (tables: {names}): repair refuses to touch another "
            "application's database"
        )
    if version is not None and version > schema.LATEST:
        raise UnsupportedStorage(
            f"{db} has schema version {version}, newer than this sessiondb ({schema.LATEST}): "
            "a repair by this version would drop what it does not know — upgrade sessiondb "
            "(pip install -U sessiondb) and repair with that"
        )


# -- maintenance of a sound file ----------------------------------------------------------------


def _own_trigram_view(db: Path) -> bool:
    """True when the trigram index's content view is exactly sessiondb's own text: only then
    may the index be rebuilt through it (a view of the file's author must not run)."""
    ours = {
        stmt.strip()
        for stmt in (*fts.schema_statements(), *fts_v3._statements())
        if stmt.lstrip().upper().startswith("CREATE VIEW")
    }
    conn = open_untrusted(db)
    try:
        sql = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE type = 'view' AND name = ?",
            (fts.TRIGRAM_SOURCE,),
        ).get
    finally:
        conn.close()
    return isinstance(sql, str) and sql.strip() in ours


def _maintain(db: Path, mountinfo: str | None) -> RepairResult:
    actions: list[str] = []
    try:
        own_view = _own_trigram_view(db)
        conn = open_untrusted(
            db,
            readonly=False,
            writes=True,
            views=(fts.TRIGRAM_SOURCE,) if own_view else (),
        )
    except apsw.Error as e:
        raise Error(f"{db}: maintenance could not open it: {shown(e, 300)}") from e
    try:
        conn.set_busy_timeout(10_000)
        actions += _finish_backfills(conn)
        for t in fts_tables(conn):
            if t == fts.TRIGRAM_TABLE and not own_view:
                actions.append(
                    f"did not rebuild {t}: its content view is not sessiondb's "
                    f"({fts.TRIGRAM_SOURCE} was changed by someone else)"
                )
                continue
            try:
                with conn:
                    conn.execute(f"INSERT INTO {t}({t}) VALUES ('rebuild')")
                actions.append(f"rebuilt full-text index {t}")
            except apsw.Error as e:
                actions.append(f"could not rebuild full-text index {t}: {shown(e, 200)}")
        mode = str(conn.execute("PRAGMA journal_mode").get).lower()
        if mode == "wal":
            log, done = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            actions.append(f"checkpointed the WAL ({done} of {log} frames) and truncated it")
            fs = fsdetect.filesystem_type(db, mountinfo)
            if fsdetect.is_network_fs(fs):
                new = str(conn.execute("PRAGMA journal_mode=DELETE").get).lower()
                actions.append(f"switched the journal mode from WAL to {new} (a {fs} mount)")
    except apsw.Error as e:
        raise Error(f"{db}: maintenance failed: {shown(e, 300)}") from e
    finally:
        conn.close()
    if not actions:
        actions.append("nothing to do: the file is sound")
    return RepairResult(str(db), tuple(actions))


def _finish_backfills(conn: apsw.Connection) -> list[str]:
    """Index the rows a migration left to its backfill, in short transactions (docs/design.md
    rule 5). A rebuild first and the backfill afterwards would index those rows twice
    (tests/sqlite/test_doctor.py::test_repair_during_a_pending_backfill_indexes_each_row_once)."""
    present = {
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN (?, ?)",
            ("search_backfill", fts_v3.PENDING),
        )
    }
    actions = []
    if "search_backfill" in present and fts.WORD_TABLE in fts_tables(conn):
        batches = 0
        while True:
            with conn:
                done = fts.backfill_batch(conn)
            batches += 1
            if done:
                break
        if batches > 1 or conn.changes():
            actions.append(f"finished the pending search-index backfill ({batches} batch(es))")
    if fts_v3.PENDING in present and fts.TRIGRAM_TABLE in fts_tables(conn):
        batches = 0
        while True:
            with conn:
                done = fts_v3.backfill_batch(conn)
            if done:
                break
            batches += 1
        if batches:
            actions.append(f"finished the pending CJK index backfill ({batches} batch(es))")
    return actions


# -- rebuild of a damaged file ------------------------------------------------------------------


def _copy_exclusive(src: Path, dest: Path) -> None:
    """Byte-for-byte copy into a new 0600 file; never overwrites (O_EXCL), fsynced."""
    fd = open_private(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                os.write(fd, chunk)
        os.fsync(fd)
    finally:
        os.close(fd)


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _free_name(folder: Path, base: str) -> Path:
    candidate, n = folder / base, 1
    while candidate.exists() or Path(f"{candidate}-wal").exists():
        candidate, n = folder / f"{base}-{n}", n + 1
    return candidate


def _side_files(db: Path) -> list[tuple[str, Path]]:
    """The damaged file's companions worth keeping: committed data may live in them."""
    found = []
    for suffix in ("-wal", "-journal"):
        p = Path(f"{db}{suffix}")
        with suppress(OSError):
            if p.stat().st_size > 0:
                found.append((suffix, p))
    return found


def _rebuild(db: Path) -> RepairResult:
    stamp = _stamp()
    backup = _free_name(db.parent, f"{db.name}.corrupt-{stamp}")
    _copy_exclusive(db, backup)
    for suffix, p in _side_files(db):
        _copy_exclusive(p, Path(f"{backup}{suffix}"))
    scratch = _free_name(db.parent, f".{db.name}.repair-{stamp}.scratch")
    new = _free_name(db.parent, f".{db.name}.repair-{stamp}.new")
    try:
        _copy_exclusive(db, scratch)
        for suffix, p in _side_files(db):
            _copy_exclusive(p, Path(f"{scratch}{suffix}"))
        salvage = Salvage.from_file(scratch)
        if not salvage.sessions and not salvage.messages and salvage.unreadable:
            raise CorruptDatabase(
                str(db),
                "nothing could be salvaged from it; the damaged file is kept as " + str(backup),
            )
        inserted = _write_fresh(new, salvage)
        _verify(new, inserted)
        for suffix in ("-wal", "-shm", "-journal"):
            # The old WAL/journal would be replayed onto the new file: remove them first (they
            # are backed up). Nobody has the file open and we hold the admission lock.
            with suppress(FileNotFoundError):
                os.unlink(f"{db}{suffix}")
        os.replace(new, db)
        _fsync_dir(db.parent)
    finally:
        for p in (scratch, new):
            for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
                with suppress(FileNotFoundError):
                    os.unlink(f"{p}{suffix}")
    actions = (
        f"copied the damaged file to {backup}",
        f"recovered {inserted[0]} sessions and {inserted[1]} messages"
        + (
            f" (the damaged file counted {salvage.messages_before})"
            if salvage.messages_before is not None
            else ""
        )
        + " into a fresh file",
        "verified it (integrity_check ok, counts match) and swapped it in",
    )
    return RepairResult(
        str(db),
        actions,
        backup=str(backup),
        sessions=inserted[0],
        messages=inserted[1],
        placeholder_sessions=salvage.placeholders,
        messages_before=salvage.messages_before,
        notes=tuple(salvage.notes),
    )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(conn: apsw.Connection, table: str, cols: str, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """Rows of ``table`` with rowid in [lo, hi], reading around damage: a failing range keeps
    the rows it produced, and the rest is split in two until the failing rowids are isolated."""
    got: list[tuple[Any, ...]] = []
    todo = [(lo, hi)]
    while todo:
        a, b = todo.pop()
        start = a
        try:
            for row in conn.execute(
                f"SELECT {cols} FROM {table} WHERE id BETWEEN ? AND ? ORDER BY id", (a, b)
            ):
                rowid = row[0]
                # A damaged page can yield garbage cells: a rowid out of range or out of order
                # is not a row, and must not move the scan past rows still to be read.
                if isinstance(rowid, int) and start <= rowid <= b:
                    got.append(tuple(row))
                    start = rowid + 1
        except (apsw.Error, ValueError):  # ValueError: text that is not UTF-8 (garbled page)
            if start < b:
                mid = (start + b) // 2
                todo += [(mid + 1, b), (start, mid)]
            elif start == b:
                pass  # this one rowid is unreadable
    return got


def _max_rowid(conn: apsw.Connection, table: str) -> int | None:
    try:
        value = conn.execute(f"SELECT max(id) FROM {table}").get
        return int(value) if value is not None else 0
    except (apsw.Error, TypeError, ValueError):
        return None


def _is_message(v: tuple[Any, ...]) -> bool:
    return (
        len(v) == 8
        and v[0] is None
        and isinstance(v[1], int)
        and isinstance(v[2], int)
        and v[2] >= 1
        and isinstance(v[3], str)
        and isinstance(v[4], str)
        and (v[5] is None or isinstance(v[5], str))
        and (v[6] is None or isinstance(v[6], str))
        and isinstance(v[7], _NUM)
    )


def _is_session(v: tuple[Any, ...]) -> bool:
    # Rows written since schema version 4 carry an 11th value, the revision; a repaired store
    # starts every session at revision 0 again.
    v = v[:10] if len(v) == 11 and isinstance(v[10], int) else v
    return (
        len(v) == 10
        and v[0] is None
        and isinstance(v[1], str)
        and isinstance(v[2], str)
        and all(x is None or isinstance(x, str) for x in (v[3], v[4], v[8]))
        and isinstance(v[5], _NUM)
        and isinstance(v[6], _NUM)
        and (v[7] is None or isinstance(v[7], _NUM))
        and isinstance(v[9], int)
    )


@dataclass
class Salvage:
    sessions: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    messages: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    purged: set[int] = field(default_factory=set)
    sequence: int | None = None
    messages_before: int | None = None
    placeholders: int = 0
    unreadable: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_file(cls, scratch: Path) -> Salvage:
        s = cls()
        raw = s._pages(scratch)
        hints = {
            "sessions": max((r for r, v in raw if _is_session(v)), default=0),
            "messages": max((r for r, v in raw if _is_message(v)), default=0),
        }
        s._by_sql(scratch, hints)
        extra = 0
        for rowid, v in raw:  # SQL's reading wins; pages fill in what SQL could not reach
            if _is_message(v) and rowid not in s.messages:
                s.messages[rowid] = (rowid, *v[1:])
                extra += 1
            elif _is_session(v) and rowid not in s.sessions:
                s.sessions[rowid] = (rowid, *v[1:10])
                extra += 1
        if extra:
            s.notes.append(f"{extra} row(s) read directly from pages SQL could not reach")
        # Messages of a session being deleted (purge_queue) stay deleted; other orphans keep
        # their messages under a placeholder session so nothing readable is dropped.
        s.messages = {k: m for k, m in s.messages.items() if m[1] not in s.purged}
        now = time.time()
        for sid in sorted({m[1] for m in s.messages.values()} - set(s.sessions)):
            s.sessions[sid] = (
                sid,
                f"recovered-{sid}",
                "recovered",
                "recovered by sessiondb doctor --repair: the session row was unreadable",
                None,
                now,
                now,
                None,
                None,
                0,
            )
            s.placeholders += 1
        if s.placeholders:
            s.notes.append(
                f"{s.placeholders} session row(s) were unreadable: their messages are kept "
                "under session ids 'recovered-<n>'"
            )
        return s

    def _pages(self, scratch: Path) -> list[tuple[int, tuple[Any, ...]]]:
        with suppress(apsw.Error):
            # Fold a WAL into the scratch file so its pages are the current ones.
            conn = open_untrusted(scratch, readonly=False)
            try:
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
            finally:
                conn.close()
        with open(scratch, "rb") as f:  # our private copy: no live connection to disturb
            pages = PageFile(f.read())
        return [(row.rowid, row.values) for row in pages.all_leaf_rows()]

    def _by_sql(self, scratch: Path, hints: dict[str, int]) -> None:
        try:
            conn = open_untrusted(scratch, readonly=False)
        except apsw.Error:
            self.unreadable = True
            return
        try:
            try:
                conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
            except apsw.Error:
                self.unreadable = True
                return
            with suppress(apsw.Error):
                self.messages_before = int(conn.execute("SELECT count(*) FROM messages").get)
            with suppress(apsw.Error):
                self.sequence = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name='sessions'"
                ).get
            with suppress(apsw.Error):
                self.purged = {int(r[0]) for r in conn.execute("SELECT sid FROM purge_queue")}
            for table, cols, into, valid in (
                ("sessions", SESSION_COLS, self.sessions, _is_session),
                ("messages", MESSAGE_COLS, self.messages, _is_message),
            ):
                hi = max(_max_rowid(conn, table) or 0, hints[table])
                for row in _scan(conn, table, cols, 1, hi):
                    if valid((None, *row[1:])):
                        into[int(row[0])] = row
        finally:
            conn.close()


def _write_fresh(new: Path, salvage: Salvage) -> tuple[int, int]:
    from ..backend import SQLiteBackend

    backend = SQLiteBackend.open(new)
    engine = backend.engine
    try:
        sessions = sorted(salvage.sessions.values(), key=lambda r: r[0])
        messages = sorted(salvage.messages.values(), key=lambda r: r[0])
        n_sessions = n_messages = 0
        for i in range(0, len(sessions), BATCH):
            with engine.write() as conn:
                for row in sessions[i : i + BATCH]:
                    conn.execute(
                        f"INSERT OR IGNORE INTO sessions({SESSION_COLS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    n_sessions += conn.changes()
        for i in range(0, len(messages), BATCH):
            with engine.write() as conn:
                for row in messages[i : i + BATCH]:
                    conn.execute(
                        f"INSERT OR IGNORE INTO messages({MESSAGE_COLS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    n_messages += conn.changes()
        with engine.write() as conn:
            # message_count is also the last seq: never let a new append reuse a lost seq.
            conn.execute(
                "UPDATE sessions SET message_count = max(message_count, "
                "(SELECT coalesce(max(seq), 0) FROM messages WHERE sid = sessions.id))"
            )
            if salvage.sequence is not None:
                conn.execute(
                    "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'sessions'",
                    (int(salvage.sequence),),
                )
        if engine.journal_mode == "wal":
            engine.checkpoint("TRUNCATE")
    finally:
        backend.close()
    return n_sessions, n_messages


def _verify(new: Path, inserted: tuple[int, int]) -> None:
    boot_check(new)
    conn = apsw.Connection(str(new), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        counts = (
            int(conn.execute("SELECT count(*) FROM sessions").get),
            int(conn.execute("SELECT count(*) FROM messages").get),
        )
    finally:
        conn.close()
    if result != ["ok"] or counts != inserted:
        raise Error(
            f"{new}: the rebuilt file failed verification ({result[0]}, counts {counts} vs "
            f"{inserted}); the original was not replaced"
        )


__all__ = ["RepairResult", "needs_rebuild", "repair"]
