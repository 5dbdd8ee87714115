"""Transcript import/export benchmark: throughput and peak memory against a bare-apsw ceiling.

    python -m benchmarks.transcripts [--quick] [--messages N]

1. Generates a plain JSONL transcript of N messages (default 1 000 000; --quick 100 000).
2. Imports it with ``store.import_jsonl`` in a fresh process (messages/s, peak RSS of that
   process from ``ru_maxrss``).
3. Ceiling, same run: one bare apsw connection on the same schema and pragmas reads the same file
   line by line, ``json.loads`` each line and inserts the same rows (role, content, key, seq)
   with ``executemany`` in transactions of the same batch size (500).
4. Exports the imported session with ``store.export_jsonl`` (messages/s, peak RSS).
5. Imports the file again into a fresh store while 8 live writer processes append one message
   every 5 ms each: their append latency (median, p99, max).

Results go to ``benchmarks/results/transcripts.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "transcripts.json"
BATCH = 100
WRITERS = 8
WRITER_PAUSE = 0.005
_WORDS = [
    *[
        "the",
        "agent",
        "reads",
        "the",
        "file",
        "and",
        "runs",
        "the",
        "tests",
        "then",
        "fixes",
        "the",
        "failing",
        "import",
    ],
    *[
        "of",
        "the",
        "module",
        "session",
        "store",
        "search",
        "query",
        "result",
        "context",
        "window",
        "token",
    ],
    *["budget", "tool", "call", "output", "error"],
]


def generate(path: Path, n: int, seed: int = 7) -> int:
    """Write ``n`` plain chat lines (content 40-400 bytes); returns the file size."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            words = rng.choices(_WORDS, k=rng.randint(8, 60))
            role = "user" if i % 2 == 0 else "assistant"
            f.write(json.dumps({"role": role, "content": " ".join(words)}) + "\n")
    return path.stat().st_size


def _peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# -- child processes (each measured alone, so ru_maxrss is that task's peak) ---------------------


def child_import(db: str, src: str) -> dict[str, Any]:
    import sessiondb

    with sessiondb.open(db) as store:
        t0 = time.perf_counter()
        report = store.import_jsonl(src, session_id="bench")
        seconds = time.perf_counter() - t0
    return {"messages": report.imported, "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}


def child_ceiling(db: str, src: str) -> dict[str, Any]:
    import apsw

    import sessiondb

    with sessiondb.open(db) as store:  # same schema and pragmas as the store
        store.ensure_session("bench", source="import")
    conn = apsw.Connection(db)
    conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000")
    sid = conn.execute("SELECT id FROM sessions WHERE session_id='bench'").get
    sql = (
        "INSERT INTO messages(sid, seq, role, content, key, meta, created_at)"
        " VALUES (?, ?, ?, ?, ?, NULL, ?)"
    )
    t0 = time.perf_counter()
    seq = 0
    rows: list[tuple[Any, ...]] = []

    def flush() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("UPDATE sessions SET message_count = ? WHERE id = ?", (seq, sid))
        conn.execute("COMMIT")
        rows.clear()

    with open(src, "rb") as f:
        for n, raw in enumerate(f, 1):
            obj = json.loads(raw)
            seq += 1
            rows.append((sid, seq, obj["role"], obj["content"], f"jsonl:{n}", time.time()))
            if len(rows) >= BATCH:
                flush()
    if rows:
        flush()
    seconds = time.perf_counter() - t0
    conn.close()
    return {"messages": seq, "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}


def child_export(db: str, dest: str) -> dict[str, Any]:
    import sessiondb

    with sessiondb.open(db) as store:
        t0 = time.perf_counter()
        n = store.export_jsonl("bench", dest)
        seconds = time.perf_counter() - t0
    return {"messages": n, "seconds": seconds, "peak_rss_mib": _peak_rss_mib()}


_CHILDREN = {"import": child_import, "ceiling": child_ceiling, "export": child_export}


def run_child(mode: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.transcripts", "--child", mode, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- live writers ---------------------------------------------------------------------------------


def live_writer(db: str, index: int, stop: Any, ready: Any, out: str) -> None:
    import sessiondb

    latencies: list[float] = []
    with sessiondb.open(db) as store:
        store.append(f"live-{index}", "user", "warm-up")
        ready.release()
        while not stop.is_set():
            t0 = time.perf_counter()
            store.append(f"live-{index}", "user", f"live message from writer {index}")
            latencies.append(time.perf_counter() - t0)
            time.sleep(WRITER_PAUSE)
    Path(out).write_text(json.dumps(latencies))


def import_under_load(db: str, src: str, tmp: Path) -> dict[str, Any]:
    import sessiondb

    sessiondb.open(db).close()  # create the schema before the writers race to
    ctx = multiprocessing.get_context("spawn")
    stop, ready = ctx.Event(), ctx.Semaphore(0)
    outs = [str(tmp / f"live-{i}.json") for i in range(WRITERS)]
    procs = [
        ctx.Process(target=live_writer, args=(db, i, stop, ready, outs[i])) for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire(timeout=60)
    try:
        imported = run_child("import", db, src)
    finally:
        stop.set()
        for p in procs:
            p.join(60)
    lat = sorted(x for o in outs for x in json.loads(Path(o).read_text()))
    return {
        "import": imported,
        "appends": len(lat),
        "median_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "max_ms": lat[-1] * 1000,
    }


# -- main -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import apsw

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "python": platform.python_version(),
        "apsw": apsw.apsw_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "commit": commit,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.transcripts")
    parser.add_argument("--quick", action="store_true", help="100 000 messages")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, *rest = args.child
        print(json.dumps(_CHILDREN[mode](*rest)))
        return 0
    n = args.messages or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="sessiondb-bench-") as d:
        tmp = Path(d)
        src = tmp / "transcript.jsonl"
        size = generate(src, n)
        print(f"generated {n} messages, {size / 2**20:.1f} MiB", flush=True)
        ceiling = run_child("ceiling", str(tmp / "ceiling.db"), str(src))
        imported = run_child("import", str(tmp / "store.db"), str(src))
        exported = run_child("export", str(tmp / "store.db"), str(tmp / "export.jsonl"))
        live = import_under_load(str(tmp / "live.db"), str(src), tmp)
    rate = {k: r["messages"] / r["seconds"] for k, r in
            (("ceiling", ceiling), ("import", imported), ("export", exported))}  # fmt: skip
    result = {
        "benchmark": "transcripts",
        "messages": n,
        "file_mib": size / 2**20,
        "batch": BATCH,
        "machine": machine(),
        "ceiling": {**ceiling, "messages_per_s": rate["ceiling"]},
        "import": {
            **imported,
            "messages_per_s": rate["import"],
            "ratio_to_ceiling": rate["import"] / rate["ceiling"],
        },
        "export": {**exported, "messages_per_s": rate["export"]},
        "live_writers_during_import": {"writers": WRITERS, "pause_s": WRITER_PAUSE, **live},
        "targets": {
            "import_ratio_min": 0.5,
            "import_messages_per_s_min": 100_000,
            "peak_rss_mib_max": 200,
            "live_append_p99_ms_max": 50,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'task':<28}{'msg/s':>12}{'seconds':>10}{'peak RSS MiB':>14}")
    rows = [
        ("ceiling (bare apsw)", ceiling),
        ("import_jsonl", imported),
        ("export_jsonl", exported),
        ("import + 8 live writers", live["import"]),
    ]
    for name, r in rows:
        per_s = r["messages"] / r["seconds"]
        print(f"{name:<28}{per_s:>12,.0f}{r['seconds']:>10.2f}{r['peak_rss_mib']:>14.1f}")
    print(f"import / ceiling: {rate['import'] / rate['ceiling']:.2f}")
    print(
        f"live appends during import: n={live['appends']} median {live['median_ms']:.2f} ms,"
        f" p99 {live['p99_ms']:.2f} ms, max {live['max_ms']:.2f} ms"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
