"""Search plan A/B (issue 18 item 5): an AND's common words checked on the candidate rows
(``CHECKED_CANDIDATE_COST``, sqlite/search.py) against the plan that matches every word, on one
store, in one process, alternated query by query.

    python -m benchmarks.search_plan_ab --store PATH --messages N [--queries 1000]

The store is the search benchmark's (``python -m benchmarks.search --store PATH --messages N``
loads one; its corpus is prefix-stable, so a store of the first k sessions of a larger corpus
is the corpus of ``--messages`` its message count). For each query of the search benchmark
(same generator, same seed) both plans run, in alternating order, timed as the search benchmark
times them (``limit=20, context=2``), and their hits are compared: messages, order and scores.
Recall is the search benchmark's, computed for each plan. The ceiling (the SQL each plan ran,
replayed bare: benchmarks/search.py ``run_ceiling``) is measured for both, after the timed rounds.
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

import sessiondb
from sessiondb.sqlite import search as search_module

from .corpus import Corpus
from .search import RESULTS, _machine, _summary, run_ceiling

PLANS = {"before": None, "after": search_module.CHECKED_CANDIDATE_COST}


def _set(plan: str) -> None:
    search_module.CHECKED_CANDIDATE_COST = PLANS[plan]


def run(store_path: Path, n_messages: int, n_queries: int) -> dict[str, Any]:
    corpus = Corpus(n_messages, seed=1)
    queries = corpus.queries(n_queries)
    lat: dict[str, dict[str, list[float]]] = {p: {} for p in PLANS}
    recall: dict[str, Counter[str]] = {p: Counter() for p in PLANS}
    same = Counter[str]()
    differ: list[dict[str, Any]] = []
    load = [os.getloadavg()[0]]
    with sessiondb.open(store_path) as store:
        for i, q in enumerate(queries):
            order = list(PLANS) if i % 2 == 0 else list(PLANS)[::-1]
            got: dict[str, Any] = {}
            for plan in order:
                _set(plan)
                t0 = time.perf_counter()
                hits = store.search(q.text, limit=20, context=2)
                lat[plan].setdefault(q.kind, []).append((time.perf_counter() - t0) * 1000)
                scoped = store.search(q.text, session_id=q.session_id, limit=20)
                every = store.search(q.text, session_id=q.session_id, limit=1000)
                key = (q.session_id, q.seq)
                r = recall[plan]
                r["any"] += any((h.message.session_id, h.message.seq) == key for h in hits)
                r["at_20"] += any(h.message.seq == q.seq for h in scoped)
                r["all"] += any(h.message.seq == q.seq for h in every)
                if len(every) <= 20:
                    r["defined"] += 1
                    r["defined_found"] += any(h.message.seq == q.seq for h in scoped)
                got[plan] = [
                    [(h.message.session_id, h.message.seq, h.score) for h in x]
                    for x in (hits, scoped, every)
                ]
            if got["before"] == got["after"]:
                same[q.kind] += 1
            else:
                differ.append({"kind": q.kind, "query": q.text})
            if i % 100 == 99:
                load.append(os.getloadavg()[0])
                print(f"  {i + 1} queries", flush=True)
    out: dict[str, Any] = {"plans": {}}
    for plan in PLANS:
        every_ms = [x for v in lat[plan].values() for x in v]
        r = recall[plan]
        out["plans"][plan] = {
            "checked_candidate_cost": PLANS[plan],
            **_summary(every_ms),
            "by_kind": {k: _summary(v) for k, v in sorted(lat[plan].items())},
            "recall_unfiltered": round(r["any"] / len(queries), 4),
            "recall_session_at_20": round(r["at_20"] / len(queries), 4),
            "recall_session_all_matches": round(r["all"] / len(queries), 4),
            "recall_session_at_20_when_at_most_20_match": round(
                r["defined_found"] / max(1, r["defined"]), 4
            ),
        }
    kinds = Counter(q.kind for q in queries)
    out["identical_results_by_kind"] = {k: f"{same[k]}/{kinds[k]}" for k in sorted(kinds)}
    out["differing_queries"] = differ
    out["load_average_1m"] = {"min": min(load), "max": max(load), "samples": load}
    for plan in PLANS:
        _set(plan)
        out["plans"][plan]["ceiling"] = run_ceiling(store_path, queries)
    _set("after")
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
