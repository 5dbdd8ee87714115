"""Doctor and repair on real SQLite stores."""

from __future__ import annotations

import json
import os
import random
import stat
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner

import sessiondb
from sessiondb.cli.app import cli
from sessiondb.errors import CorruptDatabase, StoreBusy
from sessiondb.lease.files import check_leases
from sessiondb.models import HealthReport
from sessiondb.sqlite.bootcheck import boot_check
from sessiondb.sqlite.doctor import checks as doctor
from sessiondb.sqlite.doctor import repair
from sessiondb.sqlite.doctor.pagescan import PageFile
from tests import _workers_procfs as workers
from tests.helpers import engine_of, store_with_pending_backfill

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
MSG_COLS = "id, sid, seq, role, content, key, meta, created_at"


holding = workers.holding


@pytest.fixture(autouse=True)
def private_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "runtime"
    monkeypatch.setenv("SESSIONDB_RUNTIME_DIR", str(d))
    return d


def _store(path: Path, sessions: int = 3, per: int = 20, seed: int = 7) -> None:
    rng = random.Random(seed)
    with sessiondb.open(path) as store:
        for s in range(sessions):
            store.append_many(
                f"s{s}",
                [
                    {"role": "user", "content": f"m{s}-{i} " + "x" * rng.randint(200, 2000)}
                    for i in range(per)
                ],
            )
        engine_of(store).checkpoint("TRUNCATE")


def _by_name(report: HealthReport) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


def _messages(path: Path) -> dict[int, tuple[Any, ...]]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {int(r[0]): tuple(r) for r in conn.execute(f"SELECT {MSG_COLS} FROM messages")}
    finally:
        conn.close()


def test_healthy_store(tmp_path: Path) -> None:
    db = tmp_path / "ok.db"
    _store(db)
    report = doctor.diagnose(db)
    checks = _by_name(report)
    assert report.status == "ok", [(c.name, c.detail) for c in report.checks if c.status != "ok"]
    assert report.exit_code == 0
    for name in (
        "versions",
        "features",
        "file",
        "journal_mode",
        "sizes",
        "schema",
        "integrity",
        "fts",
        "write_lock",
        "open_by",
        "leases",
        "permissions",
    ):
        assert name in checks
    assert checks["schema"].data["version"] == checks["schema"].data["library"]
    assert checks["journal_mode"].data["journal_mode"] == "wal"


def test_check_on_an_open_store(tmp_path: Path) -> None:
    db = tmp_path / "open.db"
    with sessiondb.open(db) as store:
        store.append("a", "user", "hello")
        report = store.check(full=True)
        assert _by_name(report)["integrity"].detail == "integrity_check: ok"
        store.append("a", "user", "still writable")  # the check left the store usable
        assert store.count("a") == 2


def test_write_lock_held_by_another_process_is_named(tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    _store(db, sessions=1, per=2)
    with holding(workers.hold_write_lock, str(db), "wal") as pid:
        report = doctor.diagnose(db, lock_watch=0.2)
        lock = _by_name(report)["write_lock"]
        assert lock.status == "warn"
        assert lock.data["holder"] == pid
        assert f"pid {pid}" in lock.detail
        assert pid in _by_name(report)["open_by"].data["pids"]
        assert report.exit_code == 1
        with pytest.raises(StoreBusy) as exc:
            repair.repair(db)
        assert exc.value.holder_pid == pid and f"pid {pid}" in str(exc.value)
    assert _by_name(doctor.diagnose(db))["write_lock"].status == "ok"


def test_wal_on_simulated_network_mount(tmp_path: Path) -> None:
    db = tmp_path / "share" / "state.db"
    db.parent.mkdir(mode=0o700)
    _store(db, sessions=1, per=2)
    root = str(tmp_path.resolve() / "share")
    info = (
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"2 1 0:50 / {root} rw,relatime - nfs4 server:/export rw\n"
    )
    report = doctor.diagnose(db, mountinfo=info)
    jm = _by_name(report)["journal_mode"]
    assert jm.status == "fail"
    assert "nfs4" in jm.detail and "WAL" in jm.detail
    assert report.exit_code == 2
    result = repair.repair(db, mountinfo=info)
    assert any("WAL to delete" in a for a in result.actions)
    header = boot_check(db)
    assert header is not None and header.wal is False
    assert _by_name(doctor.diagnose(db, mountinfo=info))["journal_mode"].status == "ok"


def test_corrupt_pages_are_reported_and_repaired(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    _store(db, sessions=20, per=100, seed=3)
    original = _messages(db)
    clean = db.read_bytes()
    # Which message lives on which page, read from the clean file; cross-checked against SQL.
    pages = PageFile(clean)
    page_of = {
        r.rowid: r.page
        for r in pages.all_leaf_rows()
        if len(r.values) == 8 and r.values[0] is None and r.rowid in original
    }
    assert set(page_of) == set(original)

    rng = random.Random(20261122)
    # The middle of the message pages (not of the file: the index tables' share of the file
    # moves whenever the search index design changes).
    message_pages = sorted(set(page_of.values()))
    target = message_pages[len(message_pages) // 2]
    offset = (target - 1) * 4096 + 200 + rng.randrange(800)
    length = 3000
    damaged = bytearray(clean)
    damaged[offset : offset + length] = rng.randbytes(length)
    db.write_bytes(bytes(damaged))
    hit = {offset // 4096 + 1, (offset + length - 1) // 4096 + 1}

    report = doctor.diagnose(db)
    integrity = _by_name(report)["integrity"]
    assert integrity.status == "fail"
    assert "messages" in integrity.detail
    assert "--repair" in (integrity.hint or "")
    assert report.exit_code == 2

    result = repair.repair(db)
    assert result.backup is not None
    backup = Path(result.backup)
    assert backup.name.startswith("state.db.corrupt-")
    assert backup.read_bytes() == bytes(damaged)  # byte-identical copy of the damaged file
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600

    recovered = _messages(db)
    undamaged = {rowid for rowid, page in page_of.items() if page not in hit}
    assert undamaged <= set(recovered), f"lost {len(undamaged - set(recovered))} messages"
    assert all(recovered[k] == original[k] for k in recovered)  # nothing garbled got in
    assert result.messages == len(recovered)
    assert doctor.diagnose(db, full=True).status == "ok"
    with sessiondb.open(db) as store:  # the repaired store is usable and seqs keep going
        last = store.messages("s0")[-1].seq
        assert store.append("s0", "user", "after repair").seq == last + 1
    assert not list(tmp_path.glob(".state.db.repair-*"))  # scratch files cleaned up


def test_zero_length_file(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    report = doctor.diagnose(db)
    f = _by_name(report)["file"]
    assert f.status == "warn" and "empty" in f.detail
    assert report.exit_code == 1
    assert db.read_bytes() == b""


def test_text_file_named_db(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("my shopping list\neggs\n")
    report = doctor.diagnose(db)
    f = _by_name(report)["file"]
    assert f.status == "fail" and "text file" in f.detail
    assert "--repair" in (f.hint or "")
    assert report.exit_code == 2
    with pytest.raises(CorruptDatabase, match="nothing could be salvaged"):
        repair.repair(db)
    assert db.read_text() == "my shopping list\neggs\n"  # never replaced
    (backup,) = tmp_path.glob("notes.db.corrupt-*")
    assert backup.read_text() == db.read_text()


def test_newer_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    _store(db, sessions=1, per=1)
    conn = apsw.Connection(str(db))
    conn.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (99, 'x', 0)")
    conn.close()
    report = doctor.diagnose(db)
    sc = _by_name(report)["schema"]
    assert sc.status == "fail" and "99" in sc.detail and "newer" in sc.detail
    assert report.exit_code == 2


def test_foreign_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE invoices(x)")
    conn.close()
    sc = _by_name(doctor.diagnose(db))["schema"]
    assert sc.status == "fail" and "not a sessiondb database" in sc.detail


def test_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o700)
    db = folder / "state.db"
    _store(db, sessions=1, per=3)
    folder.chmod(0o500)
    try:
        if os.geteuid() == 0:  # root writes anywhere: make the folder read-only for the check
            real = os.access
            monkeypatch.setattr(
                doctor.os,
                "access",
                lambda p, m: False if Path(p) == folder and m & os.W_OK else real(p, m),
            )
        report = doctor.diagnose(db)
        perm = _by_name(report)["permissions"]
        assert perm.status == "fail" and "not writable" in perm.detail
        assert _by_name(report)["integrity"].status == "ok"  # still read
        assert report.exit_code == 2
    finally:
        folder.chmod(0o700)


def test_wide_permissions_warn(tmp_path: Path) -> None:
    db = tmp_path / "wide.db"
    _store(db, sessions=1, per=1)
    db.chmod(0o644)
    perm = _by_name(doctor.diagnose(db))["permissions"]
    assert perm.status == "warn" and "0644" in perm.detail


def test_a_users_own_0755_folder_is_not_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    db = folder / "state.db"
    _store(db, sessions=1, per=1)
    report = doctor.diagnose(db, lock_watch=0.0)
    perm = _by_name(report)["permissions"]
    assert perm.status == "ok" and "0755 (yours to set)" in perm.detail
    assert report.exit_code == 0


def test_the_default_data_folder_must_stay_private(tmp_path: Path) -> None:
    from sessiondb.host import paths

    db = paths.default_db_path()  # under the test's own XDG_DATA_HOME
    _store(db, sessions=1, per=1)
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700  # sessiondb made it private
    db.parent.chmod(0o755)
    perm = _by_name(doctor.diagnose(db, lock_watch=0.0))["permissions"]
    assert perm.status == "warn" and "folder" in perm.detail and "0755" in perm.detail


def test_repair_refuses_while_file_is_open_elsewhere(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    _store(db, sessions=1, per=1)
    with holding(workers.hold_open, str(db)) as pid, pytest.raises(StoreBusy) as exc:
        repair.repair(db)
    assert f"pid {pid}" in str(exc.value)


def test_repair_of_sound_file_is_maintenance(tmp_path: Path) -> None:
    db = tmp_path / "fine.db"
    _store(db, sessions=2, per=5)
    before = _messages(db)
    result = repair.repair(db)
    assert result.backup is None
    assert any("checkpointed" in a for a in result.actions)
    assert _messages(db) == before


def test_stale_lease_is_listed(private_runtime: Path) -> None:
    private_runtime.mkdir(mode=0o700)
    record = {
        "resource": "/work/x",
        "session_id": "S1",
        "pid": 2**22 + 12345,  # above pid_max defaults: no such process
        "start_time": 1,
        "host": os.uname().nodename,
        "acquired_at": 1.0,
        "refreshed_at": 1.0,
        "ttl": 10.0,
    }
    (private_runtime / "abc.lease").write_text(json.dumps(record))
    leases = check_leases(private_runtime)
    assert "S1" in leases.detail and "stale" in leases.detail


def test_cli_json_and_exit_codes(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    _store(db, sessions=1, per=2)
    runner = CliRunner()
    res = runner.invoke(cli, ["doctor", str(db), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["format"] == 1 and data["status"] == "ok" and data["exit_code"] == 0
    assert {c["name"] for c in data["checks"]} >= {"integrity", "write_lock", "journal_mode"}
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    res = runner.invoke(cli, ["doctor", str(bad)])
    assert res.exit_code == 2
    assert "not a SQLite database" in res.output


def test_cli_repair_asks_first(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    res = CliRunner().invoke(cli, ["doctor", str(bad), "--repair"], input="n\n")
    assert res.exit_code == 1
    assert not list(tmp_path.glob("bad.db.corrupt-*"))  # nothing done without a yes


def test_cli_help() -> None:
    res = CliRunner().invoke(cli, ["doctor", "--help"])
    assert res.exit_code == 0
    for opt in ("--full", "--json", "--repair", "--yes"):
        assert opt in res.output


def test_wal_reset_bug_versions() -> None:
    assert doctor.has_wal_reset_bug("3.40.1")
    assert doctor.has_wal_reset_bug("3.51.2")
    assert not doctor.has_wal_reset_bug("3.51.3")
    assert not doctor.has_wal_reset_bug("3.50.7")
    assert doctor.has_wal_reset_bug("3.50.6")
    assert not doctor.has_wal_reset_bug("3.44.6")
    assert doctor.has_wal_reset_bug("3.45.0")
    assert not doctor.has_wal_reset_bug("3.54.1")


def test_damaged_interior_page_rows_are_salvaged_from_leaves(tmp_path: Path) -> None:
    """SQL cannot walk below a damaged interior page; the page scan still reads its leaves."""
    db = tmp_path / "tree.db"
    _store(db, sessions=10, per=100, seed=5)
    original = _messages(db)
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    interior = [
        int(r[0])
        for r in conn.execute(
            "SELECT pageno FROM dbstat WHERE name='messages' AND pagetype='internal'"
        )
    ]
    conn.close()
    assert interior, "the fixture should have an interior page"
    page = interior[len(interior) // 2]
    data = bytearray(db.read_bytes())
    rng = random.Random(99)
    start = (page - 1) * 4096 + 1024
    data[start : start + 2048] = rng.randbytes(2048)
    db.write_bytes(bytes(data))

    assert doctor.diagnose(db).exit_code == 2
    result = repair.repair(db)
    recovered = _messages(db)
    assert set(recovered) == set(original)  # every leaf was intact: nothing may be lost
    assert all(recovered[k] == original[k] for k in recovered)
    assert result.messages == len(original)


# -- what --repair refuses ----------------------------------------------------------------------


def _channel(folder: Path) -> tuple[Path, Path]:
    from sessiondb.channel import AgentEnd, HostEnd

    host, agent = HostEnd(folder), AgentEnd(folder)
    seq = host.send("hello")
    agent.receive(limit=10)
    agent.reply("hi", in_reply_to=seq)
    agent.heartbeat()
    agent.close()
    host.close()
    return folder / "inbound.db", folder / "outbound.db"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_channel_files_are_recognised_and_never_repaired(tmp_path: Path) -> None:
    """Following a channel error's old hint, `doctor --repair outbound.db` replaced the file with
    an empty store and said "ok": the host then saw no replies. The doctor names a channel file
    as such, never sends it to the repair, and the repair refuses it with the file untouched."""
    folder = tmp_path / "chan"
    inbound, outbound = _channel(folder)
    report = doctor.diagnose(inbound, lock_watch=0.0)
    checks = _by_name(report)
    assert checks["file"].data["kind"] == "channel" and "channel file" in checks["file"].detail
    assert checks["schema"].status == "ok" and "not a store" in checks["schema"].detail
    assert report.exit_code == 0, [(c.name, c.detail) for c in report.checks]

    before = _files(folder)
    for path in (inbound, outbound):
        with pytest.raises(sessiondb.Error, match="not a store"):
            repair.repair(path)
    assert _files(folder) == before  # untouched, and no backup or scratch file made

    # A damaged channel file: the doctor says so, and its advice is the channel's.
    data = bytearray(outbound.read_bytes())
    data[4096 + 8 : 8192] = bytes(range(256)) * 15 + bytes(range(248))
    outbound.write_bytes(bytes(data))
    report = doctor.diagnose(outbound, lock_watch=0.0)
    assert report.exit_code == 2
    failing = [c for c in report.checks if c.status == "fail"]
    assert failing and all("channel folder aside" in (c.hint or "") for c in failing)
    before = _files(folder)
    res = CliRunner().invoke(cli, ["doctor", str(outbound), "--repair", "--yes", "--json"])
    assert res.exit_code == 2, res.output
    out = json.loads(res.stdout)
    assert out["repair"]["ok"] is False and "not a store" in out["repair"]["error"]
    assert _files(folder) == before

    # Its header destroyed: still a channel file by its name beside the heartbeat.
    outbound.write_bytes(b"\0" * 100 + bytes(data[100:]))
    before = _files(folder)
    with pytest.raises(sessiondb.Error, match="not a store"):
        repair.repair(outbound)
    assert _files(folder) == before


@pytest.mark.parametrize("kind", ["application_id", "tables", "damaged"])
def test_another_applications_database_is_refused(tmp_path: Path, kind: str) -> None:
    """Repair never turns a file into something else: another application's database is
    refused, the file unchanged — also when its header is damaged and only its pages say what
    it is (then a copy is kept beside it, as for any damaged file)."""
    db = tmp_path / "app.db"
    conn = apsw.Connection(str(db))
    if kind == "application_id":  # tables named like sessiondb's, in another app's file
        conn.execute("PRAGMA application_id = 1234").fetchall()
        conn.execute("CREATE TABLE sessions(x)")
        conn.execute("INSERT INTO sessions VALUES (1)")
    else:
        conn.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
        for i in range(500):
            conn.execute("INSERT INTO invoices(customer, total) VALUES (?, ?)", (f"c{i}", i))
    conn.close()
    if kind == "damaged":
        data = bytearray(db.read_bytes())
        data[16:18] = b"\x12\x34"  # page size: SQLite cannot read the file at all
        db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(sessiondb.Error, match="another application") as info:
        repair.repair(db)
    assert db.read_bytes() == before
    assert isinstance(info.value, sessiondb.InvalidInput)
    res = CliRunner().invoke(cli, ["doctor", str(db), "--repair", "--yes"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert db.read_bytes() == before
    names = {p.name for p in tmp_path.iterdir()} - {"app.db", "app.db.lock", "runtime"}
    assert all(n.startswith("app.db.corrupt-") for n in names), names
    assert (kind == "damaged") == bool(names)


# -- maintenance of a sound store ---------------------------------------------------------------


def test_repair_during_a_pending_backfill_indexes_each_row_once(tmp_path: Path) -> None:
    """The index rebuild indexed every row, and the pending backfill then indexed its range
    again. The repair finishes the backfill first, then rebuilds."""
    from sessiondb.sqlite import deferred, fts

    db = tmp_path / "pending.db"
    store_with_pending_backfill(db, "marker 東京都")
    repair.repair(db)
    with sessiondb.open(db) as store:  # opening runs whatever backfill is still pending
        assert len(store.search("marker", limit=1000)) == 250
        assert len(store.search("東京都", limit=1000)) == 250
        with engine_of(store).write() as conn:
            assert not fts.backfill_pending(conn)
            deferred.finish(conn)  # the deferred backlog (deferred.py), then the check
            for table in (fts.WORD_TABLE, fts.TRIGRAM_TABLE):
                # rank=1: each index compared with its content (a row indexed twice fails)
                conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")


def test_repair_of_a_healthy_store_rebuilds_only_sessiondbs_indexes(tmp_path: Path) -> None:
    """fts5vocab tables are not indexes: the repair of a healthy store reported "could not
    rebuild … messages_tri_vocab" every time."""
    db = tmp_path / "fine.db"
    _store(db, sessions=2, per=5)
    result = repair.repair(db)
    rebuilt = [a for a in result.actions if "index" in a]
    assert rebuilt == [
        # 10 messages: below the deferred index's bound, all in its backlog (deferred.py)
        "indexed the deferred index's backlog (10 message(s))",
        "rebuilt full-text index messages_fts",
        "rebuilt full-text index messages_tri",
    ]


def test_cli_refused_repair_footer_states_the_exit_code(tmp_path: Path) -> None:
    """A healthy store another process has open: the repair is refused (exit 2) while the
    report itself is ok — the footer said "status: ok (exit 0)"."""
    db = tmp_path / "busy.db"
    _store(db, sessions=1, per=1)
    with holding(workers.hold_open, str(db)):
        r = CliRunner().invoke(cli, ["doctor", str(db), "--repair", "--yes"])
    assert r.exit_code == 2, r.output
    assert "(exit 0)" not in r.output and "repair not done (exit 2)" in r.output
