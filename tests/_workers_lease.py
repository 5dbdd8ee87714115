"""Worker processes for the lease tests (spawned: they must live in an importable module).

The race log is append-only, one line per event, each written with a single ``os.write`` on an
``O_APPEND`` descriptor (atomic for a line this small), stamped with ``time.monotonic()`` — a
system-wide clock on Linux (CLOCK_MONOTONIC), so stamps from different processes compare.

    E <pid> <t> <victim_pid or 0>   acquired (victim: the dead holder whose lease was taken over)
    X <pid> <t>                      about to release
    K <pid> <t>                      the parent sent SIGKILL to pid at t
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from typing import Any

from sessiondb import lease


def log_line(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode("ascii"))


def race_worker(
    index: int,
    generation: int,
    backend: str,
    spec: dict[str, str],
    log_path: str,
    progress: MutableSequence[int],
    cycles: int,
    seed: int,
    ttl: float,
) -> None:
    """acquire / hold / release until ``progress[index]`` reaches ``cycles``."""
    rng = random.Random(f"{seed}/{index}/{generation}")
    lease_ = open_lease(backend, spec, f"w{index}g{generation}", ttl)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    pid = os.getpid()
    while progress[index] < cycles:
        if not lease_.acquire():
            time.sleep(rng.uniform(0.002, 0.008))
            continue
        victim = lease_.last_takeover
        fence = lease_.fence or 0
        log_line(fd, f"E {pid} {time.monotonic():.9f} {victim.pid if victim else 0} {fence}")
        time.sleep(rng.uniform(0.0, 0.002))  # hold: the window a second winner would overlap
        log_line(fd, f"X {pid} {time.monotonic():.9f}")
        if not lease_.release():
            log_line(fd, f"R {pid} {time.monotonic():.9f}")  # lost a lease it held: a bug
        progress[index] += 1
        time.sleep(rng.uniform(0.0, 0.002))
    os.close(fd)


@dataclass
class RaceReport:
    cycles: int = 0
    kills: int = 0
    takeovers: int = 0
    overlaps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    takeover_latencies: list[float] = field(default_factory=list)
    fences: int = 0


def check_race_log(text: str) -> RaceReport:
    """Find overlapping holders, takeovers of live processes, slow or missing takeovers."""
    rep = RaceReport()
    open_since: dict[int, float] = {}
    intervals: list[tuple[float, float, int]] = []
    kill_at: dict[int, float] = {}
    taken_over: dict[int, float] = {}  # victim pid -> time of the takeover
    fences: list[tuple[float, int, int]] = []  # (entry time, fencing token, pid)
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        try:
            kind, pid, t = parts[0], int(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            rep.problems.append(f"line {n}: malformed {line!r}")
            continue
        if kind == "E":
            if pid in open_since:
                rep.problems.append(f"line {n}: pid {pid} entered twice")
            open_since[pid] = t
            victim = int(parts[3])
            if len(parts) > 4:
                fences.append((t, int(parts[4]), pid))
            if victim:
                rep.takeovers += 1
                if victim in taken_over:
                    rep.problems.append(f"line {n}: pid {victim} taken over twice")
                taken_over[victim] = t
        elif kind == "X":
            start = open_since.pop(pid, None)
            if start is None:
                rep.problems.append(f"line {n}: pid {pid} exited without entering")
            else:
                intervals.append((start, t, pid))
                rep.cycles += 1
        elif kind == "K":
            rep.kills += 1
            kill_at[pid] = t
            if pid not in open_since:
                # The watcher read this pid in the lease record, so it had acquired the lease —
                # taking it over from a holder killed before, if one is waiting — and was killed
                # before it could log its "E" line (the harness's own race, not the lease's).
                waiting = [v for v in open_since if v in kill_at and v not in taken_over]
                for victim in waiting:
                    taken_over[victim] = t
                    rep.takeovers += 1
        elif kind == "R":
            rep.problems.append(f"line {n}: pid {pid} could not release a lease it held")
        else:
            rep.problems.append(f"line {n}: unknown event {line!r}")
    # A killed holder's interval ends at the SIGKILL: the taker proceeds only once /proc shows
    # the victim gone or a zombie, so the victim runs no code after the taker's "E".
    for pid, start in open_since.items():
        if pid not in kill_at:
            rep.problems.append(f"pid {pid} entered and never exited, yet was not killed")
            continue
        intervals.append((start, kill_at[pid], pid))
        if pid not in taken_over:
            rep.problems.append(f"killed holder pid {pid} was never taken over")
    for victim, t in taken_over.items():
        if victim not in kill_at:
            rep.problems.append(f"pid {victim} was taken over while alive (TTL is long)")
        else:
            rep.takeover_latencies.append(max(0.0, t - kill_at[victim]))
    # Every holding's fencing token is larger than the one before it (0: a backend without).
    fences.sort()
    rep.fences = len(fences)
    for (_, before, p1), (t2, after, p2) in itertools.pairwise(fences):
        if after and not after > before:
            rep.problems.append(
                f"fence {after} of pid {p2} at {t2:.6f} not above {before} of pid {p1}"
            )
    intervals.sort()
    last_end, last_pid = float("-inf"), 0
    for start, end, pid in intervals:
        if start < last_end:
            rep.overlaps.append(
                f"pid {pid} entered at {start:.6f} while pid {last_pid} held until {last_end:.6f}"
            )
        if end > last_end:
            last_end, last_pid = end, pid
    return rep


def open_lease(backend: str, spec: dict[str, str], session_id: str, ttl: float = 300.0) -> Any:
    """The lease a test's ``env`` fixture describes, opened in this (worker) process."""
    if backend == "file":
        return lease.workspace(spec["workspace"], session_id, ttl, directory=spec["rt"])
    # "store" (a SQLite file) or "postgresql" (a URL): a lease kept in the store
    import sessiondb

    return sessiondb.open(spec["db"]).lease("ws", session_id, ttl)


def hold_lease_worker(backend: str, spec: dict[str, str], session_id: str, ready: Any) -> None:
    """Acquire, tell the parent, then hold until killed."""
    lease_ = open_lease(backend, spec, session_id)
    if lease_.acquire():
        ready.set()
    time.sleep(120)
