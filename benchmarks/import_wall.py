"""Where an import's wall time goes beyond its CPU time (docs/benchmarks.md, "Import path").

    python -m benchmarks.import_wall [--messages N] [--rounds R]

Imports benchmarks/transcripts.py's generated transcript into a fresh store and splits the
importing thread's wall time with Linux's ``/proc/thread-self/schedstat``: time on a CPU, time
runnable but waiting for one (the machine's load), and the rest — time blocked (I/O, fsync,
locks). Counts the checkpoints the importer's commits force (sqlite/engine.py,
``CHECKPOINT_FORCE_PAGES``) and the time they take. Writes ``results/import_wall.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sessiondb
from sessiondb.sqlite import engine

from .common import machine_facts, write_json
from .transcripts import generate


def _schedstat() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable and waiting) of the calling thread."""
    fields = Path("/proc/thread-self/schedstat").read_text().split()
    return int(fields[0]) / 1e9, int(fields[1]) / 1e9


def one(src: Path, folder: Path) -> dict[str, float]:
    forced = [0, 0.0]
    real = engine.Engine._force_checkpoint

    def counted(self: Any, conn: Any) -> None:
        began = time.perf_counter()
        real(self, conn)
        forced[0] += 1
        forced[1] += time.perf_counter() - began

    engine.Engine._force_checkpoint = counted  # type: ignore[method-assign]
    try:
        with sessiondb.open(folder / "s.db") as store:
            t0, (cpu0, wait0) = time.perf_counter(), _schedstat()
            n = store.import_jsonl(src, session_id="bench").imported
            wall, (cpu1, wait1) = time.perf_counter() - t0, _schedstat()
    finally:
        engine.Engine._force_checkpoint = real  # type: ignore[method-assign]
    cpu, wait = cpu1 - cpu0, wait1 - wait0
    return {
        "wall_us": wall / n * 1e6,
        "cpu_us": cpu / n * 1e6,
        "runqueue_wait_us": wait / n * 1e6,
        "blocked_us": (wall - cpu - wait) / n * 1e6,
        "forced_checkpoints": forced[0],
        "forced_checkpoint_us": forced[1] / n * 1e6,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.import_wall", description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-import-wall-") as tmp:
        src = Path(tmp) / "transcript.jsonl"
        generate(src, args.messages)
        for i in range(args.rounds):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            rounds.append(one(src, folder))
            print({k: round(v, 2) for k, v in rounds[-1].items()}, flush=True)
    payload = {
        "benchmark": "import_wall",
        "command": "python -m benchmarks.import_wall " + " ".join(argv),
        "machine": machine_facts(),
        "load_average": os.getloadavg(),
        "rounds": rounds,
    }
    print(f"wrote {write_json('import_wall', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
