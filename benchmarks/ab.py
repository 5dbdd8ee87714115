"""This tree against another checkout of sessiondb, alternately, on the same machine in one run.

    git worktree add ../before c2400fd        # the commit to compare with
    python -m benchmarks.ab ../before --rounds 12

Two workloads, each run as a fresh process per round, this tree and the other in turn (A B A B …)
so that drift of a shared machine hits both alike; reported as the median of the per-round time
ratios this/other (above 1: this tree is slower), with their range:

* **append**: N single appends in one process (the in-process rate: interpreter start-up is not
  in it) — the cost a change adds to the hot path;
* **search**: the search benchmark's 300 queries (``benchmarks/search.py --quick``'s corpus of
  100 000 messages) on two copies of one store built by the *other* tree (an older tree may not
  read a newer schema; a newer tree migrates its copy on open).

Writes ``results/ab.json``. Used for the Store contract's cost (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import machine_facts, write_json

HERE = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("ab_worker.py")


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


def _build_store(tree: Path, dest: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from benchmarks.corpus import Corpus;"
        " from benchmarks.search import load_sessiondb;"
        " load_sessiondb(Path(sys.argv[1]), Corpus(100_000, seed=1), index=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", code, str(dest)], env=env, cwd=tree, check=True)
    import apsw

    conn = apsw.Connection(str(dest))
    conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
    conn.close()


def _summary(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Times of (this, other) per round: the ratio this/other above 1 means this tree is slower."""
    ratios = sorted(a / b for a, b in pairs)
    return {
        "this_median": round(statistics.median(a for a, _ in pairs), 3),
        "other_median": round(statistics.median(b for _, b in pairs), 3),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
        "rounds": [[round(a, 3), round(b, 3)] for a, b in pairs],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    ap.add_argument("other", type=Path, help="another checkout of sessiondb")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--appends", type=int, default=20_000)
    ap.add_argument("--search-rounds", type=int, default=6, help="0: no search workload")
    ap.add_argument(
        "--usage",
        action="store_true",
        help="appends carry model, response id and token usage in meta (the stats rollup's path)",
    )
    ap.add_argument("--name", default="ab", help="results/NAME.json")
    args = ap.parse_args(argv)
    other = args.other.resolve()
    appends: list[tuple[float, float]] = []
    searches: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        base = Path(tmp)
        for i in range(args.rounds):
            pair = []
            for tree in (HERE, other):
                folder = base / f"a{i}-{tree.name}"
                folder.mkdir()
                extra = ["usage"] if args.usage else []
                got = _run(tree, "append", str(args.appends), str(folder), *extra)
                pair.append(got["us_per_append"])
                shutil.rmtree(folder)
            appends.append((pair[0], pair[1]))
            print(f"append round {i + 1}: {pair[0]:.1f} vs {pair[1]:.1f} us", flush=True)
        built = base / "built.db"
        copies = {tree: base / f"search-{n}.db" for n, tree in enumerate((HERE, other))}
        if args.search_rounds:
            print("building the search store with the other tree", flush=True)
            _build_store(other, built)
            for dest in copies.values():
                shutil.copy(built, dest)
        for i in range(args.search_rounds):
            a = _run(HERE, "search", str(copies[HERE]))["p50_ms"]
            b = _run(other, "search", str(copies[other]))["p50_ms"]
            searches.append((a, b))
            print(f"search round {i + 1}: p50 {a:.2f} vs {b:.2f} ms", flush=True)
    payload = {
        "benchmark": "ab",
        "command": "python -m benchmarks.ab " + " ".join(argv),
        "machine": machine_facts(),
        "other": str(other),
        "append_us": _summary(appends),
        "search_p50_ms": _summary(searches) if searches else None,
    }
    print(json.dumps({k: v for k, v in payload.items() if k != "machine"}, indent=2))
    print(f"wrote {write_json(args.name, payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
