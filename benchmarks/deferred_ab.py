"""The deferred search index (docs/adr/0016) against another checkout, alternately, in one run.

    git worktree add --detach ../main-tree main
    python -m benchmarks.deferred_ab ../main-tree --rounds 2

Each round runs, for this tree and the other in turn (the order flips every round, so that drift
of a shared machine hits both alike), each as fresh processes of that tree:

* **contention**: ``benchmarks/contention.py --systems ceiling,sessiondb --ks 16,64 --layouts
  own`` — appends/s, latency and fairness at K writer processes, and the ceiling (one bare
  connection running sessiondb's append SQL on a file that tree created, so with that tree's
  triggers) in the same run;
* **cpu**: N single appends in one process, CPU time (user + system) per append — what an
  append costs, insensitive to how loaded the machine is;
* **search**: the search benchmark's 300 queries on a copy of one 100 000-message store (built
  by the other tree) after 63 more appends: on this tree those stay in the deferred index's
  backlog (below its bound of 64), so every query also scans them; then, on this tree, the
  same queries once the backlog is indexed.

Also records the machine's load average before and after each workload. Writes
``results/NAME.json``.
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

_CPU = r"""
import json, os, sys, time
import sessiondb
n, folder = int(sys.argv[1]), sys.argv[2]
store = sessiondb.open(os.path.join(folder, "s.db"))
text = "retry policy with exponential backoff " * 13
for i in range(200):
    store.append("warm", "user", text)
c0, t0 = time.process_time(), time.perf_counter()
for i in range(n):
    store.append(f"s{i % 4}", "user" if i % 2 else "assistant", f"{i} {text}")
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
store.close()
print(json.dumps({"cpu_us_per_append": cpu / n * 1e6, "wall_us_per_append": wall / n * 1e6}))
"""

_SEARCH = r"""
import json, statistics, sys, time
import sessiondb
from benchmarks.corpus import Corpus
path, catch_up = sys.argv[1], sys.argv[2] == "1"
corpus = Corpus(100_000, seed=1)
queries = corpus.queries(300)
extra = Corpus(2_000, seed=7)
texts = [m for _, (_, _, msgs) in zip(range(5), extra.sessions()) for m in msgs][:63]
out = {}
with sessiondb.open(path) as store:
    for role, content in texts:
        store.append("backlog", role, content)
    def run():
        for q in queries[:30]:
            store.search(q.text, limit=20, context=2)
        lat = []
        for q in queries:
            t0 = time.perf_counter()
            store.search(q.text, limit=20, context=2)
            lat.append((time.perf_counter() - t0) * 1000)
        lat.sort()
        return {"p50_ms": statistics.median(lat), "p99_ms": lat[int(len(lat) * 0.99)]}
    try:
        from sessiondb.sqlite import deferred
        from tests.helpers import engine_of
        with engine_of(store).read() as conn:
            done = deferred.backlog(conn)
            out["backlog_rows"] = conn.execute(
                "SELECT count(*) FROM messages WHERE id > ?", (done,)).get
    except ImportError:
        deferred = None
        out["backlog_rows"] = 0
    out["with_backlog"] = run()
    if catch_up and deferred is not None:
        with engine_of(store).write() as conn:
            deferred.finish(conn)
        out["caught_up"] = run()
print(json.dumps(out))
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _py(tree: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, *args], env=env, cwd=tree, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {args[:3]} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _contention(tree: Path, name: str, total: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [sys.executable, "-m", "benchmarks.contention", "--systems", "ceiling,sessiondb"]
    args += ["--ks", "16,64", "--layouts", "own", "--total", str(total), "--output", name]
    subprocess.run(args, env=env, cwd=tree, check=True, capture_output=True, text=True)
    dest = tree / "benchmarks" / "results" / f"{name}.json"
    payload: dict[str, Any] = json.loads(dest.read_text())
    dest.unlink()
    keep = ("system", "k", "appends_per_s", "latency", "errors", "lost", "duplicates")
    fair = {(f["system"], f["k"]): f["min_over_max"] for f in payload["fairness"]}
    rows = [
        {**{k: r[k] for k in keep}, "fairness": fair.get((r["system"], r["k"]))}
        for r in payload["runs"]
    ]
    return {"rows": rows, "ratios": payload.get("sessiondb_ratios")}


def _build_store(tree: Path, dest: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from benchmarks.corpus import Corpus;"
        " from benchmarks.search import load_sessiondb;"
        " load_sessiondb(Path(sys.argv[1]), Corpus(100_000, seed=1), index=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", code, str(dest)], env=env, cwd=tree, check=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.deferred_ab", description=__doc__)
    ap.add_argument("other", type=Path, help="another checkout of sessiondb")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--appends", type=int, default=4000, help="cpu workload")
    ap.add_argument("--total", type=int, default=3200, help="contention: turns per run")
    ap.add_argument("--skip", default="", help="comma-separated workloads to leave out")
    ap.add_argument("--name", default="deferred_ab", help="results/NAME.json")
    args = ap.parse_args(argv)
    other = args.other.resolve()
    trees = {"this": HERE, "other": other}
    skip = set(filter(None, args.skip.split(",")))
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("SESSIONDB_AB_TMP")) as work:
        base = Path(work) / "base.db"
        if "search" not in skip:
            _build_store(other, base)
        for r in range(args.rounds):
            order = ["this", "other"] if r % 2 == 0 else ["other", "this"]
            entry: dict[str, Any] = {"order": order}
            for label in order:
                tree = trees[label]
                got: dict[str, Any] = {"load_before": _load()}
                if "cpu" not in skip:
                    folder = Path(work) / f"cpu-{label}-{r}"
                    folder.mkdir()
                    got["cpu"] = _py(tree, "-c", _CPU, str(args.appends), str(folder))
                    shutil.rmtree(folder)
                if "search" not in skip:
                    copy = Path(work) / f"search-{label}-{r}.db"
                    shutil.copy(base, copy)
                    got["search"] = _py(tree, "-c", _SEARCH, str(copy), "1")
                    copy.unlink()
                if "contention" not in skip:
                    got["contention"] = _contention(tree, f"_deferred_ab_{label}", args.total)
                got["load_after"] = _load()
                entry[label] = got
                print(f"round {r} {label}: {json.dumps(got)[:600]}", flush=True)
            rounds.append(entry)
    summary: dict[str, Any] = {}
    if "cpu" not in skip:
        summary["cpu_us_per_append"] = {
            label: statistics.median(e[label]["cpu"]["cpu_us_per_append"] for e in rounds)
            for label in trees
        }
    payload = {
        "machine": machine_facts(),
        "other": str(other),
        "rounds": rounds,
        "summary": summary,
    }
    dest = write_json(args.name, payload)
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
