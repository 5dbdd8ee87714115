"""wait_for_messages: wake-up latency, and what the NOTIFY after each commit costs the appends.

    python -m benchmarks.wait [--wakes 60] [--spread 1.0] [--writers 4] [--appends 300] [--rounds 3]

1. **Wake-up latency**: a listener process blocks in ``wait_for_messages`` for one session; this
   process appends to it once the listener is asleep (after a random pause of 0 to
   ``--spread`` seconds, so a poller is caught at any point of its backoff) and the listener
   records when its wait returned. Latency = wake-up time minus
   the time just before the append call (CLOCK_MONOTONIC is one clock for every process here),
   so it includes the append itself (its own latency is reported beside it). Systems:
   ``pg-notify`` (LISTEN/NOTIFY, postgres/notify.py), ``pg-poll`` (the same waiter without a
   listening connection: its bounded re-check alone), ``sqlite`` (PRAGMA data_version,
   sqlite/changes.py). Rounds of each system alternate.
2. **Append throughput** on PostgreSQL: ``--writers`` processes append ``--appends`` messages
   each, one idle listener connected. ``notify-after`` is what
   sessiondb does (pg_notify queued behind COMMIT, same round trip); ``off`` sends none (the
   ceiling); ``notify-inside`` queues it before COMMIT (inside the transaction: what issue 16
   measured at 0.30x), with ``--durability`` normal (``synchronous_commit`` off) or full (on).
   Variants alternate round by round; run once with a session per writer
   and once with every writer on one shared session (its row lock is where a NOTIFY inside the
   transaction hurts).

Results: benchmarks/results/wait.json; docs/benchmarks.md, "Waiting for messages".
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sessiondb

from .common import latency_summary, machine_facts, write_json
from .pg_common import drop_pg, new_pg_store

SYSTEMS = ("pg-notify", "pg-poll", "sqlite")
VARIANTS = ("notify-after", "off", "notify-inside")


# -- wake-up latency -----------------------------------------------------------------------------


class _Announcing:
    def __init__(self, inner: Any, asleep: Any) -> None:
        self._inner, self._asleep = inner, asleep

    def arm(self) -> object:
        return self._inner.arm()

    def sleep(self, token: object, seconds: float, stop: Any) -> None:
        self._asleep.set()
        self._inner.sleep(token, seconds, stop)

    def done(self) -> None:
        self._inner.done()


def _listener(location: str, system: str, n: int, asleep: Any, woke: Any) -> None:
    store = sessiondb.open(location)
    backend: Any = store.backend  # type: ignore[attr-defined]
    if system == "pg-poll":
        from sessiondb.postgres import notify

        notify.Listening.connection = lambda self: None  # type: ignore[method-assign]
    changes = backend.changes
    backend.changes = lambda sid: _Announcing(changes(sid), asleep)
    for i in range(1, n + 1):
        got = store.wait_for_messages("s", after=i, timeout=60)
        woke.put((time.monotonic(), got))
    store.close()


def wake_round(location: str, system: str, n: int, seed: int, spread: float) -> dict[str, Any]:
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("spawn")
    asleep, woke = ctx.Event(), ctx.Queue()
    with sessiondb.open(location) as store:
        store.append("s", "user", "first")
        proc = ctx.Process(target=_listener, args=(location, system, n, asleep, woke))
        proc.start()
        latencies, appends, missed = [], [], 0
        for _ in range(n):
            if not asleep.wait(60):
                raise RuntimeError(f"{system}: the listener did not go to sleep")
            asleep.clear()
            time.sleep(rng.uniform(0.0, spread))
            before = time.monotonic()
            store.append("s", "user", "next")
            appends.append(time.monotonic() - before)
            at, got = woke.get(timeout=120)
            missed += not got
            latencies.append(at - before)
        proc.join(60)
    return {"wake": latencies, "append": appends, "missed": missed}


def wake_latency(wakes: int, rounds: int, spread: float) -> dict[str, Any]:
    out: dict[str, dict[str, list[float] | int]] = {
        s: {"wake": [], "append": [], "missed": 0} for s in SYSTEMS
    }
    for r in range(rounds):
        for system in SYSTEMS if r % 2 == 0 else reversed(SYSTEMS):
            if system == "sqlite":
                folder = tempfile.mkdtemp(prefix="sessiondb-wait-")
                got = wake_round(str(Path(folder) / "s.db"), system, wakes, r, spread)
            else:
                url, schema = new_pg_store()
                try:
                    got = wake_round(url, system, wakes, r, spread)
                finally:
                    drop_pg(schema)
            for k in ("wake", "append"):
                out[system][k] += got[k]  # type: ignore[operator]
            out[system]["missed"] += got["missed"]  # type: ignore[operator]
            print(f"  wake {system} round {r}: p50 {latency_summary(got['wake'])['p50_ms']} ms")
    return {
        s: {
            "wake_latency": latency_summary(v["wake"]),  # type: ignore[arg-type]
            "append_latency": latency_summary(v["append"]),  # type: ignore[arg-type]
            "returned_false": v["missed"],
        }
        for s, v in out.items()
    }


# -- append throughput with and without the NOTIFY ----------------------------------------------


def _variant(name: str) -> None:
    from sessiondb.postgres import connection, notify

    if name == "off":
        notify.queue = lambda *args: None  # type: ignore[assignment]
    elif name == "notify-inside":

        def commit(self: Any) -> None:
            if self.after_commit is not None:
                self.after_commit(self.wire)  # before COMMIT: inside the transaction
            self.wire.commit()

        connection.Pipelined.commit = commit  # type: ignore[method-assign]


def _writer(
    url: str,
    variant: str,
    worker: int,
    n: int,
    shared: bool,
    durability: str,
    start: Any,
    results: Any,
) -> None:
    _variant(variant)
    store = sessiondb.open(url, durability=durability)
    sid = "shared" if shared else f"w{worker}"
    store.append(sid, "user", f"warm-up {worker}")
    cpu0 = time.process_time()
    start.wait()
    began = time.monotonic()
    for i in range(n):
        store.append(sid, "assistant", f"message {i} of worker {worker}")
    results.put((time.monotonic() - began, time.process_time() - cpu0))
    store.close()


def throughput_round(
    variant: str, writers: int, n: int, shared: bool, durability: str
) -> dict[str, float]:
    url, schema = new_pg_store()
    import psycopg

    ctx = multiprocessing.get_context("spawn")
    try:
        with psycopg.connect(url.split("?")[0], autocommit=True) as idle:
            from sessiondb.postgres.notify import channel

            idle.execute(
                psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel(schema)))
            )
            start, results = ctx.Barrier(writers + 1), ctx.Queue()
            procs = [
                ctx.Process(
                    target=_writer,
                    args=(url, variant, w, n, shared, durability, start, results),
                )
                for w in range(writers)
            ]
            for p in procs:
                p.start()
            start.wait()
            began = time.monotonic()
            outs = [results.get(timeout=600) for _ in procs]
            wall = time.monotonic() - began
            for p in procs:
                p.join(60)
            got = 0  # every notification the listener gets (the queue drains as it reads)
            while True:
                more = sum(1 for _ in idle.notifies(timeout=1.0))
                if not more:
                    break
                got += more
    finally:
        drop_pg(schema)
    total = writers * n
    return {
        "appends_per_s": total / wall,
        "client_cpu_ms_per_append": 1000 * sum(o[1] for o in outs) / total,
        "notifications_seen": got,
    }


def throughput(
    writers: int, appends: int, rounds: int, shared: bool, durability: str
) -> dict[str, Any]:
    per: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            got = throughput_round(variant, writers, appends, shared, durability)
            per[variant].append(got)
            print(f"  throughput {variant} shared={shared} round {r}: {got['appends_per_s']:.0f}/s")
    out: dict[str, Any] = {}
    for variant, rows in per.items():
        rates = sorted(x["appends_per_s"] for x in rows)
        out[variant] = {
            "appends_per_s_rounds": [round(x["appends_per_s"], 1) for x in rows],
            "appends_per_s_median": round(rates[len(rates) // 2], 1),
            "client_cpu_ms_per_append_rounds": [
                round(x["client_cpu_ms_per_append"], 4) for x in rows
            ],
            "notifications_seen_rounds": [x["notifications_seen"] for x in rows],
        }
    base = out["off"]["appends_per_s_median"]
    for variant in VARIANTS:
        out[variant]["ratio_to_off"] = round(out[variant]["appends_per_s_median"] / base, 3)
    # Per round ratio too (each round's variants ran next to each other).
    out["round_ratios_after_to_off"] = [
        round(a["appends_per_s"] / b["appends_per_s"], 3)
        for a, b in zip(per["notify-after"], per["off"], strict=True)
    ]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wakes", type=int, default=60)
    ap.add_argument("--spread", type=float, default=1.0)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--appends", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--durability", choices=("normal", "full"), default="normal")
    ap.add_argument("--skip-wake", action="store_true", help="Only the append throughput.")
    ap.add_argument("--out", default="wait", help="Result file name (benchmarks/results/).")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    wake = {} if args.skip_wake else wake_latency(args.wakes, args.rounds, args.spread)
    tput = {
        layout: throughput(
            args.writers,
            args.appends,
            args.rounds,
            layout == "one-shared-session",
            args.durability,
        )
        for layout in ("own-session-each", "one-shared-session")
    }
    payload = {
        "benchmark": "wait",
        "command": "python -m benchmarks.wait " + " ".join(argv),
        "machine": machine_facts(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "params": vars(args),
        "wake_latency": wake,
        "append_throughput": tput,
    }
    print(write_json(args.out, payload))
    for s, v in wake.items():
        print(f"{s:10} wake {v['wake_latency']}  append {v['append_latency']}")
    for layout, got in tput.items():
        for variant in VARIANTS:
            print(f"{layout:18} {variant:14} {got[variant]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
