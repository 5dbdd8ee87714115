"""One measurement for benchmarks/index_ab.py, run as a script under the source tree being
measured (``PYTHONPATH=TREE python benchmarks/index_ab_worker.py …``), so that it runs unchanged
against an older tree. Prints one JSON object.

    many N BATCH FOLDER   append_many of BATCH messages until N (8 sessions), messages/s and
                          CPU time per message (process_time: what the machine's load
                          changes least)
    import DB SRC         import_jsonl of SRC into a fresh store (messages/s, peak RSS), then 500
                          single appends in another session (µs each), and 500 on a fresh store
    live DB SRC           the same import while 8 live writers append every 5 ms (their p99)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

TEXT = "retry policy with exponential backoff " * 13


def _appends(store: object, n: int = 500) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        store.append("after", "user", f"{TEXT} {i}")  # type: ignore[attr-defined]
    return (time.perf_counter() - t0) / n * 1e6


def many(n: int, batch: int, folder: str) -> dict[str, float]:
    import sessiondb

    with sessiondb.open(os.path.join(folder, "s.db")) as store:
        t0, c0 = time.perf_counter(), time.process_time()
        done = i = 0
        while done < n:
            items = [{"role": "user", "content": f"{TEXT} {done + j}"} for j in range(batch)]
            store.append_many(f"s{i % 8}", items)
            done, i = done + batch, i + 1
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"messages_per_s": n / seconds, "cpu_us_per_message": cpu / n * 1e6}


def import_(db: str, src: str) -> dict[str, float]:
    import sessiondb

    with sessiondb.open(db) as store:
        t0, c0 = time.perf_counter(), time.process_time()
        report = store.import_jsonl(src, session_id="bench")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = _appends(store)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as d, sessiondb.open(Path(d) / "fresh.db") as fresh:
        fresh_us = _appends(fresh)
    return {
        "messages_per_s": report.imported / seconds,
        "cpu_us_per_message": cpu / report.imported * 1e6,
        "peak_rss_mib": rss,
        "append_after_import_us": after,
        "append_fresh_us": fresh_us,
    }


def live(db: str, src: str) -> dict[str, float]:
    from benchmarks.transcripts import import_under_load

    with tempfile.TemporaryDirectory() as d:
        out = import_under_load(db, src, Path(d))
    return {
        "messages_per_s": out["import"]["messages"] / out["import"]["seconds"],
        "live_p50_ms": out["median_ms"],
        "live_p99_ms": out["p99_ms"],
        "live_max_ms": out["max_ms"],
    }


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    if kind == "many":
        result = many(int(args[0]), int(args[1]), args[2])
    elif kind == "import":
        result = import_(args[0], args[1])
    else:
        result = live(args[0], args[1])
    print(json.dumps(result))
