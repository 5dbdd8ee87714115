"""How much does passing the write queue between processes cost on this machine?

K processes take turns on an flock (the admission lock of sessiondb's engine) with a critical
section that busy-waits ``--hold-us`` microseconds (0 = empty), for ``--seconds``. Reported:
acquisitions per second and the time per acquisition beyond the hold time, i.e. the price of one
hand-over (wake a sleeping process, schedule it on one of the cores). This is the part of a
contended append that a single-process ceiling never pays.

    python -m benchmarks.handoff [--seconds 3] [--hold-us 0,80]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import machine_facts

RESULTS = Path(__file__).parent / "results" / "handoff.json"


def _worker(path: str, hold_s: float, seconds: float, start: Any, out: Any) -> None:
    fd = os.open(path, os.O_RDWR)
    start.wait()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t = time.perf_counter()
        while time.perf_counter() - t < hold_s:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        n += 1
    out.put(n)


def run(k: int, hold_us: float, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "queue.lock")
        open(path, "w").close()
        start, out = ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=(path, hold_us / 1e6, seconds, start, out))
            for _ in range(k)
        ]
        for p in procs:
            p.start()
        time.sleep(1.0)  # let every child finish importing before the clock starts
        start.set()
        counts = [out.get() for _ in procs]
        for p in procs:
            p.join()
    total = sum(counts)
    per = seconds / total * 1e6
    return {
        "k": k,
        "hold_us": hold_us,
        "acquisitions_per_s": round(total / seconds),
        "us_per_acquisition": round(per, 1),
        "handoff_us": round(per - hold_us, 1),
        "min_max_per_process": [min(counts), max(counts)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--hold-us", default="0,80")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    rows = []
    for hold in (float(h) for h in args.hold_us.split(",")):
        for k in (1, 4, 16, 64):
            row = run(k, hold, seconds)
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine_facts(), "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
