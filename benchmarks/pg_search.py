"""Search on PostgreSQL beside SQLite at several corpus sizes, in one run (benchmarks/postgres.py).

The corpus of benchmarks/corpus.py is loaded into a SQLite file under ``--data-dir`` (default
/work/data/sessiondb-bench, outside the repo: 1 000 000 messages take gigabytes) and into a
fresh PostgreSQL schema, both through the store's batched append (``append_many``, one call per
session). The PostgreSQL load is a bulk load: its two GIN indexes (``messages_search`` and the
partial trigram one) are dropped first and rebuilt from their own catalog definitions after, then
``VACUUM (ANALYZE)`` — what an operator does for a bulk load; each phase is timed and reported.
The two loads run at the same time (SQLite in a forked process, PostgreSQL in this one: the
same corpus, generated in each from its seed), each timed on its own and logged every 10 % of
the sessions. The same queries then run on each store: p50/p99/max latency and recall (the
message the query was made from among the top 20), overall and per query kind, and how far
PostgreSQL's top 20 agrees with SQLite's for the same query. The schema and the SQLite file are
removed afterwards unless ``--keep-data``, which also writes ``load.json`` beside the SQLite file
so that ``--reuse DIR`` searches those stores again without loading them (the load figures are
the kept ones).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import latency_summary
from benchmarks.corpus import Corpus
from benchmarks.pg_common import admin, drop_pg, new_pg_store, store_url

#: The GIN indexes a bulk load drops and rebuilds (sessiondb/postgres/schema.py makes them).
_BULK_INDEXES = ("messages_search", "messages_cjk_trgm")


def _load(store: sessiondb.Store, corpus: Corpus, label: str = "") -> float:
    t0 = time.perf_counter()
    step = max(1, corpus.n_sessions // 10)
    for i, (sid, source, msgs) in enumerate(corpus.sessions(), 1):
        store.ensure_session(sid, source=source)
        store.append_many(sid, [{"role": r, "content": c} for r, c in msgs])
        if label and i % step == 0:
            print(
                f"  {label}: {i}/{corpus.n_sessions} sessions, {time.perf_counter() - t0:.0f} s,"
                f" load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    return time.perf_counter() - t0


def _load_sqlite(path: Path, messages: int, out: Any) -> None:
    """The SQLite load, in a forked process: (seconds, CPU seconds) or an error."""
    try:
        store = sessiondb.open(path)
        cpu0 = time.process_time()
        took = _load(store, Corpus(messages), "sqlite")
        store.close()
        out.put({"append_many_s": round(took, 1), "cpu_s": round(time.process_time() - cpu0, 1)})
    except BaseException as e:  # reported by the parent
        out.put({"error": f"{type(e).__name__}: {e}"})


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
    cpu0 = time.process_time()
    out = {"append_many_s": round(_load(store, corpus, "postgresql"), 1)}
    cpu = round(time.process_time() - cpu0, 1)
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
    out["client_cpu_s"] = cpu  # the append_many phase's, in this process
    out["indexes_rebuilt"] = sorted(name for name, _ in rows)  # type: ignore[assignment]
    return out


def _queries(store: sessiondb.Store, corpus: Corpus, n: int) -> dict[str, Any]:
    qs = corpus.queries(n)
    lat: list[float] = []
    found: list[bool] = []
    hits_of: list[list[tuple[str, int]]] = []
    for q in qs:
        t0 = time.perf_counter()
        hits = store.search(q.text, limit=20)
        lat.append(time.perf_counter() - t0)
        ids = [(h.message.session_id, h.message.seq) for h in hits]
        hits_of.append(ids)
        found.append((q.session_id, q.seq) in ids)
    by_kind: dict[str, Any] = {}
    for kind in dict.fromkeys(q.kind for q in qs):
        mine = [i for i, q in enumerate(qs) if q.kind == kind]
        by_kind[kind] = {
            **latency_summary(lat[i] for i in mine),
            "recall_at_20": round(sum(found[i] for i in mine) / len(mine), 4),
        }
    return {
        **latency_summary(lat),
        "recall_at_20": round(sum(found) / len(qs), 4),
        "by_kind": by_kind,
        "_hits": hits_of,  # compared across stores by _agreement, then dropped
    }


def _agreement(pg: list[list[tuple[str, int]]], sq: list[list[tuple[str, int]]]) -> dict[str, Any]:
    """How far PostgreSQL's top 20 agrees with SQLite's, query by query."""
    same = sum(a == b for a, b in zip(pg, sq, strict=True))
    overlap = [len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(pg, sq, strict=True) if b]
    return {
        "queries": len(sq),
        "same_top20_in_order": same,
        "sqlite_top20_found_by_pg_mean": round(sum(overlap) / max(len(overlap), 1), 4),
        "sqlite_top20_found_by_pg_min": round(min(overlap), 4) if overlap else None,
    }


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
    messages: int,
    n_queries: int,
    rounds: int,
    data_dir: Path,
    keep: bool,
    reuse: Path | None = None,
) -> dict[str, Any]:
    corpus = Corpus(messages)
    out: dict[str, Any] = {"messages": messages, "sessions": corpus.n_sessions}
    if reuse is not None:
        kept = json.loads((reuse / "load.json").read_text())
        assert kept["messages"] == messages, f"{reuse} holds {kept['messages']} messages"
        run_dir, name = reuse, kept["postgresql_schema"]
        assert name.startswith("bench_") and name[6:].isalnum()
        url, keep = store_url(name), True
        out.update({k: v for k, v in kept.items() if k != "postgresql_schema"})
        out["reused"] = str(reuse)
    else:
        run_dir = data_dir / f"pg-search-{secrets.token_hex(4)}"
        run_dir.mkdir(parents=True)
        url, name = new_pg_store()
    sq_path = run_dir / f"sqlite-{messages}.db"
    try:
        if reuse is None:
            out.update(_load_both(messages, corpus, sq_path, url, name))
            if keep:
                (run_dir / "load.json").write_text(
                    json.dumps({**out, "postgresql_schema": name}, indent=2)
                )
        out["sqlite_file_bytes"] = sum(p.stat().st_size for p in run_dir.glob("sqlite-*"))
        out["postgresql_schema_bytes"] = _size_bytes(name)
        sq = sessiondb.open(sq_path)
        pgs = sessiondb.open(url)
        _queries(sq, corpus, 30), _queries(pgs, corpus, 30)  # warm caches alike
        # Rounds alternate which store goes first; each round is the same query set.
        out["rounds"] = []
        for r in range(rounds):
            row: dict[str, Any] = {"loadavg_1m": [round(os.getloadavg()[0], 1)]}
            order = [("sqlite", sq), ("postgresql", pgs)]
            for label, store in order if r % 2 == 0 else order[::-1]:
                row[label] = _queries(store, corpus, n_queries)
            row["loadavg_1m"].append(round(os.getloadavg()[0], 1))
            row["agreement"] = _agreement(
                row["postgresql"].pop("_hits"), row["sqlite"].pop("_hits")
            )
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


def _load_both(messages: int, corpus: Corpus, sq_path: Path, url: str, name: str) -> dict[str, Any]:
    """SQLite (a forked process) and PostgreSQL (here) loaded at the same time."""
    print(f"search {messages}: loading SQLite ({sq_path}) and PostgreSQL ({name})", flush=True)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    child = ctx.Process(target=_load_sqlite, args=(sq_path, messages, q))
    child.start()
    try:
        pg_load = _bulk_load_pg(url, name, corpus)
        sq_load = q.get(timeout=6 * 3600)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()  # the process this function started
    if "error" in sq_load:
        raise RuntimeError(f"the SQLite load failed: {sq_load['error']}")
    print(f"search {messages}: loads {sq_load} {pg_load}", flush=True)
    return {"sqlite_load": sq_load, "postgresql_load": pg_load, "loaded_concurrently": True}


def search(
    sizes: list[int],
    n_queries: int,
    rounds: int,
    data_dir: Path,
    keep: bool,
    save: Callable[[dict[str, Any]], None] = lambda _: None,
    reuse: Path | None = None,
) -> dict[str, Any]:
    """Each size in turn; *save* gets the results so far after each (a long run keeps them)."""
    out: dict[str, Any] = {}
    for n in sizes:
        out[str(n)] = search_one(n, n_queries, rounds, data_dir, keep, reuse)
        save(out)
    return out
