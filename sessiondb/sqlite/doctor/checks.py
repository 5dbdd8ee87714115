"""Health checks of a SQLite store: what is wrong, who is holding it, and what to do next.

Every check returns one :class:`~sessiondb.models.Check` (name, ok/warn/fail, one-line detail,
next step, and machine-readable ``data``); :func:`diagnose` runs them all on a path and works
even when the file cannot be opened as a store (that is when people need it most).

Nothing here writes to the database, and nothing opens its files with a plain ``open()``:
closing such a descriptor would drop the POSIX locks of any connection this process holds
(docs/design.md rule 2). Content is read through a read-only SQLite connection; sizes and
modes through ``stat``; lock holders through /proc.

The file is untrusted (docs/doctor.md, "Untrusted files"): the connection is hardened
(``untrusted.py``: none of the file's triggers or views runs, no ATTACH), every statement is a
fixed one, tables are named only from sessiondb's own list, and names read from the file are
escaped before they are shown.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from ...errors import CorruptDatabase, InvalidInput
from ...host.checks import check_open_by, check_permissions, describe_process, process_age
from ...host.procinfo import command_line
from ...lease.files import check_leases
from ...models import Check, HealthReport
from ...version import __version__
from .. import fsdetect, fts, fts_v3, locks
from ..bootcheck import MAGIC, SQLiteHeader, boot_check
from .untrusted import open_untrusted, shown

# SQLite releases before 3.51.3 can corrupt a WAL database when the WAL is reset while another
# connection writes (https://sqlite.org/wal.html#walresetbug); 3.50.7 and 3.44.6 carry the fix.
WAL_RESET_FIXED = ((3, 51, 3), (3, 50, 7), (3, 44, 6))
WAL_WARN_BYTES = 64 * 1024 * 1024  # used when the engine does not say its own limit
INTEGRITY_MAX_ERRORS = 20
REPAIR_HINT = "run `sessiondb doctor --repair {path}` (it keeps a copy of the damaged file)"
# sessiondb's own tables, the only names the doctor ever puts into SQL (never names read from
# the file: tests/sqlite/test_doctor_hostile.py).
STORE_TABLES = (
    "sessions",
    "messages",
    "purge_queue",
    "schema_version",
    "leases",
    "search_backfill",
    fts.TRIGRAM_ROWS,
    fts_v3.PENDING,
)
FTS_TABLES = (fts.WORD_TABLE, fts.TRIGRAM_TABLE)
# A damaged channel file is not a store: the store's repair would replace it with an empty store
# and the other end would silently see nothing (tests/sqlite/test_doctor.py::
# test_channel_files_are_recognised_and_never_repaired).
CHANNEL_HINT = (
    "this is a channel file, not a store: `sessiondb doctor --repair` refuses it; stop both "
    "ends, move the channel folder aside and start a new channel (unfinished messages are sent "
    "again from the host's side)"
)

CheckFn = Callable[[], Check]


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


def has_wal_reset_bug(version: str) -> bool:
    v = _version_tuple(version)
    if v >= WAL_RESET_FIXED[0]:
        return False
    return not any(v[:2] == fixed[:2] and v >= fixed for fixed in WAL_RESET_FIXED[1:])


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def read_prefix(path: Path, amount: int) -> bytes:
    """Up to ``amount`` bytes from the start of ``path`` through SQLite's VFS, never a plain
    ``open()`` (docs/design.md rule 2); b"" when it cannot be read."""
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_MAIN_DB
    try:
        f = apsw.VFSFile("", str(path), [flags, 0])
    except (apsw.Error, OSError):
        return b""
    try:
        n = min(amount, f.xFileSize())
        return f.xRead(n, 0) if n > 0 else b""
    except apsw.Error:
        return b""
    finally:
        f.xClose()


def channel_file(path: Path) -> str | None:
    """How to name ``path`` if it is one of a sessiondb channel's files, else None: its header
    carries the channel's application_id, or it is called inbound.db/outbound.db next to a
    heartbeat file (a channel file whose header is damaged)."""
    from ...channel.protocol import APPLICATION_ID, HEARTBEAT_FILE, INBOUND_FILE, OUTBOUND_FILE

    head = read_prefix(path, 100)
    by_id = head[:16] == MAGIC and int.from_bytes(head[68:72], "big") == APPLICATION_ID
    by_name = path.name in (INBOUND_FILE, OUTBOUND_FILE) and os.path.lexists(
        path.parent / HEARTBEAT_FILE
    )
    if not (by_id or by_name):
        return None
    side = {INBOUND_FILE: ", written by the host", OUTBOUND_FILE: ", written by the agent"}
    return f"a sessiondb channel file ({path.name}{side.get(path.name, '')})"


# -- checks ---------------------------------------------------------------------------------


def check_versions() -> Check:
    sqlite = apsw.sqlite_lib_version()
    data = {"sessiondb": __version__, "apsw": apsw.apsw_version(), "sqlite": sqlite}
    detail = f"sessiondb {__version__}, apsw {data['apsw']}, SQLite {sqlite}"
    if has_wal_reset_bug(sqlite):
        return Check(
            "versions",
            "warn",
            detail + " — this SQLite has the WAL-reset corruption bug",
            "upgrade apsw (pip install -U apsw) to get SQLite >= 3.51.3",
            data,
        )
    return Check("versions", "ok", detail, None, data)


def check_features() -> Check:
    found: dict[str, Any] = {}
    conn = apsw.Connection(":memory:")
    try:
        for name, sql in (
            ("fts5", "CREATE VIRTUAL TABLE temp.f USING fts5(a)"),
            ("trigram", "CREATE VIRTUAL TABLE temp.g USING fts5(a, tokenize='trigram')"),
        ):
            try:
                conn.execute(sql)
                found[name] = True
            except apsw.Error:
                found[name] = False
    finally:
        conn.close()
    missing = [k for k, v in found.items() if not v]
    if missing:
        return Check(
            "features",
            "fail",
            f"SQLite lacks {', '.join(missing)}: search will not work",
            "install apsw from PyPI (its wheels bundle SQLite with FTS5 and trigram)",
            found,
        )
    return Check("features", "ok", "FTS5 and the trigram tokenizer are available", None, found)


def check_file(path: Path) -> tuple[Check, SQLiteHeader | None]:
    p = str(path)
    if not path.exists():
        return Check(
            "file",
            "fail",
            f"no database at {p}",
            "check the path ($SESSIONDB_PATH or the argument); sessiondb creates it on first open",
            {"exists": False},
        ), None
    try:
        header = boot_check(path)
    except CorruptDatabase as e:
        return Check(
            "file",
            "fail",
            e.reason,
            REPAIR_HINT.format(path=p),
            {"exists": True, "size": path.stat().st_size},
        ), None
    except InvalidInput as e:
        return Check(
            "file", "fail", str(e), "give the database file's path", {"exists": True}
        ), None
    if header is None:
        return Check(
            "file",
            "warn",
            "the file is empty (0 bytes): no sessions yet",
            "if it held sessions before, it was truncated: restore it from a backup",
            {"exists": True, "size": 0},
        ), None
    data = {
        "exists": True,
        "size": header.file_size,
        "page_size": header.page_size,
        "pages": header.page_count,
        "kind": "store",
    }
    return Check(
        "file",
        "ok",
        f"SQLite database, {header.page_count or '?'} page(s) of {header.page_size} bytes",
        None,
        data,
    ), header


def open_readonly(path: Path) -> tuple[apsw.Connection, str | None]:
    """A hardened read-only connection (``untrusted.py``); on a read-only folder where SQLite
    cannot create the WAL index, fall back to ``immutable=1`` (then concurrent writers are not
    seen: said in the note)."""
    try:
        conn = open_untrusted(path)
    except apsw.CantOpenError:
        conn = None
    if conn is not None:
        try:
            conn.set_busy_timeout(5000)
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
            return conn, None
        except (apsw.CantOpenError, apsw.ReadOnlyError):
            conn.close()
        except BaseException:
            conn.close()
            raise
    conn = open_untrusted(path, immutable=True)
    return conn, "read as immutable (the folder is read-only): a live writer is not seen"


def check_schema(conn: apsw.Connection) -> Check:
    from .. import schema

    tables = [
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name")
    ]
    latest = schema.LATEST
    if not tables:
        return Check("schema", "ok", "no tables yet: created on first open", None, {"version": 0})
    if "schema_version" not in tables:
        names = ", ".join(shown(t, 40) for t in tables[:6])
        return Check(
            "schema",
            "fail",
            f"not a sessiondb database (tables: {names})",
            "point sessiondb at its own file; it never writes into another application's database",
            {"version": None, "tables": [shown(t, 200) for t in tables[:100]]},
        )
    version = schema.current_version(conn)
    data = {"version": version, "library": latest}
    if version > latest:
        return Check(
            "schema",
            "fail",
            f"schema version {version} is newer than this sessiondb supports ({latest})",
            "upgrade sessiondb (pip install -U sessiondb); older versions refuse to open it",
            data,
        )
    if version < latest:
        return Check(
            "schema",
            "warn",
            f"schema version {version}; this sessiondb migrates it to {latest} on next open",
            None,
            data,
        )
    return Check("schema", "ok", f"schema version {version} (current)", None, data)


def check_journal_mode(path: Path, header: SQLiteHeader, mountinfo: str | None) -> Check:
    mode = "wal" if header.wal else "rollback"
    fs = fsdetect.filesystem_type(path, mountinfo)
    data = {"journal_mode": mode, "filesystem": fs}
    if header.wal and fsdetect.is_network_fs(fs):
        return Check(
            "journal_mode",
            "fail",
            f"WAL on a {fs} mount: WAL's shared memory does not work across hosts or VMs, "
            "so processes on different sides can corrupt the file",
            "stop every process using it, then run `sessiondb doctor --repair` to switch it to "
            "the rollback journal, or move the database to a local disk",
            data,
        )
    where = f"on {fs}" if fs else "on an unknown filesystem"
    return Check("journal_mode", "ok", f"{mode} journal {where}", None, data)


def check_sizes(path: Path, wal_limit: int) -> Check:
    sizes: dict[str, int | None] = {}
    for label, p in (("db", str(path)), ("wal", f"{path}-wal"), ("shm", f"{path}-shm")):
        try:
            sizes[label] = os.stat(p).st_size
        except OSError:
            sizes[label] = None
    shown = ", ".join(f"{k} {_human(v)}" for k, v in sizes.items() if v is not None)
    data: dict[str, Any] = {**sizes, "wal_limit": wal_limit}
    wal = sizes["wal"] or 0
    if wal > wal_limit:
        readers = locks.wal_pinning_readers(path)
        data["pinning_readers"] = readers
        who = (
            "; readers pinning it: " + ", ".join(describe_process(p) for p in readers)
            if readers
            else ""
        )
        return Check(
            "sizes",
            "warn",
            f"{shown}: the WAL is over {_human(wal_limit)}{who}",
            "a long read transaction stops checkpoints: end it (or the process), then run "
            "`sessiondb doctor --repair` to checkpoint",
            data,
        )
    return Check("sizes", "ok", shown, None, data)


def check_integrity(conn: apsw.Connection, path: Path, full: bool) -> Check:
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}({INTEGRITY_MAX_ERRORS})")]
    except apsw.Error as e:
        # SQLite stops at damage it cannot walk past; check table by table to say where.
        rows = _integrity_by_table(conn, pragma) or [f"{e}"]
    damaged = _tables_of_trees(conn, rows) if rows != ["ok"] else []
    rows = [shown(r, 300) for r in rows]  # they may quote names read from the file
    data = {"pragma": pragma, "problems": [] if rows == ["ok"] else rows}
    if rows == ["ok"]:
        return Check("integrity", "ok", f"{pragma}: ok", None, data)
    more = "+" if len(rows) >= INTEGRITY_MAX_ERRORS else ""
    data["tables"] = damaged
    where = f" in {', '.join(damaged)}" if damaged else ""
    return Check(
        "integrity",
        "fail",
        f"{pragma} found {len(rows)}{more} problem(s){where}; first: {rows[0]}",
        REPAIR_HINT.format(path=path),
        data,
    )


def _tables_of_trees(conn: apsw.Connection, rows: list[str]) -> list[str]:
    """Name the tables and indexes behind "Tree N" (root page N) in integrity messages."""
    roots = sorted({int(n) for r in rows for n in re.findall(r"\bTree (\d+)", r)})
    names = []
    for root in roots:
        try:
            row = conn.execute(
                "SELECT type, name FROM sqlite_schema WHERE rootpage = ?", (root,)
            ).fetchone()
        except apsw.Error:
            row = None
        names.append(f"{shown(row[0], 20)} {shown(row[1], 60)}" if row else f"tree {root}")
    return names


def _integrity_by_table(conn: apsw.Connection, pragma: str) -> list[str]:
    """sessiondb's own tables one by one, to say which are damaged (by fixed name: a name read
    from the file is never put into SQL)."""
    try:
        present = {
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND sql NOT LIKE '%VIRTUAL%'"
            )
        }
    except apsw.Error as e:
        return [f"the schema is unreadable: {e}"]
    problems = []
    for t in STORE_TABLES:
        if t not in present:
            continue
        try:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}({t})")]
        except apsw.Error as e:
            problems.append(f"table {t}: {e} (its pages are damaged)")
            continue
        problems += [f"table {t}: {r}" for r in rows if r != "ok"]
    return problems


def fts_tables(conn: apsw.Connection) -> list[str]:
    """Which of sessiondb's own FTS5 indexes the file has (fts5vocab tables are not indexes)."""
    found = []
    for name in FTS_TABLES:
        sql = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)
        ).get
        if isinstance(sql, str) and "USING FTS5(" in sql.upper().replace(" (", "("):
            found.append(name)
    return found


def check_fts(conn: apsw.Connection, path: Path) -> Check:
    """sessiondb's FTS5 indexes checked by SQLite's integrity_check (3.44+ checks virtual
    tables too), each by its fixed name."""
    tables = fts_tables(conn)
    if not tables:
        return Check("fts", "ok", "no full-text index in this file yet", None, {"tables": []})
    problems: list[str] = []
    for t in tables:
        try:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({t})")]
        except apsw.Error as e:
            rows = [f"{t}: {e}"]
        problems += [shown(r, 300) for r in rows if r != "ok"]
    data: dict[str, object] = {"tables": tables, "problems": problems}
    if problems:
        return Check(
            "fts",
            "fail",
            f"full-text index damaged: {problems[0]}",
            f"run `sessiondb doctor --repair {path}` to rebuild the index",
            data,
        )
    waiting = _waiting_for_index(conn)
    if waiting:
        data["waiting"] = waiting
        return Check(
            "fts",
            "warn",
            f"full-text index consistent; {waiting} message(s) wait to be indexed (an "
            "interrupted bulk import, or a migration's backfill): search does not find them yet",
            f"open the store (it indexes them first) or run `sessiondb doctor --repair {path}`",
            data,
        )
    return Check("fts", "ok", f"full-text index consistent ({', '.join(tables)})", None, data)


def _waiting_for_index(conn: apsw.Connection) -> int:
    """Messages in the backfill window (sqlite/fts.py): stored, not yet searchable."""
    is_table = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'search_backfill'"
    ).fetchone()
    return 0 if is_table is None else fts.backfill_size(conn)


def check_write_lock(path: Path, watch: float) -> Check:
    """Who holds the write lock; watched for ``watch`` seconds to tell a writer in passing
    from one that is stuck (the kernel does not say when a lock was taken)."""
    held = locks.sqlite_write_lock(path)
    queued = locks.admission_lock_holder(path)
    if held is None and queued is None:
        return Check("write_lock", "ok", "nobody holds the write lock", None, {"holder": None})
    first = held.pid if held else queued
    start = time.monotonic()
    while time.monotonic() - start < watch:
        time.sleep(min(0.05, watch))
        now = locks.sqlite_write_lock(path)
        now_pid = now.pid if now else locks.admission_lock_holder(path)
        if now_pid != first:
            return Check(
                "write_lock",
                "ok",
                f"{describe_process(first or 0)} was writing; released within "
                f"{time.monotonic() - start:.2f} s",
                None,
                {"holder": None, "was": first},
            )
    seen = time.monotonic() - start
    assert first is not None
    which = f"SQLite {held.lock} lock on {held.file}" if held else f"admission lock {queued}"
    data = {
        "holder": first,
        "lock": held.lock if held else "admission",
        "held_at_least": round(seen, 3),
        "command": command_line(first),
        "process_age": process_age(first),
        "admission_holder": queued,
    }
    return Check(
        "write_lock",
        "warn",
        f"{describe_process(first)} has held the write lock for at least {seen:.1f} s ({which})",
        f"a write should take milliseconds: if this lasts, look at pid {first}; other writers "
        "wait and then fail with StoreBusy after write_timeout",
        data,
    )


# -- the report -----------------------------------------------------------------------------


def diagnose(
    path: str | os.PathLike[str],
    *,
    full: bool = False,
    mountinfo: str | None = None,
    lock_watch: float = 0.5,
    wal_limit: int | None = None,
    lease_dir: Path | None = None,
) -> HealthReport:
    """Run every check on the database at ``path``; never raises for a broken file."""
    db = Path(os.fspath(path)).expanduser().absolute()
    if wal_limit is None:
        from .. import engine

        wal_limit = max(int(getattr(engine, "JOURNAL_SIZE_LIMIT", 0)), 0) or WAL_WARN_BYTES
    checks: list[Check] = [check_versions(), check_features()]
    file_check, header = check_file(db)
    checks.append(file_check)
    if header is not None:
        checks.append(check_journal_mode(db, header, mountinfo))
        checks.append(check_sizes(db, wal_limit))
        checks.extend(_content_checks(db, full))
    checks.append(check_write_lock(db, lock_watch))
    checks.append(check_open_by(locks.database_files(db)[:-1]))
    checks.append(check_leases(lease_dir))
    if db.exists():
        checks.append(check_permissions(locks.database_files(db)))
    channel = channel_file(db) if db.is_file() else None
    if channel is not None:
        checks = [_as_channel(c, channel, header) for c in checks]
    return HealthReport(path=str(db), checks=tuple(checks))


def _as_channel(check: Check, channel: str, header: SQLiteHeader | None) -> Check:
    """A check of a channel file: the schema is the channel's, and no hint sends it to the
    store's repair."""
    if check.name == "schema":
        version = header.user_version if header else None
        return Check(
            "schema",
            "ok",
            f"{channel}, format v{version}: not a store (`--repair` does not apply)",
            None,
            {"version": None, "channel_format": version},
        )
    data = dict(check.data or {})
    detail = check.detail
    if check.name == "file":
        data["kind"] = "channel"
        detail = f"{detail} — {channel}, not a store"
    hint = CHANNEL_HINT if check.hint and "--repair" in check.hint else check.hint
    return Check(check.name, check.status, detail, hint, data)


def _content_checks(db: Path, full: bool) -> list[Check]:
    try:
        conn, note = open_readonly(db)
    except apsw.Error as e:
        return [
            Check(
                "integrity",
                "fail",
                f"cannot open the database: {shown(e, 300)}",
                REPAIR_HINT.format(path=db),
                {},
            )
        ]
    try:
        out = []
        try:
            out.append(check_schema(conn))
        except apsw.Error as e:
            out.append(
                Check(
                    "schema",
                    "fail",
                    f"cannot read the schema: {shown(e, 300)}",
                    REPAIR_HINT.format(path=db),
                )
            )
        integrity = check_integrity(conn, db, full)
        if note:
            integrity = Check(
                integrity.name,
                integrity.status,
                f"{integrity.detail} ({note})",
                integrity.hint,
                integrity.data,
            )
        out.append(integrity)
        try:
            out.append(check_fts(conn, db))
        except apsw.Error as e:
            out.append(Check("fts", "fail", f"cannot check the full-text index: {shown(e, 300)}"))
        return out
    finally:
        conn.close()


__all__ = ["diagnose", "has_wal_reset_bug"]
