"""Search on PostgreSQL beside SQLite at several corpus sizes, in one run (benchmarks/postgres.py).

The corpus of benchmarks/corpus.py is loaded into a SQLite file under ``--data-dir`` (default
/work/data/sessiondb-bench, outside the repo: 1 000 000 messages take gigabytes) and into a
fresh PostgreSQL schema, both through the store's batched append (``append_many``, one call per
session). The PostgreSQL load is a bulk load: its two GIN indexes (``messages_search`` and the
partial trigram one) are dropped first and rebuilt from their own catalog definitions after, then
``VACUUM (ANALYZE)`` — what an operator does for a bulk load; each phase is timed and reported.
The two loads run at the same time, each by ``--load-procs`` forked loaders (default one each:
then each store's rows are in the corpus's order; with more, loader k of K loads sessions
i ≡ k mod K, and the rows of the K loaders interleave by chance, differently in each store — so
"newest" differs slightly between them), each timed on its own, the progress logged every
minute. A SQLite loader never passes PostgreSQL's frontier, so both stores hold the same
sessions at every moment; a file ``stop_at`` holding N in the run's folder stops the load before
session N and the search runs on the first N sessions (what a load that cannot finish in time
measures, reported as such). The same queries then run on each store: p50/p99/max latency and
recall (the message the query was made from among the top 20), overall and per query kind, and
how far PostgreSQL's top 20 agrees with SQLite's for the same query. The schema and the SQLite
file are removed afterwards unless ``--keep-data``, which also writes ``load.json`` beside the
SQLite file so that ``--reuse DIR`` searches those stores again without loading them (the load
figures are the kept ones).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
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


_DONE = 1 << 62  # a loader's progress once it has loaded all its sessions


def _loader(
    backend: str,
    location: str,
    messages: int,
    parts: int,
    part: int,
    stop_file: Path,
    pg_next: Any,
    mine: Any,
    out: Any,
) -> None:
    """One of ``parts`` forked loaders of one store: sessions ``i`` with ``i % parts == part``,
    in increasing order, each by ``ensure_session`` + ``append_many`` (the store's own batched
    append, one call per session). ``mine[part]`` is the next session this loader will load.
    A SQLite loader never gets ahead of PostgreSQL's frontier (``min(pg_next)``: every session
    below it is in PostgreSQL), so that both stores hold the same sessions whenever the load is
    cut short: ``stop_file`` holding N makes every loader stop before session N."""
    try:
        store = sessiondb.open(location)
        corpus = Corpus(messages)
        cpu0 = time.process_time()
        loaded = 0
        for i in range(part, corpus.n_sessions, parts):
            while True:
                stop = int(stop_file.read_text()) if stop_file.exists() else corpus.n_sessions
                if i >= stop or backend == "postgresql" or i < min(pg_next[:]):
                    break
                time.sleep(0.2)
            if i >= stop:
                break
            mine[part] = i
            sid, source, msgs = corpus.session(i)
            store.ensure_session(sid, source=source)
            store.append_many(sid, [{"role": r, "content": c} for r, c in msgs])
            loaded += len(msgs)
        mine[part] = _DONE
        store.close()
        out.put((backend, loaded, time.perf_counter(), time.process_time() - cpu0, None))
    except BaseException as e:  # reported by the parent
        mine[part] = _DONE
        out.put((backend, 0, time.perf_counter(), 0.0, f"{type(e).__name__}: {e}"))


def _drop_gin(schema: str) -> list[tuple[str, str]]:
    """Drop the GIN indexes of a bulk load; their (name, catalog definition)."""
    with admin() as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = %s AND indexname = ANY(%s)",
            (schema, list(_BULK_INDEXES)),
        ).fetchall()
        for index_name, _ in rows:
            assert index_name in _BULK_INDEXES
            conn.execute(f"DROP INDEX {schema}.{index_name}")  # names from the catalog
    return [(str(a), str(b)) for a, b in rows]


def _rebuild_gin(schema: str, rows: list[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild the dropped indexes from their catalog definitions, then VACUUM (ANALYZE)."""
    out: dict[str, Any] = {}
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
    out["indexes_rebuilt"] = sorted(name for name, _ in rows)
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
    procs: tuple[int, int] = (1, 1),
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
        corpus = _loaded_corpus(corpus, kept.get("sessions_loaded", corpus.n_sessions))
    else:
        run_dir = data_dir / f"pg-search-{secrets.token_hex(4)}"
        run_dir.mkdir(parents=True)
        url, name = new_pg_store()
    sq_path = run_dir / f"sqlite-{messages}.db"
    try:
        if reuse is None:
            sessions, figures = _load_both(messages, corpus, sq_path, url, name, procs)
            out.update(figures)
            corpus = _loaded_corpus(corpus, sessions)
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


def _loaded_corpus(corpus: Corpus, sessions: int) -> Corpus:
    """The corpus of the first *sessions* sessions (a load cut short): the same sessions, and
    queries made from them only."""
    if sessions == corpus.n_sessions:
        return corpus
    part = Corpus(sum(corpus.sizes[:sessions]), seed=corpus.seed)
    assert part.sizes == corpus.sizes[:sessions]
    return part


def _load_both(
    messages: int,
    corpus: Corpus,
    sq_path: Path,
    url: str,
    name: str,
    procs: tuple[int, int],
) -> tuple[int, dict[str, Any]]:
    """Both stores loaded at the same time by ``procs`` = (PostgreSQL, SQLite) forked loaders
    each (:func:`_loader`); PostgreSQL's GIN indexes dropped first and rebuilt after. Returns
    the sessions loaded (all, unless a stop file cut the load: docstring of _loader) and the
    load figures."""
    pg_procs, sq_procs = procs
    stop_file = sq_path.parent / "stop_at"
    print(
        f"search {messages}: loading SQLite ({sq_path}, {sq_procs} loaders) and PostgreSQL"
        f" ({name}, {pg_procs} loaders); write N to {stop_file} to stop before session N",
        flush=True,
    )
    sessiondb.open(sq_path).close()
    sessiondb.open(url).close()
    dropped = _drop_gin(name)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    pg_next, sq_next = ctx.Array("q", pg_procs, lock=False), ctx.Array("q", sq_procs, lock=False)
    cpu_before = os.times()
    t0 = time.perf_counter()
    loaders = [
        ctx.Process(
            target=_loader,
            args=(backend, where, messages, n, part, stop_file, pg_next, progress, q),
        )
        for backend, where, n, progress in (
            ("postgresql", url, pg_procs, pg_next),
            ("sqlite", str(sq_path), sq_procs, sq_next),
        )
        for part in range(n)
    ]
    for p in loaders:
        p.start()
    results: list[tuple[str, int, float, float, str | None]] = []
    try:
        while len(results) < len(loaders):
            with contextlib.suppress(queue.Empty):  # a minute passed: log the progress
                results.append(q.get(timeout=60))
            print(
                f"  {time.perf_counter() - t0:.0f} s: PostgreSQL below session"
                f" {min(min(pg_next[:]), corpus.n_sessions)}, SQLite below"
                f" {min(min(sq_next[:]), corpus.n_sessions)} of {corpus.n_sessions};"
                f" load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    finally:
        for p in loaders:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()  # a process this function started
    errors = [r[4] for r in results if r[4]]
    if errors:
        raise RuntimeError(f"a load failed: {errors[0]}")
    stop = int(stop_file.read_text()) if stop_file.exists() else corpus.n_sessions
    sessions = min(stop, corpus.n_sessions)
    loaded = {b: sum(r[1] for r in results if r[0] == b) for b in ("postgresql", "sqlite")}
    want = sum(corpus.sizes[:sessions])
    assert loaded == {"postgresql": want, "sqlite": want}, (loaded, want)
    cpu_after = os.times()
    loads: dict[str, Any] = {}
    for b, n in (("postgresql", pg_procs), ("sqlite", sq_procs)):
        loads[b] = {
            "append_many_s": round(max(r[2] for r in results if r[0] == b) - t0, 1),
            "loaders": n,
            "loader_cpu_s": round(sum(r[3] for r in results if r[0] == b), 1),
        }
    loads["children_cpu_s"] = round(
        cpu_after.children_user
        + cpu_after.children_system
        - cpu_before.children_user
        - cpu_before.children_system,
        1,
    )
    pg_load = loads["postgresql"]
    pg_load.update(_rebuild_gin(name, dropped))
    pg_load["total_s"] = round(
        pg_load["append_many_s"] + pg_load["index_build_s"] + pg_load["vacuum_analyze_s"], 1
    )
    print(f"search {messages}: {sessions} sessions, {want} messages loaded: {loads}", flush=True)
    return sessions, {
        "sqlite_load": loads["sqlite"],
        "postgresql_load": pg_load,
        "loaded_concurrently": True,
        "messages_loaded": want,
        "sessions_loaded": sessions,
    }


def search(
    sizes: list[int],
    n_queries: int,
    rounds: int,
    data_dir: Path,
    keep: bool,
    save: Callable[[dict[str, Any]], None] = lambda _: None,
    reuse: Path | None = None,
    procs: tuple[int, int] = (1, 1),
) -> dict[str, Any]:
    """Each size in turn; *save* gets the results so far after each (a long run keeps them)."""
    out: dict[str, Any] = {}
    for n in sizes:
        out[str(n)] = search_one(n, n_queries, rounds, data_dir, keep, reuse, procs)
        save(out)
    return out
