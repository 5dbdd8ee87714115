"""Boot check: refuse a file that is not a SQLite database before SQLite touches it.

``open()`` calls :func:`boot_check` first. It reads the 100-byte header (and the first page's
b-tree type byte) and compares it with the file's size, so it takes the same few microseconds
whatever the file's size, and raises :class:`~sessiondb.errors.CorruptDatabase` naming the file
and the repair command. It never deletes, renames, truncates or recreates anything.

The header is read through SQLite's own unix VFS (``apsw.VFSFile``), not with ``open()``: closing
any descriptor on a file drops every POSIX lock the process holds on it, so a plain ``open()`` +
``close()`` in a process that already has a connection to the database would silently release
that connection's locks (docs/design.md rule 2; https://www.sqlite.org/howtocorrupt.html
section 2.2). SQLite's
VFS keeps such a descriptor open until the process's last lock on the file is gone.

Header layout: https://www.sqlite.org/fileformat2.html section 1.3.
"""

from __future__ import annotations

import os
import stat
import struct
import time
from dataclasses import dataclass

import apsw

from ..errors import CorruptDatabase, InvalidInput

MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100
_TABLE_BTREE_PAGE_TYPES = (0x05, 0x0D)  # interior / leaf table b-tree: page 1 is sqlite_schema
# Seconds a file may look truncated before it is called so (boot_check).
TRUNCATION_PATIENCE = 1.0


@dataclass(frozen=True)
class SQLiteHeader:
    """The facts of a database header that the doctor reports."""

    file_size: int
    page_size: int
    page_count: int | None  # None when the in-header size is not valid (pre-3.7.0 writer)
    wal: bool  # read/write versions 2: the file is in WAL mode
    text_encoding: int
    schema_format: int
    user_version: int


def _read_prefix(path: str, amount: int) -> bytes:
    """Read up to ``amount`` bytes from the start of ``path`` through SQLite's VFS."""
    flags = apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_MAIN_DB
    f = apsw.VFSFile("", path, [flags, 0])
    try:
        size = f.xFileSize()
        n = min(amount, size)
        return f.xRead(n, 0) if n > 0 else b""
    finally:
        f.xClose()


def _describe(prefix: bytes) -> str:
    sample = prefix[:24]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    if sample and printable == len(sample):
        text = sample.decode("ascii", "replace").replace("\n", "\\n")
        return f"it starts with {text!r} (a text file?)"
    return f"it starts with bytes {sample[:8].hex(' ')}"


def _has_recovery_file(path: str) -> bool:
    """A non-empty -wal or hot -journal means SQLite will rebuild pages on open: the main file
    alone may legitimately look short until then."""
    for suffix in ("-wal", "-journal"):
        try:
            if os.stat(path + suffix).st_size > 0:
                return True
        except OSError:
            continue
    return False


def parse_header(data: bytes, file_size: int, path: str) -> SQLiteHeader:
    """Validate the header bytes ``data`` (at least the first 100 bytes of a file of
    ``file_size`` bytes); raise CorruptDatabase with the precise reason."""
    if data[:16] != MAGIC:
        raise CorruptDatabase(path, f"not a SQLite database: {_describe(data)}")
    if len(data) < HEADER_SIZE:
        raise CorruptDatabase(
            path, f"truncated: {file_size} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    (raw_page_size,) = struct.unpack(">H", data[16:18])
    page_size = 65536 if raw_page_size == 1 else raw_page_size
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise CorruptDatabase(
            path, f"corrupt header: page size {raw_page_size} is not a power of two in 512..65536"
        )
    write_version, read_version = data[18], data[19]
    if read_version not in (1, 2) or write_version not in (1, 2):
        raise CorruptDatabase(
            path,
            f"corrupt header: file format versions {write_version}/{read_version} "
            "(expected 1 or 2)",
        )
    if data[21:24] != b"\x40\x20\x20":
        raise CorruptDatabase(path, "corrupt header: payload fractions are not 64/32/32")
    change_counter, page_count_raw = struct.unpack(">II", data[24:32])
    (schema_format,) = struct.unpack(">I", data[44:48])
    (text_encoding,) = struct.unpack(">I", data[56:60])
    (user_version,) = struct.unpack(">i", data[60:64])
    (valid_for,) = struct.unpack(">I", data[92:96])
    if schema_format > 4:
        raise CorruptDatabase(path, f"corrupt header: schema format {schema_format} (1..4)")
    if text_encoding not in (0, 1, 2, 3):
        raise CorruptDatabase(path, f"corrupt header: text encoding {text_encoding} (1..3)")
    # The in-header page count is trusted only when written by the same change (3.7.0+).
    page_count = page_count_raw if page_count_raw and change_counter == valid_for else None
    if not _has_recovery_file(path):
        if file_size % page_size:
            raise CorruptDatabase(
                path,
                f"truncated: {file_size} bytes is not a whole number of {page_size}-byte pages",
            )
        if page_count is not None and file_size < page_count * page_size:
            raise CorruptDatabase(
                path,
                f"truncated: the header says {page_count} pages of {page_size} bytes "
                f"({page_count * page_size} bytes) but the file has {file_size}",
            )
    if len(data) > HEADER_SIZE and data[HEADER_SIZE] not in _TABLE_BTREE_PAGE_TYPES:
        raise CorruptDatabase(
            path, f"corrupt first page: b-tree page type {data[HEADER_SIZE]:#04x} is not a table"
        )
    return SQLiteHeader(
        file_size=file_size,
        page_size=page_size,
        page_count=page_count,
        wal=read_version == 2,
        text_encoding=text_encoding,
        schema_format=schema_format,
        user_version=user_version,
    )


def boot_check(path: str | os.PathLike[str]) -> SQLiteHeader | None:
    """Check that ``path`` is a usable SQLite file before opening it.

    Returns None for a file that does not exist or is empty (SQLite treats an empty file as a new
    database), the parsed header otherwise. Raises CorruptDatabase for a file that is not
    SQLite, is truncated or has a corrupt header, InvalidInput for a path that is not a regular
    file. A file that cannot be read (permissions) is left to the engine to report.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{p} is not a regular file (a folder or a device?): give a file path")
    if st.st_size == 0:
        return None
    try:
        data = _read_prefix(p, HEADER_SIZE + 1)
    except apsw.Error:
        return None
    try:
        return parse_header(data, st.st_size, p)
    except CorruptDatabase as e:
        if len(data) < HEADER_SIZE or not e.reason.startswith("truncated"):
            raise
        # A file in use looks truncated for a moment: a checkpoint (or a commit) writes page 1,
        # whose header holds the new page count, before the pages that extend the file. Only a
        # shortfall that lasts is damage (tests/sqlite/test_bootcheck.py::
        # test_a_file_growing_under_a_checkpoint_is_not_truncated).
        return _recheck_size(p, e)


def _recheck_size(path: str, first: CorruptDatabase) -> SQLiteHeader:
    delay, waited = 0.01, 0.0
    while waited < TRUNCATION_PATIENCE:
        time.sleep(delay)
        waited += delay
        delay = min(delay * 2, TRUNCATION_PATIENCE - waited + 0.001)
        try:
            size = os.stat(path).st_size
            return parse_header(_read_prefix(path, HEADER_SIZE + 1), size, path)
        except CorruptDatabase as e:
            first = e
        except (OSError, apsw.Error):
            break
    raise first


__all__ = ["MAGIC", "SQLiteHeader", "boot_check", "parse_header"]
