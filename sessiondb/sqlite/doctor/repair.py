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
is one); everything readable is salvaged from a private scratch copy (``salvage.py``: plain
reads, rowid-range scans, the pages with the WAL applied); the rows go into a fresh store, which
is verified — integrity_check ok, the counts it was given, and every message that plain reads
returned before the repair (the floor), same session, seq and content — and then renamed over
the original.

Every repair refuses to start while another process has the file open, naming those processes,
and holds the store's admission lock so that no sessiondb writer gets in meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import apsw

from ...errors import CorruptDatabase, Error, InvalidInput, StoreBusy, UnsupportedStorage
from ...host.checks import describe_process, other_processes
from ...host.paths import open_private
from ...models import RepairResult
from .. import fsdetect, fts, fts_v3, locks, schema
from ..admission import lock_path_for
from ..bootcheck import MAGIC, boot_check
from .checks import channel_file, diagnose, fts_tables, read_prefix
from .salvage import MESSAGE_COLS, SESSION_COLS, Salvage
from .untrusted import open_untrusted, shown

BATCH = 1000  # rows per write transaction into the fresh store (docs/design.md rule 5)


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
        salvage = Salvage.from_copy(scratch)
        if salvage.foreign_tables:
            raise InvalidInput(
                f"{db} is not a sessiondb store (its schema, read from its pages, has tables "
                f"{', '.join(shown(t, 40) for t in salvage.foreign_tables[:6])}): repair "
                "refuses to turn another application's database into a store; the file is "
                f"unchanged (a copy was made: {backup})"
            )
        if not salvage.sessions and not salvage.messages and salvage.unreadable:
            raise CorruptDatabase(
                str(db),
                "nothing could be salvaged from it; the damaged file is kept as " + str(backup),
            )
        inserted = _write_fresh(new, salvage)
        _verify(new, inserted, salvage)
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
    readable = salvage.floor_count
    actions = (
        f"copied the damaged file to {backup}",
        f"recovered {inserted[0]} sessions and {inserted[1]} messages"
        + (
            f" (the damaged file counted {salvage.messages_before})"
            if salvage.messages_before is not None
            else ""
        )
        + " into a fresh file",
        f"verified it (integrity_check ok; it holds all {readable} messages that plain reads "
        "returned before the repair) and swapped it in",
    )
    return RepairResult(
        str(db),
        actions,
        backup=str(backup),
        sessions=inserted[0],
        messages=inserted[1],
        placeholder_sessions=salvage.placeholders,
        messages_before=salvage.messages_before,
        messages_readable_before=readable,
        notes=tuple(salvage.notes),
    )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_fresh(new: Path, salvage: Salvage) -> tuple[int, int]:
    from ..backend import SQLiteBackend

    backend = SQLiteBackend.open(new)
    try:
        engine = backend.engine
        sessions = salvage.ordered_sessions()
        messages = salvage.ordered_messages()
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
    # The new file must stand alone (its WAL image is built from the main file's bytes).
    conn = apsw.Connection(str(new))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    with suppress(FileNotFoundError):
        if os.path.getsize(f"{new}-wal"):
            raise Error(f"{new}: its WAL could not be checkpointed")
    return n_sessions, n_messages


def _verify(new: Path, inserted: tuple[int, int], salvage: Salvage) -> None:
    """integrity_check ok, the counts written, and the floor: every message a plain read
    returned before the repair, in the same session with the same seq and content."""
    boot_check(new)
    conn = apsw.Connection(str(new), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        counts = (
            int(conn.execute("SELECT count(*) FROM sessions").get),
            int(conn.execute("SELECT count(*) FROM messages").get),
        )
        missing: list[str] = []
        for sid, seqs in salvage.floor.items():
            if not seqs:
                continue
            name = conn.execute("SELECT session_id FROM sessions WHERE id = ?", (sid,)).get
            have: dict[object, object] = {
                r[0]: r[1]
                for r in conn.execute("SELECT seq, content FROM messages WHERE sid = ?", (sid,))
            }
            for seq, (content, _) in seqs.items():
                if name != salvage.names.get(sid) or have.get(seq) != content:
                    missing.append(f"session {shown(salvage.names.get(sid), 60)} seq {seq}")
    finally:
        conn.close()
    if result != ["ok"] or counts != inserted:
        raise Error(
            f"{new}: the rebuilt file failed verification ({shown(result[0], 200)}, counts "
            f"{counts} vs {inserted}); the original was not replaced"
        )
    if missing:
        raise Error(
            f"the rebuilt file lacks {len(missing)} message(s) that plain reads returned before "
            f"the repair (first: {missing[0]}); the original was not replaced"
        )


__all__ = ["RepairResult", "needs_rebuild", "repair"]
