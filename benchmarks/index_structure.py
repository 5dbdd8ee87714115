"""The search index's shape and what it costs, measured in ways the machine's load moves least
(docs/benchmarks.md, "Search index written set-based").

    python -m benchmarks.index_structure struct STORE...    FTS5 segments per level of each index
    python -m benchmarks.index_structure search STORE...    300 queries, interleaved over the
                                                            stores in one process: CPU per query
                                                            and pages touched (cache hit + miss)
    python -m benchmarks.index_structure after N            single appends after an import of N
                                                            lines vs on a fresh store: pages
                                                            written and CPU (median) per append

``search`` opens copies of the stores (an older schema is migrated on the copy). Prints JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw

_V2 = b"\xff\x00\x00\x01"  # FTS5_STRUCTURE_V2 marker, after the 4-byte cookie


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """SQLite's big-endian varint (FTS5 uses the same encoding)."""
    v = 0
    for _ in range(8):
        c = b[i]
        i += 1
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            return v, i
    return (v << 8) | b[i], i + 1


def structure(conn: apsw.Connection, table: str) -> dict[str, Any]:
    """Segments per level of one FTS5 table, decoded from its structure record (id 10)."""
    blob = conn.execute(f"SELECT block FROM {table}_data WHERE id = 10").get
    assert isinstance(blob, bytes)
    i, v2 = 4, blob[4:8] == _V2
    if v2:
        i += 4
    nlevel, i = _varint(blob, i)
    nseg, i = _varint(blob, i)
    _, i = _varint(blob, i)  # write counter
    if v2:
        _, i = _varint(blob, i)  # origin counter
    levels = []
    for _ in range(nlevel):
        merging, i = _varint(blob, i)
        n, i = _varint(blob, i)
        pages = 0
        for _ in range(n):
            _, i = _varint(blob, i)  # segment id
            first, i = _varint(blob, i)
            last, i = _varint(blob, i)
            for _ in range(5 if v2 else 0):  # origins, tombstone pages and entries, entries
                _, i = _varint(blob, i)
            pages += last - first + 1
        levels.append({"segments": n, "merging": merging, "pages": pages})
    config = dict(conn.execute(f"SELECT k, v FROM {table}_config").fetchall())
    return {"segments": nseg, "levels": levels, "config": config}


def _struct(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        conn = apsw.Connection(p, flags=apsw.SQLITE_OPEN_READONLY)
        out.append({t: structure(conn, t) for t in ("messages_fts", "messages_tri")} | {"store": p})
        conn.close()
    return out


def _pages(conn: apsw.Connection) -> int:
    hit, miss = apsw.SQLITE_DBSTATUS_CACHE_HIT, apsw.SQLITE_DBSTATUS_CACHE_MISS
    return int(conn.status(hit)[0] + conn.status(miss)[0])


def _search(paths: list[str], rounds: int = 3) -> list[dict[str, Any]]:
    import sessiondb
    from benchmarks.corpus import Corpus

    queries = Corpus(100_000, seed=1).queries(300)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        stores = {}
        for n, p in enumerate(paths):
            dest = Path(tmp) / f"{n}.db"
            shutil.copy(p, dest)
            stores[p] = sessiondb.open(dest)
        conns = {p: s.backend.engine.connection() for p, s in stores.items()}  # type: ignore[attr-defined]
        for q in queries[:30]:  # warm the page cache
            for s in stores.values():
                s.search(q.text, limit=20, context=2)
        cpu: dict[str, list[float]] = {p: [] for p in paths}
        pages: dict[str, list[int]] = {p: [] for p in paths}
        for r in range(rounds):
            for q in queries:
                for p in paths if r % 2 == 0 else paths[::-1]:
                    p0, t0 = _pages(conns[p]), time.thread_time()
                    stores[p].search(q.text, limit=20, context=2)
                    cpu[p].append(time.thread_time() - t0)
                    pages[p].append(_pages(conns[p]) - p0)
        for s in stores.values():
            s.close()
    return [
        {
            "store": p,
            "cpu_p50_ms": round(statistics.median(cpu[p]) * 1e3, 3),
            "cpu_p99_ms": round(sorted(cpu[p])[int(len(cpu[p]) * 0.99)] * 1e3, 3),
            "pages_mean": round(statistics.mean(pages[p]), 1),
        }
        for p in paths
    ]


def _after(n: int, appends: int = 500) -> dict[str, float]:
    import sessiondb
    from benchmarks.transcripts import generate

    def per_append(store: Any) -> tuple[float, float]:
        conn = store.backend.engine.connection()
        for _ in range(50):  # start from a copied-back WAL; the store's checkpointer may be busy
            try:
                conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
                break
            except apsw.BusyError:
                time.sleep(0.1)
        w0 = conn.status(apsw.SQLITE_DBSTATUS_CACHE_WRITE)[0]
        cpu = []
        for i in range(appends):
            t0 = time.thread_time()
            store.append("after", "user", f"retry policy with exponential backoff {i} " * 3)
            cpu.append(time.thread_time() - t0)
        written = conn.status(apsw.SQLITE_DBSTATUS_CACHE_WRITE)[0] - w0
        return written / appends, statistics.median(cpu) * 1e6

    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        src = Path(tmp) / "t.jsonl"
        generate(src, n)
        with sessiondb.open(Path(tmp) / "imported.db") as store:
            store.import_jsonl(src, session_id="bench")
            after_pages, after_cpu = per_append(store)
        with sessiondb.open(Path(tmp) / "fresh.db") as store:
            fresh_pages, fresh_cpu = per_append(store)
    return {
        "pages_per_append_after_import": round(after_pages, 2),
        "pages_per_append_fresh": round(fresh_pages, 2),
        "cpu_us_median_after_import": round(after_cpu, 1),
        "cpu_us_median_fresh": round(fresh_cpu, 1),
    }


def main(argv: list[str]) -> int:
    kind, *args = argv
    if kind == "struct":
        result: Any = _struct(args)
    elif kind == "search":
        result = _search(args, int(os.environ.get("ROUNDS", "3")))
    elif kind == "after":
        result = _after(int(args[0]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
