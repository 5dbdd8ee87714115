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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import latency_summary, machine_facts, write_json
from benchmarks.pg_common import admin, drop_pg, new_pg_store
from benchmarks.pg_search import search

TEXT = "retry the deploy with exponential backoff after the gateway timed out " * 4


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


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 000 messages, 200 appends")
    ap.add_argument("--sizes", default="100000,1000000", help="corpus sizes for search")
    ap.add_argument("--search-rounds", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=Path("/work/data/sessiondb-bench"))
    ap.add_argument("--keep-data", action="store_true", help="keep the search stores")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--appends", type=int, default=500)
    ap.add_argument("--procs", default="1,16")
    ap.add_argument("--only", choices=("appends", "search"))
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.appends, args.queries, args.search_rounds = "10000", 200, 100, 1
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with admin() as conn:
        result["postgresql_version"] = conn.execute("SHOW server_version").fetchone()[0]
    if args.only != "search":
        result["appends"] = appends([int(k) for k in args.procs.split(",")], args.appends)
    if args.only != "appends":
        sizes = [int(n) for n in args.sizes.split(",")]
        result["search"] = search(
            sizes, args.queries, args.search_rounds, args.data_dir, args.keep_data
        )
    name = "postgres" + ("_quick" if args.quick else "") + (f"_{args.only}" if args.only else "")
    print(write_json(name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
