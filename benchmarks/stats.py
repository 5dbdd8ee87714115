"""Usage stats on a large store: ``store.stats()`` against listing 50 sessions, in one run.

The store: N messages (default 1 000 000) in sessions of 50, spread over 90 days, half of them
assistant messages with a model, a response id (two messages per response) and token usage, as
imported agent transcripts carry; built once with ``append_many`` (search index dropped: stats
never read it) and cached under benchmarks/work/stats/.

Measured alternately, one call each per round, after a warm-up:

* ``stats()`` over all 90 days, and ``stats(since=…)`` over the last 30;
* ``list_sessions(limit=50)``, the reference the issue names (what the CLI lists first);
* the ceiling: the rollup query alone, on the same connection, without the Store's Python
  (validation, assembly into dataclasses);
* what stats would cost without the rollup: the same answer aggregated from the messages
  (``json_extract`` over every row), three runs.

    python -m benchmarks.stats [--quick] [--messages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import (
    WORK_DIR,
    latency_summary,
    machine_facts,
    sqlite_engine,
    write_json,
)
from sessiondb.sqlite import fts, rollup

DAY = 86400
START = 1_780_000_000.0  # 2026-05-28
#: Part of the cached store's name: bump it when the build or the rollup's layout changes.
BUILD = 2


def build(path: Path, n: int, seed: int = 7) -> float:
    """The store described above; returns seconds taken."""
    rng = random.Random(seed)
    models = ("claude-sonnet-4-5", "claude-opus-4-1", "gpt-5", "gpt-5-mini")
    t0 = time.perf_counter()
    with sessiondb.open(path) as store:
        with sqlite_engine(store).write() as conn:
            for name in fts.TRIGGERS:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        for s in range(n // 50):
            day = rng.randrange(90)
            model = rng.choice(models)
            t = START + day * DAY + rng.randrange(DAY - 3600)
            items: list[dict[str, Any]] = []
            for i in range(50):
                meta = None
                if i % 2:
                    meta = {
                        "model": model,
                        "response_id": f"r{i // 4}",
                        "usage": {
                            "input_tokens": rng.randrange(1, 50),
                            "output_tokens": rng.randrange(1, 2000),
                            "cache_read_tokens": rng.randrange(0, 90_000),
                            "cache_write_tokens": rng.randrange(0, 4000),
                        },
                    }
                items.append(
                    {
                        "role": "assistant" if i % 2 else "user",
                        "content": f"message {i} of session {s} " + "text " * 40,
                        "meta": meta,
                        "created_at": t + i * 30,
                    }
                )
            store.ensure_session(f"s{s:07d}", source=("cli", "gateway", "editor")[s % 3])
            store.append_many(f"s{s:07d}", items)
    return time.perf_counter() - t0


SCAN = """
SELECT CAST(m.created_at / 86400 AS INTEGER) AS day, s.source,
       coalesce(json_extract(m.meta, '$.model'), ''), count(*),
       sum(coalesce(json_extract(m.meta, '$.usage.output_tokens'), 0))
FROM messages m JOIN sessions s ON s.id = m.sid GROUP BY 1, 2, 3
"""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stats", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100 000 messages, 100 rounds")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args(argv)
    n, rounds = (100_000, 100) if args.quick else (args.messages, args.rounds)
    folder = WORK_DIR / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stats-{n}-build{BUILD}.db"
    built = None
    if not path.exists():
        print(f"building {n:,} messages (cached at {path})", flush=True)
        partial = path.with_suffix(".partial")
        for leftover in folder.glob(partial.name + "*"):
            leftover.unlink()
        built = build(partial, n)
        if Path(f"{partial}-wal").exists():  # closed: the WAL is in the main file, and gone
            raise SystemExit(f"{partial}-wal is left after close: not renaming a partial store")
        partial.rename(path)
        print(f"built in {built:.0f} s", flush=True)
    month_ago = START + 60 * DAY
    timings: dict[str, list[float]] = {k: [] for k in ("all", "month", "list50", "ceiling")}
    with sessiondb.open(path) as store:
        conn = sqlite_engine(store).connection()
        calls = {
            "all": lambda: store.stats(),
            "month": lambda: store.stats(since=month_ago),
            "list50": lambda: store.list_sessions(limit=50),
            "ceiling": lambda: rollup.activity(conn, None, None, None),
        }
        for f in calls.values():
            for _ in range(5):
                f()
        for _ in range(rounds):
            for name, f in calls.items():
                t0 = time.perf_counter()
                f()
                timings[name].append(time.perf_counter() - t0)
        scans = []
        for _ in range(3):
            t0 = time.perf_counter()
            conn.execute(SCAN).fetchall()
            scans.append(time.perf_counter() - t0)
        stats = store.stats()
        facts = {"messages": store.count(), "sessions": stats.sessions, "days": len(stats.days)}
    results = {k: latency_summary(v) for k, v in timings.items()}
    results["scan_of_messages"] = latency_summary(scans)
    ratio = {
        "stats_all_over_list50_p50": round(
            results["all"]["p50_ms"] / results["list50"]["p50_ms"], 2
        ),
        "stats_month_over_list50_p50": round(
            results["month"]["p50_ms"] / results["list50"]["p50_ms"], 2
        ),
        "stats_all_over_ceiling_p50": round(
            results["all"]["p50_ms"] / results["ceiling"]["p50_ms"], 2
        ),
        "scan_over_stats_all_p50": round(
            results["scan_of_messages"]["p50_ms"] / results["all"]["p50_ms"], 1
        ),
    }
    payload = {
        "benchmark": "stats",
        "command": "python -m benchmarks.stats " + " ".join(argv),
        "machine": machine_facts(),
        "store": facts,
        "build_seconds": built,
        "latency": results,
        "ratios": ratio,
    }
    print(f"store: {facts}")
    print("| call | p50 ms | p99 ms | max ms |\n|---|---|---|---|")
    names = {
        "all": "`stats()` — 90 days",
        "month": "`stats(since=…)` — 30 days",
        "list50": "`list_sessions(limit=50)`",
        "ceiling": "ceiling: the rollup query alone",
        "scan_of_messages": "no rollup: aggregate the messages",
    }
    for key, label in names.items():
        r = results[key]
        print(f"| {label} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    print(ratio)
    name = "stats_quick" if args.quick else "stats"
    print(f"wrote {write_json(name, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
