"""What does sharing one SQLite file between K processes cost, before any sessiondb code runs?

K processes each open one bare apsw connection on a store created by sessiondb (same schema,
search triggers included), queue on an flock exactly like sessiondb's admission, and run the
contention ceiling's append SQL (BEGIN IMMEDIATE; look up the session; UPDATE … RETURNING;
INSERT; COMMIT) for ``--seconds``; no checkpoints, like the ceiling. The gap between K=1 and
K>1 is the multi-process cost (waking the next process, each connection re-validating its page
cache after the others wrote); the gap between this and sessiondb at the same K is sessiondb's
own work (validation, checkpoints, Python per call).

    python -m benchmarks.floor [--seconds 3] [--ks 1,4,16,64]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import machine_facts

RESULTS = Path(__file__).parent / "results" / "floor.json"


def _worker(path: str, w: int, seconds: float, start: Any, out: Any) -> None:
    import apsw

    conn = apsw.Connection(path)
    conn.set_busy_timeout(30_000)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    rng = random.Random(w)
    turns = ["turn " * rng.randint(40, 400) for _ in range(64)]
    start.wait()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        now = time.time()
        fcntl.flock(fd, fcntl.LOCK_EX)
        conn.execute("BEGIN IMMEDIATE")
        sid = conn.execute("SELECT id FROM sessions WHERE session_id = ?", (f"s{w}",)).get
        seq = conn.execute(
            "UPDATE sessions SET message_count = message_count + 1, updated_at = ?"
            " WHERE id = ? RETURNING message_count",
            (now, sid),
        ).get
        conn.execute(
            "INSERT INTO messages(sid, seq, role, content, key, meta, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sid, seq, "user", turns[n % 64], None, None, now),
        )
        conn.execute("COMMIT")
        fcntl.flock(fd, fcntl.LOCK_UN)
        n += 1
    out.put(n)


def run(k: int, seconds: float) -> dict[str, Any]:
    import sessiondb

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "sessions.db")
        with sessiondb.open(path) as store:
            for w in range(k):
                store.ensure_session(f"s{w}")
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(path, w, seconds, start, out)) for w in range(k)]
        for p in procs:
            p.start()
        time.sleep(1.0)  # every child has imported apsw and opened its connection
        start.set()
        total = sum(out.get() for _ in procs)
        for p in procs:
            p.join()
    return {"k": k, "appends_per_s": round(total / seconds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--ks", default="1,4,16,64")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    rows = []
    for k in (int(x) for x in args.ks.split(",")):
        rows.append(run(k, seconds))
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine_facts(), "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
