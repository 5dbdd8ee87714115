"""The PostgreSQL backend beside the SQLite one and beside other frameworks' PostgreSQL stores,
in one run (docs/postgres.md, docs/benchmarks.md).

* **appends**: K writer processes (K = 1, 16, 64) each appending ``--appends`` single messages,
  into their own sessions and into one shared session; per-append latency p50/p99/max and total
  throughput, for SQLite (WAL, durability normal), sessiondb on PostgreSQL (durability normal =
  ``synchronous_commit=off``, and full), the PostgreSQL **ceiling** (each writer one bare psycopg
  connection in autocommit, ``synchronous_commit=off``, sessiondb's schema, one statement per
  append and so one transaction: the session row's counter raised and the row — content,
  sessiondb's tsvector, its word count — inserted with the seq it yields, in one
  ``WITH … UPDATE … RETURNING`` ``INSERT``; no session lookup, no key, no rollup, no pipeline,
  prepared statements on), optionally PostgreSQL without its search indexes
  (``--without-indexes``: what GIN maintenance costs, docs/postgres.md evidence 8), and the
  anchors of benchmarks/pg_anchors.py on the same server: LangGraph ``PostgresSaver``, OpenAI
  Agents ``SQLAlchemySession``, ADK ``DatabaseSessionService``. Every system gets a fresh store
  (schema ``bench_<hex>``, dropped after) for every case; ``--rounds`` rounds, each rotating the
  order the systems run in, each case's writers stopping at ``--budget`` seconds if their
  appends are not done by then; the summary gives the median and the min–max over rounds, and the
  throughput ratios taken within each round. Each PostgreSQL case first waits (bounded) for
  K + 10 free server connections: the server is shared.
* **search**: benchmarks/pg_search.py — the corpus of benchmarks/corpus.py at each ``--sizes``
  (100 000 and 1 000 000 messages) loaded into both backends, the same queries on each:
  p50/p99/max latency and recall@20, the load timed.

    python -m benchmarks.postgres [--quick] [--only appends|search] [--procs 1,16,64]
        [--appends 200] [--rounds 3] [--sizes 100000,1000000] [--data-dir /work/data/...]

Run it from .venv-bench-pg (``make bench-postgres``: the anchors' pinned packages,
benchmarks/requirements-postgres.txt); an anchor that cannot be imported is skipped and the
reason recorded. PostgreSQL: ``$SESSIONDB_BENCH_PG`` (benchmarks/pg_common.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks import pg_anchors
from benchmarks.common import latency_summary, machine_facts, write_json
from benchmarks.pg_common import (  # BASE, drop_pg, new_pg_store: imported from here too
    BASE,
    Start,
    admin,
    drop_pg,
    new_pg_store,
    new_schema,
    store_url,
    wait_for_connections,
)
from benchmarks.pg_search import search

__all__ = ["BASE", "drop_pg", "main", "new_pg_store", "run_appends"]

TEXT = "retry the deploy with exponential backoff after the gateway timed out " * 4
SQLITE, PG, PG_FULL, PG_BARE, PG_CEILING = (
    "sqlite",
    "postgresql",
    "postgresql durability=full",
    "postgresql without search indexes",
    "ceiling: bare psycopg, one statement per append",
)
_PG_OPTIONS: dict[str, dict[str, Any]] = {
    PG: {},
    PG_FULL: {"durability": "full"},
    PG_BARE: {},
    PG_CEILING: {},
}

# The ceiling's append (module docstring): sessiondb's one-statement append cut to what every
# append must do — the seq from the session row, the row and its search columns.
_CEILING_APPEND = (
    "WITH u AS (UPDATE sessions SET message_count = message_count + 1,"
    " updated_at = greatest(updated_at, %(at)s) WHERE id = %(ref)s RETURNING message_count)"
    " INSERT INTO messages (sid, seq, role, content, created_at, tsv, nterms, cjk)"
    " SELECT %(ref)s, u.message_count, 'user', %(content)s, %(at)s, %(tsv)s::tsvector,"
    " %(nterms)s, false FROM u RETURNING seq"
)


def _ceiling_write(
    url: str, schema: str, worker: int, n: int, shared: bool, start: Any
) -> tuple[list[float], dict[str, int]]:
    import psycopg

    from sessiondb.postgres.append import tsvector_text

    session = "shared" if shared else f"own-{worker}"
    store = sessiondb.open(url)
    store.append(session, "user", "warm-up")  # the session, made as for the other systems
    store.close()
    conn = psycopg.connect(BASE, autocommit=True)
    assert schema.startswith("bench_") and schema[6:].isalnum()
    conn.execute(f"SET search_path TO {schema}")  # a name made by new_schema, never input
    conn.execute("SET synchronous_commit TO off")  # sessiondb's durability normal
    row = conn.execute("SELECT id FROM sessions WHERE session_id = %s", (session,)).fetchone()
    assert row is not None
    ref = row[0]
    t_end = start.wait()
    lat = []
    for i in range(n):
        if time.perf_counter() > t_end:  # the case's time budget (Start)
            break
        t0 = time.perf_counter()
        content = f"{worker}/{i} {TEXT}"
        tsv, nterms = tsvector_text(content)
        got = conn.execute(
            _CEILING_APPEND,
            {"ref": ref, "at": time.time(), "content": content, "tsv": tsv, "nterms": nterms},
        ).fetchone()
        lat.append(time.perf_counter() - t0)
        assert got is not None
    conn.close()
    return lat, {}


def _sessiondb_write(
    location: str, options: dict[str, Any], worker: int, n: int, shared: bool, start: Any
) -> tuple[list[float], dict[str, int]]:
    store = sessiondb.open(location, **options)
    session = "shared" if shared else f"own-{worker}"
    store.append(session, "user", "warm-up")
    t_end = start.wait()
    lat = []
    for i in range(n):
        if time.perf_counter() > t_end:  # the case's time budget (Start)
            break
        t0 = time.perf_counter()
        store.append(session, "user", f"{worker}/{i} {TEXT}")
        lat.append(time.perf_counter() - t0)
    store.close()
    return lat, {}


def _writer(
    system: str,
    target: str,
    options: dict[str, Any],
    worker: int,
    n: int,
    shared: bool,
    start: Any,
    out: Any,
) -> None:
    try:
        if system in pg_anchors.ANCHORS:
            res = pg_anchors.write(system, target, worker, n, shared, start)
        elif system == PG_CEILING:
            res = _ceiling_write(target, options["schema"], worker, n, shared, start)
        else:
            res = _sessiondb_write(target, options, worker, n, shared, start)
        out.put(res)
    except BaseException as e:  # reported by the parent, never a hang
        start.barrier.abort()
        out.put(("error", f"{type(e).__name__}: {e}"))


def _prepare(system: str, tmp: Path, tag: str) -> tuple[str, str | None]:
    """A fresh store for *system*: (target, PostgreSQL schema to drop or None)."""
    if system == SQLITE:
        location = str(tmp / f"{tag}.db")
        sessiondb.open(location).close()
        return location, None
    schema = new_schema()
    if system in pg_anchors.ANCHORS:
        pg_anchors.prepare(system, schema)
        return schema, schema
    url = store_url(schema)
    sessiondb.open(url).close()
    if system == PG_BARE:
        _drop_search_indexes(url)
    return url, schema


def _stored(system: str, schema: str) -> dict[str, int]:
    if system in pg_anchors.ANCHORS:
        return pg_anchors.stored(system, schema)
    with admin() as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.messages").fetchone()  # our name
    return {"rows": int(row[0]) if row else 0}


def _run_writers(
    system: str,
    target: str,
    options: dict[str, Any],
    procs: int,
    n: int,
    shared: bool,
    budget: float,
) -> dict[str, Any]:
    """K forked writers on *target*, started together; their latencies and throughput."""
    ctx = mp.get_context("fork")  # the parent imported the anchors once (pg_anchors.prepare)
    barrier, out = ctx.Barrier(procs + 1, timeout=600), ctx.Queue()
    start = Start(barrier, budget)
    ps = [
        ctx.Process(target=_writer, args=(system, target, options, w, n, shared, start, out))
        for w in range(procs)
    ]
    for p in ps:
        p.start()
    with contextlib.suppress(Exception):  # a writer failed: its error is in the queue
        barrier.wait()
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    lat: list[float] = []
    extra: dict[str, int] = {}
    errors: list[str] = []
    for _ in ps:
        got = out.get(timeout=1800)
        if got[0] == "error":
            errors.append(got[1])
            continue
        lat += got[0]
        for k, v in got[1].items():
            extra[k] = extra.get(k, 0) + v
    elapsed = time.perf_counter() - t0
    for p in ps:
        p.join(timeout=60)
    if errors:
        return {"error": errors[0], "errors": len(errors)}
    return {
        **latency_summary(lat),
        "appends_per_s": round(len(lat) / elapsed, 1),
        "of_planned": procs * n,  # fewer when the budget ran out first
        "loadavg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],  # shared host
        **extra,
    }


def run_appends(
    location: str, options: dict[str, Any], procs: int, n: int, shared: bool
) -> dict[str, Any]:
    """sessiondb alone at *location* (no budget): what benchmarks/postgres_ab.py on the `pg`
    branch calls in each checkout it compares."""
    sessiondb.open(location, **options).close()
    return _run_writers("sessiondb", location, options, procs, n, shared, float("inf"))


def run_case(
    system: str, tmp: Path, tag: str, procs: int, n: int, shared: bool, budget: float
) -> dict[str, Any]:
    """One system in one case, on a fresh store that is removed afterwards."""
    if system != SQLITE:
        free = wait_for_connections(procs + 10)
        if free < procs + 10:
            return {
                "skipped": f"the shared server had {free} free connections, {procs + 10} needed"
            }
    target, schema = _prepare(system, tmp, tag)
    try:
        options = _PG_OPTIONS.get(system, {})
        if system == PG_CEILING:
            options = {"schema": schema}
        res = _run_writers(system, target, options, procs, n, shared, budget)
        if schema is not None and "n" in res:
            res["stored"] = _stored(system, schema)
            # Every acknowledged append and warm-up, plus the anchor's own setup row.
            setup = 1 if system == "openai-agents SQLAlchemySession" else 0
            res["stored"]["expected_rows"] = res["n"] + procs + setup
        return res
    finally:
        if schema is not None:
            drop_pg(schema)
        elif Path(target).exists():
            for f in Path(target).parent.glob(Path(target).name + "*"):
                f.unlink()


def _drop_search_indexes(location: str) -> None:
    store = sessiondb.open(location)
    with store.backend.connections.write() as conn:  # type: ignore[attr-defined]
        conn.execute("DROP INDEX messages_search")
        conn.execute("DROP INDEX IF EXISTS messages_cjk_trgm")
    store.close()


def _anchors_available() -> tuple[list[str], dict[str, str]]:
    ok, missing = [], {}
    for anchor, module in zip(
        pg_anchors.ANCHORS,
        (
            "langgraph.checkpoint.postgres",
            "agents.extensions.memory.sqlalchemy_session",
            "google.adk.sessions.database_session_service",
        ),
        strict=True,
    ):
        try:
            importlib.import_module(module)
            ok.append(anchor)
        except ImportError as e:
            missing[anchor] = f"cannot import {module}: {e} (benchmarks/requirements-postgres.txt)"
    return ok, missing


def appends(
    procs_list: list[int],
    n: int,
    rounds: int,
    systems: list[str],
    data_dir: Path,
    budget: float,
    save: Callable[[dict[str, Any]], None] = lambda _: None,
) -> dict[str, Any]:
    """Every case in every round; each round rotates the order the systems run in."""
    out: dict[str, Any] = {"rounds": []}
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-pg-", dir=data_dir) as tmp:
        for r in range(rounds):
            shift = r % len(systems)
            order = systems[shift:] + systems[:shift]
            this: dict[str, Any] = {}
            for procs in procs_list:
                for shared in (False, True):
                    case = f"K={procs} {'shared session' if shared else 'own sessions'}"
                    row: dict[str, Any] = {}
                    for i, system in enumerate(order):
                        row[system] = run_case(
                            system, Path(tmp), f"{r}-{i}", procs, n, shared, budget
                        )
                    this[case] = {s: row[s] for s in systems}
                    print(
                        f"round {r + 1}",
                        case,
                        {
                            k: (v.get("p50_ms"), v.get("p99_ms"), v.get("appends_per_s"))
                            if "n" in v
                            else v
                            for k, v in this[case].items()
                        },
                        flush=True,
                    )
            out["rounds"].append(this)
            save({**out, "summary": summarise(out["rounds"], systems)})  # kept if the run dies
    out["summary"] = summarise(out["rounds"], systems)
    return out


def summarise(rounds: list[dict[str, Any]], systems: list[str]) -> dict[str, Any]:
    """Per case and system: the median over rounds and the spread (min–max) of throughput,
    p50, p99, and of the throughput ratios to SQLite and to sessiondb on PostgreSQL taken
    within each round."""
    summary: dict[str, Any] = {}
    for case in rounds[0]:
        summary[case] = {}
        for system in systems:
            runs = [rd[case][system] for rd in rounds if "n" in rd[case][system]]
            if not runs:
                summary[case][system] = {"no_result": [rd[case][system] for rd in rounds]}
                continue
            row: dict[str, Any] = {"rounds": len(runs)}
            for key in ("appends_per_s", "p50_ms", "p99_ms", "max_ms"):
                vals = sorted(v[key] for v in runs)
                row[key] = {"median": statistics.median(vals), "min": vals[0], "max": vals[-1]}
            for base, key in ((SQLITE, "sqlite"), (PG, "postgresql"), (PG_CEILING, "ceiling")):
                if base not in systems:
                    continue
                ratios = sorted(
                    rd[case][system]["appends_per_s"] / rd[case][base]["appends_per_s"]
                    for rd in rounds
                    if "n" in rd[case][system] and "n" in rd[case].get(base, {})
                )
                if ratios:
                    row[f"throughput_vs_{key}"] = {
                        "median": round(statistics.median(ratios), 3),
                        "min": round(ratios[0], 3),
                        "max": round(ratios[-1], 3),
                    }
            summary[case][system] = row
    return summary


SERVER_SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "shared_buffers",
    "max_connections",
    "work_mem",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__)
    ap.add_argument(
        "--quick", action="store_true", help="10 000 messages; K=1,16, 50 appends; one round"
    )
    ap.add_argument("--sizes", default="100000,1000000", help="corpus sizes for search")
    ap.add_argument("--search-rounds", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, default=Path("/work/data/sessiondb-bench"))
    ap.add_argument("--keep-data", action="store_true", help="keep the search stores")
    ap.add_argument(
        "--reuse", type=Path, help="search the stores a --keep-data run kept in DIR, no load"
    )
    ap.add_argument(
        "--load-procs",
        default="1,1",
        help="search: loader processes for PostgreSQL,SQLite (benchmarks/pg_search.py)",
    )
    ap.add_argument("--name", help="results file name (default postgres[_quick][_ONLY])")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--appends", type=int, default=200, help="per writer process")
    ap.add_argument("--procs", default="1,16,64")
    ap.add_argument(
        "--budget", type=float, default=30.0, help="seconds a case's writers may append for"
    )
    ap.add_argument("--rounds", type=int, default=3, help="append rounds (order rotated)")
    ap.add_argument(
        "--without-indexes", action="store_true", help="also PostgreSQL without GIN indexes"
    )
    ap.add_argument("--no-anchors", action="store_true", help="sessiondb and SQLite only")
    ap.add_argument("--only", choices=("appends", "search"))
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.queries, args.search_rounds = "10000", 100, 1
        args.appends, args.procs, args.rounds = 50, "1,16", 1
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with admin() as conn:
        result["postgresql"] = {
            k: conn.execute(f"SHOW {k}").fetchone()[0]  # names from this list
            for k in SERVER_SETTINGS
        }
    name = args.name or (
        "postgres" + ("_quick" if args.quick else "") + (f"_{args.only}" if args.only else "")
    )

    def save(key: str) -> Callable[[dict[str, Any]], None]:
        return lambda partial: write_json(name, {**result, key: partial, "partial": True})

    if args.only != "search":
        systems = [SQLITE, PG, PG_FULL, PG_CEILING] + ([PG_BARE] if args.without_indexes else [])
        if not args.no_anchors:
            ok, missing = _anchors_available()
            systems += ok
            result["anchors_skipped"] = missing
            result["anchor_packages"] = {
                d: _version(d)
                for d in (
                    "langgraph-checkpoint-postgres",
                    "langgraph-checkpoint",
                    "openai-agents",
                    "SQLAlchemy",
                    "asyncpg",
                    "google-adk",
                    "psycopg",
                )
            }
        result["appends"] = appends(
            [int(k) for k in args.procs.split(",")],
            args.appends,
            args.rounds,
            systems,
            args.data_dir,
            args.budget,
            save("appends"),
        )
    if args.only != "appends":
        sizes = [int(n) for n in args.sizes.split(",")]
        result["search"] = search(
            sizes,
            args.queries,
            args.search_rounds,
            args.data_dir,
            args.keep_data,
            save("search"),
            args.reuse,
            (int(args.load_procs.split(",")[0]), int(args.load_procs.split(",")[1])),
        )
    print(write_json(name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
