"""Run every benchmark in turn (what `make bench` does); JSON goes to benchmarks/results/."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: list[str] = [
    "contention",
    "floor",
    "handoff",
    "mixed",
    "search",
    "transcripts",
    "channel",
    "startup",
    "aio",
    "group",
    "prune",
    "serve",
]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    status = 0
    for name in BENCHMARKS:
        print(f"== benchmarks.{name}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        status |= int(module.main(args) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
