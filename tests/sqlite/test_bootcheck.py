"""Boot check: not-SQLite, truncated and corrupt-header files are refused before SQLite opens
them, reading only the header."""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import apsw
import pytest

from sessiondb.errors import CorruptDatabase, InvalidInput
from sessiondb.sqlite import locks
from sessiondb.sqlite.bootcheck import boot_check


def _make_db(path: Path, rows: int = 50, journal_mode: str = "delete") -> None:
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE t(x TEXT)")
    with conn:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 300,) for _ in range(rows)])
    conn.close()


def test_missing_and_empty_files_are_new_databases(tmp_path: Path) -> None:
    assert boot_check(tmp_path / "missing.db") is None
    (tmp_path / "empty.db").write_bytes(b"")
    assert boot_check(tmp_path / "empty.db") is None


def test_healthy_database_header_is_parsed(tmp_path: Path) -> None:
    db = tmp_path / "ok.db"
    _make_db(db)
    header = boot_check(db)
    assert header is not None
    assert header.page_size == 4096
    assert header.page_count == db.stat().st_size // 4096
    assert header.wal is False


def test_wal_database_is_reported_as_wal(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    _make_db(db, journal_mode="wal")
    header = boot_check(db)
    assert header is not None and header.wal is True


def test_text_file_named_db(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_text("hello, these are my notes\n" * 10)
    with pytest.raises(CorruptDatabase) as exc:
        boot_check(db)
    msg = str(exc.value)
    assert "not a SQLite database" in msg and "text file" in msg
    assert str(db) in msg and "sessiondb doctor --repair" in msg
    assert db.read_text().startswith("hello")  # untouched


def test_random_binary_file(tmp_path: Path) -> None:
    db = tmp_path / "bin.db"
    db.write_bytes(random.Random(1).randbytes(8192))
    with pytest.raises(CorruptDatabase, match="not a SQLite database: it starts with bytes"):
        boot_check(db)


def test_truncated_inside_header(tmp_path: Path) -> None:
    db = tmp_path / "short.db"
    _make_db(db)
    data = db.read_bytes()
    db.write_bytes(data[:57])
    with pytest.raises(CorruptDatabase, match="truncated: 57 bytes"):
        boot_check(db)


def test_truncated_at_a_page_boundary(tmp_path: Path) -> None:
    db = tmp_path / "cut.db"
    _make_db(db, rows=200)
    data = db.read_bytes()
    db.write_bytes(data[: 4096 * 3])
    with pytest.raises(CorruptDatabase, match=r"truncated: the header says \d+ pages"):
        boot_check(db)


def test_truncated_mid_page(tmp_path: Path) -> None:
    db = tmp_path / "mid.db"
    _make_db(db, rows=200)
    data = db.read_bytes()
    db.write_bytes(data[: 4096 * 2 + 1000])
    with pytest.raises(CorruptDatabase, match="not a whole number"):
        boot_check(db)


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (16, b"\x0b\xb8", "page size 3000"),
        (18, b"\x07\x07", "file format versions 7/7"),
        (21, b"\x00\x00\x00", "payload fractions"),
        (44, b"\x00\x00\x00\x09", "schema format 9"),
        (56, b"\x00\x00\x00\x07", "text encoding 7"),
        (100, b"\x02", "b-tree page type 0x02"),
    ],
)
def test_corrupt_header_fields(tmp_path: Path, offset: int, value: bytes, reason: str) -> None:
    db = tmp_path / "hdr.db"
    _make_db(db)
    data = bytearray(db.read_bytes())
    data[offset : offset + len(value)] = value
    db.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabase, match=reason):
        boot_check(db)


def test_folder_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a regular file"):
        boot_check(tmp_path)


def test_reads_only_the_header_whatever_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check costs the same whatever the file's size: it reads the first page's prefix and
    stats the file, never more (a 64 MiB file, sound or not, is read 101 bytes deep)."""
    from sessiondb.sqlite import bootcheck

    asked: list[int] = []
    real = bootcheck._read_prefix

    def counting(path: str, amount: int) -> bytes:
        asked.append(amount)
        return real(path, amount)

    monkeypatch.setattr(bootcheck, "_read_prefix", counting)
    db = tmp_path / "big.db"
    _make_db(db)
    with open(db, "r+b") as f:
        f.truncate(64 * 1024 * 1024)  # header page count no longer matches
    bad = tmp_path / "bigtext.db"
    with open(bad, "wb") as f:
        f.write(b"plain text " * 100)
        f.truncate(64 * 1024 * 1024)
    for path in (db, bad):
        with contextlib.suppress(CorruptDatabase):
            boot_check(path)
    assert asked and max(asked) <= bootcheck.HEADER_SIZE + 1


def test_does_not_drop_this_process_locks(tmp_path: Path) -> None:
    """Closing a plain descriptor would release the RESERVED lock SQLite holds for us."""
    db = tmp_path / "locked.db"
    _make_db(db)
    conn = apsw.Connection(str(db))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t VALUES ('y')")
    try:
        assert locks.sqlite_write_lock_holder(db) == os.getpid()
        assert boot_check(db) is not None
        assert locks.sqlite_write_lock_holder(db) == os.getpid()
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_a_file_growing_under_a_checkpoint_is_not_truncated(tmp_path: Path) -> None:
    """A checkpoint writes page 1 (the new page count) before the pages that extend the file:
    a thread opening a connection meanwhile saw "truncated" on a healthy store in use
    (tests/sqlite/test_concurrency.py::test_threads_share_one_store, under load)."""
    import threading

    db = tmp_path / "growing.db"
    _make_db(db, rows=200)
    whole = db.read_bytes()
    db.write_bytes(whole[: 4096 * 3])  # the header says more pages than the file has, for now
    threading.Timer(0.05, db.write_bytes, args=(whole,)).start()
    header = boot_check(db)
    assert header is not None and header.page_count == len(whole) // 4096
