"""Appends on PostgreSQL: this checkout against an older one (``--base``), SQLite beside both,
alternated round by round in one run (docs/benchmarks.md, "PostgreSQL"; docs/postgres.md,
"Round trips").

Each round runs, for each checkout in turn (the order alternates between rounds): K writer
processes appending single messages (benchmarks/postgres.py ``run_appends``) into their own
sessions at K=1 and K=16 and into one shared session at K=16, on PostgreSQL (durability normal)
and on SQLite (the peer, measured again in every round). It also counts the round trips of one
append on each checkout (libpq's protocol trace, tests/postgres/trips.py) and the sends that
carry them (the client socket's data segments, tests/postgres/sends.py).

    git archive <commit> | tar -x -C /tmp/base
    python -m benchmarks.postgres_ab --base /tmp/base [--rounds 3] [--appends 200]

``--latency-ms X``: the PostgreSQL runs go through benchmarks/latency_proxy.py, which delays
every chunk X ms each way (a server one network hop away: 2X per round trip; each chunk leaves
at its arrival time + X, so pipelined bursts are not delayed twice).

``--search URL SQLITE_PATH``: instead, search latency on stores already holding the corpus of
benchmarks/corpus.py (``--messages``; load them with benchmarks/postgres.py's ``_load``): the
same queries on each checkout's PostgreSQL search and on SQLite, alternated round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks.common import machine_facts, write_json

HERE = Path(__file__).resolve().parent.parent
CASES = ((1, False), (16, False), (16, True))

# Run inside a checkout (PYTHONPATH): its sessiondb, its benchmarks.postgres.
_CASE = """
import json, sys, tempfile
from pathlib import Path
from benchmarks.postgres import drop_pg, new_pg_store, run_appends
procs, n, shared, backend = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
if backend == "sqlite":
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        print(json.dumps(run_appends(str(Path(tmp) / "s.db"), {}, procs, n, shared)))
else:
    import os
    url, name = new_pg_store()
    via = os.environ.get("SESSIONDB_AB_VIA")  # the delay proxy's base URL
    if via:
        url = via + url[url.index("?"):]
    try:
        print(json.dumps(run_appends(url, {}, procs, n, shared)))
    finally:
        drop_pg(name)
"""

_TRIPS = """
import importlib.util, json, sys
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
trips, sends = load("trips", sys.argv[1]), load("sends", sys.argv[2])
import sessiondb
from benchmarks.postgres import drop_pg, new_pg_store
url, name = new_pg_store()
try:
    with sessiondb.open(url) as s:
        s.append("s", "user", "first")
        with s.backend.connections.read() as conn:
            pass
        def both(action, times=10):
            found = []
            for _ in range(times):
                n = sends.count(conn, lambda: found.append(trips.count(conn, action)[0]))
                found[-1] = (found[-1], n)
            trips_seen, sends_seen = sorted({t for t, _ in found}), sorted({n for _, n in found})
            return {"round_trips": trips_seen, "sends": sends_seen}
        items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
        out = {
            "append": both(lambda: s.append("s", "user", "x")),
            "keyed append": both(lambda: s.append("s", "user", "k", key="k")),
            "append to a new session": both(lambda: s.append("n", "user", "x"), 1),
            "append_many (5)": both(lambda: s.append_many("s", items)),
            "get_session": both(lambda: s.get_session("s")),
        }
        # CPU per append on the loopback, this process and its server backend (/proc: the
        # server runs on this machine; clock ticks): load-insensitive, unlike appends/s.
        import os, time
        def backend_cpu():
            fields = open(f"/proc/{conn.info.backend_pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 0
        if n:
            c0, b0 = time.process_time(), backend_cpu()
            for i in range(n):
                s.append("s", "user", f"cpu {i}")
            out["cpu_us_per_append"] = {
                "client": round((time.process_time() - c0) / n * 1e6, 1),
                "server backend": round((backend_cpu() - b0) / n * 1e6, 1),
            }
    print(json.dumps(out))
finally:
    drop_pg(name)
"""


_SEARCH = """
import json, sys, time
import sessiondb
from benchmarks.common import latency_summary
from benchmarks.corpus import Corpus
where, messages, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
corpus = Corpus(messages)
store = sessiondb.open(where, readonly=True)
qs = corpus.queries(n)
for q in qs[:30]:
    store.search(q.text, limit=20)
lat, found, kinds = [], 0, {}
for q in qs:
    t0 = time.perf_counter()
    hits = store.search(q.text, limit=20)
    lat.append(time.perf_counter() - t0)
    kinds.setdefault(q.kind, []).append(lat[-1])
    found += any(h.message.session_id == q.session_id and h.message.seq == q.seq for h in hits)
out = {**latency_summary(lat), "recall_at_20": round(found / len(qs), 4)}
out["by_kind_p99_ms"] = {k: latency_summary(v)["p99_ms"] for k, v in kinds.items()}
print(json.dumps(out))
"""


def search_rounds(
    checkouts: dict[str, Path], url: str, sqlite: str, messages: int, queries: int, rounds: int
) -> list[dict[str, Any]]:
    out = []
    for r in range(rounds):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        row: dict[str, Any] = {}
        for label in order:
            row[f"{label} postgresql"] = _run(
                checkouts[label], _SEARCH, url, str(messages), str(queries)
            )
            row[f"{label} sqlite"] = _run(
                checkouts[label], _SEARCH, sqlite, str(messages), str(queries)
            )
        print(r, {k: (v["p50_ms"], v["p99_ms"], v["max_ms"]) for k, v in row.items()}, flush=True)
        out.append(row)
    return out


def _run(checkout: Path, code: str, *args: str, via: str | None = None) -> Any:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    if via:
        env["SESSIONDB_AB_VIA"] = via
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (/proc, clock ticks); 0 without one."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.postgres_ab", description=__doc__)
    ap.add_argument("--base", required=True, type=Path, help="the older checkout")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--appends", type=int, default=200, help="per writer process")
    ap.add_argument("--search", nargs=2, metavar=("URL", "SQLITE_PATH"))
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--tag", default="", help="appended to the result file's name")
    ap.add_argument(
        "--cpu-appends", type=int, default=0, help="also CPU per append, this many per round"
    )
    args = ap.parse_args(argv)
    checkouts = {"base": args.base.resolve(), "new": HERE}
    if args.search:
        found = search_rounds(checkouts, *args.search, args.messages, args.queries, args.rounds)
        payload = {
            "machine": machine_facts(),
            "args": {"messages": args.messages, "queries": args.queries, "rounds": args.rounds},
            "rounds": found,
        }
        print(write_json("postgres_search_ab" + args.tag, payload))
        return 0
    trips_py = str(HERE / "tests" / "postgres" / "trips.py")
    sends_py = str(HERE / "tests" / "postgres" / "sends.py")
    via, proxy_pid = None, 0
    if args.latency_ms > 0:
        from benchmarks.latency_proxy import start
        from benchmarks.postgres import BASE

        target = urlsplit(BASE)
        port, _proxy = start(
            (target.hostname or "127.0.0.1", target.port or 5432), args.latency_ms / 1000
        )
        proxy_pid = _proxy.pid or 0
        user = f"{target.username}@" if target.username else ""
        via = urlunsplit((target.scheme, f"{user}127.0.0.1:{port}", target.path, "", ""))
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "args": {"rounds": args.rounds, "appends": args.appends, "latency_ms": args.latency_ms},
        "round_trips": {k: _run(v, _TRIPS, trips_py, sends_py) for k, v in checkouts.items()},
        "rounds": [],
    }
    print(result["round_trips"], flush=True)
    if args.cpu_appends:  # CPU per append on the loopback, checkouts alternated
        result["args"]["cpu_appends"] = args.cpu_appends
        result["cpu_rounds"] = []
        for r in range(args.rounds):
            order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
            cpu = {
                k: _run(checkouts[k], _TRIPS, trips_py, sends_py, str(args.cpu_appends))[
                    "cpu_us_per_append"
                ]
                for k in order
            }
            print(r, "cpu us per append", cpu, flush=True)
            result["cpu_rounds"].append(cpu)
    for r in range(args.rounds):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        row: dict[str, Any] = {}
        for procs, shared in CASES:
            case = f"K={procs} {'shared session' if shared else 'own sessions'}"
            cell: dict[str, Any] = {}
            for label in order:
                for backend in ("sqlite", "postgresql"):
                    proxy_cpu = _cpu_seconds(proxy_pid)
                    cell[f"{label} {backend}"] = got = _run(
                        checkouts[label],
                        _CASE,
                        str(procs),
                        str(args.appends),
                        "1" if shared else "0",
                        backend,
                        via=via if backend == "postgresql" else None,
                    )
                    if backend == "postgresql" and proxy_pid and got.get("n"):
                        # the proxy's CPU per append: what each packet costs it
                        spent = _cpu_seconds(proxy_pid) - proxy_cpu
                        got["proxy_cpu_us_per_append"] = round(spent / got["n"] * 1e6, 1)
            for label in order:
                pg = cell[f"{label} postgresql"]["appends_per_s"]
                cell[f"{label} ratio to sqlite"] = round(
                    pg / cell[f"{label} sqlite"]["appends_per_s"], 3
                )
            cell["new/base postgresql"] = round(
                cell["new postgresql"]["appends_per_s"] / cell["base postgresql"]["appends_per_s"],
                3,
            )
            row[case] = cell
            print(
                r,
                case,
                {
                    k: (v["appends_per_s"], v.get("proxy_cpu_us_per_append"))
                    if isinstance(v, dict)
                    else v
                    for k, v in cell.items()
                },
                flush=True,
            )
        result["rounds"].append(row)
    name = "postgres_round_trips" + (f"_latency{args.latency_ms:g}ms" if via else "") + args.tag
    print(write_json(name, result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
