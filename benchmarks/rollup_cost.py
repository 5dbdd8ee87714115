"""What the usage rollup (migration 5, docs/adr/0007-usage-rollup.md) adds to an append.

Two stores in one process, identical but for the rollup's triggers (dropped in the second),
appended to in alternating blocks of ``--block`` single appends, so that a shared machine's drift
hits both alike. Two kinds of message: without meta (most live appends) and with a model, a
response id (three messages per response, as Claude Code writes them) and token usage (imported
transcripts, instrumented agents), appended one by one and, as an import does, 100 per
``append_many``. Reported per kind: median µs per append over the blocks, with
and without the rollup, and the median of the per-block-pair ratios. Since migration 7 a batch
feeds the rollup set-based whatever its triggers (sqlite/selfindex.py): here every batch takes
the per-row trigger path instead (``selfindex.MIN_ROWS`` raised), which is what is measured.

    python -m benchmarks.rollup_cost [--blocks 40] [--block 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import machine_facts, sqlite_engine, write_json
from sessiondb.sqlite import selfindex

TEXT = "retry policy with exponential backoff " * 13


def _meta(kind: str, i: int) -> dict[str, Any] | None:
    if kind == "plain":
        return None
    return {
        "model": "claude-x",
        "response_id": f"msg_{i // 3}",
        "usage": {"input_tokens": 3, "output_tokens": i % 3 * 40, "cache_read_tokens": 9000},
    }


def _block(store: sessiondb.Store, kind: str, start: int, n: int) -> float:
    metas = [_meta(kind, start + i) for i in range(n)]
    if kind == "usage-batch":  # an import: append_many of 100 per call
        items = [{"role": "assistant", "content": TEXT, "meta": m} for m in metas]
        t0 = time.perf_counter()
        for i in range(0, n, 100):
            store.append_many(f"s{start % 4}", items[i : i + 100])
        return (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        store.append(f"s{(start + i) % 4}", "assistant", TEXT, meta=metas[i])
    return (time.perf_counter() - t0) / n * 1e6


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rollup_cost", description=__doc__)
    ap.add_argument("--blocks", type=int, default=40)
    ap.add_argument("--block", type=int, default=500)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}
    selfindex.MIN_ROWS = sys.maxsize  # module docstring
    with tempfile.TemporaryDirectory(prefix="bench-rollup-") as tmp:
        for kind in ("plain", "usage", "usage-batch"):
            with_it = sessiondb.open(Path(tmp) / f"{kind}-rollup.db")
            without = sessiondb.open(Path(tmp) / f"{kind}-bare.db")
            with sqlite_engine(without).write() as conn:
                conn.execute("DROP TRIGGER messages_rollup_ai")
                conn.execute("DROP TRIGGER messages_rollup_ad")
            _block(with_it, kind, 0, args.block)  # warm both
            _block(without, kind, 0, args.block)
            pairs = []
            for b in range(args.blocks):
                start = (b + 1) * args.block
                first, second = (with_it, without) if b % 2 == 0 else (without, with_it)
                t1 = _block(first, kind, start, args.block)
                t2 = _block(second, kind, start, args.block)
                pairs.append((t1, t2) if b % 2 == 0 else (t2, t1))
            with_it.close()
            without.close()
            ratios = sorted(a / b for a, b in pairs)
            out[kind] = {
                "with_rollup_us": round(statistics.median(a for a, _ in pairs), 1),
                "without_us": round(statistics.median(b for _, b in pairs), 1),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_p10_p90": [
                    round(ratios[len(ratios) // 10], 3),
                    round(ratios[len(ratios) * 9 // 10], 3),
                ],
            }
            print(kind, out[kind], flush=True)
    payload = {
        "benchmark": "rollup_cost",
        "command": "python -m benchmarks.rollup_cost " + " ".join(argv),
        "machine": machine_facts(),
        **out,
    }
    print(f"wrote {write_json('rollup_cost', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
