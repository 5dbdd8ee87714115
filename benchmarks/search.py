"""Search benchmark: sessiondb vs hermes-agent's SessionDB.search_messages on one generated corpus.

    python -m benchmarks.search            # 1 000 000 messages, ~20 000 sessions, 1 000 queries
    python -m benchmarks.search --quick    # 100 000 messages, 300 queries

Measured in the same run: per-query latency (p50/p99/max, limit=20, context=2) for both stores,
recall (a query made from words of message X returns X within the first 20: sessiondb filtered
to X's session as the issue defines it, and unfiltered for both, since hermes has no session
filter), index size over raw content size, and load throughput with and without sessiondb's
index. hermes-agent is optional (installed in .venv-bench); without it its rows are omitted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import apsw

import sessiondb
from sessiondb.sqlite import fts, rank, selfindex

from .common import sqlite_engine
from .corpus import Corpus, Query

RESULTS = Path(__file__).parent / "results" / "search.json"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _summary(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(_pct(ms, 0.99), 3),
        "max_ms": round(max(ms), 3),
    }


def _machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "apsw": apsw.apsw_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "commit": commit,
    }


def load_sessiondb(path: Path, corpus: Corpus, *, index: bool, limit: int | None = None) -> float:
    """Load the corpus (one append_many per session); return messages per second."""
    # Batches index themselves since migration 7 (sqlite/selfindex.py): without the index, they
    # take the per-row path, whose triggers are dropped.
    min_rows = selfindex.MIN_ROWS
    if not index:
        selfindex.MIN_ROWS = sys.maxsize
    try:
        return _load(path, corpus, index=index, limit=limit)
    finally:
        selfindex.MIN_ROWS = min_rows


def _load(path: Path, corpus: Corpus, *, index: bool, limit: int | None) -> float:
    with sessiondb.open(path) as store:
        if not index:
            with sqlite_engine(store).write() as conn:
                for name in fts.TRIGGERS:
                    conn.execute(f"DROP TRIGGER {name}")
        n = 0
        t0 = time.perf_counter()
        for sid, source, msgs in corpus.sessions():
            store.ensure_session(sid, source=source)
            store.append_many(sid, [{"role": r, "content": c} for r, c in msgs])
            n += len(msgs)
            if limit is not None and n >= limit:
                break
        return n / (time.perf_counter() - t0)


def load_hermes(
    path: Path, corpus: Corpus, sessions_per_txn: int = 200
) -> tuple[Any, dict[int, tuple[str, int]], float]:
    """Load the corpus into hermes-agent's SessionDB through its own insert path.

    ``append_message`` commits once per message (about 475 messages/s here, slower as the index
    grows: a 1 000 000-message load would take most of an hour), so messages go in through
    ``SessionDB._insert_message_rows`` — the rows and FTS triggers ``append_message`` and
    ``replace_messages`` use — inside its ``_execute_write`` transaction, ``sessions_per_txn``
    sessions per transaction, with each session's ``message_count`` set as appends would. The
    tables, rows and index content are what appends produce; larger transactions leave hermes
    fewer, larger FTS segments, which can only help its queries.
    """
    from hermes_state import SessionDB  # type: ignore[import-not-found]

    db = SessionDB(db_path=path)
    pending: list[tuple[str, list[dict[str, str]]]] = []
    n = shown = 0

    def flush() -> None:
        def write(conn: Any) -> None:
            for sid, msgs in pending:
                inserted, _ = db._insert_message_rows(conn, sid, msgs)
                conn.execute("UPDATE sessions SET message_count = ? WHERE id = ?", (inserted, sid))

        db._execute_write(write)
        pending.clear()

    t0 = time.perf_counter()
    for sid, source, msgs in corpus.sessions():
        db.create_session(sid, source)
        pending.append((sid, [{"role": r, "content": c} for r, c in msgs]))
        n += len(msgs)
        if len(pending) >= sessions_per_txn:
            flush()
            if n // 100_000 > shown:
                shown = n // 100_000
                print(f"  hermes-agent: {n} messages", flush=True)
    if pending:
        flush()
    rate = n / (time.perf_counter() - t0)
    ids: dict[int, tuple[str, int]] = {}
    for mid, sid in db._conn.execute("SELECT id, session_id FROM messages ORDER BY id"):
        ids[mid] = (sid, 0)
    seq: Counter[str] = Counter()
    for mid, (sid, _) in ids.items():  # ids ascend within a session in insertion order
        seq[sid] += 1
        ids[mid] = (sid, seq[sid])
    return db, ids, rate


def _sizes(path: Path, tables: tuple[str, ...]) -> dict[str, float]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        index = sum(
            conn.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE ?", (t + "%",)
            ).fetchone()[0]
            for t in tables
        )
        raw = conn.execute("SELECT sum(length(CAST(content AS BLOB))) FROM messages").fetchone()[0]
    finally:
        conn.close()
    return {"index_bytes": index, "raw_bytes": raw, "ratio": round(index / raw, 3)}


def run_sessiondb(path: Path, queries: list[Query]) -> dict[str, Any]:
    lat: dict[str, list[float]] = {}
    found = found_any = found_all = 0
    defined = found_defined = 0
    any_by_kind: Counter[str] = Counter()
    empty: Counter[str] = Counter()
    with sessiondb.open(path) as store:
        for q in queries:
            t0 = time.perf_counter()
            hits = store.search(q.text, limit=20, context=2)
            lat.setdefault(q.kind, []).append((time.perf_counter() - t0) * 1000)
            got = any((h.message.session_id, h.message.seq) == (q.session_id, q.seq) for h in hits)
            found_any += got
            any_by_kind[q.kind] += got
            empty[q.kind] += not hits  # every query comes from a stored message: never right
            scoped = store.search(q.text, session_id=q.session_id, limit=20)
            hit = any(h.message.seq == q.seq for h in scoped)
            found += hit
            # A single common word matches most of a session: X then ranks wherever bm25 puts
            # it, so "found at all" (every match of the session returned) is measured too, and
            # recall@20 over the queries whose session holds at most 20 matches, where "X in
            # the first 20" does not depend on ranking at all.
            every = store.search(q.text, session_id=q.session_id, limit=1000)
            found_all += any(h.message.seq == q.seq for h in every)
            if len(every) <= 20:
                defined += 1
                found_defined += hit
    every_ms = [x for v in lat.values() for x in v]
    return {
        **_summary(every_ms),
        "by_kind": {k: _summary(v) for k, v in sorted(lat.items())},
        "recall_session_at_20": round(found / len(queries), 4),
        "recall_session_at_20_when_at_most_20_match": round(found_defined / max(1, defined), 4),
        "queries_with_at_most_20_session_matches": defined,
        "recall_session_all_matches": round(found_all / len(queries), 4),
        "recall_unfiltered": round(found_any / len(queries), 4),
        "recall_unfiltered_by_kind": _by_kind(any_by_kind, queries),
        "no_hits_by_kind": _by_kind(empty, queries),
    }


def run_ceiling(path: Path, queries: list[Query]) -> dict[str, Any]:
    """The ceiling: the SQL sessiondb's search runs, replayed on one bare apsw connection.

    Each query's statements (its two short reads: BEGIN, planning lookups, the ranked query,
    COMMIT, then the context read) are captured once with an exec trace, then timed on a bare
    read-only connection with no Python around them: no query parsing, no planning, no row
    conversion, no snippets. sessiondb's latency over this is what its Python costs.
    """
    captured: list[tuple[str, list[tuple[str, Any]]]] = []
    with sessiondb.open(path) as store:
        conn = sqlite_engine(store).connection()
        for q in queries:
            statements: list[tuple[str, Any]] = []

            def trace(_cursor: Any, sql: str, bindings: Any, into: list[Any] = statements) -> bool:
                into.append((sql, bindings))
                return True

            conn.exec_trace = trace
            store.search(q.text, limit=20, context=2)
            conn.exec_trace = None
            captured.append((q.kind, statements))
    bare = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    rank.register(bare)
    lat: dict[str, list[float]] = {}
    try:
        for kind, statements in captured:
            t0 = time.perf_counter()
            for sql, bindings in statements:
                bare.execute(sql, bindings).fetchall()
            lat.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)
    finally:
        bare.close()
    every_ms = [x for v in lat.values() for x in v]
    return {**_summary(every_ms), "by_kind": {k: _summary(v) for k, v in sorted(lat.items())}}


def _by_kind(found: Counter[str], queries: list[Query]) -> dict[str, float]:
    total = Counter(q.kind for q in queries)
    return {k: round(found[k] / total[k], 4) for k in sorted(total)}


def run_hermes(db: Any, ids: dict[int, tuple[str, int]], queries: list[Query]) -> dict[str, Any]:
    lat: dict[str, list[float]] = {}
    found_any = 0
    errors: Counter[str] = Counter()
    any_by_kind: Counter[str] = Counter()
    empty: Counter[str] = Counter()
    for q in queries:
        t0 = time.perf_counter()
        try:
            rows = db.search_messages(q.text, limit=20)
        except Exception as e:  # a peer's failure is a result, not a crash of the benchmark
            errors[type(e).__name__] += 1
            rows = []
        lat.setdefault(q.kind, []).append((time.perf_counter() - t0) * 1000)
        got = any(ids.get(r.get("id")) == (q.session_id, q.seq) for r in rows)
        found_any += got
        any_by_kind[q.kind] += got
        empty[q.kind] += not rows
    every = [x for v in lat.values() for x in v]
    return {
        **_summary(every),
        "by_kind": {k: _summary(v) for k, v in sorted(lat.items())},
        "recall_unfiltered": round(found_any / len(queries), 4),
        "recall_unfiltered_by_kind": _by_kind(any_by_kind, queries),
        "no_hits_by_kind": _by_kind(empty, queries),
        "errors": dict(errors),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search")
    parser.add_argument("--quick", action="store_true", help="100 000 messages, 300 queries")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--no-peer", action="store_true", help="skip hermes-agent")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="sessiondb store to query: loaded from the corpus once if absent, reused after "
        "(a 5 000 000-message load takes hours here); load rates and the "
        "peer are measured only when it is loaded in this run",
    )
    args = parser.parse_args(argv)
    n_messages = args.messages or (100_000 if args.quick else 1_000_000)
    n_queries = args.queries or (300 if args.quick else 1_000)
    corpus = Corpus(n_messages, seed=1)
    queries = corpus.queries(n_queries)
    out: dict[str, Any] = {
        "benchmark": "search",
        "machine": _machine(),
        "messages": n_messages,
        "sessions": corpus.n_sessions,
        "queries": n_queries,
        "query_kinds": dict(Counter(q.kind for q in queries)),
    }
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        base = Path(tmp)
        store = base / "s.db"
        reused = args.store is not None and args.store.exists()
        if args.store is not None:
            store = args.store
            out["store"] = {"path": str(store), "reused": reused}
        if reused:
            print(f"reusing {store}", flush=True)
        else:
            sample = min(n_messages, 50_000)
            out["load_msgs_per_s_no_index"] = round(
                load_sessiondb(base / "noindex.db", corpus, index=False, limit=sample)
            )
            print(f"loading sessiondb: {n_messages} messages", flush=True)
            partial = store.with_name(store.name + ".partial")
            for leftover in store.parent.glob(partial.name + "*"):
                leftover.unlink()  # a load killed mid-way: start again, never append twice
            out["load_msgs_per_s_index"] = round(load_sessiondb(partial, corpus, index=True))
            partial.rename(store)  # closed: no WAL or shared-memory file is left beside it
            out["load_msgs_per_s_index_first_50k"] = round(
                load_sessiondb(base / "s50k.db", corpus, index=True, limit=sample)
            )
        out["sessiondb_size"] = _sizes(store, (fts.WORD_TABLE, fts.TRIGRAM_TABLE))
        print("querying sessiondb", flush=True)
        out["sessiondb"] = run_sessiondb(store, queries)
        out["ceiling"] = run_ceiling(store, queries)
        if reused and not args.no_peer:
            out["hermes"] = "not measured: the store was reused (the peer loads in the same run)"
        elif not args.no_peer:
            try:
                import hermes_state  # type: ignore[import-not-found]  # noqa: F401
            except ImportError:
                out["hermes"] = "not installed (pip install hermes-agent in .venv-bench)"
            else:
                print("loading hermes-agent", flush=True)
                db, ids, rate = load_hermes(base / "h.db", corpus)
                print("querying hermes-agent", flush=True)
                out["hermes"] = run_hermes(db, ids, queries)
                out["hermes"]["load_msgs_per_s"] = round(rate)
                db.close()
                out["hermes"]["size"] = _sizes(
                    base / "h.db", ("messages_fts", "messages_fts_trigram")
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
