"""The set-based search index (docs/adr/0010) against another checkout, alternately, in one run.

    git worktree add ../before e8459f7
    python -m benchmarks.index_ab ../before --rounds 3

Each round runs every workload once under this tree and once under the other (A B, then B A the
next round, so that drift of a shared machine hits both alike), each in a fresh process:

* ``many``: ``append_many`` of 500 messages (20 000 in all);
* ``import``: ``import_jsonl`` of a 100 000-line transcript (benchmarks/transcripts.py's file)
  into a fresh store, its peak RSS, then 500 single appends right after it against 500 on a
  fresh store (the merge work a large import leaves behind);
* ``live``: the same import while 8 live writers append every 5 ms (their p50/p99/max).

The one-append and search rows come from benchmarks/ab.py; contention from
benchmarks/contention.py. Reports medians and ranges of this/other per workload and writes
``results/index_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import machine_facts, write_json
from .transcripts import generate

HERE = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("index_ab_worker.py")


def _run(tree: Path, *args: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(WORKER), *args],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _summary(rows: list[tuple[dict[str, float], dict[str, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in rows[0][0]:
        this = [a[key] for a, _ in rows]
        other = [b[key] for _, b in rows]
        ratios = sorted(a / b for a, b in zip(this, other, strict=True))
        out[key] = {
            "this_median": round(statistics.median(this), 2),
            "other_median": round(statistics.median(other), 2),
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
            "rounds": [[round(a, 2), round(b, 2)] for a, b in zip(this, other, strict=True)],
        }
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.index_ab", description=__doc__)
    ap.add_argument("other", type=Path, help="another checkout of sessiondb")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=100_000, help="lines of the transcript")
    ap.add_argument("--workloads", default="many,import,live")
    ap.add_argument("--name", default="index_ab", help="results/NAME.json")
    args = ap.parse_args(argv)
    other = args.other.resolve()
    workloads = args.workloads.split(",")
    got: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {w: [] for w in workloads}
    with tempfile.TemporaryDirectory(prefix="bench-index-ab-") as tmp:
        base = Path(tmp)
        src = base / "transcript.jsonl"
        generate(src, args.messages)
        for i in range(args.rounds):
            trees = (HERE, other) if i % 2 == 0 else (other, HERE)
            for w in workloads:
                pair: dict[Path, dict[str, float]] = {}
                for n, tree in enumerate(trees):
                    folder = base / f"{w}-{i}-{n}"
                    folder.mkdir()
                    if w == "many":
                        pair[tree] = _run(tree, "many", "20000", "500", str(folder))
                    else:
                        pair[tree] = _run(tree, w, str(folder / "s.db"), str(src))
                got[w].append((pair[HERE], pair[other]))
                print(f"round {i + 1} {w}: this {pair[HERE]} other {pair[other]}", flush=True)
    payload = {
        "benchmark": "index_ab",
        "command": "python -m benchmarks.index_ab " + " ".join(argv),
        "machine": machine_facts(),
        "load_average": os.getloadavg(),
        "other": str(other),
        **{w: _summary(rows) for w, rows in got.items()},
    }
    print(json.dumps({k: v for k, v in payload.items() if k != "machine"}, indent=2))
    print(f"wrote {write_json(args.name, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
