"""CPU time of the client-built word index (sessiondb.core.terms.index_terms, what every append
on PostgreSQL computes per message) against the rule applied character by character — every
piece cut by ``split_runs`` and every run folded by ``fold_token``, which is what index_terms did
before its ASCII fast path — on the messages of benchmarks/corpus.py, in alternated rounds.

    python -m benchmarks.pg_terms [--messages 20000] [--rounds 5] [--eager]

``--eager``: instead, index_terms as it is (ASCII text up to ``terms.EAGER_CHARS`` cut in one
pass) against the same with every text read lazily, run by run (``EAGER_CHARS = 0``: how it
read every text before).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.common import machine_facts, write_json
from benchmarks.corpus import Corpus
from sessiondb.core import terms
from sessiondb.core.query import split_runs
from sessiondb.core.terms import _PIECES, fold_token, index_terms


def by_the_rule(text: str) -> tuple[dict[str, list[int]], int]:
    """The terms of *text*, character by character (no limits: corpus messages are short)."""
    out: dict[str, list[int]] = {}
    pos = 0
    for piece in _PIECES.finditer(text):
        for run in split_runs(piece.group()):
            for term in fold_token(run):
                pos += 1
                out.setdefault(term, []).append(pos)
    return out, pos


def lazily(text: str) -> tuple[dict[str, list[int]], int]:
    """index_terms with every text read run by run (``--eager``'s other side)."""
    eager, terms.EAGER_CHARS = terms.EAGER_CHARS, 0
    try:
        return index_terms(text)
    finally:
        terms.EAGER_CHARS = eager


def _cpu(fn: Callable[[str], object], texts: list[str]) -> float:
    t0 = time.process_time()
    for t in texts:
        fn(t)
    return time.process_time() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pg_terms", description=__doc__)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--eager", action="store_true", help="eager vs lazy ASCII (docstring)")
    args = ap.parse_args(argv)
    texts = [c for _, _, msgs in Corpus(args.messages).sessions() for _, c in msgs]
    other, other_fn = ("lazily", lazily) if args.eager else ("by_the_rule", by_the_rule)
    assert all(index_terms(t) == other_fn(t) for t in texts[:2000])  # the same terms
    rounds = []
    for r in range(args.rounds):
        order = [("index_terms", index_terms), (other, other_fn)]
        row = {}
        for name, fn in order if r % 2 == 0 else order[::-1]:
            row[name] = round(_cpu(fn, texts) / len(texts) * 1e6, 1)  # µs CPU per message
        row["ratio"] = round(row["index_terms"] / row[other], 3)
        print(f"round {r + 1}: µs CPU per message", row, flush=True)
        rounds.append(row)
    result = {
        "machine": machine_facts(),
        "args": vars(args),
        "mean_bytes": round(sum(len(t.encode()) for t in texts) / len(texts)),
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
    }
    print(write_json("pg_terms_eager" if args.eager else "pg_terms", result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
