"""Read table rows straight from a database file's pages, without SQLite's b-tree navigation.

Repair uses this to salvage rows that SQL cannot reach: when an interior page of a table's
b-tree is damaged, every query through it fails, yet the leaf pages below it are intact. Each
page is parsed on its own (https://www.sqlite.org/fileformat2.html sections 1.6 and 2.1), so a
damaged page costs only its own rows. Pages on the freelist hold deleted data and are skipped.
Anything that does not parse exactly (cell outside the page, record header longer than its
payload, broken overflow chain) is dropped rather than guessed at.

Only used on a private copy of the damaged file, never on a live database.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LEAF_TABLE = 0x0D


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


class PageFile:
    """A database image in memory, addressed by 1-based page number."""

    def __init__(self, data: bytes, page_size: int | None = None) -> None:
        self.data = data
        if page_size is None:
            raw = int.from_bytes(data[16:18], "big") if len(data) >= 18 else 0
            page_size = 65536 if raw == 1 else raw
            if page_size < 512 or page_size & (page_size - 1):
                page_size = 4096  # header destroyed: the default is by far the most likely
        self.page_size = page_size
        reserved = data[20] if len(data) > 20 and data[:16] == b"SQLite format 3\x00" else 0
        self.usable = page_size - reserved
        self.page_count = len(data) // page_size

    def page(self, n: int) -> bytes:
        return self.data[(n - 1) * self.page_size : n * self.page_size]

    def freelist_pages(self) -> set[int]:
        """Pages on the freelist (trunks and leaves); a damaged chain just ends early."""
        free: set[int] = set()
        if len(self.data) < 40:
            return free
        trunk = int.from_bytes(self.data[32:36], "big")
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


__all__ = ["PageFile", "RawRow", "decode_record"]
