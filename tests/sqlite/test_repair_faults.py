"""The repair under faults: newest commits still in the WAL, damage that ends a scan early
without an error, a kill -9 at every step, a full disk.

The promise checked everywhere (docs/doctor.md, "--repair"): a repair never stores fewer
messages of a session than a plain read returned before it, and at any moment the file is either
the untouched original (with its WAL) or the verified result."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest
from click.testing import CliRunner

import sessiondb
from sessiondb.cli.app import cli
from sessiondb.sqlite.doctor import checks as doctor
from sessiondb.sqlite.doctor import repair
from sessiondb.sqlite.doctor.pagescan import PageFile, _varint
from tests import _workers_repair as workers
from tests.helpers import engine_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

Floor = dict[str, list[tuple[int, str]]]


def plain_reads(db: Path, *, readonly: bool = True) -> Floor:
    """Per session, what ``store.messages`` returns; sessions whose read fails are left out."""
    out: Floor = {}
    with sessiondb.open(db, readonly=readonly) as store:
        for s in store.list_sessions(limit=1000):
            try:
                out[s.session_id] = [(m.seq, m.content) for m in store.messages(s.session_id)]
            except sessiondb.Error:
                continue
    return out


def assert_holds(db: Path, floor: Floor) -> None:
    after = plain_reads(db)
    for sid, msgs in floor.items():
        missing = set(msgs) - set(after.get(sid, []))
        assert not missing, f"session {sid} lost {len(missing)} message(s): {sorted(missing)[:3]}"


def wal_store(folder: Path) -> Path:
    """A WAL store whose 20 newest messages are only in its ``-wal`` (the writer was killed
    before a checkpoint), with one damaged page in the main file: a leaf of session s0 whose
    middle cell's rowid is garbled to a large value. A rowid scan ends there without an
    error; sessions s1 and s2 still read completely through their index."""
    folder.mkdir(exist_ok=True)
    src = folder / "writer.db"
    store = sessiondb.open(src)
    for s in range(3):
        store.append_many(
            f"s{s}",
            [
                {"role": "user", "content": f"m{s}-{i} " + "x" * (200 + i * 7 % 1800)}
                for i in range(300)
            ],
        )
    engine_of(store).checkpoint("TRUNCATE")
    for i in range(20):
        store.append(f"s{i % 3}", "user", f"late {i} " + "y" * 500)
    db = folder / "state.db"
    shutil.copyfile(src, db)  # what a kill -9 leaves: the main file and its WAL
    shutil.copyfile(f"{src}-wal", f"{db}-wal")
    store.close()
    for p in (db, Path(f"{db}-wal")):
        p.chmod(0o600)  # as sessiondb makes them (docs/design.md rule 11)
    for suffix in ("", "-wal", "-shm", ".lock"):
        with __import__("contextlib").suppress(FileNotFoundError):
            os.unlink(f"{src}{suffix}")

    main = bytearray(db.read_bytes())
    wal = Path(f"{db}-wal").read_bytes()
    in_wal = {  # the page number heading each frame (a fresh WAL: every frame is valid)
        int.from_bytes(wal[off : off + 4], "big") for off in range(32, len(wal), 24 + 4096)
    }
    pages = PageFile(bytes(main))
    s0_pages = sorted(
        {
            r.page
            for r in pages.all_leaf_rows()
            if len(r.values) == 8 and r.values[0] is None and r.values[1] == 1
        }
        - in_wal
    )
    target = s0_pages[len(s0_pages) // 2]
    page = pages.page(target)
    cells = int.from_bytes(page[3:5], "big")
    cell = int.from_bytes(page[8 + 2 * (cells // 2) : 10 + 2 * (cells // 2)], "big")
    _, at = _varint(page, cell)  # payload size, then the rowid
    _, end = _varint(page, at)
    assert end - at == 2
    main[(target - 1) * 4096 + at : (target - 1) * 4096 + end] = b"\xff\x7f"
    db.write_bytes(bytes(main))
    return db


def test_wal_only_messages_survive_a_damaged_main_file(tmp_path: Path) -> None:
    """Every message of s1 and s2 (their newest ones only in the WAL) reads before the repair;
    the repair lost those in the WAL (3 runs of 3) and still reported "counts match"."""
    db = wal_store(tmp_path)
    floor = plain_reads(db)
    assert {"s1", "s2"} <= set(floor)  # readable, WAL messages included
    assert any(c.startswith("late") for _, c in floor["s1"])
    assert doctor.diagnose(db, lock_watch=0.0).exit_code == 2

    result = repair.repair(db)

    assert_holds(db, floor)
    readable = sum(len(v) for v in floor.values())
    assert result.messages_readable_before is not None
    assert result.messages_readable_before >= readable
    assert doctor.diagnose(db, lock_watch=0.0, full=True).status == "ok"
    backup = Path(result.backup or "")
    assert Path(f"{backup}-wal").exists()  # the damaged file's WAL is kept with it


def test_a_repair_that_would_store_less_is_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The verification compares with what plain reads returned, not with the repair's own
    count: a salvage that somehow misses rows fails it, and the original stays."""
    from sessiondb.sqlite.doctor import salvage

    db = wal_store(tmp_path)
    original = (db.read_bytes(), Path(f"{db}-wal").read_bytes())
    real = salvage.Salvage._merge

    def lossy(self, raw, sessions, messages):  # type: ignore[no-untyped-def]
        real(self, raw, sessions, messages)
        sid = max(self.floor)
        _, rowid = self.floor[sid][max(self.floor[sid])]
        del self.messages[rowid]  # the newest message of a session, which a plain read returned

    monkeypatch.setattr(salvage.Salvage, "_merge", lossy)
    with pytest.raises(sessiondb.Error, match="plain reads returned"):
        repair.repair(db)
    assert (db.read_bytes(), Path(f"{db}-wal").read_bytes()) == original
    assert not list(tmp_path.glob(".state.db.repair-*"))


@pytest.mark.crash
@pytest.mark.parametrize("point", workers.POINTS)
def test_kill_9_at_every_step_leaves_a_readable_store(tmp_path: Path, point: str) -> None:
    """kill -9 at each step of a repair: the file reads as the untouched original (main file
    and WAL byte-identical) or as the verified result, never less than the floor; the next
    repair removes what the killed one left and ends with every message of the floor."""
    db = wal_store(tmp_path)
    floor = plain_reads(db)
    original = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}

    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=workers.repair_and_die, args=(str(db), point))
    child.start()
    child.join(120)
    assert child.exitcode == -9, f"the repair was not killed at {point} ({child.exitcode})"

    untouched = all(
        Path(f"{db}{s}").exists() and Path(f"{db}{s}").read_bytes() == data
        for s, data in original.items()
    )
    if point in ("backup", "salvage", "verify", "before-wal"):
        assert untouched, f"the original changed before the swap ({point})"
        assert plain_reads(db) == floor
    else:
        assert_holds(db, floor)  # the verified result, whichever main file is beside the WAL
    if point in ("backup", "salvage"):
        assert list(tmp_path.glob(".state.db.repair-*"))  # what the next repair must remove

    again = repair.repair(db)

    assert_holds(db, floor)
    assert not list(tmp_path.glob(".state.db.repair-*"))
    if point in ("backup", "salvage"):
        assert any("interrupted repair" in a for a in again.actions), again.actions
    for backup in tmp_path.glob("state.db.corrupt-*"):
        if backup.name.endswith(("-wal", "-journal")):
            assert Path(str(backup)[: -len("-wal")]).exists(), f"orphan {backup.name}"
        else:  # a backup named like a good one is complete
            assert backup.read_bytes() == original[""]
    report = doctor.diagnose(db, lock_watch=0.0, full=True)
    assert report.status == "ok", [(c.name, c.detail) for c in report.checks if c.status != "ok"]


# -- a full disk --------------------------------------------------------------------------------


def _full_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """os.write fails with ENOSPC once ``budget`` bytes have been written (the repair's copies
    and WAL image are written with os.write; SQLite's own writes are not Python's)."""
    real = os.write
    left = [budget]

    def write(fd: int, data: bytes | memoryview) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data)[: left[0]])
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize(
    "where", ["backup-wal", "backup-main", "scratch", "scratch-wal", "new-wal-image"]
)
def test_a_full_disk_ends_in_a_clear_error_and_no_half_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Out of space while copying the damaged file aside (its WAL first, then the main file),
    making the scratch copy, or writing the swap's WAL image: a sessiondb error naming the
    database and what to do, the original untouched, no backup named like a good one unless
    complete, no leftovers."""
    db = wal_store(tmp_path)
    original = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
    main, wal = len(original[""]), len(original["-wal"])
    budget = {  # bytes written before the disk is full: halfway through each file
        "backup-wal": wal // 2,
        "backup-main": wal + main // 2,
        "scratch": wal + main + main // 2,
        "scratch-wal": wal + 2 * main + wal // 2,
        "new-wal-image": 2 * (wal + main) + 4096 * 3,
    }[where]
    _full_after(monkeypatch, budget)
    with pytest.raises(sessiondb.Error, match="the disk is full") as info:
        repair.repair(db)
    monkeypatch.undo()
    message = str(info.value)
    assert str(db) in message and "free space" in message
    assert {s: Path(f"{db}{s}").read_bytes() for s in original} == original
    for backup in tmp_path.glob("state.db.corrupt-*"):
        suffix = "-wal" if backup.name.endswith("-wal") else ""
        assert backup.read_bytes() == original[suffix]
    assert not list(tmp_path.glob(".state.db.repair-*"))


def test_not_enough_space_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A sparse file of terabytes (it takes no space) would have the repair copy terabytes,
    filling the disk for every other process before failing. The repair measures
    first and refuses, writing nothing."""
    db = tmp_path / "sparse.db"
    with sessiondb.open(db, journal_mode="delete") as store:
        store.append("s", "user", "hello")
    claimed = 2**43  # 8 TiB, taking no space
    st = os.statvfs(tmp_path)
    if st.f_bavail * st.f_frsize >= 4 * claimed:
        pytest.skip("this disk could hold the copies")
    with open(db, "r+b") as f:
        f.seek(16)
        f.write(b"\x00\x00")  # a damaged header: the repair would rebuild it
        try:
            f.truncate(claimed)
        except OSError as e:
            pytest.skip(f"this filesystem has no sparse 8 TiB files ({e})")
    before = {p.name for p in tmp_path.iterdir()}
    with pytest.raises(sessiondb.Error, match="not enough free space") as info:
        repair.repair(db)
    assert str(tmp_path) in str(info.value) and "not changed" in str(info.value)
    assert {p.name for p in tmp_path.iterdir()} == before | {"sparse.db.lock"}
    assert os.path.getsize(db) == claimed


def test_cli_full_disk_prints_one_line_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = wal_store(tmp_path)
    _full_after(monkeypatch, 100_000)
    res = CliRunner().invoke(cli, ["doctor", str(db), "--repair", "--yes"])
    monkeypatch.undo()
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "the disk is full" in " ".join(res.output.split())


def test_a_folder_it_cannot_write_ends_in_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repair writes next to the database; a folder where it may not create files (EACCES,
    as for a user without write permission) says so, and nothing is changed."""
    db = wal_store(tmp_path)
    original = {s: Path(f"{db}{s}").read_bytes() for s in ("", "-wal")}
    real = os.open

    def no_create(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & os.O_CREAT and Path(os.fspath(path)).parent == tmp_path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", no_create)
    with pytest.raises(sessiondb.Error, match="writable") as info:
        repair.repair(db)
    monkeypatch.undo()
    assert str(db.parent) in str(info.value)
    assert {s: Path(f"{db}{s}").read_bytes() for s in original} == original
    assert not list(tmp_path.glob("state.db.corrupt-*"))


def test_apsw_reads_the_swapped_wal_as_the_new_file(tmp_path: Path) -> None:
    """The swap's premise, checked against SQLite itself: a main file of any content (here: an
    older, different database with another page size) beside the WAL image of a new file reads
    as the new file."""
    from sessiondb.sqlite.doctor.pagescan import write_wal_image

    new = tmp_path / "new.db"
    conn = apsw.Connection(str(new))
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t SELECT value FROM json_each(?)", (str(list(range(500))),))
    conn.close()
    old = tmp_path / "old.db"
    conn = apsw.Connection(str(old))
    conn.execute("PRAGMA page_size = 8192").fetchall()
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES ('old')")
    conn.close()
    fd = os.open(f"{old}-wal", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_wal_image(new, fd)
    finally:
        os.close(fd)
    conn = apsw.Connection(str(old), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("SELECT count(*), sum(x) FROM t").fetchall() == [(500, sum(range(500)))]
        assert conn.execute("PRAGMA integrity_check").get == "ok"
    finally:
        conn.close()


def _garble_a_rowid(db: Path, sid: int, avoid: set[int]) -> None:
    """Garble a two-byte rowid in a leaf page holding session ``sid``'s messages (not one of
    the pages in ``avoid``) into a large one: a rowid scan ends there without an error."""
    main = bytearray(db.read_bytes())
    pages = PageFile(bytes(main))
    candidates = sorted(
        {
            r.page
            for r in pages.all_leaf_rows()
            if len(r.values) == 8 and r.values[0] is None and r.values[1] == sid and r.rowid > 127
        }
        - avoid
    )
    target = candidates[len(candidates) // 2]
    page = pages.page(target)
    cells = int.from_bytes(page[3:5], "big")
    for i in (cells // 2, *range(cells)):
        cell = int.from_bytes(page[8 + 2 * i : 10 + 2 * i], "big")
        _, at = _varint(page, cell)
        _, end = _varint(page, at)
        if end - at == 2:
            break
    assert end - at == 2
    main[(target - 1) * 4096 + at : (target - 1) * 4096 + end] = b"\xff\x7f"
    db.write_bytes(bytes(main))


def test_a_hot_journal_is_rolled_back_not_kept_or_lost(tmp_path: Path) -> None:
    """A rollback-journal store killed in the middle of a transaction that had already written
    pages: the committed state is the file with the journal rolled back. The repair salvages
    that state (not the half-written pages), and the swap never lets the old journal roll back
    onto the new file."""
    db = tmp_path / "rb.db"
    with sessiondb.open(db, journal_mode="delete") as store:
        for s in range(3):
            store.append_many(
                f"s{s}", [{"role": "user", "content": f"m{s}-{i} " + "x" * 900} for i in range(200)]
            )
    writer = apsw.Connection(str(db))
    writer.execute("PRAGMA cache_size = 5").fetchall()  # spill into the file mid-transaction
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE messages SET content = 'half-written ' || content WHERE sid = 2")
    killed = tmp_path / "state.db"
    shutil.copyfile(db, killed)  # the files as a kill -9 leaves them
    shutil.copyfile(f"{db}-journal", f"{killed}-journal")
    writer.execute("ROLLBACK")
    writer.close()
    assert os.path.getsize(f"{killed}-journal") > 0
    half, whole = killed.read_bytes(), db.read_bytes()
    written = {  # pages the transaction had already written into the file
        n + 1
        for n in range(len(half) // 4096)
        if half[n * 4096 : (n + 1) * 4096] != whole[n * 4096 : (n + 1) * 4096]
    }
    assert written
    _garble_a_rowid(killed, 1, written)
    for p in (killed, Path(f"{killed}-journal")):
        p.chmod(0o600)
    # The floor, as a store that opens the file would read it: a writable store rolls the
    # journal back (a read-only one cannot, and fails).
    probe = tmp_path / "probe" / "state.db"
    probe.parent.mkdir()
    shutil.copyfile(killed, probe)
    shutil.copyfile(f"{killed}-journal", f"{probe}-journal")
    floor = plain_reads(probe, readonly=False)
    assert {"s1", "s2"} <= set(floor)
    assert not any(c.startswith("half-written") for _, c in floor["s1"])

    result = repair.repair(killed)

    assert_holds(killed, floor)
    assert not any(c.startswith("half-written") for _, c in plain_reads(killed)["s1"])
    assert not Path(f"{killed}-journal").exists()
    assert Path(f"{result.backup}-journal").exists()
