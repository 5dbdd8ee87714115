"""What the search index costs the append path: single-message appends with and without it.

Every configuration is a real Store (``sessiondb.open(...).append(...)``, one transaction per
message, durability "normal") fed the same corpus messages (``benchmarks/corpus.py``: 200–2 000
bytes, ~5 % CJK). The configurations differ only in the index triggers present:

* ``no_index`` — search triggers dropped (the ceiling for this benchmark);
* ``word_only`` — the word index alone;
* ``search`` — the shipped design: word index on every message, trigram index on CJK ones;
* ``trigram_all`` — the previous design, trigram index on every message (emulated by a trigger
  without the CJK condition), for the before/after figure.

The stores are fed in interleaved rounds so that machine noise hits every configuration alike.
``--growth N`` instead appends N messages per merge policy and reports appends/s per slice, to
show whether insert cost stays flat as the index grows. JSON to
``benchmarks/results/search_append.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sessiondb
from sessiondb.sqlite import fts

from .common import sqlite_engine
from .corpus import Corpus
from .search import _machine

RESULTS = Path(__file__).parent / "results" / "search_append.json"


def _messages(n: int) -> Iterator[tuple[str, str]]:
    corpus = Corpus(max(n, 100))
    count = 0
    while True:
        for _sid, _source, msgs in corpus.sessions():
            for role, content in msgs:
                yield role, content
                count += 1
                if count >= n:
                    return


def _drop(conn: Any, *names: str) -> None:
    for name in names:
        conn.execute(f"DROP TRIGGER {name}")


def _no_index(conn: Any) -> None:
    _drop(conn, *fts.TRIGGERS)


def _word_only(conn: Any) -> None:
    _drop(conn, "messages_search_ai_tri")


def _search(conn: Any) -> None:
    pass


def _trigram_all(conn: Any) -> None:
    _drop(conn, "messages_search_ai_tri")
    conn.execute(
        f"""CREATE TRIGGER messages_search_ai_tri AFTER INSERT ON messages BEGIN
            INSERT INTO {fts.TRIGRAM_ROWS}(id) VALUES (new.id);
            INSERT INTO {fts.TRIGRAM_TABLE}(rowid, content) VALUES (new.id, new.content);
        END"""
    )


CONFIGS: dict[str, Callable[[Any], None]] = {
    "no_index": _no_index,
    "word_only": _word_only,
    "search": _search,
    "trigram_all": _trigram_all,
}

# Merge policies compared by --growth: SQLite's defaults and the shipped settings.
POLICIES: dict[str, tuple[tuple[str, int], ...]] = {
    "default": (("automerge", 4), ("crisismerge", 16), ("usermerge", 4)),
    "shipped": fts.MERGE_SETTINGS,
}


def _open(path: Path, setup: Callable[[Any], None]) -> sessiondb.Store:
    store = sessiondb.open(path)
    with sqlite_engine(store).write() as conn:
        setup(conn)
    return store


def _feed(store: sessiondb.Store, batch: list[tuple[str, str]], session: str) -> float:
    t0 = time.perf_counter()
    for role, content in batch:
        store.append(session, role, content)
    return time.perf_counter() - t0


def run_cost(base: Path, n: int, rounds: int) -> dict[str, Any]:
    msgs = list(_messages(n))
    stores = {name: _open(base / f"{name}.db", setup) for name, setup in CONFIGS.items()}
    spent = dict.fromkeys(CONFIGS, 0.0)
    per_round = max(1, n // rounds)
    try:
        for r in range(0, n, per_round):
            batch = msgs[r : r + per_round]
            for name, store in stores.items():
                # One session per 50 messages, like an agent's turns.
                spent[name] += _feed(store, batch, f"s{r // 50}")
    finally:
        for store in stores.values():
            store.close()
    rate = {name: round(n / t) for name, t in spent.items()}
    ceiling = rate["no_index"]
    return {
        "messages": n,
        "appends_per_s": rate,
        "cost_vs_no_index_pct": {
            name: round(100 * (1 - r / ceiling), 1)
            for name, r in rate.items()
            if name != "no_index"
        },
    }


def run_growth(base: Path, n: int, slice_size: int) -> dict[str, Any]:
    msgs = _messages(n)
    stores: dict[str, sessiondb.Store] = {}
    for name, settings in POLICIES.items():

        def setup(conn: Any, settings: tuple[tuple[str, int], ...] = settings) -> None:
            for table in (fts.WORD_TABLE, fts.TRIGRAM_TABLE):
                for key, value in settings:
                    conn.execute(f"INSERT INTO {table}({table}, rank) VALUES (?, ?)", (key, value))

        stores[name] = _open(base / f"growth-{name}.db", setup)
    slices: dict[str, list[int]] = {name: [] for name in POLICIES}
    worst: dict[str, float] = dict.fromkeys(POLICIES, 0.0)
    try:
        done = 0
        while done < n:
            batch = list(itertools.islice(msgs, slice_size))
            if not batch:
                break
            for name, store in stores.items():
                t0 = time.perf_counter()
                for i, (role, content) in enumerate(batch):
                    t1 = time.perf_counter()
                    store.append(f"s{(done + i) // 50}", role, content)
                    worst[name] = max(worst[name], time.perf_counter() - t1)
                slices[name].append(round(len(batch) / (time.perf_counter() - t0)))
            done += len(batch)
    finally:
        for store in stores.values():
            store.close()
    return {
        "messages": n,
        "slice": slice_size,
        "appends_per_s_by_slice": slices,
        "max_append_ms": {k: round(v * 1000, 1) for k, v in worst.items()},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_append")
    parser.add_argument("--quick", action="store_true", help="1 000 messages per configuration")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--growth", type=int, default=0, help="messages per merge policy")
    parser.add_argument("--slice", type=int, default=10_000)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"machine": _machine()}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if args.growth:
            out["growth"] = run_growth(base, args.growth, args.slice)
        else:
            out["cost"] = run_cost(base, 1000 if args.quick else args.messages, args.rounds)
    print(json.dumps(out, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if RESULTS.exists():
        previous = json.loads(RESULTS.read_text())
    previous.update(out)
    RESULTS.write_text(json.dumps(previous, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
