"""The PostgreSQL backend beside the SQLite one, in one run (docs/postgres.md).

* **appends**: K writer processes (K = 1 and 16 by default) each appending ``--appends`` single
  messages, into their own sessions and into one shared session; per-append latency p50/p99/max
  and total throughput, for SQLite (WAL, durability normal), PostgreSQL (durability normal =
  ``synchronous_commit=off``, and full), and PostgreSQL without its search indexes — what GIN
  maintenance costs an append (docs/postgres.md, evidence 8).
* **search**: the generated corpus of benchmarks/corpus.py (``--messages``, default 100 000)
  loaded into both backends, the same queries run on each: p50/p99/max latency and recall
  (the message the query was made from among the top 20).

    python -m benchmarks.postgres [--quick] [--messages 100000] [--appends 500] [--procs 1,16]

PostgreSQL: ``$SESSIONDB_BENCH_PG`` (default postgresql://postgres@127.0.0.1:5432/test); a
schema ``bench_<hex>`` is made for each store and dropped afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import latency_summary, machine_facts, write_json
from benchmarks.corpus import Corpus

BASE = os.environ.get("SESSIONDB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TEXT = "retry the deploy with exponential backoff after the gateway timed out " * 4


def _admin() -> Any:
    import psycopg

    return psycopg.connect(BASE, autocommit=True)


def new_pg_store() -> tuple[str, str]:
    name = "bench_" + secrets.token_hex(6)
    with _admin() as conn:
        conn.execute(f"CREATE SCHEMA {name}")  # a name made here, never input
    return f"{BASE}{'&' if '?' in BASE else '?'}schema={name}", name


def drop_pg(name: str) -> None:
    assert name.startswith("bench_") and name[6:].isalnum()
    with _admin() as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _writer(
    location: str,
    options: dict[str, Any],
    worker: int,
    n: int,
    shared: bool,
    barrier: Any,
    out: Any,
) -> None:
    store = sessiondb.open(location, **options)
    session = "shared" if shared else f"own-{worker}"
    store.append(session, "user", "warm-up")
    barrier.wait()
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        store.append(session, "user", f"{worker}/{i} {TEXT}")
        lat.append(time.perf_counter() - t0)
    store.close()
    out.put(lat)


def run_appends(
    location: str, options: dict[str, Any], procs: int, n: int, shared: bool
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    sessiondb.open(location, **options).close()
    barrier, out = ctx.Barrier(procs + 1), ctx.Queue()
    ps = [
        ctx.Process(target=_writer, args=(location, options, w, n, shared, barrier, out))
        for w in range(procs)
    ]
    for p in ps:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    lat: list[float] = []
    for _ in ps:
        lat += out.get(timeout=600)
    elapsed = time.perf_counter() - t0
    for p in ps:
        p.join()
    return {**latency_summary(lat), "appends_per_s": round(len(lat) / elapsed, 1)}


def _drop_search_indexes(location: str) -> None:
    store = sessiondb.open(location)
    with store.backend.connections.write() as conn:  # type: ignore[attr-defined]
        conn.execute("DROP INDEX messages_search")
        conn.execute("DROP INDEX IF EXISTS messages_cjk_trgm")
    store.close()


def appends(procs_list: list[int], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
            for procs in procs_list:
                for shared in (False, True):
                    case = f"K={procs} {'shared session' if shared else 'own sessions'}"
                    row: dict[str, Any] = {}
                    row["sqlite"] = run_appends(
                        str(Path(tmp) / f"{procs}-{shared}.db"), {}, procs, n, shared
                    )
                    for label, opts, bare in (
                        ("postgresql", {}, False),
                        ("postgresql durability=full", {"durability": "full"}, False),
                        ("postgresql without search indexes", {}, True),
                    ):
                        url, name = new_pg_store()
                        made.append(name)
                        if bare:
                            sessiondb.open(url).close()
                            _drop_search_indexes(url)
                        row[label] = run_appends(url, opts, procs, n, shared)
                    base = row["sqlite"]["appends_per_s"]
                    for v in row.values():
                        v["throughput_vs_sqlite"] = round(v["appends_per_s"] / base, 2)
                    out[case] = row
                    print(
                        case,
                        {
                            k: (v["p50_ms"], v["p99_ms"], v["max_ms"], v["appends_per_s"])
                            for k, v in row.items()
                        },
                        flush=True,
                    )
    finally:
        for name in made:
            drop_pg(name)
    return out


def _load(store: sessiondb.Store, corpus: Corpus) -> float:
    t0 = time.perf_counter()
    for sid, source, msgs in corpus.sessions():
        store.ensure_session(sid, source=source)
        store.append_many(sid, [{"role": r, "content": c} for r, c in msgs])
    return time.perf_counter() - t0


def _queries(store: sessiondb.Store, corpus: Corpus, n: int) -> dict[str, Any]:
    qs = corpus.queries(n)
    lat, found = [], 0
    for q in qs:
        t0 = time.perf_counter()
        hits = store.search(q.text, limit=20)
        lat.append(time.perf_counter() - t0)
        found += any(h.message.session_id == q.session_id and h.message.seq == q.seq for h in hits)
    return {**latency_summary(lat), "recall_at_20": round(found / len(qs), 4)}


def search(messages: int, n_queries: int) -> dict[str, Any]:
    corpus = Corpus(messages)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pg-search-") as tmp:
        sq = sessiondb.open(Path(tmp) / "s.db")
        out["sqlite_load_s"] = round(_load(sq, corpus), 1)
        url, name = new_pg_store()
        try:
            pgs = sessiondb.open(url)
            out["postgresql_load_s"] = round(_load(pgs, corpus), 1)
            with pgs.backend.connections.write() as conn:  # type: ignore[attr-defined]
                conn.execute("ANALYZE")
            _queries(sq, corpus, 30), _queries(pgs, corpus, 30)  # warm caches alike
            out["sqlite"] = _queries(sq, corpus, n_queries)
            out["postgresql"] = _queries(pgs, corpus, n_queries)
            out["p50_ratio_pg_vs_sqlite"] = round(
                out["postgresql"]["p50_ms"] / out["sqlite"]["p50_ms"], 2
            )
            pgs.close()
        finally:
            drop_pg(name)
        sq.close()
    print("search", out, flush=True)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 000 messages, 200 appends")
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--appends", type=int, default=500)
    ap.add_argument("--procs", default="1,16")
    ap.add_argument("--only", choices=("appends", "search"))
    args = ap.parse_args(argv)
    if args.quick:
        args.messages, args.appends, args.queries = 10_000, 200, 100
    result: dict[str, Any] = {"machine": machine_facts(), "args": vars(args)}
    with _admin() as conn:
        result["postgresql_version"] = conn.execute("SHOW server_version").fetchone()[0]
    if args.only != "search":
        result["appends"] = appends([int(k) for k in args.procs.split(",")], args.appends)
    if args.only != "appends":
        result["search"] = search(args.messages, args.queries)
    print(write_json("postgres_quick" if args.quick else "postgres", result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
