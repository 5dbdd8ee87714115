"""Bulk import (issue 18 item 4, docs/adr/0015-bulk-import.md): messages/s and peak RSS of a
large import into a fresh store, the search index maintained per batch and built after loading,
beside two bare ceilings, in one run.

    python -m benchmarks.import_bulk [--messages N] [--rounds R] [--name NAME]

Each system imports benchmarks/transcripts.py's generated plain transcript (N lines, 40-400
bytes of text each) into a fresh file, each in a fresh process (``ru_maxrss`` is its own peak),
the systems in a different order every round:

* ``import`` — ``store.import_jsonl(src, session_id="bench")``: batches of 100, each indexed in
  its own transaction;
* ``bulk`` — ``store.import_jsonl(src, session_id="bench", bulk=True)``: batches of 2 000, the
  index built after loading (its own time is reported apart: ``index_seconds``);
* ``ceiling_rows`` — one bare apsw connection: ``json.loads`` of each line and the row insert
  (``executemany``, 2 000 rows per transaction) into a table with the messages' columns and no
  index at all: what the issue calls JSON parsing plus row inserts with no index;
* ``ceiling_index`` — the same, then the word index of the table built by one
  ``INSERT … SELECT`` into an FTS5 table of the store's tokenizer: a bare bulk load with its
  search index, and none of the store's rules (no validation, keys, seqs, rollup, CJK side).

No peer is run: none of the peers (hermes-agent, openai-agents, langchain-community) has an
import of a transcript file. Writes ``results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import machine_facts, write_json
from .transcripts import generate

SYSTEMS = ("import", "bulk", "ceiling_rows", "ceiling_index")
BATCH = 2000


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _store_import(db: str, src: str, bulk: bool) -> dict[str, Any]:
    import sessiondb
    from sessiondb.sqlite import deferred

    index = [0.0]
    real = deferred.finish

    def timed(*args: Any) -> int:
        began = time.perf_counter()
        out = real(*args)
        index[0] += time.perf_counter() - began
        return out

    deferred.finish = timed  # type: ignore[assignment]
    with sessiondb.open(db) as store:
        store.count()  # opened and migrated before the clock starts
        began = time.perf_counter()
        report = store.import_jsonl(src, session_id="bench", bulk=bulk)
        seconds = time.perf_counter() - began
        assert report.imported and not report.bad_lines
        assert store.search("session"), "nothing searchable after the import"
    return {"messages": report.imported, "seconds": seconds, "index_seconds": index[0]}


def _ceiling(db: str, src: str, index: bool) -> dict[str, Any]:
    import apsw

    conn = apsw.Connection(db)
    conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE m(id INTEGER PRIMARY KEY, seq INTEGER, role TEXT, content TEXT,"
        " key TEXT, meta TEXT, created_at REAL)"
    )
    conn.execute(
        "CREATE VIRTUAL TABLE f USING fts5(content, content='m', content_rowid='id',"
        " tokenize='unicode61 remove_diacritics 2')"
    )
    sql = "INSERT INTO m(seq, role, content, key, meta, created_at) VALUES (?, ?, ?, ?, NULL, ?)"
    rows: list[tuple[Any, ...]] = []
    n = 0

    def flush() -> None:
        with conn:
            conn.executemany(sql, rows)
        rows.clear()

    began = time.perf_counter()
    with open(src, "rb") as f:
        for n, raw in enumerate(f, 1):
            obj = json.loads(raw)
            rows.append((n, obj["role"], obj["content"], f"jsonl:{n}", time.time()))
            if len(rows) >= BATCH:
                flush()
    if rows:
        flush()
    loaded = time.perf_counter()
    if index:
        with conn:
            conn.execute("INSERT INTO f(rowid, content) SELECT id, content FROM m")
    seconds = time.perf_counter() - began
    conn.close()
    return {"messages": n, "seconds": seconds, "index_seconds": seconds - (loaded - began)}


def child(system: str, db: str, src: str) -> dict[str, Any]:
    if system in ("import", "bulk"):
        out = _store_import(db, src, system == "bulk")
    else:
        out = _ceiling(db, src, system == "ceiling_index")
    return {**out, "peak_rss_mib": _peak_rss_mib()}


def run_child(system: str, db: Path, src: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.import_bulk", "--child", system, str(db), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_bulk")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="import_bulk")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    rng = random.Random(18)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sessiondb-bulk-") as d:
        tmp = Path(d)
        src = tmp / "transcript.jsonl"
        size = generate(src, args.messages)
        print(f"{args.messages} lines, {size / 2**20:.1f} MiB", flush=True)
        for r in range(args.rounds):
            order = list(SYSTEMS)
            rng.shuffle(order)
            row: dict[str, Any] = {"order": order}
            for system in order:
                db = tmp / f"{system}-{r}.db"
                out = run_child(system, db, src)
                out["per_second"] = out["messages"] / out["seconds"]
                row[system] = out
                for p in tmp.glob(f"{system}-{r}.db*"):
                    p.unlink()
                print(
                    f"round {r} {system:14} {out['per_second']:9.0f} msgs/s"
                    f"  index {out['index_seconds']:.2f} s  peak RSS {out['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
            row["bulk_over_import"] = row["bulk"]["per_second"] / row["import"]["per_second"]
            row["bulk_over_ceiling_rows"] = (
                row["bulk"]["per_second"] / row["ceiling_rows"]["per_second"]
            )
            row["bulk_over_ceiling_index"] = (
                row["bulk"]["per_second"] / row["ceiling_index"]["per_second"]
            )
            rounds.append(row)
    summary = {
        system: {
            "per_second_median": statistics.median(r[system]["per_second"] for r in rounds),
            "per_second_range": [
                min(r[system]["per_second"] for r in rounds),
                max(r[system]["per_second"] for r in rounds),
            ],
            "peak_rss_mib_max": max(r[system]["peak_rss_mib"] for r in rounds),
        }
        for system in SYSTEMS
    }
    ratios = {
        k: sorted(r[k] for r in rounds)
        for k in ("bulk_over_import", "bulk_over_ceiling_rows", "bulk_over_ceiling_index")
    }
    path = write_json(
        args.name,
        {
            "benchmark": "import_bulk",
            "messages": args.messages,
            "machine": machine_facts(),
            "rounds": rounds,
            "summary": summary,
            "ratios": ratios,
        },
    )
    print(json.dumps({"summary": summary, "ratios": ratios}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
