"""The viewer beside writers: append latency with 3 live tabs open vs none, in one run.

``sessiondb serve`` runs as its own process (the CLI, as a user starts it) on a store that 3
writer processes append to, one session each, one call per turn (deterministic 200-2000-byte
turns, benchmarks/common.py). Two phases alternate within each round, each on fresh sessions:

- ``none``: no browser tab open;
- ``tabs3``: 3 live tabs, i.e. 3 server-sent-event streams (``/s/<session>/events``), one per
  writer's session, connected before the writers start and read until they have every message.

Per phase: the writers' append latency p50/p99/max (all appends of all rounds), appends/s, the
WAL's largest size seen, and for ``tabs3`` the events the tabs received (each tab must get every
message of its session exactly once). The ratio of p99 with tabs to p99 without is the figure
docs/benchmarks.md reports.

    python -m benchmarks.serve [--quick] [--rounds 3] [--per-writer 300]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sessiondb
from benchmarks.common import fresh_dir, latency_summary, machine_facts, turn, write_json

WRITERS = 3


def writer(path: str, worker: int, session_id: str, n: int, barrier: Any, out: Any) -> None:
    store = sessiondb.open(path)
    texts = [turn(worker, i) for i in range(n)]
    barrier.wait()
    lat: list[float] = []
    t0 = time.perf_counter()
    for text in texts:
        a = time.perf_counter()
        store.append(session_id, "user", text)
        lat.append(time.perf_counter() - a)
    out.put((worker, lat, time.perf_counter() - t0))
    store.close()


class Tab(threading.Thread):
    """One live tab: an event stream of one session, read until ``want`` messages came."""

    def __init__(self, port: int, session_id: str, want: int) -> None:
        super().__init__(daemon=True)
        self.port, self.sid, self.want = port, session_id, want
        self.seqs: list[int] = []
        self.connected = threading.Event()

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        req = (
            f"GET /s/{self.sid}/events?after=0 HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        )
        sock.sendall(req.encode())
        buf = b""
        while len(self.seqs) < self.want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            if not self.connected.is_set() and b"retry:" in buf + chunk:
                self.connected.set()
            buf += chunk
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                for line in block.split(b"\n"):
                    if line.startswith(b"id: "):
                        self.seqs.append(int(line[4:]))
        self.connected.set()
        sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def phase(path: Path, port: int, name: str, tag: str, per: int) -> dict[str, Any]:
    sids = [f"{tag}-{name}-w{w}" for w in range(WRITERS)]
    with sessiondb.open(path) as s:
        for sid in sids:
            s.create_session(sid, source="bench")
    tabs = [Tab(port, sid, per) for sid in sids] if name == "tabs3" else []
    for t in tabs:
        t.start()
    for t in tabs:
        t.connected.wait(30)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=writer, args=(str(path), w, sids[w], per, barrier, out))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    wal = Path(str(path) + "-wal")
    wal_max = 0
    results = []
    while len(results) < WRITERS:
        with contextlib.suppress(queue.Empty):
            results.append(out.get(timeout=0.05))
        if wal.exists():
            wal_max = max(wal_max, wal.stat().st_size)
    for p in procs:
        p.join()
    for t in tabs:
        t.join(60)
    lat = [x for _, ls, _ in results for x in ls]
    elapsed = max(e for _, _, e in results)
    return {
        "latencies": lat,
        "appends_per_s": round(len(lat) / elapsed, 1),
        "wal_max_bytes": wal_max,
        "tab_events": [len(t.seqs) for t in tabs],
        "tabs_exact": all(t.seqs == list(range(1, per + 1)) for t in tabs),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-writer", type=int, default=300)
    args, _ = ap.parse_known_args(argv)
    rounds, per = (1, 100) if args.quick else (args.rounds, args.per_writer)
    work = fresh_dir("serve")
    path = work / "sessions.db"
    sessiondb.open(path).close()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sessiondb.cli", "--db", str(path), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SESSIONDB_PATH": ""},
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode()  # the URL, once it listens
        if "http://" not in line:
            raise SystemExit(f"the viewer did not start: {line}")
        runs: dict[str, list[dict[str, Any]]] = {"none": [], "tabs3": []}
        for r in range(rounds):
            order = ["none", "tabs3"] if r % 2 == 0 else ["tabs3", "none"]
            for name in order:
                runs[name].append(phase(path, port, name, f"r{r}", per))
                print(f"round {r} {name}: {runs[name][-1]['appends_per_s']} appends/s", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    systems: dict[str, Any] = {}
    for name, phases in runs.items():
        lat = [x for p in phases for x in p["latencies"]]
        systems[name] = {
            "append_latency": latency_summary(lat),
            "appends_per_s_rounds": [p["appends_per_s"] for p in phases],
            "wal_max_bytes": max(p["wal_max_bytes"] for p in phases),
            "tab_events": [p["tab_events"] for p in phases],
            "tabs_exact": all(p["tabs_exact"] for p in phases),
        }
    none_p99 = systems["none"]["append_latency"]["p99_ms"]
    tabs_p99 = systems["tabs3"]["append_latency"]["p99_ms"]
    payload = {
        "benchmark": "serve",
        "command": "python -m benchmarks.serve" + (" --quick" if args.quick else ""),
        "writers": WRITERS,
        "per_writer": per,
        "rounds": rounds,
        "systems": systems,
        "ratio_p99_tabs3_vs_none": round(tabs_p99 / none_p99, 3) if none_p99 else None,
        "ratio_p50_tabs3_vs_none": round(
            systems["tabs3"]["append_latency"]["p50_ms"]
            / systems["none"]["append_latency"]["p50_ms"],
            3,
        ),
        "machine": machine_facts(),
    }
    dest = write_json("serve" if not args.quick else "serve_quick", payload)
    print(json.dumps({k: payload[k] for k in ("systems", "ratio_p99_tabs3_vs_none")}, indent=1))
    print(f"-> {dest}")
    return 0 if all(s["tabs_exact"] for s in systems.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
