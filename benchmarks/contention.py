"""Write contention: K writer processes appending one turn per call, sessiondb vs peers vs ceiling.

For K in {1, 4, 16, 64} spawned writer processes, each appends M turns one call at a time, in two
layouts: ``own`` (each process to its own session) and ``shared`` (all to one session). Every
system runs the same turns (deterministic 200-2000-byte contents) on the same disk, each in a
fresh folder under benchmarks/work/. The ``ceiling`` is one process with one bare apsw connection
doing sessiondb's append SQL for the same K*M turns, one transaction per turn.

Per system/K/layout: appends/s (start barrier to last completion), per-call latency p50/p99/max
(all calls pooled), errors per exception type, and, read back after the run, lost (returned but
not stored) and duplicated turns. A separate time-boxed run measures fairness: completions per
process (min/max) when every process appends as fast as it can for T seconds.

Workers are spawned once per system (importing a peer costs up to ~1 s of CPU per process, which
would otherwise dominate a 2-core machine) and each run opens a fresh instance in every worker.

    python -m benchmarks.contention [--quick] [--systems a,b] [--ks 1,4] [--layouts own]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.common import (
    fresh_dir,
    latency_summary,
    machine_facts,
    parse_marker,
    role_for,
    turn,
    write_json,
)

KS = (1, 4, 16, 64)
LAYOUTS = ("own", "shared")
ORDER = (peers.CEILING, *peers.SYSTEMS)
# Targets (docs/benchmarks.md, "Write contention"), evaluated (never asserted) on the ratios.
TARGET_CEILING_RATIO = 0.75
TARGET_HERMES_RATIO = 2.5
TARGET_MAX_MS = {16: 250.0, 64: 500.0}
REPEAT_BUDGET_S = 5.0


@dataclass
class Task:
    system: str
    folder: str
    # (logical writer id, session id) pairs this process appends to, round robin; one pair for a
    # writer process, K pairs for the ceiling's single process.
    streams: list[tuple[int, str]]
    m: int | None  # turns per stream; None = time-boxed (until the stop event)


@dataclass
class WorkerResult:
    wid: int
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[int, int]] = field(default_factory=list)
    t_end: float = 0.0
    trace: str | None = None


def session_name(layout: str, writer: int) -> str:
    return "bench-shared" if layout == "shared" else f"bench-own-w{writer}"


def _run_task(wid: int, task: Task, results: Any, start: Event, stop: Event) -> WorkerResult:
    res = WorkerResult(wid)
    errors: Counter[str] = Counter()
    # Contents are generated before the barrier so the timed loop only measures the store.
    contents: dict[int, list[str]] = {}
    if task.m is not None:
        contents = {w: [turn(w, i) for i in range(task.m)] for w, _ in task.streams}
    adapter = peers.make(task.system)
    opened = False
    try:
        adapter.open(Path(task.folder))
        for sid in dict.fromkeys(s for _, s in task.streams):
            adapter.prepare(sid)
        opened = True
    except Exception as exc:
        errors[f"open:{type(exc).__qualname__}"] += 1
        res.trace = traceback.format_exc()
    results.put(("ready", wid, None))
    start.wait()
    i = 0
    while opened and (task.m is None or i < task.m) and not stop.is_set():
        for w, sid in task.streams:
            content = contents[w][i] if task.m is not None else turn(w, i)
            t0 = time.perf_counter()
            try:
                adapter.append(sid, role_for(i), content)
                res.ok += 1
            except Exception as exc:
                errors[type(exc).__qualname__] += 1
                res.failed.append((w, i))
                if res.trace is None:
                    res.trace = traceback.format_exc()
            res.latencies.append(time.perf_counter() - t0)
        i += 1
    res.t_end = time.monotonic()
    try:
        if opened:
            adapter.close()
    except Exception as exc:
        errors[f"close:{type(exc).__qualname__}"] += 1
    res.errors = dict(errors)
    return res


def _worker_main(wid: int, tasks: Any, results: Any, start: Event, stop: Event) -> None:
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put(("done", wid, _run_task(wid, task, results, start, stop)))


class Pool:
    """n spawned writer processes, reused for every run of one system."""

    def __init__(self, n: int) -> None:
        ctx = mp.get_context("spawn")
        self.results: Any = ctx.Queue()
        self.start_evt = ctx.Event()
        self.stop_evt = ctx.Event()
        self.queues: list[Any] = [ctx.Queue() for _ in range(n)]
        self.procs = [
            ctx.Process(
                target=_worker_main,
                args=(w, self.queues[w], self.results, self.start_evt, self.stop_evt),
                daemon=True,
            )
            for w in range(n)
        ]
        for p in self.procs:
            p.start()

    def _get(self, deadline: float) -> tuple[str, int, Any]:
        while True:
            try:
                msg: tuple[str, int, Any] = self.results.get(timeout=0.5)
                return msg
            except queue.Empty:
                dead = [w for w, p in enumerate(self.procs) if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"writer process(es) {dead} died") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("writers did not answer in time") from None

    def run(
        self, tasks: list[Task], *, seconds: float | None, cap: float
    ) -> tuple[float, list[WorkerResult], bool]:
        """Dispatch, wait until all are ready, release them together, collect."""
        self.start_evt.clear()
        self.stop_evt.clear()
        for w, task in enumerate(tasks):
            self.queues[w].put(task)
        ready = 0
        while ready < len(tasks):
            kind, _, _ = self._get(time.monotonic() + 300)
            ready += kind == "ready"
        t0 = time.monotonic()
        self.start_evt.set()
        truncated = False
        if seconds is not None:
            time.sleep(seconds)
            self.stop_evt.set()
        done: list[WorkerResult] = []
        while len(done) < len(tasks):
            try:
                _, _, res = self._get(min(t0 + cap, time.monotonic() + 0.5))
                done.append(res)
            except TimeoutError:
                if time.monotonic() > t0 + cap and not self.stop_evt.is_set():
                    # A run that exceeds its cap is stopped and reported as truncated.
                    truncated = seconds is None
                    self.stop_evt.set()
                if time.monotonic() > t0 + cap + 300:
                    raise
        self.start_evt.clear()
        return t0, done, truncated

    def close(self) -> None:
        for q in self.queues:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


def _tasks(system: str, folder: Path, k: int, layout: str, m: int | None) -> list[Task]:
    streams = [(w, session_name(layout, w)) for w in range(k)]
    if system == peers.CEILING:
        return [Task(system, str(folder), streams, m)]
    return [Task(system, str(folder), [s], m) for s in streams]


def verify(
    system: str, folder: Path, k: int, layout: str, results: list[WorkerResult]
) -> dict[str, int]:
    """Read every session back and compare the stored markers with the returned appends."""
    failed = {tuple(f) for r in results for f in r.failed}
    adapter = peers.make(system)
    adapter.open(folder)
    try:
        stored: Counter[tuple[int, int]] = Counter()
        unmarked = 0
        for sid in dict.fromkeys(session_name(layout, w) for w in range(k)):
            for content in adapter.contents(sid):
                key = parse_marker(content)
                if key is None:
                    unmarked += 1
                else:
                    stored[key] += 1
    finally:
        adapter.close()
    attempted = {(w, i) for w, i in stored} | failed
    returned_ok = sum(r.ok for r in results)
    present_ok = sum(1 for key in stored if key not in failed)
    return {
        "stored": sum(stored.values()) + unmarked,
        # Appends that returned successfully but are not in the store.
        "lost": returned_ok - present_ok,
        "duplicates": sum(c - 1 for c in stored.values() if c > 1) + unmarked,
        # Appends that raised but were stored anyway (not an error by themselves).
        "stored_after_error": sum(1 for key in failed if key in stored),
        "attempted": len(attempted),
    }


def _merge_errors(results: list[WorkerResult]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for r in results:
        total.update(r.errors)
    return dict(total)


def _fresh_store(system: str, name: str) -> Path:
    """A fresh folder whose store already exists, as it does when agent processes start.

    Creating it here, once, keeps first-open races out of the append figures: langchain's
    SQLChatMessageHistory runs a check-then-CREATE TABLE that fails with "table message_store
    already exists", and openai-agents' SQLiteSession gets "database is locked" from its
    ``PRAGMA journal_mode=WAL``, when 16 processes create a new file at the same moment (both
    seen while developing this benchmark). Those peers create their file on first use of a
    session, hence the prepare() of a session no run reads.
    """
    folder = fresh_dir("contention", system, name)
    adapter = peers.make(system)
    adapter.open(folder)
    adapter.prepare("bench-init")
    adapter.close()
    return folder


def measure(pool: Pool, system: str, k: int, layout: str, m: int, cap: float) -> dict[str, Any]:
    folder = _fresh_store(system, f"k{k}-{layout}")
    t0, results, truncated = pool.run(_tasks(system, folder, k, layout, m), seconds=None, cap=cap)
    ok = sum(r.ok for r in results)
    elapsed = max(r.t_end for r in results) - t0
    row: dict[str, Any] = {
        "system": system,
        "k": k,
        "layout": layout,
        "m": m,
        "processes": len(results),
        "appends": ok,
        "seconds": round(elapsed, 3),
        "appends_per_s": round(ok / elapsed, 1) if elapsed > 0 else math.nan,
        "latency": latency_summary(x for r in results for x in r.latencies),
        "errors": _merge_errors(results),
        "truncated": truncated,
    }
    row.update(verify(system, folder, k, layout, results))
    traces = [r.trace for r in results if r.trace]
    if traces:
        row["first_error_trace"] = traces[0]
    return row


def fairness(pool: Pool, system: str, k: int, layout: str, seconds: float) -> dict[str, Any]:
    folder = _fresh_store(system, f"k{k}-{layout}-fair")
    t0, results, _ = pool.run(
        _tasks(system, folder, k, layout, None), seconds=seconds, cap=seconds + 120
    )
    # A process that could not even open the store is counted as an error, not as a starved
    # writer: fairness is about the processes that were competing.
    opened = [r for r in results if not any(e.startswith("open:") for e in r.errors)]
    completions = sorted(r.ok for r in opened) or [0]
    elapsed = max(r.t_end for r in results) - t0
    traces = [r.trace for r in results if r.trace]
    return {
        "system": system,
        "k": k,
        "layout": layout,
        "seconds": round(elapsed, 3),
        "min_completions": completions[0],
        "max_completions": completions[-1],
        "min_over_max": round(completions[0] / completions[-1], 3) if completions[-1] else 0.0,
        "appends_per_s": round(sum(completions) / elapsed, 1) if elapsed > 0 else math.nan,
        "latency": latency_summary(x for r in results for x in r.latencies),
        "errors": _merge_errors(results),
        "open_failures": len(results) - len(opened),
        **({"first_error_trace": traces[0]} if traces else {}),
    }


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["system"], r["k"], r["layout"]): r for r in rows}
    out = []
    for (system, k, layout), row in by.items():
        if system != "sessiondb":
            continue
        entry: dict[str, Any] = {"k": k, "layout": layout}
        ceiling = by.get((peers.CEILING, k, layout))
        hermes = by.get(("hermes", k, layout))
        if ceiling:
            entry["vs_ceiling"] = round(row["appends_per_s"] / ceiling["appends_per_s"], 3)
        if hermes:
            entry["vs_hermes"] = round(row["appends_per_s"] / hermes["appends_per_s"], 3)
        if k in TARGET_MAX_MS:
            entry["targets_met"] = {
                "no_errors_lost_dups": not row["errors"]
                and row["lost"] == 0
                and row["duplicates"] == 0,
                "ceiling_ratio": entry.get("vs_ceiling", 0) >= TARGET_CEILING_RATIO,
                "hermes_ratio": entry.get("vs_hermes", 0) >= TARGET_HERMES_RATIO,
                "max_latency": row["latency"]["max_ms"] <= TARGET_MAX_MS[k],
            }
        out.append(entry)
    return out


def table(rows: list[dict[str, Any]], fair: list[dict[str, Any]]) -> str:
    """The Markdown table docs/benchmarks.md shows."""
    fair_by = {(f["system"], f["k"], f["layout"]): f for f in fair}
    lines = [
        "| layout | K | system | appends/s | p50 ms | p99 ms | max ms | errors | lost | dups |"
        " fairness min/max |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["layout"], r["k"], ORDER.index(r["system"]))):
        f = fair_by.get((r["system"], r["k"], r["layout"]))
        lat = r["latency"]
        errs = sum(r["errors"].values())
        fair_txt = f"{f['min_completions']}/{f['max_completions']}" if f else "-"
        lines.append(
            f"| {r['layout']} | {r['k']} | {r['system']}{' (truncated)' if r['truncated'] else ''}"
            f" | {r['appends_per_s']:.0f} | {lat['p50_ms']:.1f} | {lat['p99_ms']:.1f}"
            f" | {lat['max_ms']:.1f} | {errs} | {r['lost']} | {r['duplicates']} | {fair_txt} |"
        )
    return "\n".join(lines)


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run: K<=16, fewer turns")
    ap.add_argument("--systems", default=",".join(ORDER), help="comma-separated subset")
    ap.add_argument("--ks", default=None, help="comma-separated K values")
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--total", type=int, default=None, help="turns per run (M = total / K)")
    ap.add_argument("--fair-seconds", type=float, default=None)
    ap.add_argument("--cap", type=float, default=None, help="seconds before a run is stopped")
    ap.add_argument("--output", default="contention", help="results/<output>.json")
    ap.add_argument(
        "--durability",
        choices=("normal", "full"),
        default="normal",
        help="sessiondb's durability and the ceiling's synchronous (full: an fsync per commit)",
    )
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    os.environ["SESSIONDB_BENCH_DURABILITY"] = args.durability  # read by peers.py in workers
    ks = [int(x) for x in args.ks.split(",")] if args.ks else ([1, 4, 16] if args.quick else KS)
    total = args.total or (480 if args.quick else 3200)
    fair_s = args.fair_seconds or (1.0 if args.quick else 3.0)
    cap = args.cap or (30.0 if args.quick else 90.0)
    layouts = [x for x in args.layouts.split(",") if x]
    systems = [s for s in ORDER if s in args.systems.split(",")]
    rows: list[dict[str, Any]] = []
    fair: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for system in systems:
        why = peers.available(system)
        if why:
            print(f"skip {system}: {why}", flush=True)
            skipped[system] = why
            continue
        pool = Pool(1 if system == peers.CEILING else max(ks))
        try:
            for k in ks:
                m = max(20, math.ceil(total / k))
                for layout in layouts:
                    # A run shorter than a few seconds is moved a lot by one scheduling hiccup
                    # on a shared 2-core machine: repeat short runs (up to 3, while they add up
                    # to under REPEAT_BUDGET_S) and keep the median; long runs count once.
                    tries = [measure(pool, system, k, layout, m, cap)]
                    while len(tries) < 3 and sum(t["seconds"] for t in tries) < REPEAT_BUDGET_S:
                        tries.append(measure(pool, system, k, layout, m, cap))
                    tries.sort(key=lambda r: r["appends_per_s"])
                    row = tries[len(tries) // 2]
                    row["tries_appends_per_s"] = [t["appends_per_s"] for t in tries]
                    # Correctness counts from every try, not only the median one.
                    row["lost_all_tries"] = sum(t["lost"] for t in tries)
                    row["duplicates_all_tries"] = sum(t["duplicates"] for t in tries)
                    row["errors_all_tries"] = dict(
                        sum((Counter(t["errors"]) for t in tries), Counter())
                    )
                    rows.append(row)
                    lat = row["latency"]
                    print(
                        f"{system:14} K={k:<3} {layout:6} {row['appends_per_s']:>8.0f}/s"
                        f" p50={lat['p50_ms']:.1f} p99={lat['p99_ms']:.1f}"
                        f" max={lat['max_ms']:.1f} ms errors={row['errors']} lost={row['lost']}"
                        f" dups={row['duplicates']}{' TRUNCATED' if row['truncated'] else ''}",
                        flush=True,
                    )
                    if system != peers.CEILING and k > 1:
                        f = fairness(pool, system, k, layout, fair_s)
                        fair.append(f)
                        print(
                            f"{'':14} fairness {fair_s:.0f}s: min={f['min_completions']}"
                            f" max={f['max_completions']} errors={f['errors']}",
                            flush=True,
                        )
        finally:
            pool.close()
    payload = {
        "benchmark": "contention",
        "command": "python -m benchmarks.contention " + " ".join(argv),
        "machine": machine_facts(),
        "config": {
            "ks": ks,
            "layouts": layouts,
            "turns_per_run": total,
            "fairness_seconds": fair_s,
            "cap_seconds": cap,
            "quick": args.quick,
            "durability": args.durability,
        },
        "skipped": skipped,
        "runs": rows,
        "fairness": fair,
        "sessiondb_ratios": _ratios(rows),
    }
    dest = write_json(args.output, payload)
    print(table(rows, fair))
    print(f"wrote {dest}")
    bad = [
        r
        for r in rows
        if r["system"] == "sessiondb" and (r["lost_all_tries"] or r["duplicates_all_tries"])
    ]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
