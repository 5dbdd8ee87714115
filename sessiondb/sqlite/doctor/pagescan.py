"""Read table rows straight from a database file's pages, without SQLite's b-tree navigation.

Repair uses this to salvage rows that SQL cannot reach: when an interior page of a table's
b-tree is damaged, every query through it fails, yet the leaf pages below it are intact. Each
page is parsed on its own (https://www.sqlite.org/fileformat2.html sections 1.6 and 2.1), so a
damaged page costs only its own rows. Pages on the freelist hold deleted data and are skipped.
Anything that does not parse exactly (cell outside the page, record header longer than its
payload, broken overflow chain) is dropped rather than guessed at.

A WAL beside the file is applied the way SQLite applies it (https://www.sqlite.org/fileformat2.html
section 4: frames whose salts and running checksum match, up to the last commit frame), so the
pages read are the database's current ones: a store whose newest commits were still in its WAL
lost them to a scan of the main file alone
(tests/sqlite/test_repair_faults.py::test_wal_only_messages_survive_a_damaged_main_file).
Nothing the file claims is believed beyond the bytes that exist: the page count is bounded by
the main file and the WAL's frames (tests/sqlite/test_doctor_hostile.py::
test_huge_page_count_is_not_believed).

:func:`write_wal_image` writes the other direction: a WAL holding every page of a database,
which the repair uses to swap a rebuilt file in with one rename (repair.py, "The swap").

Only used on private copies (the damaged file's scratch copy, the repair's own new file), never
on a live database.
"""

from __future__ import annotations

import mmap
import os
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEAF_TABLE = 0x0D
WAL_MAGIC_LE = 0x377F0682  # checksums over little-endian words
WAL_MAGIC_BE = 0x377F0683  # checksums over big-endian words
WAL_VERSION = 3007000
WAL_HEADER = 32
FRAME_HEADER = 24


@dataclass(frozen=True)
class RawRow:
    page: int
    rowid: int
    values: tuple[Any, ...]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """SQLite varint at ``pos``: (value, next position). Raises IndexError past the end."""
    value = 0
    for i in range(8):
        b = buf[pos + i]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos + i + 1
    value = (value << 8) | buf[pos + 8]
    return value, pos + 9


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def decode_record(payload: bytes) -> tuple[Any, ...] | None:
    """Decode a record; None when its header does not fit its payload exactly."""
    try:
        header_size, pos = _varint(payload, 0)
        if header_size > len(payload) or header_size < 1:
            return None
        types = []
        while pos < header_size:
            t, pos = _varint(payload, pos)
            types.append(t)
        if pos != header_size:
            return None
        values: list[Any] = []
        body = header_size
        for t in types:
            if t == 0:
                values.append(None)
            elif t in _INT_SIZES:
                n = _INT_SIZES[t]
                values.append(int.from_bytes(payload[body : body + n], "big", signed=True))
                body += n
            elif t == 7:
                (f,) = struct.unpack(">d", payload[body : body + 8])
                values.append(f)
                body += 8
            elif t in (8, 9):
                values.append(t - 8)
            elif t >= 12:
                n = (t - 12) // 2
                raw = payload[body : body + n]
                if len(raw) != n:
                    return None
                values.append(raw.decode("utf-8") if t % 2 else bytes(raw))
                body += n
            else:
                return None
        if body != len(payload):
            return None
        return tuple(values)
    except (IndexError, struct.error, UnicodeDecodeError):
        return None


def wal_checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = iter(struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data))
    for a, b in zip(words, words, strict=True):  # pairs of words
        s0 = (s0 + a + s1) & 0xFFFFFFFF
        s1 = (s1 + b + s0) & 0xFFFFFFFF
    return s0, s1


@dataclass(frozen=True)
class WalFrames:
    """The committed content of a WAL: page size, where each page's newest committed image
    starts in the WAL, and the database size in pages after the last commit."""

    page_size: int
    pages: dict[int, int]
    db_pages: int


def read_wal(wal: bytes | mmap.mmap) -> WalFrames | None:
    """The committed frames of a WAL image; None when it holds no valid committed frame."""
    if len(wal) < WAL_HEADER:
        return None
    magic, version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:32])
    if magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE) or version != WAL_VERSION:
        return None
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        return None
    big = magic == WAL_MAGIC_BE
    sums = wal_checksum(bytes(wal[:24]), big)
    if sums != (c1, c2):
        return None
    committed: dict[int, int] = {}
    pending: dict[int, int] = {}
    db_pages = 0
    off = WAL_HEADER
    while off + FRAME_HEADER + page_size <= len(wal):
        pgno, commit, fs1, fs2, fc1, fc2 = struct.unpack(">6I", wal[off : off + 24])
        if pgno == 0 or (fs1, fs2) != (salt1, salt2):
            break
        sums = wal_checksum(bytes(wal[off : off + 8]), big, *sums)
        data = off + FRAME_HEADER
        sums = wal_checksum(bytes(wal[data : data + page_size]), big, *sums)
        if sums != (fc1, fc2):
            break
        pending[pgno] = data
        if commit:
            committed.update(pending)
            pending.clear()
            db_pages = commit
        off = data + page_size
    if not committed:
        return None
    return WalFrames(page_size, committed, db_pages)


class PageFile:
    """A database image, addressed by 1-based page number: the main file's bytes, with the
    committed frames of its WAL (when given) over them."""

    def __init__(
        self,
        data: bytes | mmap.mmap,
        page_size: int | None = None,
        *,
        wal: bytes | mmap.mmap | None = None,
    ) -> None:
        self.data = data
        self.wal = wal
        frames = read_wal(wal) if wal is not None else None
        self.overlay: dict[int, int] = frames.pages if frames else {}
        if page_size is None:
            page_size = frames.page_size if frames else _header_page_size(data)
        self.page_size = page_size
        first = self.page(1) if self.overlay.get(1) is not None else bytes(data[:100])
        reserved = first[20] if len(first) > 20 and first[:16] == b"SQLite format 3\x00" else 0
        self.usable = page_size - reserved
        main_pages = len(data) // page_size
        if frames:
            # The last commit says how many pages the database has; believe it only as far as
            # pages exist (in the main file or the WAL): a crafted commit record may claim 2**32.
            self.page_count = min(frames.db_pages, max(main_pages, max(self.overlay)))
        else:
            self.page_count = main_pages

    def page(self, n: int) -> bytes:
        off = self.overlay.get(n)
        if off is not None and self.wal is not None:
            return bytes(self.wal[off : off + self.page_size])
        return bytes(self.data[(n - 1) * self.page_size : n * self.page_size])

    def freelist_pages(self) -> set[int]:
        """Pages on the freelist (trunks and leaves); a damaged chain just ends early."""
        free: set[int] = set()
        first = self.page(1) if self.page_count else b""
        if len(first) < 40:
            return free
        trunk = int.from_bytes(first[32:36], "big")
        while 1 < trunk <= self.page_count and trunk not in free:
            free.add(trunk)
            page = self.page(trunk)
            count = int.from_bytes(page[4:8], "big")
            if count > (self.usable - 8) // 4:
                break
            for i in range(count):
                leaf = int.from_bytes(page[8 + 4 * i : 12 + 4 * i], "big")
                if 1 < leaf <= self.page_count:
                    free.add(leaf)
            trunk = int.from_bytes(page[0:4], "big")
        return free

    def _payload(self, page: bytes, pos: int, size: int) -> bytes | None:
        """The full payload of a cell whose payload starts at ``pos`` (following overflow)."""
        u = self.usable
        max_local = u - 35
        if size <= max_local:
            out = page[pos : pos + size]
            return out if len(out) == size else None
        min_local = ((u - 12) * 32 // 255) - 23
        k = min_local + (size - min_local) % (u - 4)
        local = k if k <= max_local else min_local
        if pos + local + 4 > u:
            return None
        parts = [page[pos : pos + local]]
        remaining = size - local
        nxt = int.from_bytes(page[pos + local : pos + local + 4], "big")
        seen: set[int] = set()
        while remaining > 0:
            if not 1 < nxt <= self.page_count or nxt in seen:
                return None
            seen.add(nxt)
            ov = self.page(nxt)
            chunk = ov[4 : 4 + min(remaining, u - 4)]
            parts.append(chunk)
            remaining -= len(chunk)
            nxt = int.from_bytes(ov[0:4], "big")
        return b"".join(parts)

    def leaf_rows(self, n: int) -> Iterator[RawRow]:
        """The rows of table-leaf page ``n``; nothing if the page does not parse."""
        page = self.page(n)
        base = 100 if n == 1 else 0
        if len(page) < base + 8 or page[base] != LEAF_TABLE:
            return
        cells = int.from_bytes(page[base + 3 : base + 5], "big")
        ptrs = base + 8
        if ptrs + 2 * cells > self.usable:
            return
        for i in range(cells):
            off = int.from_bytes(page[ptrs + 2 * i : ptrs + 2 * i + 2], "big")
            if not ptrs + 2 * cells <= off < self.usable:
                continue
            try:
                size, pos = _varint(page, off)
                rowid, pos = _varint(page, pos)
            except IndexError:
                continue
            payload = self._payload(page, pos, size)
            if payload is None:
                continue
            values = decode_record(payload)
            if values is not None:
                yield RawRow(n, _signed(rowid), values)

    def all_leaf_rows(self) -> Iterator[RawRow]:
        free = self.freelist_pages()
        for n in range(1, self.page_count + 1):
            if n not in free:
                yield from self.leaf_rows(n)


def _header_page_size(data: bytes | mmap.mmap) -> int:
    raw = int.from_bytes(data[16:18], "big") if len(data) >= 18 else 0
    page_size = 65536 if raw == 1 else raw
    if page_size < 512 or page_size & (page_size - 1):
        page_size = 4096  # header destroyed: the default is by far the most likely
    return page_size


@contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap | bytes]:
    """``path``'s bytes without reading them into memory (b"" for a missing or empty file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield b""
        return
    try:
        if os.fstat(fd).st_size == 0:
            yield b""
            return
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as m:
            yield m
    finally:
        os.close(fd)


@contextmanager
def open_pages(path: Path) -> Iterator[PageFile]:
    """The pages of the database at ``path`` with its ``-wal`` applied."""
    with mapped(path) as data, mapped(Path(f"{path}-wal")) as wal:
        yield PageFile(data, wal=wal or None)


def write_wal_image(db: Path, dest_fd: int) -> int:
    """Write to ``dest_fd`` a WAL holding every page of the database file ``db`` in one
    transaction (its last frame is the commit, with the database's size), fsync it, and return
    the number of pages. Applied to any main file, such a WAL makes it read as ``db``."""
    with mapped(db) as data:
        page_size = _header_page_size(data)
        pages = len(data) // page_size
        if pages == 0 or len(data) % page_size:
            raise ValueError(f"{db}: not a whole number of {page_size}-byte pages")
        salt1, salt2 = secrets.randbits(32), secrets.randbits(32)
        head = struct.pack(">6I", WAL_MAGIC_BE, WAL_VERSION, page_size, 0, salt1, salt2)
        sums = wal_checksum(head, True)
        _write_all(dest_fd, head + struct.pack(">2I", *sums))
        for n in range(1, pages + 1):
            page = bytes(data[(n - 1) * page_size : n * page_size])
            frame = struct.pack(">2I", n, pages if n == pages else 0)
            sums = wal_checksum(frame, True, *sums)
            sums = wal_checksum(page, True, *sums)
            _write_all(dest_fd, frame + struct.pack(">4I", salt1, salt2, *sums) + page)
    os.fsync(dest_fd)
    return pages


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


__all__ = [
    "PageFile",
    "RawRow",
    "WalFrames",
    "decode_record",
    "mapped",
    "open_pages",
    "read_wal",
    "wal_checksum",
    "write_wal_image",
]
