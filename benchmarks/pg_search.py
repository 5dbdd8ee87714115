"""Search on PostgreSQL beside SQLite at several corpus sizes, in one run (benchmarks/postgres.py).

The corpus of benchmarks/corpus.py is loaded into a SQLite file under ``--data-dir`` (default
/work/data/sessiondb-bench, outside the repo: 1 000 000 messages take gigabytes) and into a
fresh PostgreSQL schema, both through the store's batched append (``append_many``, one call per
session). The PostgreSQL load is a bulk load: its two GIN indexes (``messages_search`` and the
partial trigram one) are dropped first and rebuilt from their own catalog definitions after, then
``VACUUM (ANALYZE)`` — what an operator does for a bulk load; each phase is timed and reported.
The same queries then run on each store: p50/p99/max latency and recall (the message the query
was made from among the top 20). The schema and the SQLite file are removed afterwards unless
``--keep-data``.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import latency_summary
from benchmarks.corpus import Corpus
from benchmarks.pg_common import admin, drop_pg, new_pg_store

#: The GIN indexes a bulk load drops and rebuilds (sessiondb/postgres/schema.py makes them).
_BULK_INDEXES = ("messages_search", "messages_cjk_trgm")


def _load(store: sessiondb.Store, corpus: Corpus) -> float:
    t0 = time.perf_counter()
    for sid, source, msgs in corpus.sessions():
        store.ensure_session(sid, source=source)
        store.append_many(sid, [{"role": r, "content": c} for r, c in msgs])
    return time.perf_counter() - t0


def _bulk_load_pg(url: str, schema: str, corpus: Corpus) -> dict[str, float]:
    """Drop the GIN indexes, load, rebuild them from their catalog definitions, vacuum."""
    store = sessiondb.open(url)
    with admin() as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = %s AND indexname = ANY(%s)",
            (schema, list(_BULK_INDEXES)),
        ).fetchall()
        for index_name, _ in rows:
            assert index_name in _BULK_INDEXES
            conn.execute(f"DROP INDEX {schema}.{index_name}")  # names from the catalog
    out = {"append_many_s": round(_load(store, corpus), 1)}
    store.close()
    with admin() as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        t0 = time.perf_counter()
        for _, indexdef in rows:
            conn.execute(indexdef)  # the catalog's own definition, schema-qualified
        out["index_build_s"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        conn.execute(f"VACUUM (ANALYZE) {schema}.messages")
        conn.execute(f"VACUUM (ANALYZE) {schema}.sessions")
        out["vacuum_analyze_s"] = round(time.perf_counter() - t0, 1)
    out["total_s"] = round(sum(out.values()), 1)
    out["indexes_rebuilt"] = sorted(name for name, _ in rows)  # type: ignore[assignment]
    return out


def _queries(store: sessiondb.Store, corpus: Corpus, n: int) -> dict[str, Any]:
    qs = corpus.queries(n)
    lat, found = [], 0
    for q in qs:
        t0 = time.perf_counter()
        hits = store.search(q.text, limit=20)
        lat.append(time.perf_counter() - t0)
        found += any(h.message.session_id == q.session_id and h.message.seq == q.seq for h in hits)
    return {**latency_summary(lat), "recall_at_20": round(found / len(qs), 4)}


def _size_bytes(schema: str) -> int:
    with admin() as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def search_one(
    messages: int, n_queries: int, rounds: int, data_dir: Path, keep: bool
) -> dict[str, Any]:
    corpus = Corpus(messages)
    out: dict[str, Any] = {"messages": messages, "sessions": corpus.n_sessions}
    run_dir = data_dir / f"pg-search-{secrets.token_hex(4)}"
    run_dir.mkdir(parents=True)
    url, name = new_pg_store()
    try:
        sq_path = run_dir / f"sqlite-{messages}.db"
        sq = sessiondb.open(sq_path)
        print(f"search {messages}: loading SQLite ({sq_path})", flush=True)
        out["sqlite_load"] = {"append_many_s": round(_load(sq, corpus), 1)}
        out["sqlite_file_bytes"] = sum(p.stat().st_size for p in run_dir.glob("sqlite-*"))
        print(f"search {messages}: loading PostgreSQL (schema {name})", flush=True)
        out["postgresql_load"] = _bulk_load_pg(url, name, corpus)
        out["postgresql_schema_bytes"] = _size_bytes(name)
        print(f"search {messages}: loads {out['sqlite_load']} {out['postgresql_load']}", flush=True)
        pgs = sessiondb.open(url)
        _queries(sq, corpus, 30), _queries(pgs, corpus, 30)  # warm caches alike
        # Rounds alternate which store goes first; each round is the same query set.
        out["rounds"] = []
        for r in range(rounds):
            row: dict[str, Any] = {}
            order = [("sqlite", sq), ("postgresql", pgs)]
            for label, store in order if r % 2 == 0 else order[::-1]:
                row[label] = _queries(store, corpus, n_queries)
            row["p50_ratio_pg_vs_sqlite"] = round(
                row["postgresql"]["p50_ms"] / row["sqlite"]["p50_ms"], 2
            )
            row["p99_ratio_pg_vs_sqlite"] = round(
                row["postgresql"]["p99_ms"] / row["sqlite"]["p99_ms"], 2
            )
            print(f"search {messages} round {r + 1}", row, flush=True)
            out["rounds"].append(row)
        pgs.close()
        sq.close()
    finally:
        if not keep:
            drop_pg(name)
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            out["kept"] = {"sqlite": str(run_dir), "postgresql_schema": name}
    return out


def search(
    sizes: list[int],
    n_queries: int,
    rounds: int,
    data_dir: Path,
    keep: bool,
    save: Callable[[dict[str, Any]], None] = lambda _: None,
) -> dict[str, Any]:
    """Each size in turn; *save* gets the results so far after each (a long run keeps them)."""
    out: dict[str, Any] = {}
    for n in sizes:
        out[str(n)] = search_one(n, n_queries, rounds, data_dir, keep)
        save(out)
    return out
