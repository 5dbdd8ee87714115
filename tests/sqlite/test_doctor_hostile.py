"""The doctor on files crafted to attack it: the file is untrusted (docs/doctor.md, "Untrusted
files"). No SQL is built from names or text read from it, none of its triggers or views runs,
and nothing outside the file is read or written — nor anything inside it changed — by a check.

Each crafted file is made with a plain apsw connection, as an attacker would make it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from click.testing import CliRunner

import sessiondb
from sessiondb.cli.app import cli
from sessiondb.sqlite.doctor import checks as doctor
from sessiondb.sqlite.doctor import repair
from sessiondb.sqlite.doctor.pagescan import wal_checksum
from tests.helpers import store_with_pending_backfill

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (recursively) with a hash of its bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _victim(folder: Path) -> Path:
    """The user's own store, somewhere the crafted file's author knows the path of."""
    folder.mkdir(mode=0o700)
    path = folder / "sessions.db"
    with sessiondb.open(path, journal_mode="delete") as store:
        for i in range(5):
            store.append("mine", "user", f"private message {i}")
    return path


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _add_fts(conn: apsw.Connection, name: str) -> None:
    conn.execute(f"CREATE VIRTUAL TABLE {_quoted(name)} USING fts5(body)")


@pytest.fixture
def probe_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A function ``probe()`` on every apsw connection made during the test, marked innocuous so
    that only the doctor's refusal to run views and triggers keeps a crafted file from calling
    it (trusted_schema alone would not)."""
    calls: list[int] = []

    def hook(conn: apsw.Connection) -> None:
        def probe() -> int:
            calls.append(1)
            return 1

        conn.create_scalar_function("probe", probe, 0, flags=apsw.SQLITE_INNOCUOUS)

    monkeypatch.setattr(apsw, "connection_hooks", [*apsw.connection_hooks, hook])
    yield calls


def test_fts_name_that_closes_its_quote_runs_nothing(tmp_path: Path) -> None:
    """A table name from the file put in a PRAGMA's quotes would end the statement and start the
    author's own: here an ATTACH of the user's store and a VACUUM INTO a file of the author's
    choosing."""
    victim = _victim(tmp_path / "home")
    stolen = tmp_path / "drop" / "stolen.db"
    stolen.parent.mkdir()
    evil = tmp_path / "evil" / "evil.db"
    evil.parent.mkdir()
    conn = apsw.Connection(str(evil))
    _add_fts(conn, "a")
    _add_fts(conn, f"a\"); ATTACH '{victim}' AS v; VACUUM v INTO '{stolen}'; --")
    conn.close()
    before = _digest(tmp_path)

    report = doctor.diagnose(evil, lock_watch=0.0)

    assert not stolen.exists()
    assert _digest(tmp_path) == before  # nothing written anywhere, the file itself unchanged
    assert report.exit_code == 2  # and it is no sessiondb store
    # the same through the CLI, which promises to be read-only
    res = CliRunner().invoke(cli, ["doctor", str(evil), "--json"])
    assert res.exit_code == 2 and not stolen.exists()
    assert _digest(tmp_path) == before


def test_crafted_store_cannot_reach_another_store_through_repair(tmp_path: Path) -> None:
    """A sound sessiondb store with an extra FTS table whose name carries SQL: the repair's
    maintenance must never use it (it rebuilds sessiondb's own indexes only, by fixed name)."""
    victim = _victim(tmp_path / "home")
    victim_bytes = victim.read_bytes()
    evil = tmp_path / "evil" / "evil.db"
    evil.parent.mkdir()
    with sessiondb.open(evil) as store:
        store.append("bait", "user", "hello")
    conn = apsw.Connection(str(evil))
    _add_fts(conn, "a")
    _add_fts(
        conn, f"a\"(\"a\") VALUES ('rebuild'); ATTACH '{victim}' AS v; DELETE FROM v.messages; --"
    )
    conn.close()

    repair.repair(evil)

    assert victim.read_bytes() == victim_bytes
    with sessiondb.open(victim, readonly=True) as store:
        assert store.count("mine") == 5
    with sessiondb.open(evil, readonly=True) as store:
        assert [m.content for m in store.messages("bait")] == ["hello"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a child process: a crash there (SQLite's FTS5 segfaulted on a trigger on its
    own shadow table when the old repair ran it) is a failed test, not a dead test run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = "import sys; from sessiondb.cli import main; sys.argv[0] = 'sessiondb'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _trigger_log(db: Path) -> int | None:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'trigger_log'").get is None:
            return None
        return int(conn.execute("SELECT count(*) FROM trigger_log").get)
    finally:
        conn.close()


def _log_inserts(db: Path, tables: tuple[str, ...]) -> None:
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE trigger_log(what TEXT)")
    for table in tables:
        conn.execute(
            f"CREATE TRIGGER t_{table} AFTER INSERT ON {table}"
            f" BEGIN INSERT INTO trigger_log VALUES ('{table}'); END"
        )
    conn.close()


def test_triggers_on_fts_shadow_tables_never_run(tmp_path: Path) -> None:
    """A trigger on FTS5's own shadow table: when the old repair's index rebuild fired it,
    SQLite crashed the process. Checked and repaired in a child process, so that a crash is a
    failed test: exit 0/1/2, never a signal or a traceback, and the message kept."""
    db = tmp_path / "triggers.db"
    with sessiondb.open(db) as store:
        store.append("s", "user", "hello world")
    _log_inserts(db, ("messages_fts_data",))

    res = _cli("doctor", str(db), "--full", "--json")
    assert res.returncode in (0, 1, 2), res.stderr
    res = _cli("doctor", str(db), "--repair", "--yes", "--json")
    assert res.returncode in (0, 1, 2), res.stderr
    assert "Traceback" not in res.stderr
    assert _trigger_log(db) in (None, 0)
    with sessiondb.open(db, readonly=True) as store:
        assert [m.content for m in store.messages("s")] == ["hello world"]


def test_triggers_on_tables_maintenance_writes_never_run(tmp_path: Path) -> None:
    """A store with a search backfill pending: the repair finishes it, writing
    ``messages_tri_rows`` and ``search_backfill`` — whose triggers, added by someone else, must
    not run."""
    db = tmp_path / "backfill.db"
    store_with_pending_backfill(db, "marker 東京")
    _log_inserts(db, ("messages_tri_rows", "messages", "sessions"))
    conn = apsw.Connection(str(db))
    conn.execute(
        "CREATE TRIGGER t_backfill AFTER UPDATE ON search_backfill"
        " BEGIN INSERT INTO trigger_log VALUES ('search_backfill'); END"
    )
    conn.close()

    result = repair.repair(db)

    assert any("backfill" in a for a in result.actions), result.actions
    assert _trigger_log(db) == 0


def test_views_of_the_file_never_run(tmp_path: Path, probe_calls: list[int]) -> None:
    """The trigram index's content view and ``purge_queue`` replaced by views that call a
    function: neither the checks, nor the maintenance of a sound file, nor the rebuild of a
    damaged one may run them."""
    db = tmp_path / "views.db"
    with sessiondb.open(db, journal_mode="delete") as store:
        for i in range(300):
            store.append(f"s{i % 3}", "user", f"hello world {i} 東京 " + "x" * 300)
    conn = apsw.Connection(str(db))
    conn.execute("DROP VIEW messages_tri_src")
    conn.execute(
        "CREATE VIEW messages_tri_src AS SELECT r.id AS id, m.content || probe() AS content"
        " FROM messages_tri_rows r JOIN messages m ON m.id = r.id"
    )
    conn.execute("DROP TABLE purge_queue")
    conn.execute("CREATE VIEW purge_queue AS SELECT probe() AS sid")
    conn.close()
    before = _digest(tmp_path)

    doctor.diagnose(db, lock_watch=0.0, full=True)
    assert probe_calls == []
    assert _digest(tmp_path) == before

    repair.repair(db)  # maintenance of a sound file
    assert probe_calls == []

    data = bytearray(db.read_bytes())
    middle = len(data) // 4096 // 2
    data[middle * 4096 + 8 : middle * 4096 + 4096] = bytes(4088)  # a damaged page
    db.write_bytes(bytes(data))
    with contextlib.suppress(sessiondb.Error):
        repair.repair(db)  # rebuild of a damaged one
    assert probe_calls == []


def test_semicolons_and_quotes_in_every_name(tmp_path: Path, probe_calls: list[int]) -> None:
    """Tables, indexes and columns named with quotes, semicolons and SQL; a damaged page so that
    the doctor also walks table by table: nothing outside changes, and the names shown to the
    reader carry no terminal control characters."""
    victim = _victim(tmp_path / "home")
    stolen = tmp_path / "stolen.db"
    evil = tmp_path / "evil.db"
    conn = apsw.Connection(str(evil))
    conn.execute("PRAGMA journal_mode=delete").fetchall()
    payload = f"x\"); ATTACH '{victim}' AS v; VACUUM v INTO '{stolen}'; SELECT probe(); --"
    conn.execute(f"CREATE TABLE {_quoted(payload)}({_quoted(payload)} TEXT)")
    conn.execute(f"CREATE TABLE {_quoted(chr(27) + '[2J' + payload)}(x)")
    conn.execute(f"CREATE INDEX {_quoted(payload + 'i')} ON {_quoted(payload)}({_quoted(payload)})")
    conn.execute(f"INSERT INTO {_quoted(payload)} SELECT 'row' FROM (SELECT 1 UNION SELECT 2)")
    for i in range(200):
        conn.execute(f"INSERT INTO {_quoted(payload)} VALUES (?)", ("y" * 500 + str(i),))
    conn.close()
    data = bytearray(evil.read_bytes())
    data[3 * 4096 + 100 : 3 * 4096 + 600] = bytes(range(250)) * 2  # damage a leaf of the table
    evil.write_bytes(bytes(data))
    before = _digest(tmp_path)

    report = doctor.diagnose(evil, lock_watch=0.0, full=True)

    assert not stolen.exists() and probe_calls == []
    assert _digest(tmp_path) == before
    for c in report.checks:
        assert "\x1b" not in c.detail and "\x1b" not in (c.hint or "")


def _wal(page_size: int, frames: list[tuple[int, int, bytes]]) -> bytes:
    """A WAL image: (page number, commit size or 0, page bytes) per frame."""
    salt1, salt2 = 7, 11
    head = struct.pack(">6I", 0x377F0683, 3007000, page_size, 0, salt1, salt2)
    sums = wal_checksum(head, True)
    out = [head, struct.pack(">2I", *sums)]
    for pgno, commit, page in frames:
        frame = struct.pack(">2I", pgno, commit)
        sums = wal_checksum(page, True, *wal_checksum(frame, True, *sums))
        out += [frame, struct.pack(">4I", salt1, salt2, *sums), page]
    return b"".join(out)


def test_huge_page_count_is_not_believed(tmp_path: Path) -> None:
    """A header, and a WAL commit record, claiming billions of pages: the doctor answers from
    the real sizes, and the repair's page scan reads only the pages that exist (believing the
    claim would walk 2**32 pages)."""
    db = tmp_path / "huge.db"
    with sessiondb.open(db, journal_mode="delete") as store:
        store.append("s", "user", "kept")
        store.append_many("t", [{"role": "user", "content": "z" * 3000} for _ in range(30)])
    data = bytearray(db.read_bytes())
    data[28:32] = (0xFFFFFFF0).to_bytes(4, "big")  # in-header database size
    data[92:96] = data[24:28]  # "valid for" the current change counter: believed by a reader
    db.write_bytes(bytes(data))
    before = _digest(tmp_path)
    report = doctor.diagnose(db, lock_watch=0.0)
    assert report.exit_code == 2
    assert _digest(tmp_path) == before
    result = repair.repair(db)
    with sessiondb.open(db, readonly=True) as store:
        assert [m.content for m in store.messages("s")] == ["kept"]
    assert result.messages == 31

    # Now a WAL whose one commit claims 0xFFFFFFF0 pages, over a main file with a damaged page.
    data = bytearray(db.read_bytes())
    pages = len(data) // 4096
    data[(pages - 1) * 4096 + 8 :] = bytes(4096 - 8)
    db.write_bytes(bytes(data))
    page1 = bytearray(data[:4096])
    page1[18] = page1[19] = 2  # WAL mode, as a WAL's own page 1 says
    Path(f"{db}-wal").write_bytes(_wal(4096, [(1, 0xFFFFFFF0, bytes(page1))]))
    doctor.diagnose(db, lock_watch=0.0)
    repair.repair(db)
    with sessiondb.open(db, readonly=True) as store:
        assert [m.content for m in store.messages("s")] == ["kept"]
    assert os.path.getsize(db) < 10 * 1024 * 1024
