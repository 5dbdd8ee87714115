"""Where a grouped append's time goes under many threads (issue 18 item 2): the combiner's own
floor, and how much of a group's transaction the leader spends waiting for the GIL.

    python -m benchmarks.group_floor [--threads 16,64] [--per-thread 150] [--rounds 3]

* ``combiner``: core/group.py's ``Combiner`` alone, T threads calling it, its ``run`` standing
  for a transaction that holds no GIL for ``W`` µs per request (``time.sleep``, as SQLite's C
  code releases the GIL): W = 0 is the machinery's own cost per append; W = 40 is about what
  a single-threaded group transaction costs per append (``benchmarks.group_tx``), so its
  appends/s is the most group commit could reach with a transaction that cheap.
* ``store``: T threads appending to their own sessions through one ``sessiondb.open`` (group
  commit on), each group's transaction (a head's round, sqlite/combine.py) timed in wall time
  and in the leading thread's CPU time (``time.thread_time``): their difference is the time
  the leader was not running inside its own transaction — waiting for the GIL that the other
  threads hold.

Writes ``results/<output>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import machine_facts, turn, write_json


def _threads(count: int, per: int, call: Callable[[int, int], object]) -> tuple[float, float]:
    """Run ``call(thread, i)`` ``per`` times in each of ``count`` threads released at once:
    (wall seconds, process CPU seconds)."""
    go = threading.Barrier(count + 1)

    def work(t: int) -> None:
        go.wait()
        for i in range(per):
            call(t, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(count)]
    for th in threads:
        th.start()
    go.wait()
    began, cpu = time.perf_counter(), time.process_time()
    for th in threads:
        th.join()
    return time.perf_counter() - began, time.process_time() - cpu


def combiner(count: int, per: int, work_us: float) -> dict[str, float]:
    from sessiondb.core.group import Combiner

    def run(requests: list[Any]) -> list[Any]:
        if work_us:
            time.sleep(work_us * len(requests) / 1e6)
        return requests

    comb: Combiner[Any, Any] = Combiner(run, patience=60.0, where="bench")
    wall, cpu = _threads(count, per, lambda t, i: comb.call((t, i)))
    n = count * per
    return {"appends_per_s": n / wall, "cpu_us_per_append": cpu / n * 1e6}


def store(count: int, per: int) -> dict[str, float]:
    import sessiondb
    from sessiondb.sqlite import combine

    inside = {"wall": 0.0, "cpu": 0.0, "groups": 0, "requests": 0}
    real = combine.Combine._round

    def timed(self: Any, own: Any, *args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return real(self, own, *args)
        finally:
            inside["wall"] += time.perf_counter() - wall
            inside["cpu"] += time.thread_time() - cpu
            inside["groups"] += 1
            inside["requests"] += len(own)

    texts = [[turn(t, i) for i in range(per)] for t in range(count)]
    combine.Combine._round = timed  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as d, sessiondb.open(Path(d) / "g.db") as s:
            s.count()
            roles = ("user", "assistant")

            def one(t: int, i: int) -> None:
                s.append(f"s{t}", roles[i % 2], texts[t][i])

            wall, cpu = _threads(count, per, one)
    finally:
        combine.Combine._round = real  # type: ignore[method-assign]
    n = count * per
    return {
        "appends_per_s": n / wall,
        "cpu_us_per_append": cpu / n * 1e6,
        "mean_group": inside["requests"] / inside["groups"],
        "in_transaction_us_per_append": inside["wall"] / n * 1e6,
        "leader_cpu_us_per_append": inside["cpu"] / n * 1e6,
        "leader_waiting_us_per_append": (inside["wall"] - inside["cpu"]) / n * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", default="16,64")
    ap.add_argument("--per-thread", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--output", default="group_floor")
    args = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for count in (int(t) for t in args.threads.split(",")):
            for work in (0.0, 40.0):
                rows.setdefault(f"combiner T={count} W={work:g}", []).append(
                    combiner(count, args.per_thread, work)
                )
            rows.setdefault(f"store T={count}", []).append(store(count, args.per_thread))
    summary = {
        name: {key: statistics.median(r[key]) for key in runs[0]}
        for name, runs in rows.items()
        for r in [{key: [run[key] for run in runs] for key in runs[0]}]
    }
    for name, values in summary.items():
        print(f"{name:24} " + "  ".join(f"{k} {v:.1f}" for k, v in values.items()))
    write_json(
        args.output,
        {
            "benchmark": "group_floor",
            "machine": machine_facts(),
            "per_thread": args.per_thread,
            "rounds": rows,
            "median": summary,
        },
    )


if __name__ == "__main__":
    main()
