"""What the search indexes' maintenance costs an append on PostgreSQL, and how its GIN indexes
are best tuned (docs/postgres.md, evidence 8; docs/benchmarks.md, "PostgreSQL: GIN
maintenance").

The same appends on four variants of one fresh store each, in one run, the order rotated round
by round: the GIN indexes as the schema makes them (``fastupdate = off``: each insert updates
the index itself), PostgreSQL's default (``fastupdate = on`` with a 4 MB pending list, flushed
into the index by the insert that overflows it), ``fastupdate = on`` with a 256 kB pending list
(smaller, more frequent flushes), and no search indexes at all (the floor). K writer processes
(K = 1, 16) each append ``--appends`` single messages of benchmarks/corpus.py (200–2 000 bytes of
Zipf-distributed words, identifiers, 5 % CJK: what fills a pending list at a realistic rate)
into their own session; per-append p50/p99/max, appends/s, appends slower than 50 ms, and the
load average beside each case.

    python -m benchmarks.pg_gin [--rounds 3] [--appends 2000,200] [--procs 1,16]
    python -m benchmarks.pg_gin --flush 500,2000 --name postgres_gin_flush

``--table FILE``: print a results file's summary as docs/benchmarks.md shows it.
``--flush``: instead, what one flush costs on its own (``flush_cost``), after so many appends.

PostgreSQL: ``$SESSIONDB_BENCH_PG`` (benchmarks/pg_common.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import latency_summary, machine_facts, write_json
from benchmarks.corpus import Corpus
from benchmarks.pg_common import Start, admin, drop_pg, new_schema, store_url

# Variant -> the storage parameters set on both GIN indexes (None: the indexes are dropped).
VARIANTS: dict[str, dict[str, str] | None] = {
    "fastupdate=off (schema)": {"fastupdate": "off"},
    "fastupdate=on, 4MB (PostgreSQL default)": {
        "fastupdate": "on",
        "gin_pending_list_limit": "4096",
    },
    "fastupdate=on, 256kB": {"fastupdate": "on", "gin_pending_list_limit": "256"},
    "without search indexes": None,
}
_GIN = ("messages_search", "messages_cjk_trgm")
SLOW_MS = 50.0


def _texts(procs: int, n: int) -> list[list[str]]:
    """Each writer's *n* message contents, the same for every variant."""
    corpus = Corpus(procs * n + 100)
    out: list[list[str]] = [[] for _ in range(procs)]
    w = 0
    for _sid, _src, msgs in corpus.sessions():
        for _role, content in msgs:
            if len(out[w]) < n:
                out[w].append(content)
            w = (w + 1) % procs
        if all(len(t) == n for t in out):
            break
    return out


def _prepare(variant: str) -> tuple[str, str]:
    schema = new_schema()
    url = store_url(schema)
    sessiondb.open(url).close()
    params = VARIANTS[variant]
    with admin() as conn:
        for index in _GIN:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{index}",)).fetchone()
            if not exists or exists[0] is None:
                continue
            if params is None:
                conn.execute(f"DROP INDEX {schema}.{index}")  # names made here, never input
            else:
                opts = ", ".join(f"{k} = {v}" for k, v in params.items())
                conn.execute(f"ALTER INDEX {schema}.{index} SET ({opts})")
    return url, schema


def _writer(url: str, worker: int, texts: list[str], start: Start, out: Any) -> None:
    try:
        store = sessiondb.open(url)
        session = f"own-{worker}"
        store.append(session, "user", "warm-up")
        t_end = start.wait()
        lat = []
        for text in texts:
            if time.perf_counter() > t_end:
                break
            t0 = time.perf_counter()
            store.append(session, "tool", text)
            lat.append(time.perf_counter() - t0)
        store.close()
        out.put(lat)
    except BaseException as e:  # reported by the parent, never a hang
        start.barrier.abort()
        out.put(("error", f"{type(e).__name__}: {e}"))


def run_case(variant: str, texts: list[list[str]], budget: float) -> dict[str, Any]:
    url, schema = _prepare(variant)
    try:
        ctx = mp.get_context("fork")
        procs = len(texts)
        barrier, out = ctx.Barrier(procs + 1, timeout=600), ctx.Queue()
        start = Start(barrier, budget)
        ps = [
            ctx.Process(target=_writer, args=(url, w, texts[w], start, out)) for w in range(procs)
        ]
        for p in ps:
            p.start()
        with contextlib.suppress(Exception):
            barrier.wait()
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        lat: list[float] = []
        for _ in ps:
            got = out.get(timeout=1800)
            if isinstance(got, tuple):
                return {"error": got[1]}
            lat += got
        elapsed = time.perf_counter() - t0
        for p in ps:
            p.join(timeout=60)
        return {
            **latency_summary(lat),
            "appends_per_s": round(len(lat) / elapsed, 1),
            "slower_than_50ms": sum(x * 1000 > SLOW_MS for x in lat),
            "loadavg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        }
    finally:
        drop_pg(schema)


def flush_cost(n: int) -> dict[str, Any]:
    """What one pending-list flush costs, timed on its own: *n* appends (one writer) into a store
    whose GIN indexes pend without limit (``fastupdate = on``, 2 GB), then the same flush an
    overflowing insert would run, ``gin_clean_pending_list``, timed; the pages it moved."""
    schema = new_schema()
    url = store_url(schema)
    try:
        sessiondb.open(url).close()
        with admin() as conn:
            conn.execute(
                f"ALTER INDEX {schema}.messages_search"  # names made here, never input
                " SET (fastupdate = on, gin_pending_list_limit = 2097151)"
            )
        (texts,) = _texts(1, n)
        with sessiondb.open(url) as store:
            for text in texts:
                store.append("s", "tool", text)
        with admin() as conn:
            t0 = time.perf_counter()
            row = conn.execute(
                "SELECT gin_clean_pending_list(%s::regclass)", (f"{schema}.messages_search",)
            ).fetchone()
            ms = (time.perf_counter() - t0) * 1000
        pages = int(row[0]) if row else 0
        return {
            "appends": n,
            "pending_pages": pages,
            "pending_kB": pages * 8,
            "flush_ms": round(ms, 1),
            "loadavg_1m": round(os.getloadavg()[0], 1),
        }
    finally:
        drop_pg(schema)


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per case and variant: median and min–max over rounds; throughput ratios to the floor
    (no indexes) taken within each round."""
    summary: dict[str, Any] = {}
    floor = "without search indexes"
    for case in rounds[0]:
        summary[case] = {}
        for variant in VARIANTS:
            runs = [rd[case][variant] for rd in rounds if "n" in rd[case][variant]]
            if not runs:
                continue
            row: dict[str, Any] = {"rounds": len(runs)}
            for key in ("appends_per_s", "p50_ms", "p99_ms", "max_ms", "slower_than_50ms"):
                vals = sorted(r[key] for r in runs)
                row[key] = {"median": statistics.median(vals), "min": vals[0], "max": vals[-1]}
            ratios = sorted(
                rd[case][variant]["appends_per_s"] / rd[case][floor]["appends_per_s"]
                for rd in rounds
                if "n" in rd[case][variant] and "n" in rd[case][floor]
            )
            row["throughput_vs_no_indexes"] = [round(ratios[0], 3), round(ratios[-1], 3)]
            summary[case][variant] = row
    return summary


def table(result: dict[str, Any]) -> str:
    """The summary as the markdown rows docs/benchmarks.md shows (medians, min–max over rounds)."""

    def span(d: dict[str, float]) -> str:
        return f"{d['median']:g} ({d['min']:g}–{d['max']:g})"

    lines = [
        "| case | variant | p50 ms | p99 ms | max ms | appends > 50 ms | appends/s |"
        " /s vs no indexes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, row in result["summary"].items():
        for variant, v in row.items():
            lo, hi = v["throughput_vs_no_indexes"]
            lines.append(
                f"| {case} | {variant} | {span(v['p50_ms'])} | {span(v['p99_ms'])}"
                f" | {span(v['max_ms'])} | {span(v['slower_than_50ms'])}"
                f" | {span(v['appends_per_s'])} | {lo:g}–{hi:g} |"
            )
    loads = [
        x
        for rd in result["rounds"]
        for case in rd.values()
        for v in case.values()
        for x in v.get("loadavg_1m", [])
    ]
    if loads:
        lines.append(f"\nload average (1 min) beside the cases: {min(loads):g}–{max(loads):g}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pg_gin", description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--procs", default="1,16")
    ap.add_argument("--appends", default="2000,200", help="per writer, one per --procs entry")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds a case may append for")
    ap.add_argument("--name", default="postgres_gin")
    ap.add_argument("--table", type=Path, help="print a results file's summary and stop")
    ap.add_argument(
        "--flush", default="", help="only time one flush after each of these append counts"
    )
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text(encoding="utf-8"))))
        return 0
    cases = list(
        zip(
            [int(k) for k in args.procs.split(",")],
            [int(n) for n in args.appends.split(",")],
            strict=True,
        )
    )
    result: dict[str, Any] = {"machine": machine_facts(), "args": vars(args), "rounds": []}
    result["args"].pop("table")
    with admin() as conn:
        result["postgresql"] = {
            k: conn.execute(f"SHOW {k}").fetchone()[0]  # names from this tuple
            for k in ("server_version", "autovacuum", "gin_pending_list_limit", "fsync")
        }
    if args.flush:
        result["flush"] = [flush_cost(int(n)) for n in args.flush.split(",")]
        print(result["flush"], write_json(args.name, result))
        return 0
    texts = {procs: _texts(procs, n) for procs, n in cases}
    names = list(VARIANTS)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        this: dict[str, Any] = {}
        for procs, n in cases:
            case = f"K={procs} own sessions, {n} appends each"
            row = {v: run_case(v, texts[procs], args.budget) for v in order}
            this[case] = {v: row[v] for v in names}
            print(
                f"round {r + 1}",
                case,
                {
                    v: (x.get("p50_ms"), x.get("p99_ms"), x.get("max_ms"), x.get("appends_per_s"))
                    for v, x in this[case].items()
                },
                flush=True,
            )
        result["rounds"].append(this)
        write_json(args.name, {**result, "summary": summarise(result["rounds"]), "partial": True})
    result["summary"] = summarise(result["rounds"])
    print(write_json(args.name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
