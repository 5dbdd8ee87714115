"""Channel benchmark: one-way throughput, round-trip latency, idle CPU of a waiting receive().

    python -m benchmarks.channel [--quick] [--dir FOLDER]

Every figure is measured in this run next to its ceiling: a bare single-connection apsw loop
doing the same insert with the same pragmas (DELETE journal, synchronous=NORMAL). Targets from
the issue (reported, never asserted): >= 5 000 msg/s one way; round trip p50 <= 5 ms, p99 <= 50
ms; idle CPU <= 1 % of a core. Results go to benchmarks/results/channel.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import apsw

from sessiondb.channel import AgentEnd, HostEnd

SPAWN = mp.get_context("spawn")
RESULTS = Path(__file__).resolve().parent / "results" / "channel.json"


# -- processes (top level: spawned) ------------------------------------------------------------


def _counting_receiver(folder: str, total: int, out: Any) -> None:
    """Receive (claiming) until ``total`` messages arrived; report when the last one did."""
    agent = AgentEnd(folder)
    out.put("ready")
    got = 0
    while got < total:
        got += len(agent.receive(limit=500, timeout=30))
    out.put(time.time())


def _echo_agent(folder: str, out: Any) -> None:
    """Reply to each message (final reply: settles it) until it receives 'stop'."""
    agent = AgentEnd(folder, heartbeat_every=5.0)
    out.put("ready")
    while True:
        for m in agent.receive(limit=10, timeout=30):
            agent.reply("echo:" + m.content, in_reply_to=m.seq)
            if m.content == "stop":
                agent.close()
                return


def _idle_waiter(folder: str, seconds: float, out: Any) -> None:
    """CPU of this (waiting) process, from getrusage: microsecond resolution, unlike os.times."""
    agent = AgentEnd(folder)
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    got = agent.receive(timeout=seconds)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.put({"received": len(got), "wall_s": round(wall, 3), "cpu_s": round(cpu, 6)})


# -- measurements ------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(_pct(ms, 99), 3),
        "max_ms": round(max(ms), 3),
    }


def ceiling(folder: Path, n: int, batch: int) -> float:
    """Bare apsw: the same insert, one transaction per ``batch`` rows; rows per second."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ceiling.db"
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=DELETE").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE messages(seq INTEGER PRIMARY KEY, kind TEXT, content TEXT, key TEXT UNIQUE,"
        " created_at REAL, attempt INTEGER, offer_at REAL, state TEXT)"
    )
    t0 = time.perf_counter()
    seq = 0
    for start in range(0, n, batch):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(start, min(n, start + batch)):
            seq += 2
            now = time.time()
            conn.execute(
                "INSERT INTO messages VALUES (?, 'message', ?, NULL, ?, 1, ?, 'open')",
                (seq, f"message {i}", now, now),
            )
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def commit_latency(folder: Path, n: int) -> list[float]:
    """Bare apsw: milliseconds per one-row durable commit (a round trip needs three: the
    host's send, the agent's claim, the agent's final reply)."""
    conn = apsw.Connection(str(folder / "commit-latency.db"))
    conn.execute("PRAGMA journal_mode=DELETE").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t(seq INTEGER PRIMARY KEY, content TEXT)")
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t(content) VALUES (?)", (f"ping {i}",))
        conn.execute("COMMIT")
        samples.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return samples


def one_way(folder: Path, n: int, batch: int) -> float:
    """Host sends ``n`` messages (``batch`` per transaction; 1 = send()); an agent process
    receives and claims them. Messages per second, first send to last receipt."""
    host = HostEnd(folder)
    out = SPAWN.Queue()
    p = SPAWN.Process(target=_counting_receiver, args=(str(folder), n, out))
    p.start()
    assert out.get(timeout=60) == "ready"
    t0 = time.time()
    if batch == 1:
        for i in range(n):
            host.send(f"message {i}")
    else:
        for start in range(0, n, batch):
            host.send_many([f"message {i}" for i in range(start, min(n, start + batch))])
    last = float(out.get(timeout=120))
    p.join(30)
    host.close()
    return n / (last - t0)


def round_trip(folder: Path, n: int) -> list[float]:
    """host.send → agent receive + final reply → host.replies sees it; milliseconds each."""
    host = HostEnd(folder)
    out = SPAWN.Queue()
    p = SPAWN.Process(target=_echo_agent, args=(str(folder), out))
    p.start()
    assert out.get(timeout=60) == "ready"
    cursor = 0
    samples: list[float] = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        seq = host.send(f"ping {i}")
        while True:
            got = host.replies(after=cursor, timeout=10)
            if not got:
                raise RuntimeError("agent did not reply within 10 s")
            cursor = got[-1].seq
            if any(r.in_reply_to == seq for r in got):
                break
        if i >= 20:  # the first 20 warm caches and connections
            samples.append((time.perf_counter() - t0) * 1000)
    host.send("stop")
    p.join(30)
    host.close()
    return samples


def idle_cpu(folder: Path, seconds: float) -> dict[str, float]:
    HostEnd(folder).close()
    out = SPAWN.Queue()
    p = SPAWN.Process(target=_idle_waiter, args=(str(folder), seconds, out))
    p.start()
    res: dict[str, float] = out.get(timeout=seconds + 60)
    p.join(30)
    res["cpu_percent_of_core"] = round(100 * res["cpu_s"] / res["wall_s"], 4)
    return res


def machine() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "apsw": apsw.apswversion(),
        "sqlite": apsw.sqlite_lib_version(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "git_commit": commit or None,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.channel", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--dir", help="where to create the channel folders (default: a temp dir)")
    args = ap.parse_args(argv)
    n_one = 500 if args.quick else 3000
    n_rt = 100 if args.quick else 1000
    idle_s = 3.0 if args.quick else 10.0
    base = Path(tempfile.mkdtemp(prefix="sessiondb-bench-channel-", dir=args.dir))

    print(f"channel benchmark in {base} ({'quick' if args.quick else 'full'})", flush=True)
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "dir": str(base)}
    # The disk is shared and noisy: each ceiling is measured right before and right after the
    # figure it bounds, and the ratio uses their mean.
    ceil1_runs = [ceiling(base / "c1a", n_one, 1)]
    single = one_way(base / "one-way-1", n_one, 1)
    ceil1_runs.append(ceiling(base / "c1b", n_one, 1))
    ceil100_runs = [ceiling(base / "c100a", n_one * 4, 100)]
    batched = one_way(base / "one-way-100", n_one * 4, 100)
    ceil100_runs.append(ceiling(base / "c100b", n_one * 4, 100))
    ceil1, ceil100 = statistics.mean(ceil1_runs), statistics.mean(ceil100_runs)
    results["one_way"] = {
        "messages": n_one,
        "messages_batched": n_one * 4,
        "send_per_message_msgs_per_s": round(single),
        "send_many_100_msgs_per_s": round(batched),
        "ceiling_bare_insert_1_per_tx_per_s": [round(c) for c in ceil1_runs],
        "ceiling_bare_insert_100_per_tx_per_s": [round(c) for c in ceil100_runs],
        "ratio_send_to_ceiling": round(single / ceil1, 3),
        "ratio_send_many_to_ceiling": round(batched / ceil100, 3),
        "target_msgs_per_s": 5000,
    }
    print(json.dumps(results["one_way"], indent=2), flush=True)
    rt = _summary(round_trip(base / "round-trip", n_rt))
    commit = _summary(commit_latency(base, n_rt))
    results["round_trip"] = {
        **rt,
        "ceiling_one_bare_commit": commit,
        "ceiling_three_bare_commits_p50_ms": round(3 * commit["p50_ms"], 3),
        "target_p50_ms": 5,
        "target_p99_ms": 50,
    }
    print(json.dumps(results["round_trip"], indent=2), flush=True)
    results["idle_receive"] = {**idle_cpu(base / "idle", idle_s), "target_cpu_percent": 1.0}
    print(json.dumps(results["idle_receive"], indent=2), flush=True)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
