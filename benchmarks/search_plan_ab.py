"""Search plan A/B (issue 18 item 5): an AND's common words checked on the candidate rows
(``CHECKED_CANDIDATE_COST``, sqlite/search.py) against the plan that matches every word, on one
store, in one process, alternated query by query.

    python -m benchmarks.search_plan_ab --store PATH --messages N [--queries 1000]

The store is the search benchmark's (``python -m benchmarks.search --store PATH --messages N``
loads one; its corpus is prefix-stable, so a store of the first k sessions of a larger corpus
is the corpus of ``--messages`` its message count). For each query of the search benchmark
(same generator, same seed) both plans run, in alternating order, timed as the search benchmark
times them (``limit=20, context=2``), in wall and CPU time, and their hits are compared:
messages, order and scores; the unfiltered recall is computed for each. The search
benchmark's session-scoped recall is not repeated: a filtered search never takes the new plan
(sqlite/search.py ``_ranked_rows``). The ceiling, the SQL each plan ran for the query (exec
trace) replayed on a bare read-only connection as benchmarks/search.py ``run_ceiling`` does,
is timed right after each search.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import apsw

import sessiondb
from sessiondb.sqlite import rank
from sessiondb.sqlite import search as search_module

from .common import sqlite_engine
from .corpus import Corpus
from .search import RESULTS, _machine, _summary

PLANS = {"before": None, "after": search_module.CHECKED_CANDIDATE_COST}


def _set(plan: str) -> None:
    search_module.CHECKED_CANDIDATE_COST = PLANS[plan]


def _capture(conn: Any, store: sessiondb.Store, text: str) -> list[tuple[str, Any]]:
    """The statements one search runs (its exec trace), for the ceiling's replay."""
    statements: list[tuple[str, Any]] = []

    def trace(_cursor: Any, sql: str, bindings: Any) -> bool:
        statements.append((sql, bindings))
        return True

    conn.exec_trace = trace
    try:
        store.search(text, limit=20, context=2)
    finally:
        conn.exec_trace = None
    return statements


def _table(samples: dict[str, list[float]]) -> dict[str, Any]:
    every = [x for v in samples.values() for x in v]
    return {**_summary(every), "by_kind": {k: _summary(v) for k, v in sorted(samples.items())}}


def run(store_path: Path, n_messages: int, n_queries: int) -> dict[str, Any]:
    corpus = Corpus(n_messages, seed=1)
    queries = corpus.queries(n_queries)
    kinds = Counter(q.kind for q in queries)
    # Per plan and kind: wall and CPU (this thread's) milliseconds of sessiondb's search, and
    # of the same SQL replayed bare (the ceiling), both alternated query by query.
    measures = ("wall", "cpu", "ceiling_wall", "ceiling_cpu")
    lat = {p: {m: {} for m in measures} for p in PLANS}  # type: ignore[var-annotated]
    recall: dict[str, Counter[str]] = {p: Counter() for p in PLANS}
    same = Counter[str]()
    differ: list[dict[str, Any]] = []
    load = [os.getloadavg()[0]]
    bare = apsw.Connection(str(store_path), flags=apsw.SQLITE_OPEN_READONLY)
    rank.register(bare)
    with sessiondb.open(store_path) as store:
        conn = sqlite_engine(store).connection()
        for i, q in enumerate(queries):
            # Queries cycle through the kinds (corpus.py): alternate per round of kinds, so that
            # each kind runs either plan first (the first warms the pages) equally often.
            order = list(PLANS) if (i // len(kinds)) % 2 == 0 else list(PLANS)[::-1]
            got: dict[str, Any] = {}
            for plan in order:
                _set(plan)
                t0, c0 = time.perf_counter(), time.thread_time()
                hits = store.search(q.text, limit=20, context=2)
                c1, t1 = time.thread_time(), time.perf_counter()
                statements = _capture(conn, store, q.text)
                t2, c2 = time.perf_counter(), time.thread_time()
                for sql, bindings in statements:
                    bare.execute(sql, bindings).fetchall()
                c3, t3 = time.thread_time(), time.perf_counter()
                for m, ms in zip(measures, (t1 - t0, c1 - c0, t3 - t2, c3 - c2), strict=True):
                    lat[plan][m].setdefault(q.kind, []).append(ms * 1000)
                key = (q.session_id, q.seq)
                recall[plan]["any"] += any(
                    (h.message.session_id, h.message.seq) == key for h in hits
                )
                got[plan] = [(h.message.session_id, h.message.seq, h.score) for h in hits]
            if got["before"] == got["after"]:
                same[q.kind] += 1
            else:
                differ.append({"kind": q.kind, "query": q.text})
            if i % 100 == 99:
                load.append(os.getloadavg()[0])
                print(f"  {i + 1} queries", flush=True)
    bare.close()
    _set("after")
    out: dict[str, Any] = {"plans": {}}
    for plan in PLANS:
        out["plans"][plan] = {
            "checked_candidate_cost": PLANS[plan],
            "recall_unfiltered": round(recall[plan]["any"] / len(queries), 4),
            **{m: _table(lat[plan][m]) for m in measures},
        }
    out["identical_results_by_kind"] = {k: f"{same[k]}/{kinds[k]}" for k in sorted(kinds)}
    out["differing_queries"] = differ
    out["load_average_1m"] = {"min": min(load), "max": max(load), "samples": load}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_plan_ab")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--messages", type=int, required=True, help="messages in the store")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS.with_name("search_plan_ab.json"))
    args = parser.parse_args(argv)
    with sessiondb.open(args.store) as store:
        held = store.count()
    if held != args.messages:
        parser.error(f"{args.store} holds {held} messages, not {args.messages}")
    out = {
        "benchmark": "search_plan_ab",
        "machine": _machine(),
        "store": str(args.store),
        "messages": args.messages,
        "queries": args.queries,
        **run(args.store, args.messages, args.queries),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "differing_queries"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
