"""Retention: ``store.prune()`` of most of a large store while live writers append.

The store: N messages (default 1 000 000) in sessions of 50, realistic 200–2 000-byte turns
(``benchmarks.common.turn``) with the search index, 90 % of the sessions last active 60 days
ago and 10 % today; built once and cached under benchmarks/work/prune/, copied for each run.

In one run, on the copy:

1. K writer processes (default 4) append to their own sessions with a pause of
   ``--writer-interval`` between calls, like live agents: first for ``--baseline`` seconds with
   no prune (the baseline), then while ``store.prune(older_than=30 days)`` removes 90 % of the
   store and gives the space back. Their append latency p50/p99/max in both windows is the
   figure that matters, against the mixed benchmark's bound (p99 ≤ 50 ms).
2. The prune's own write transactions are timed from ``BEGIN IMMEDIATE`` to ``COMMIT``: the
   write lock it holds at once, by phase (remove + purge, incremental vacuum).
3. The file's size before, after the removal, and after the space came back.
4. Afterwards, writers stopped, the alternatives ADR 0006 weighed, on the pruned store:
   ``VACUUM INTO`` a copy (what a copy-and-swap would cost before its swap) and
   ``store.compact()`` (what ``--compact`` does — the search index merged whole, then
   ``VACUUM`` — the write lock held for all of it); ``store.info()``'s space split (a walk
   over the file) timed on the full store.
5. The append cost of incremental auto-vacuum: one process appending to a fresh file with and
   without it, alternately.
6. With ``--trace``: a timeline of every live append, every prune transaction and every
   checkpoint in any process, and the WAL's frames sampled every 5 ms (benchmarks/prune_trace.py),
   summarised as where the slow appends' time went; the raw timeline goes to
   benchmarks/work/prune/trace.json.

    python -m benchmarks.prune [--quick] [--messages N] [--writers K] [--baseline S] [--trace]
        [--no-alternatives]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import apsw

import sessiondb
from benchmarks import prune_trace
from benchmarks.common import WORK_DIR, latency_summary, machine_facts, role_for, turn, write_json
from sessiondb.sqlite.engine import Engine

DAY = 86400
PER_SESSION = 50
TARGET_P99_MS = 50.0  # the mixed benchmark's bound (docs/benchmarks.md, "Mixed workload")


def build(path: Path, n: int) -> float:
    """The store described above; returns seconds taken."""
    t0 = time.perf_counter()
    now = time.time()
    with sessiondb.open(path) as store:
        for s in range(n // PER_SESSION):
            at = now - 3600 if s % 10 == 9 else now - 60 * DAY
            sid = f"s{s:07d}"
            store.ensure_session(sid, source=("cli", "gateway", "editor")[s % 3], created_at=at)
            store.append_many(
                sid,
                [
                    {"role": role_for(i), "content": turn(s, i), "created_at": at + i}
                    for i in range(PER_SESSION)
                ],
            )
    return time.perf_counter() - t0


def _writer(wid: int, path: str, interval: float, stop: Event, out: Any, trace: bool) -> None:
    try:
        rec = prune_trace.Recorder().install() if trace else None
        if rec is not None:
            rec.label = "append"
        store = sessiondb.open(path)
        samples: list[tuple[float, float]] = []
        errors = 0
        i = 0
        out.put(("ready", wid, None))
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                store.append(f"live-{wid}", role_for(i), turn(50_000 + wid, i))
            except sessiondb.Error:
                errors += 1
            samples.append((t0, time.monotonic() - t0))
            i += 1
            stop.wait(interval)
        store.close()
        events = rec.events if rec is not None else []
        out.put(
            (
                "done",
                wid,
                {"samples": samples, "errors": errors, "appended": i - errors, "events": events},
            )
        )
    except BaseException:
        out.put(("failed", wid, traceback.format_exc()))


class _Holds:
    """The prune's write transactions, timed from BEGIN IMMEDIATE to COMMIT, by phase."""

    def __init__(self) -> None:
        self.phase = "remove"
        self.by_phase: dict[str, list[float]] = {}
        self._original = Engine.write

    @contextlib.contextmanager
    def _timed(self, engine: Engine) -> Iterator[apsw.Connection]:
        with self._original(engine) as conn:
            t0 = time.perf_counter()
            yield conn
        self.by_phase.setdefault(self.phase, []).append(time.perf_counter() - t0)

    def __enter__(self) -> _Holds:
        holds = self

        def write(engine: Engine) -> Any:
            return holds._timed(engine)

        Engine.write = write  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        Engine.write = self._original  # type: ignore[method-assign]


def _size(path: Path) -> int:
    return os.stat(path).st_size


def _window(samples: list[tuple[float, float]], lo: float, hi: float) -> list[float]:
    return [lat for t0, lat in samples if lo <= t0 < hi]


def _alternatives(path: Path) -> dict[str, Any]:
    """On the pruned store (no writers): VACUUM INTO a copy, timed; then ``compact()`` — the
    index merged whole and VACUUM, every writer waiting for all of it — timed, with the split
    before and after."""
    out: dict[str, Any] = {}
    copy = path.with_name("vacuum-into.db")
    copy.unlink(missing_ok=True)
    conn = apsw.Connection(str(path))
    t0 = time.perf_counter()
    conn.execute("VACUUM INTO ?", (str(copy),))
    out["vacuum_into_s"] = round(time.perf_counter() - t0, 3)
    out["vacuum_into_bytes"] = _size(copy)
    copy.unlink()
    conn.close()
    with sessiondb.open(path) as store:
        out["split_before_compact"] = store.info()["space"]
        t0 = time.perf_counter()
        out["compact_freed_bytes"] = store.compact()
        out["compact_s"] = round(time.perf_counter() - t0, 3)
        out["split_after_compact"] = store.info()["space"]
    out["compact_bytes"] = _size(path)
    return out


def _append_cost(folder: Path, n: int) -> dict[str, Any]:
    """One process appending to a fresh file with and without incremental auto-vacuum."""
    paths = {"incremental": folder / "av-incremental.db", "none": folder / "av-none.db"}
    stores = {}
    for name, p in paths.items():
        sessiondb.open(p).close()
        if name == "none":
            conn = apsw.Connection(str(p))
            conn.execute("PRAGMA auto_vacuum=NONE; VACUUM")
            conn.close()
        stores[name] = sessiondb.open(p)
    lat: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(n):
        for name, store in stores.items():  # alternately: the same noise for both
            content = turn(90_000, i)
            t0 = time.perf_counter()
            store.append(f"s{i // 200}", role_for(i), content)
            lat[name].append(time.perf_counter() - t0)
    for store in stores.values():
        store.close()
    summary = {k: latency_summary(v) for k, v in lat.items()}
    summary["p50_ratio_incremental_over_none"] = round(
        float(summary["incremental"]["p50_ms"]) / float(summary["none"]["p50_ms"]), 3
    )
    return summary


def _run(path: Path, writers: int, interval: float, baseline: float, trace: bool) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(k, str(path), interval, stop, out, trace))
        for k in range(writers)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        kind, wid, payload = out.get(timeout=120)
        if kind != "ready":
            raise RuntimeError(f"writer {wid}: {payload}")
    sampler = None
    if trace:
        sampler = ctx.Process(target=prune_trace.sample, args=(str(path), stop, out))
        sampler.start()
    rec = prune_trace.Recorder().install() if trace else None
    t_base = time.monotonic()
    time.sleep(baseline)
    sizes: dict[str, int] = {"before": _size(path)}
    marks: dict[str, float] = {}

    with sessiondb.open(path) as store, _Holds() as holds:

        def progress(phase: str, done: int, total: int) -> None:
            if phase == "reclaim" and "reclaim" not in marks:
                marks["reclaim"] = time.monotonic()
                sizes["after_removal"] = _size(path)
                holds.phase = "vacuum"
                if rec is not None:
                    rec.label = "vacuum"

        if rec is not None:
            rec.label = "prune"
        t_prune = time.monotonic()
        report = store.prune(older_than=timedelta(days=30), progress=progress)
        t_end = time.monotonic()
    if rec is not None:
        rec.uninstall()
    sizes["after_space_back"] = _size(path)
    time.sleep(min(baseline, 3.0))  # the writers a moment after, too
    stop.set()
    results = []
    wal_samples: list[tuple[float, ...]] = []
    for _ in range(len(procs) + (sampler is not None)):
        kind, wid, payload = out.get(timeout=120)
        if kind == "samples":
            wal_samples = payload
        elif kind != "done":
            raise RuntimeError(f"writer {wid}: {payload}")
        else:
            results.append(payload)
    for p in [*procs, *([sampler] if sampler is not None else [])]:
        p.join()
    samples = [s for r in results for s in r["samples"]]
    traced: dict[str, Any] = {}
    if rec is not None:
        events = [e for r in results for e in r["events"]]
        appends = [e for e in events if e[0] == "append"]
        others = [e for e in events if e[0] != "append"] + rec.events
        traced = {
            "trace": {
                "baseline_no_prune": prune_trace.explain(
                    appends, others, wal_samples, (t_base, t_prune), TARGET_P99_MS / 1000
                ),
                "during_prune": prune_trace.explain(
                    appends, others, wal_samples, (t_prune, t_end), TARGET_P99_MS / 1000
                ),
            }
        }
        raw = WORK_DIR / "prune" / "trace.json"
        raw.write_text(
            json.dumps(
                {
                    "window": [t_base, t_prune, t_end],
                    "events": appends + others,
                    "samples": wal_samples,
                }
            )
        )
        print(f"raw trace: {raw}", flush=True)
    return {
        "removed": {
            "sessions": len(report.sessions),
            "messages": report.messages,
            "text_bytes": report.bytes,
            "freed_bytes": report.freed,
            "kept": report.kept,
        },
        "seconds": {
            "prune_total": round(t_end - t_prune, 2),
            "remove_and_purge": round(marks.get("reclaim", t_end) - t_prune, 2),
            "incremental_vacuum": round(t_end - marks.get("reclaim", t_end), 2),
        },
        "file_bytes": sizes,
        "writers": {
            "baseline_no_prune": latency_summary(_window(samples, t_base, t_prune)),
            "during_prune": latency_summary(_window(samples, t_prune, t_end)),
            "errors": sum(r["errors"] for r in results),
            "appended": sum(r["appended"] for r in results),
        },
        "prune_write_transactions": {k: latency_summary(v) for k, v in holds.by_phase.items()},
        **traced,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.prune", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100 000 messages")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--writer-interval", type=float, default=0.01)
    ap.add_argument("--baseline", type=float, default=15.0, help="seconds of writers alone")
    ap.add_argument(
        "--trace", action="store_true", help="a timeline of appends, prune and checkpoints"
    )
    ap.add_argument(
        "--no-alternatives", action="store_true", help="skip VACUUM INTO / compact / append cost"
    )
    args = ap.parse_args(argv)
    n = 100_000 if args.quick else args.messages
    folder = WORK_DIR / "prune"
    folder.mkdir(parents=True, exist_ok=True)
    pristine = folder / f"prune-{n}.db"
    built = None
    if not pristine.exists():
        print(f"building {n:,} messages (cached at {pristine})", flush=True)
        partial = pristine.with_suffix(".partial")
        for leftover in folder.glob(partial.name + "*"):
            leftover.unlink()
        built = round(build(partial, n), 1)
        with sessiondb.open(partial) as s:
            s.backend.engine.checkpoint("TRUNCATE")  # type: ignore[attr-defined]
        for suffix in ("-wal", "-shm"):
            Path(f"{partial}{suffix}").unlink(missing_ok=True)
        partial.rename(pristine)
        print(f"built in {built} s", flush=True)
    work = folder / f"run-{n}.db"
    for leftover in folder.glob(f"run-{n}.db*"):
        leftover.unlink()
    shutil.copyfile(pristine, work)
    with sessiondb.open(work, readonly=True) as ro:
        t0 = time.perf_counter()
        split = ro.info()["space"]
        info_s = round(time.perf_counter() - t0, 2)
    print(f"store: {n:,} messages, {_size(work):,} bytes; split {split} ({info_s} s)", flush=True)
    run = _run(work, args.writers, args.writer_interval, args.baseline, args.trace)
    alternatives: dict[str, Any] = {}
    cost: dict[str, Any] = {}
    if not args.no_alternatives:
        alternatives = _alternatives(work)
        cost = _append_cost(folder, 2000 if args.quick else 5000)
    w = run["writers"]
    payload = {
        "benchmark": "prune",
        "command": "python -m benchmarks.prune " + " ".join(argv),
        "machine": machine_facts(),
        "store": {"messages": n, "build_seconds": built, "space_split": split},
        "info_seconds": info_s,
        "writers": args.writers,
        "writer_interval_s": args.writer_interval,
        **run,
        "alternatives_on_pruned_store": alternatives,
        "append_cost_auto_vacuum": cost,
        "target": {
            "writer_p99_ms": TARGET_P99_MS,
            "met": w["during_prune"]["p99_ms"] <= TARGET_P99_MS,
        },
    }
    print(
        f"writers' append, no prune: {w['baseline_no_prune']}\n"
        f"writers' append, during prune: {w['during_prune']}\n"
        f"prune: {run['removed']} {run['seconds']}\n"
        f"file: {run['file_bytes']}\n"
        f"prune's write transactions: {run['prune_write_transactions']}\n"
        f"alternatives: {alternatives}\nappend cost: {cost}"
    )
    name = ("prune_quick" if args.quick else "prune") + ("_trace" if args.trace else "")
    print(f"wrote {write_json(name, payload)}")
    for leftover in folder.glob(f"run-{n}.db*"):
        leftover.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
