"""What a group-commit append costs inside its transaction, this tree against another checkout,
alternately, in one run (docs/benchmarks.md, "Group commit").

    git worktree add ../before b34316d
    python -m benchmarks.group_tx ../before --rounds 4

One thread, no contention: each worker process (a fresh store, ``PYTHONPATH`` = its tree) calls
``writes.append_group`` with groups of S single-row appends, one per session (what T threads
appending to their own sessions form), times each group (20 warm-up groups not counted) and
reports the median and p90 per append. The rounds alternate the trees (A B, then B A). Writes
``results/group_tx.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import machine_facts, write_json

HERE = Path(__file__).resolve().parents[1]
WARMUP = 20


def worker(size: int, groups: int) -> dict[str, float]:
    import tempfile
    import time

    import sessiondb
    from benchmarks.common import turn
    from sessiondb.core import writes

    times: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        store = sessiondb.open(Path(d) / "g.db", group_commit=True)
        backend = store._backend  # type: ignore[attr-defined]
        for g in range(groups + WARMUP):
            requests = [
                writes.append_request(f"s{t}", "user", turn(t, g), None, None, None, None, None)
                for t in range(size)
            ]
            t0 = time.perf_counter()
            out = writes.append_group(backend, requests)
            dt = time.perf_counter() - t0
            assert not any(isinstance(x, Exception) for x in out), out
            if g >= WARMUP:
                times.append(dt / size * 1e6)
        store.close()
    times.sort()
    return {"median_us": statistics.median(times), "p90_us": times[int(len(times) * 0.9)]}


def _run(tree: Path, size: int, groups: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # This file runs as a script against the other tree's sessiondb and benchmarks package.
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(size), str(groups)]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("other", nargs="?", help="the other checkout's root")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sizes", default="8,31")
    ap.add_argument("--groups", type=int, default=200)
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    if not args.other:
        ap.error("the other checkout is required")
    trees = {"this": HERE, "other": Path(args.other).resolve()}
    rows: dict[str, Any] = {}
    for size in (int(x) for x in args.sizes.split(",")):
        runs: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
        for r in range(args.rounds):
            for name in ("this", "other") if r % 2 == 0 else ("other", "this"):
                runs[name].append(_run(trees[name], size, args.groups))
        ratios = [
            a["median_us"] / b["median_us"]
            for a, b in zip(runs["this"], runs["other"], strict=True)
        ]
        per_round = [round(x, 3) for x in ratios]
        rows[str(size)] = {"runs": runs, "this_over_other": per_round}
        print(
            f"S={size:<3} this {[round(x['median_us'], 1) for x in runs['this']]} us/append"
            f"  other {[round(x['median_us'], 1) for x in runs['other']]}"
            f"  this/other median {statistics.median(ratios):.2f} {per_round}",
            flush=True,
        )
    write_json(
        "group_tx",
        {
            "benchmark": "group_tx",
            "command": "python -m benchmarks.group_tx " + " ".join(argv or sys.argv[1:]),
            "other": str(trees["other"]),
            "machine": machine_facts(),
            "groups": args.groups,
            "sizes": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
