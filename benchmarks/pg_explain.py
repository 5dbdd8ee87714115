"""Where a search's time goes on PostgreSQL: each statement of the search plan
(sessiondb/postgres/search.py) timed, and the slow ones run again under
``EXPLAIN (ANALYZE, BUFFERS)`` in the same read transaction — for the queries of
benchmarks/corpus.py on a store a ``--keep-data`` run of benchmarks/postgres.py kept.

    python -m benchmarks.pg_explain DIR [--queries 300] [--slow-ms 200] [--kind common]

DIR holds ``load.json`` (benchmarks/pg_search.py); the statements and plans are printed, and
per query kind the time each statement of the plan took (p50/max over the queries).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import percentile
from benchmarks.corpus import Corpus
from benchmarks.pg_common import store_url


class _Timed:
    """A connection whose statements are timed; a slow one is explained afterwards."""

    def __init__(self, conn: Any, log: list[tuple[str, float]], slow: float, explain: bool):
        self._conn, self._log, self._slow, self._explain = conn, log, slow, explain

    def execute(self, query: Any, params: Any = None) -> Any:
        t0 = time.perf_counter()
        cur = self._conn.execute(query, params)
        rows = cur.fetchall() if cur.description else []
        took = time.perf_counter() - t0
        text = str(query)
        self._log.append((text, took))
        if took > self._slow and self._explain and text.lstrip().upper().startswith("SELECT"):
            plan = self._conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {text}", params).fetchall()
            print(f"--- {took * 1000:.0f} ms: {text}\n    params {_short(params)}")
            print("\n".join("    " + r[0] for r in plan), flush=True)
        return _Rows(rows, cur.description)


class _Rows:
    def __init__(self, rows: list[Any], description: Any) -> None:
        self._rows, self.description = rows, description

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None


def _short(params: Any) -> str:
    text = repr(params)
    return text if len(text) < 300 else text[:300] + "…"


def _kind_of_statement(text: str) -> str:
    if "count(*) FROM (SELECT 1 FROM messages WHERE tsv" in text:
        return "df counts"
    if "FROM (SELECT id, tsv FROM messages ORDER BY id DESC" in text:
        return "walk"
    if "ORDER BY m.id + 0 DESC LIMIT" in text and "m.id <" not in text:
        return "candidates (index)"
    if "m.id = ANY" in text and "LIMIT" in text:
        return "matches + positions"
    if "m.id <" in text:
        return "older matches"
    if "MESSAGE_COLUMNS" in text or "JOIN sessions s ON s.id = m.sid WHERE m.id = ANY" in text:
        return "rows"
    return "other"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pg_explain", description=__doc__)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--slow-ms", type=float, default=200.0)
    ap.add_argument("--kind", help="only queries of this kind")
    ap.add_argument("--no-explain", action="store_true")
    args = ap.parse_args(argv)
    kept = json.loads((args.dir / "load.json").read_text())
    schema = kept["postgresql_schema"]
    assert schema.startswith("bench_") and schema[6:].isalnum()
    corpus = Corpus(kept.get("messages_loaded", kept["messages"]))
    store = sessiondb.open(store_url(schema), readonly=True)
    conns = store.backend.connections  # type: ignore[attr-defined]
    real_read = conns.read
    log: list[tuple[str, float]] = []

    @contextmanager
    def read() -> Iterator[Any]:
        with real_read() as conn:
            yield _Timed(conn, log, args.slow_ms / 1000, not args.no_explain)

    conns.read = read
    per: dict[str, dict[str, list[float]]] = {}
    for q in corpus.queries(args.queries):
        if args.kind and q.kind != args.kind:
            continue
        log.clear()
        t0 = time.perf_counter()
        store.search(q.text, limit=20)
        total = time.perf_counter() - t0
        stage = per.setdefault(q.kind, {})
        stage.setdefault("search (total)", []).append(total)
        for text, took in log:
            stage.setdefault(_kind_of_statement(text), []).append(took)
        if total > args.slow_ms / 1000:
            print(f"=== {q.kind} {q.text!r}: {total * 1000:.0f} ms", flush=True)
    for kind, stages in per.items():
        print(f"\n{kind}:")
        for name, vals in stages.items():
            vals.sort()
            print(
                f"  {name:22} n={len(vals):4} p50 {percentile(vals, 50) * 1000:8.1f} ms"
                f"  max {vals[-1] * 1000:8.1f} ms"
            )
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
