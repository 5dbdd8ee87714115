"""Mixed workload on one sessiondb store: live writers, transcript readers and a bulk import.

8 writer processes append turns to their own sessions (a pause of --writer-interval between
calls, like live agents), 4 reader processes load whole long sessions with ``messages()``, and 1
bulk process writes 200 000 messages with ``append_many`` batches, all at once on one file, for
up to 60 s. Reported: the writers' append latency p50/p99/max while the bulk load runs, the
readers' and the bulk batches' latencies, the WAL file size sampled every 100 ms (max), and an
exact count check of every session at the end.

    python -m benchmarks.mixed [--quick] [--seconds S] [--bulk N] [--batch B]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks.common import (
    fresh_dir,
    latency_summary,
    machine_facts,
    role_for,
    turn,
    write_json,
)

WRITERS = 8
READERS = 4
# Targets (docs/benchmarks.md, "Mixed workload"), evaluated (never asserted) on the figures.
TARGET_WRITER_P99_MS = 50.0
TARGET_WAL_BYTES = 64 * 1024 * 1024
BULK_WORKER = 10_000  # worker id used in the bulk turns' markers, distinct from the writers'


def _long_session(i: int) -> str:
    return f"long-{i}"


def _writer(
    wid: int, path: str, interval: float, start: Event, stop: Event, out: Any
) -> dict[str, Any]:
    import sessiondb

    store = sessiondb.open(path)
    sid = f"writer-{wid}"
    store.ensure_session(sid, source="bench")
    samples: list[tuple[float, float]] = []  # (call start, latency), monotonic seconds
    errors: Counter[str] = Counter()
    ok = 0
    out.put(("ready", wid, None))
    start.wait()
    i = 0
    while not stop.is_set():
        content = turn(wid, i)
        t0 = time.monotonic()
        try:
            store.append(sid, role_for(i), content)
            ok += 1
        except Exception as exc:
            errors[type(exc).__qualname__] += 1
        samples.append((t0, time.monotonic() - t0))
        i += 1
        if interval:
            stop.wait(interval)
    store.close()
    return {"kind": "writer", "session": sid, "ok": ok, "samples": samples, "errors": dict(errors)}


def _reader(
    wid: int, path: str, interval: float, start: Event, stop: Event, out: Any, expect: int
) -> dict[str, Any]:
    import sessiondb

    store = sessiondb.open(path)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    wrong = 0
    out.put(("ready", wid, None))
    start.wait()
    n = 0
    while not stop.is_set():
        sid = _long_session((wid + n) % READERS)
        t0 = time.monotonic()
        try:
            msgs = store.messages(sid)
            latencies.append(time.monotonic() - t0)
            # A complete, gapless, ordered transcript every time, whatever the writers do.
            if len(msgs) != expect or any(m.seq != k + 1 for k, m in enumerate(msgs)):
                wrong += 1
        except Exception as exc:
            errors[type(exc).__qualname__] += 1
        n += 1
        if interval:
            stop.wait(interval)
    store.close()
    return {
        "kind": "reader",
        "reads": n,
        "wrong": wrong,
        "latencies": latencies,
        "errors": dict(errors),
    }


def _bulk(
    wid: int, path: str, total: int, batch: int, start: Event, stop: Event, out: Any
) -> dict[str, Any]:
    import sessiondb

    store = sessiondb.open(path)
    sid = "bulk-import"
    store.ensure_session(sid, source="import")
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    written = 0
    out.put(("ready", wid, None))
    start.wait()
    t_start = time.monotonic()
    while written < total and not stop.is_set():
        n = min(batch, total - written)
        # Generated outside the timed call: only the store's work is measured.
        items = [
            {"role": role_for(written + j), "content": turn(BULK_WORKER, written + j)}
            for j in range(n)
        ]
        t0 = time.monotonic()
        try:
            store.append_many(sid, items)
            written += n
        except Exception as exc:
            errors[type(exc).__qualname__] += 1
        latencies.append(time.monotonic() - t0)
    t_end = time.monotonic()
    store.close()
    return {
        "kind": "bulk",
        "session": sid,
        "ok": written,
        "t_start": t_start,
        "t_end": t_end,
        "latencies": latencies,
        "errors": dict(errors),
    }


def _entry(kind: str, wid: int, args: tuple[Any, ...], out: Any) -> None:
    try:
        fns: dict[str, Callable[..., dict[str, Any]]] = {
            "writer": _writer,
            "reader": _reader,
            "bulk": _bulk,
        }
        out.put(("done", wid, fns[kind](wid, *args)))
    except BaseException:
        out.put(("failed", wid, traceback.format_exc()))


def _populate(path: Path, length: int) -> None:
    """The long sessions the readers load, written before the clock starts."""
    import sessiondb

    with sessiondb.open(path) as store:
        for s in range(READERS):
            for lo in range(0, length, 500):
                store.append_many(
                    _long_session(s),
                    [
                        {"role": role_for(i), "content": turn(20_000 + s, i)}
                        for i in range(lo, min(length, lo + 500))
                    ],
                )


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mixed", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="15 s, 40 000 bulk messages")
    ap.add_argument("--seconds", type=float, default=None, help="upper bound on the run")
    ap.add_argument("--bulk", type=int, default=None, help="messages the bulk process writes")
    ap.add_argument(
        "--batch", type=int, default=100, help="messages per append_many (as import_jsonl)"
    )
    ap.add_argument("--long", type=int, default=None, help="messages per long session")
    ap.add_argument("--writer-interval", type=float, default=0.01)
    ap.add_argument("--reader-interval", type=float, default=0.05)
    ap.add_argument("--output", default="mixed")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    bulk_total = args.bulk or (40_000 if args.quick else 200_000)
    long_len = args.long or (1000 if args.quick else 5000)
    folder = fresh_dir("mixed")
    path = folder / "sessions.db"
    wal = Path(str(path) + "-wal")
    _populate(path, long_len)

    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    start, stop = ctx.Event(), ctx.Event()
    specs: list[tuple[str, int, tuple[Any, ...]]] = []
    for w in range(WRITERS):
        specs.append(("writer", w, (str(path), args.writer_interval, start, stop, out)))
    for r in range(READERS):
        specs.append(
            ("reader", 100 + r, (str(path), args.reader_interval, start, stop, out, long_len))
        )
    specs.append(("bulk", 200, (str(path), bulk_total, args.batch, start, stop, out)))
    procs = [
        ctx.Process(target=_entry, args=(kind, wid, a, out), daemon=True) for kind, wid, a in specs
    ]
    for p in procs:
        p.start()
    ready = 0
    failures: list[str] = []
    while ready < len(procs):
        kind, _, payload = out.get(timeout=300)
        if kind == "failed":
            failures.append(payload)
            break
        ready += kind == "ready"
    t0 = time.monotonic()
    start.set()
    results: list[dict[str, Any]] = []
    wal_samples: list[int] = []
    bulk_done = False
    while len(results) + len(failures) < len(procs):
        now = time.monotonic()
        # The WAL size every 100 ms (0 when the file does not exist, e.g. just truncated).
        try:
            wal_samples.append(os.stat(wal).st_size)
        except FileNotFoundError:
            wal_samples.append(0)
        if (bulk_done or now - t0 >= seconds) and not stop.is_set():
            stop.set()
        try:
            kind, _, payload = out.get(timeout=max(0.0, 0.1 - (time.monotonic() - now)))
        except queue.Empty:
            continue
        if kind == "failed":
            failures.append(payload)
            stop.set()
        elif kind == "done":
            results.append(payload)
            bulk_done = bulk_done or payload["kind"] == "bulk"
        if time.monotonic() - t0 > seconds + 300:
            break
    elapsed = time.monotonic() - t0
    for p in procs:
        p.join(timeout=30)

    import sessiondb

    bulk = next((r for r in results if r["kind"] == "bulk"), None)
    writers = [r for r in results if r["kind"] == "writer"]
    readers = [r for r in results if r["kind"] == "reader"]
    during = [
        lat
        for w in writers
        for t, lat in w["samples"]
        if bulk is not None and bulk["t_start"] <= t <= bulk["t_end"]
    ]
    counts: dict[str, dict[str, int]] = {}
    with sessiondb.open(path) as store:
        for res in [*writers, *([bulk] if bulk else [])]:
            counts[res["session"]] = {
                "expected": res["ok"],
                "stored": store.count(res["session"]),
            }
        for s in range(READERS):
            counts[_long_session(s)] = {
                "expected": long_len,
                "stored": store.count(_long_session(s)),
            }
        expected_total = sum(c["expected"] for c in counts.values())
        counts["(all)"] = {"expected": expected_total, "stored": store.count()}
    errors: Counter[str] = Counter()
    for res in results:
        errors.update(res["errors"])
    wal_max = max(wal_samples, default=0)
    writer_during = latency_summary(during)
    exact = all(c["expected"] == c["stored"] for c in counts.values()) and not failures
    payload = {
        "benchmark": "mixed",
        "command": "python -m benchmarks.mixed " + " ".join(argv),
        "machine": machine_facts(),
        "config": {
            "writers": WRITERS,
            "readers": READERS,
            "bulk_messages": bulk_total,
            "batch": args.batch,
            "long_session_messages": long_len,
            "writer_interval_s": args.writer_interval,
            "reader_interval_s": args.reader_interval,
            "seconds_cap": seconds,
            "quick": args.quick,
        },
        "elapsed_s": round(elapsed, 3),
        "bulk": {
            "written": bulk["ok"] if bulk else 0,
            "seconds": round(bulk["t_end"] - bulk["t_start"], 3) if bulk else None,
            "messages_per_s": round(bulk["ok"] / (bulk["t_end"] - bulk["t_start"]), 1)
            if bulk and bulk["t_end"] > bulk["t_start"]
            else None,
            "batch_latency": latency_summary(bulk["latencies"]) if bulk else None,
        },
        "writers_during_bulk": writer_during,
        "writers_all": latency_summary(lat for w in writers for _, lat in w["samples"]),
        "writer_appends": sum(w["ok"] for w in writers),
        "readers": {
            "reads": sum(r["reads"] for r in readers),
            "incomplete_reads": sum(r["wrong"] for r in readers),
            "latency": latency_summary(x for r in readers for x in r["latencies"]),
        },
        "wal": {
            "max_bytes": wal_max,
            "max_mib": round(wal_max / 2**20, 2),
            "samples": len(wal_samples),
            "final_bytes": wal_samples[-1] if wal_samples else 0,
        },
        "errors": dict(errors),
        "counts": counts,
        "failures": failures,
        "targets_met": {
            "writer_p99_during_bulk": writer_during["p99_ms"] <= TARGET_WRITER_P99_MS,
            "wal_max": wal_max <= TARGET_WAL_BYTES,
            "counts_exact": exact,
        },
    }
    dest = write_json(args.output, payload)
    b = payload["bulk"]
    print(
        f"bulk: {b['written']} msgs in {b['seconds']} s ({b['messages_per_s']}/s),"
        f" batch {b['batch_latency']}"
    )
    print(f"writers during bulk: {writer_during} (appends total {payload['writer_appends']})")
    print(f"readers: {payload['readers']}")
    print(f"WAL max {payload['wal']['max_mib']} MiB over {len(wal_samples)} samples")
    print(f"errors {dict(errors)}; counts exact: {exact}; failures: {len(failures)}")
    print(f"targets met: {payload['targets_met']}")
    print(f"wrote {dest}")
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
