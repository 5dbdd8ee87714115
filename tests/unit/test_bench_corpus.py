"""The search benchmark's corpus and queries are the same in every process (no hash-seed drift)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (
    "from benchmarks.corpus import Corpus\n"
    "c = Corpus(3000, seed=1)\n"
    "print(repr([c.session(i) for i in range(3)]))\n"
    "print(repr(c.queries(120)))\n"
)


def test_queries_do_not_depend_on_the_hash_seed() -> None:
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        assert "common" in done.stdout and "rare" in done.stdout
        outputs.add(done.stdout)
    assert len(outputs) == 1
