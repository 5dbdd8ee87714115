"""Process entry points for the search stress test (importable under the spawn start method)."""

from __future__ import annotations

import time

import sessiondb

QUERIES = ["retry", "policy deploy", "foo.bar", "x:y", "C++", "東京", "agent status", "zzz"]


def searcher(path: str, stop_at: float, out: object) -> None:
    """Search in a tight loop until ``stop_at`` (time.time()); report the number of searches."""
    n = 0
    with sessiondb.open(path) as store:
        while time.time() < stop_at:
            store.search(QUERIES[n % len(QUERIES)], context=2, limit=20)
            n += 1
    out.put(("searcher", n))  # type: ignore[attr-defined]


def writer(path: str, start_at: float, stop_at: float, out: object) -> None:
    """Append until ``stop_at``; report every append's latency in seconds."""
    latencies: list[float] = []
    with sessiondb.open(path) as store:
        while time.time() < start_at:
            time.sleep(0.01)
        i = 0
        while time.time() < stop_at:
            t0 = time.perf_counter()
            store.append("live", "assistant", f"retry policy step {i} foo.bar x:y 東京都")
            latencies.append(time.perf_counter() - t0)
            i += 1
    out.put(("writer", latencies))  # type: ignore[attr-defined]
