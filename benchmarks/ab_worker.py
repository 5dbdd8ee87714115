"""One measurement for benchmarks/ab.py, run as a script under the source tree being measured
(``PYTHONPATH=TREE python benchmarks/ab_worker.py …``): it imports only ``sessiondb`` (and, for
search, ``benchmarks.corpus``), so that it runs unchanged against an older tree.

    append N FOLDER [usage]   N single appends (500-byte turns, every other one keyed) in one
                              process; with ``usage``, each carries a model, a response id
                              (three messages per response) and token usage in its meta
    search STORE      the search benchmark's 300 queries (limit 20, context 2) on a built store

Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time


def append(n: int, folder: str, usage: bool = False) -> dict[str, float]:
    import sessiondb

    store = sessiondb.open(os.path.join(folder, "s.db"))
    text = "retry policy with exponential backoff " * 13
    metas = [None] * n
    if usage:
        metas = [
            {
                "model": "claude-x",
                "response_id": f"msg_{i // 3}",
                "usage": {
                    "input_tokens": 3,
                    "output_tokens": i % 3 * 40,
                    "cache_read_tokens": 9000,
                },
            }
            for i in range(n)
        ]
    t0 = time.perf_counter()
    for i in range(n):
        key = f"k{i}" if i % 2 else None
        role = "user" if i % 2 else "assistant"
        store.append(f"s{i % 4}", role, text, key=key, meta=metas[i])
    seconds = time.perf_counter() - t0
    store.close()
    return {"appends_per_s": n / seconds, "us_per_append": seconds / n * 1e6}


def search(path: str) -> dict[str, float]:
    import sessiondb
    from benchmarks.corpus import Corpus

    queries = Corpus(100_000, seed=1).queries(300)
    with sessiondb.open(path) as store:
        for q in queries[:30]:
            store.search(q.text, limit=20, context=2)  # warm the page cache
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            store.search(q.text, limit=20, context=2)
            lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return {"p50_ms": statistics.median(lat), "p99_ms": lat[int(len(lat) * 0.99)]}


if __name__ == "__main__":
    kind = sys.argv[1]
    if kind == "append":
        result = append(int(sys.argv[2]), sys.argv[3], usage=sys.argv[4:] == ["usage"])
    else:
        result = search(sys.argv[2])
    print(json.dumps(result))
