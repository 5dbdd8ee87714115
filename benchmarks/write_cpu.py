"""The write path's CPU per message, this tree against another checkout, alternately, in one run
(docs/benchmarks.md, "Write path CPU").

    git worktree add --detach ../before main
    python -m benchmarks.write_cpu ../before --rounds 5

Each round runs every workload once under each tree (A B, then B A the next round, so that the
drift of a shared machine hits both alike), each in a fresh process whose ``PYTHONPATH`` is its
tree (its sessiondb and its benchmarks package):

* ``group``: ``writes.append_group`` called directly with groups of S single-row appends, one
  per session (what S threads appending to their own sessions form; no contention): CPU time
  (``time.thread_time``) and wall time per append inside the group's transaction, 20 warm-up
  groups not counted;
* ``import``: ``import_jsonl`` of a generated transcript (benchmarks/transcripts.py) into a
  fresh store: CPU time of the importing thread per message and messages/s;
* ``threads``: benchmarks/group.py's ``measure`` — 16 and 64 threads and 64 asyncio tasks,
  grouped against the one-transaction-per-append ceiling measured in the same process, p99.

CPU time per message is what the machine's load moves least (a busy machine still inflates it
through shared caches, alike for both trees within a round). Reports per-round ratios
this/other and their median, and writes ``results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
WARMUP = 20


def work_group(size: int, groups: int) -> dict[str, float]:
    import sessiondb
    from benchmarks.common import turn
    from sessiondb.core import writes

    cpu: list[float] = []
    wall: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        store = sessiondb.open(Path(d) / "g.db", group_commit=True)
        backend = store._backend  # type: ignore[attr-defined]
        for g in range(groups + WARMUP):
            requests = [
                writes.append_request(f"s{t}", "user", turn(t, g), None, None, None, None, None)
                for t in range(size)
            ]
            c0, w0 = time.thread_time(), time.perf_counter()
            out = writes.append_group(backend, requests)
            c1, w1 = time.thread_time(), time.perf_counter()
            assert not any(isinstance(x, Exception) for x in out), out
            if g >= WARMUP:
                cpu.append((c1 - c0) / size * 1e6)
                wall.append((w1 - w0) / size * 1e6)
        store.close()
    return {"cpu_us": statistics.median(cpu), "wall_us": statistics.median(wall)}


def work_import(src: str) -> dict[str, float]:
    import sessiondb

    with tempfile.TemporaryDirectory() as d, sessiondb.open(Path(d) / "s.db") as store:
        c0, w0 = time.thread_time(), time.perf_counter()
        n = store.import_jsonl(src, session_id="bench").imported
        c1, w1 = time.thread_time(), time.perf_counter()
    return {"cpu_us": (c1 - c0) / n * 1e6, "msgs_per_s": n / (w1 - w0)}


def work_threads(per_thread: int) -> dict[str, Any]:
    from benchmarks.group import measure

    out: dict[str, Any] = {}
    for threads, tasks in ((16, 64), (64, 0)):
        rows = measure(threads, tasks, per_thread, 1)
        for name, row in rows.items():
            if name.startswith("ceiling") or "ungrouped" in name:
                continue
            label = f"{row['writers']} tasks" if name.startswith("aio") else f"{threads} threads"
            out[label] = {
                "vs_ceiling": row["vs_ceiling_median"],
                "appends_per_s": row["appends_per_s"],
                "p99_ms": row["latency"]["p99_ms"],
            }
    return out


def _run(tree: Path, *args: str) -> Any:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *args]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{tree}: {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def _flat(prefix: str, value: Any) -> dict[str, float]:
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: float(value)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.write_cpu", description=__doc__)
    ap.add_argument("other", nargs="?", help="the other checkout's root")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=31, help="appends per group (group workload)")
    ap.add_argument("--groups", type=int, default=300)
    ap.add_argument("--messages", type=int, default=50_000, help="transcript lines (import)")
    ap.add_argument("--per-thread", type=int, default=40)
    ap.add_argument("--workloads", default="group,import,threads")
    ap.add_argument("--name", default="write_cpu")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "group":
            result: Any = work_group(int(rest[0]), int(rest[1]))
        elif kind == "import":
            result = work_import(rest[0])
        else:
            result = work_threads(int(rest[0]))
        print(json.dumps(result))
        return 0
    if not args.other:
        ap.error("the other checkout is required")
    from benchmarks.common import machine_facts, write_json
    from benchmarks.transcripts import generate

    trees = {"this": HERE, "other": Path(args.other).resolve()}
    workloads = args.workloads.split(",")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-write-cpu-") as tmp:
        src = Path(tmp) / "transcript.jsonl"
        generate(src, args.messages)
        jobs = {
            "group": ("group", str(args.size), str(args.groups)),
            "import": ("import", str(src)),
            "threads": ("threads", str(args.per_thread)),
        }
        for r in range(args.rounds):
            order = ("this", "other") if r % 2 == 0 else ("other", "this")
            got: dict[str, Any] = {"load_before": os.getloadavg()[0]}
            for w in workloads:
                for name in order:
                    got.setdefault(name, {})[w] = _run(trees[name], *jobs[w])
            got["load_after"] = os.getloadavg()[0]
            rounds.append(got)
            print(f"round {r + 1}: {json.dumps(got)}", flush=True)
    summary: dict[str, Any] = {}
    keys = _flat("", rounds[0]["this"]).keys()
    for key in keys:
        this = [_flat("", x["this"])[key] for x in rounds]
        other = [_flat("", x["other"])[key] for x in rounds]
        ratios = [a / b for a, b in zip(this, other, strict=True) if b]
        summary[key] = {
            "this_median": round(statistics.median(this), 2),
            "other_median": round(statistics.median(other), 2),
            "this_over_other_median": round(statistics.median(ratios), 3) if ratios else None,
            "this_over_other_range": [round(min(ratios), 3), round(max(ratios), 3)]
            if ratios
            else None,
        }
        print(
            f"{key:40} this {summary[key]['this_median']:>9}  other"
            f" {summary[key]['other_median']:>9}"
            f"  this/other {summary[key]['this_over_other_median']}"
            f" {summary[key]['this_over_other_range']}"
        )
    payload = {
        "benchmark": "write_cpu",
        "command": "python -m benchmarks.write_cpu " + " ".join(argv or sys.argv[1:]),
        "other": str(trees["other"]),
        "machine": machine_facts(),
        "load": [(x["load_before"], x["load_after"]) for x in rounds],
        "summary": summary,
        "rounds": rounds,
    }
    print(f"wrote {write_json(args.name, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
