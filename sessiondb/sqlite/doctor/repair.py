"""``sessiondb doctor --repair``: fix what can be fixed without ever losing the damaged original.

Only a sessiondb store is repaired. A channel file, another application's database, or a store
of a newer schema is refused with the file untouched: rebuilding it would turn it into an empty
sessiondb store (docs/doctor.md, "What --repair refuses").

A healthy store gets maintenance: a pending search-index backfill finished, sessiondb's own
full-text indexes rebuilt (by their fixed names), the WAL checkpointed and truncated, and a WAL
file on a network/VM mount switched to the rollback journal.

A damaged store is never modified. It is copied next to itself under a name that starts with
the database's name and says when (``state.db.corrupt-20261122T040512Z``, plus ``-wal`` or
``-journal`` when there is one), written under a temporary name, fsynced, then renamed, so that
a backup under its final name is always complete. Everything readable is salvaged from a private
scratch copy (``salvage.py``); the rows go into a fresh store, which is verified: integrity_check
ok, the row counts it was given, and every message that plain reads returned before the repair
(the floor), same session, seq and content. Then it is swapped in.

The swap, and why it is safe to kill at any point
(tests/sqlite/test_repair_faults.py::test_kill_9_at_every_step_leaves_a_readable_store):
the old main file can have committed transactions in its ``-wal`` (or a hot ``-journal``), and a
WAL is replayed onto whatever main file sits beside it — so replacing the main file first would
replay the old WAL onto the new file, and removing the WAL first would leave the old main file
without its newest commits. Instead, one rename replaces ``<db>-wal`` with a WAL holding every
page of the verified new file (``pagescan.write_wal_image``). Before that rename, the original
(main file and WAL) is untouched; from it on, SQLite reads the new content whatever main file is
beside it. Then the hot journal (if any) is removed, the new main file renamed over the old one
(the same content), and the now redundant WAL removed.

Every repair refuses to start while another process has the file open, naming those processes,
and holds the store's admission lock so that no sessiondb writer gets in meanwhile. Files left by
an interrupted repair (``.<db>.repair-*``) are removed by the next one.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import apsw

from ...errors import CorruptDatabase, Error, InvalidInput, StoreBusy, UnsupportedStorage
from ...host.checks import describe_process, other_processes
from ...host.paths import open_private
from ...models import RepairResult
from .. import deferred, fsdetect, fts, fts_v3, locks, schema, selfindex
from ..admission import lock_path_for
from ..bootcheck import MAGIC, boot_check
from ..errors import translate
from . import workfiles
from .checks import channel_file, diagnose, fts_tables, read_prefix
from .pagescan import write_wal_image
from .salvage import MESSAGE_COLS, SESSION_COLS, Salvage
from .untrusted import open_untrusted, shown

BATCH = 1000  # rows per write transaction into the fresh store (docs/design.md rule 5)


class _SwapUnfinished(Error):
    """The new content is in place (in ``<db>-wal``) but the swap's last steps failed."""


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
    store this version can write, CorruptDatabase when nothing could be salvaged, Error (naming
    the file and the next step) for anything else; never a raw OSError or apsw error."""
    given = Path(os.fspath(path)).expanduser().absolute()
    # SQLite resolves a symlinked database to its target and keeps the -wal beside the target:
    # the repair works on the same files.
    db = Path(os.path.realpath(given))
    try:
        if not db.exists():
            raise Error(f"{given}: no such database — check the path")
        if not db.is_file():
            raise InvalidInput(f"{given} is not a regular file: give the database file's path")
        _refuse_foreign(db)
        with _exclusive(db):
            cleaned = workfiles.clean_leftovers(db)
            result = _rebuild(db) if needs_rebuild(db) else _maintain(db, mountinfo)
    except OSError as e:
        raise workfiles.os_error(db, e, "repair it") from e
    except apsw.Error as e:
        raise translate(e, db, doing="repair") from e
    if cleaned:
        return dataclasses.replace(result, actions=(cleaned, *result.actions))
    return result


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


# -- maintenance of a sound store ---------------------------------------------------------------


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
        actions += _finish_deferred(conn)
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
    indexes = fts_tables(conn)
    actions = []
    if "search_backfill" in present and fts.WORD_TABLE in indexes and fts.backfill_pending(conn):
        batches = 1
        while True:
            with conn:
                if fts.backfill_batch(conn):
                    break
            batches += 1
        actions.append(f"finished the pending search-index backfill ({batches} batch(es))")
    pending = f"SELECT 1 FROM {fts_v3.PENDING} LIMIT 1"
    if (
        fts_v3.PENDING in present
        and fts.TRIGRAM_TABLE in indexes
        and conn.execute(pending).fetchone() is not None
    ):
        batches = 1
        while True:
            with conn:
                if fts_v3.backfill_batch(conn):
                    break
            batches += 1
        actions.append(f"finished the pending CJK index backfill ({batches} batch(es))")
    return actions


def _finish_deferred(conn: apsw.Connection) -> list[str]:
    """Index the deferred index's backlog (sqlite/deferred.py) before the rebuilds: a rebuild
    reads every message, and a backlog left above the cursor would be indexed again by the
    next writer. A damaged index may refuse the catch-up; then the cursor is moved to the top
    and the CJK rows of the backlog are given their trigram membership, which is what the
    rebuilds that follow read."""
    try:
        with conn:
            rows = deferred.finish(conn)
    except apsw.Error:
        with conn:
            done = deferred.backlog(conn)
            if done is None:
                return []
            conn.execute(selfindex.statements("m.id > ?")[1], (done,))
            conn.execute(
                f"UPDATE {deferred.CURSOR} SET done_id ="
                " max(done_id, coalesce((SELECT max(id) FROM messages), 0)), bytes = 0"
            )
        return ["moved the deferred index's cursor to the top for the rebuild"]
    return [f"indexed the deferred index's backlog ({rows} message(s))"] if rows else []


# -- rebuild of a damaged store -----------------------------------------------------------------


def _rebuild(db: Path) -> RepairResult:
    stamp = workfiles.stamp()
    work = str(workfiles.free_name(db.parent, f".{db.name}.repair-{stamp}"))
    scratch, new = Path(f"{work}.scratch"), Path(f"{work}.new")
    step = "copy the damaged file aside"
    try:
        workfiles.check_space(db)
        backup = workfiles.backup(db, work, stamp)
        step = "make a scratch copy to salvage from"
        workfiles.copy(db, scratch)
        for suffix, p in workfiles.side_files(db):
            workfiles.copy(p, Path(f"{scratch}{suffix}"))
        step = "salvage its sessions and messages"
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
                "nothing could be salvaged from it (it may not be a sessiondb store); the "
                f"damaged file is kept as {backup}",
                hint="restore the store from a backup if you have one",
            )
        step = "write the salvaged rows into a new file"
        inserted = _write_fresh(new, salvage)
        step = "verify the new file"
        _verify(new, inserted, salvage)
        step = "swap the new file in"
        _swap_in(db, new, Path(f"{work}.wal"), backup)
    except OSError as e:
        raise workfiles.os_error(db, e, step) from e
    except (Error, apsw.Error) as e:
        ours = isinstance(e, (InvalidInput, _SwapUnfinished))
        if ours or (isinstance(e, CorruptDatabase) and e.path == str(db)):
            raise
        why = translate(e, db) if isinstance(e, apsw.Error) else e
        raise Error(
            f"{db}: the repair could not {step}: {why} — the database was not changed"
        ) from e
    finally:
        workfiles.remove_work_files(db.parent, Path(work).name)
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
            f"it failed verification ({shown(result[0], 200)}, counts {counts} vs {inserted})"
        )
    if missing:
        raise Error(
            f"it lacks {len(missing)} message(s) that plain reads returned before the repair "
            f"(first: {missing[0]})"
        )


def _swap_in(db: Path, new: Path, wal_tmp: Path, backup: Path) -> None:
    """Make ``db`` read as ``new`` in one atomic step (module docstring, "The swap")."""
    fd = open_private(wal_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        write_wal_image(new, fd)
    finally:
        os.close(fd)
    # Nobody has the database open (checked, and we hold the admission lock): a stale WAL index
    # is rebuilt from the WAL by the next opener, so it may simply go.
    with suppress(FileNotFoundError):
        os.unlink(f"{db}-shm")
    os.replace(wal_tmp, f"{db}-wal")  # the commit point: from here on the file reads as `new`
    try:
        workfiles.fsync_dir(db.parent)
        with suppress(FileNotFoundError):
            os.unlink(f"{db}-journal")  # a hot journal of the old file; it is backed up
        os.replace(new, db)
        workfiles.fsync_dir(db.parent)
        for suffix in ("-wal", "-shm"):  # the WAL holds exactly the new main file's pages
            with suppress(FileNotFoundError):
                os.unlink(f"{db}{suffix}")
        workfiles.fsync_dir(db.parent)
    except OSError as e:
        raise _SwapUnfinished(
            f"{db}: the repaired content is in place (its pages are in {db}-wal) but the swap "
            f"could not be finished ({e.strerror or e}); run `sessiondb doctor --repair {db}` "
            f"again to finish it. The damaged original is kept as {backup}"
        ) from e


__all__ = ["RepairResult", "needs_rebuild", "repair"]
