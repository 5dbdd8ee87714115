"""Where a combined append's time goes (issue 18's closing note): K writer processes appending
to their own sessions as fast as they can for T seconds, each process's CPU and its head's
round split into phases, against the one-transaction-per-append ceiling in the same run.

    python -m benchmarks.combine_profile [--ks 16,64] [--seconds 5] [--rounds 2]

Per K and round, alternated with the ceiling (benchmarks/peers.py, ``CeilingAdapter``: one
process, K sessions round robin, for the same T seconds):

* appends/s of both, and CPU per append (user + system, all writer processes) of both;
* ``cores``: CPU seconds of all writers per second — under 2.0 on this 2-core machine means
  the CPUs were idle part of the time;
* the heads' rounds (sqlite/combine.py ``Combine._round``): how many, and per request of another
  process the wall time of each phase — ``take`` (accept, check the peer, read and validate),
  ``sql`` (``writes.append_group_in``), ``ack`` (the ack row), ``answer`` (send and close; its
  process CPU time beside it: the difference is time the head was not running, the woken waiter
  having taken its CPU) and ``rest`` (BEGIN, COMMIT, the ack rows' DELETE, the socket poll);
* the waiters: hand-overs answered, refused (no head listening, or ``R``), answered with the
  next tenure (combine_baton.py), and waits in the admission queue;
* the CPU split (``_cpu_split``): user and system CPU per append of its writer apart from
  heading, and per request a head commits for another process — fitted over the processes,
  whose shares of heading differ.

The phases are timed by wrapping those functions in the writer processes (a few µs per call):
the rates here are this profile's, not the throughput figures (benchmarks/contention.py).
Writes ``results/<output>.json``.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.common import fresh_dir, machine_facts, turn, write_json

PHASES = ("take", "sql", "ack", "answer")


def _instrument(stats: dict[str, float]) -> None:
    """Wrap the head's phases and the waiter's hand-over to add their time into ``stats``."""
    from sessiondb.core import writes
    from sessiondb.sqlite import combine

    def timed(owner: Any, name: str, key: str, cpu: bool = False) -> None:
        f = getattr(owner, name)

        @functools.wraps(f)
        def wrapper(*a: Any, **kw: Any) -> Any:
            t, c = time.perf_counter(), time.process_time() if cpu else 0.0
            try:
                return f(*a, **kw)
            finally:
                stats[key] += time.perf_counter() - t
                if cpu:
                    stats[key + "_cpu"] += time.process_time() - c

        setattr(owner, name, wrapper)

    timed(combine, "_take", "take")
    timed(writes, "append_group_in", "sql")  # called through the module
    timed(combine, "_ack_row", "ack")
    timed(combine._Remote, "answer", "answer", cpu=True)
    rounds = combine.Combine._round

    def round_(self: Any, own: Any, tokens: Any, listener: Any) -> Any:
        t, served = time.perf_counter(), self.served
        try:
            return rounds(self, own, tokens, listener)
        finally:
            stats["round"] += time.perf_counter() - t
            stats["rounds"] += 1
            stats["remote"] += self.served - served

    combine.Combine._round = round_  # type: ignore[method-assign]
    hand_over, queue = combine.Combine._hand_over, combine.Combine._queue

    def hand_over_(self: Any, body: bytes, requests: Any) -> Any:
        answer, connected = hand_over(self, body, requests)
        handed = type(answer).__name__ == "Baton"  # the next head (combine_baton.py)
        stats["refused" if answer is None else "handed" if handed else "answered"] += 1
        return answer, connected

    def queue_(self: Any, *a: Any) -> Any:
        stats["queued"] += 1
        return queue(self, *a)

    combine.Combine._hand_over = hand_over_  # type: ignore[method-assign]
    combine.Combine._queue = queue_  # type: ignore[method-assign,assignment]


def _writer(wid: int, path: str, start_at: float, seconds: float, out: Any) -> None:
    import sessiondb

    waiters = ("refused", "answered", "handed", "queued")
    keys = (*PHASES, "answer_cpu", "round", "rounds", "remote", *waiters)
    stats = dict.fromkeys(keys, 0.0)
    _instrument(stats)
    store = sessiondb.open(path)
    sid = f"w{wid}"
    store.ensure_session(sid, source="bench")
    while time.time() < start_at:
        time.sleep(0.001)
    before = resource.getrusage(resource.RUSAGE_SELF)
    n, end = 0, start_at + seconds
    while time.time() < end:
        store.append(sid, "user", turn(wid, n))
        n += 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)
    store.close()
    out.put((wid, n, cpu, after.ru_nivcsw - before.ru_nivcsw, stats))


def _sessiondb(k: int, seconds: float, folder: Path) -> dict[str, Any]:
    import sessiondb

    path = folder / "sessions.db"
    sessiondb.open(path).close()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 2.0 + 0.05 * k  # after every process has imported and opened
    procs = [
        ctx.Process(target=_writer, args=(w, str(path), start_at, seconds, out)) for w in range(k)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120 + seconds) for _ in procs]
    for p in procs:
        p.join()
    n = sum(r[1] for r in results)
    cpu = sum(sum(r[2]) for r in results)
    total = {key: sum(r[4][key] for r in results) for key in results[0][4]}
    remote = max(1.0, total["remote"])
    phases = {f"{p}_us": round(total[p] / remote * 1e6, 1) for p in PHASES}
    phases["answer_cpu_us"] = round(total["answer_cpu"] / remote * 1e6, 1)
    parts = sum(total[p] for p in PHASES)
    phases["rest_us"] = round((total["round"] - parts) / remote * 1e6, 1)
    counts = [r[1] for r in results]
    return {
        "appends_per_s": round(n / seconds),
        "cpu_us_per_append": round(cpu / n * 1e6, 1),
        "cores": round(cpu / seconds, 2),
        "involuntary_switches_per_append": round(sum(r[3] for r in results) / n, 2),
        "fairness": round(min(counts) / max(counts), 2),
        "head": {
            "rounds": int(total["rounds"]),
            "remote_per_round": round(total["remote"] / max(1.0, total["rounds"]), 1),
            "busy_share": round(total["round"] / seconds, 2),
            "per_remote": phases,
        },
        "waiters": {k: int(total[k]) for k in ("answered", "refused", "handed", "queued")},
        "cpu_split_us": _cpu_split(results),
    }


def _cpu_split(results: list[Any]) -> dict[str, float] | None:
    """Each process's user and system CPU fitted (least squares, no intercept) as
    ``a × its own appends + b × the requests of others it committed as a head``: ``a`` is what
    an append costs its writer apart from heading (the API, the process's group commit, the
    hand-over and its wake-up), ``b`` what a head spends per request it commits for another
    process. None when the fit is undetermined (one process heading for all, or none)."""
    rows = [(float(r[1]), r[4]["remote"], r[2]) for r in results]
    s11 = sum(x1 * x1 for x1, _, _ in rows)
    s12 = sum(x1 * x2 for x1, x2, _ in rows)
    s22 = sum(x2 * x2 for _, x2, _ in rows)
    det = s11 * s22 - s12 * s12
    if det <= 1e-9 * max(1.0, s11 * s22):
        return None
    out: dict[str, float] = {}
    for i, name in enumerate(("user", "sys")):
        t1 = sum(x1 * cpu[i] for x1, _, cpu in rows)
        t2 = sum(x2 * cpu[i] for _, x2, cpu in rows)
        out[f"per_append_{name}"] = round((t1 * s22 - t2 * s12) / det * 1e6, 1)
        out[f"per_served_{name}"] = round((s11 * t2 - s12 * t1) / det * 1e6, 1)
    return out


def _ceiling(k: int, seconds: float, folder: Path) -> dict[str, Any]:
    adapter = peers.make(peers.CEILING)
    adapter.open(folder)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        adapter.append(f"w{n % k}", "user", turn(n % k, n // k))
        n += 1
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    adapter.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"appends_per_s": round(n / elapsed), "cpu_us_per_append": round(cpu / n * 1e6, 1)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", default="16,64")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--output", default="combine_profile")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for k in (int(x) for x in args.ks.split(",")):
            pair: dict[str, Any] = {"k": k, "round": r}
            for system, measure in (("ceiling", _ceiling), ("sessiondb", _sessiondb)):
                folder = fresh_dir("combine_profile", system)
                try:
                    pair[system] = measure(k, args.seconds, folder)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
            s, c = pair["sessiondb"], pair["ceiling"]
            pair["ratio"] = round(s["appends_per_s"] / c["appends_per_s"], 2)
            rows.append(pair)
            h = s["head"]["per_remote"]
            print(
                f"K={k:<3} round {r}: sessiondb {s['appends_per_s']}/s ({pair['ratio']}x the"
                f" ceiling's {c['appends_per_s']}/s), CPU/append {s['cpu_us_per_append']} vs"
                f" {c['cpu_us_per_append']} us, cores {s['cores']}; head busy"
                f" {s['head']['busy_share']}, {s['head']['remote_per_round']}/round; per remote"
                f" (us) take {h['take_us']} sql {h['sql_us']} ack {h['ack_us']} answer"
                f" {h['answer_us']} (cpu {h['answer_cpu_us']}) rest {h['rest_us']};"
                f" waiters {s['waiters']}; CPU split (us) {s['cpu_split_us']}",
                flush=True,
            )
    summary = {
        str(k): {
            "ratio_median": statistics.median(p["ratio"] for p in rows if p["k"] == k),
            "answer_wall_share_of_round": statistics.median(
                p["sessiondb"]["head"]["per_remote"]["answer_us"]
                / max(
                    1e-9,
                    sum(p["sessiondb"]["head"]["per_remote"][f"{x}_us"] for x in PHASES)
                    + p["sessiondb"]["head"]["per_remote"]["rest_us"],
                )
                for p in rows
                if p["k"] == k
            ),
        }
        for k in sorted({p["k"] for p in rows})
    }
    write_json(
        args.output,
        {
            "benchmark": "combine_profile",
            "command": "python -m benchmarks.combine_profile " + " ".join(argv),
            "machine": machine_facts(),
            "config": vars(args),
            "rows": rows,
            "summary": summary,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
