"""A timeline of a prune beside live writers: who waited for what (``benchmarks.prune --trace``).

Every event is stamped with ``time.monotonic()``, one clock for all processes on Linux, so the
writers', the prune's and the checkpoints' events line up:

* each live append: queued → admitted (admission lock and ``BEGIN IMMEDIATE``) → body done →
  returned (``COMMIT``, and the FULL checkpoint a committing writer runs past
  CHECKPOINT_FORCE_PAGES, timed apart: docs/adr/0002-checkpoints-off-the-hot-path.md);
* each prune write transaction (admitted → committed) and each checkpoint the prune runs
  itself (``step_aside``);
* every background PASSIVE checkpoint pass, in any of the processes (checkpointer.py);
* every 5 ms, from a process of its own: the WAL's frames written and copied back (read from
  the ``-shm`` wal-index header: ``mxFrame`` at byte 16, ``nBackfill`` at byte 96, as SQLite's
  wal.c lays them out) and the disk's completed writes and queue (``/proc/diskstats``).

:func:`explain` then takes each slow append (over the bound) and says where its time went and
what overlapped it. Instrumentation is by wrapping methods in the benchmark's processes only;
nothing in sessiondb changes.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw

from sessiondb.sqlite import checkpointer
from sessiondb.sqlite.engine import Engine

Span = tuple[float, float]


class Recorder:
    """Wraps Engine.write, Engine._force_checkpoint, Engine.checkpoint and the background
    checkpointer's connection in this process; ``events`` collects (kind, start, end, extra)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float, Any]] = []
        self.label = "write"
        self._saved: dict[str, Any] = {}

    def install(self) -> Recorder:
        rec = self
        write, force, ckpt = Engine.write, Engine._force_checkpoint, Engine.checkpoint

        @contextlib.contextmanager
        def timed_write(engine: Engine) -> Iterator[apsw.Connection]:
            queued = time.monotonic()
            marks: dict[str, float] = {}
            with write(engine) as conn:
                marks["admitted"] = time.monotonic()
                yield conn
                marks["body"] = time.monotonic()
            end = time.monotonic()
            rec.events.append(
                (rec.label, queued, end, (marks.get("admitted", end), marks.get("body", end)))
            )

        def timed_force(engine: Engine, conn: apsw.Connection) -> None:
            t0 = time.monotonic()
            force(engine, conn)
            rec.events.append(("forced_checkpoint", t0, time.monotonic(), None))

        def timed_checkpoint(engine: Engine, mode: str = "PASSIVE") -> tuple[int, int]:
            t0 = time.monotonic()
            out = ckpt(engine, mode)
            rec.events.append(("own_checkpoint", t0, time.monotonic(), out))
            return out

        self._saved = {"write": write, "force": force, "ckpt": ckpt, "apsw": checkpointer.apsw}
        Engine.write = timed_write  # type: ignore[method-assign,assignment]
        Engine._force_checkpoint = timed_force  # type: ignore[method-assign]
        Engine.checkpoint = timed_checkpoint  # type: ignore[method-assign]
        checkpointer.apsw = _TimedApsw(self)  # type: ignore[attr-defined]
        return self

    def uninstall(self) -> None:
        if self._saved:
            Engine.write = self._saved["write"]  # type: ignore[method-assign]
            Engine._force_checkpoint = self._saved["force"]  # type: ignore[method-assign]
            Engine.checkpoint = self._saved["ckpt"]  # type: ignore[method-assign]
            checkpointer.apsw = self._saved["apsw"]  # type: ignore[attr-defined]


class _TimedConnection:
    def __init__(self, rec: Recorder, path: str) -> None:
        self._rec = rec
        self._conn = apsw.Connection(path)

    def wal_checkpoint(self, *args: Any, **kw: Any) -> Any:
        t0 = time.monotonic()
        try:
            out = self._conn.wal_checkpoint(*args, **kw)
        except apsw.BusyError:
            self._rec.events.append(("bg_checkpoint_busy", t0, time.monotonic(), None))
            raise
        self._rec.events.append(("bg_checkpoint", t0, time.monotonic(), out))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _TimedApsw:
    """Stands for the apsw module inside checkpointer.py: its Connection is timed."""

    def __init__(self, rec: Recorder) -> None:
        self._rec = rec

    def Connection(self, path: str) -> _TimedConnection:  # apsw's name
        return _TimedConnection(self._rec, path)

    def __getattr__(self, name: str) -> Any:
        return getattr(apsw, name)


def _disk() -> tuple[int, int, int]:
    """(writes completed, sectors written, IOs in flight) of the busiest disk."""
    best = (0, 0, 0)
    with open("/proc/diskstats") as f:
        for line in f:
            p = line.split()
            if len(p) > 11 and not p[2].startswith(("loop", "ram")):
                row = (int(p[7]), int(p[9]), int(p[11]))
                if row[1] > best[1]:
                    best = row
    return best


def sample(db: str, stop: Any, out: Any, every: float = 0.005) -> None:
    """In a process of its own: (t, WAL frames, frames copied back, WAL bytes, disk writes,
    sectors written, IOs in flight) every ``every`` seconds until ``stop`` is set."""
    rows: list[tuple[float, ...]] = []
    shm, wal = Path(db + "-shm"), Path(db + "-wal")
    while not stop.is_set():
        t = time.monotonic()
        frames = backfilled = size = 0
        with contextlib.suppress(OSError, struct.error):
            head = shm.read_bytes()[:132]
            frames = struct.unpack_from("<I", head, 16)[0]
            backfilled = struct.unpack_from("<I", head, 96)[0]
            size = wal.stat().st_size
        rows.append((t, frames, backfilled, size, *_disk()))
        time.sleep(every)
    out.put(("samples", -1, rows))


def _overlap(a: Span, b: Span) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def explain(
    appends: list[tuple[str, float, float, Any]],
    others: list[tuple[str, float, float, Any]],
    samples: list[tuple[float, ...]],
    window: Span,
    bound: float,
) -> dict[str, Any]:
    """For the appends in ``window`` slower than ``bound`` seconds: their time split (waiting
    for admission, body, commit, forced checkpoint), and what overlapped their commits."""
    forced = [e for e in others if e[0] == "forced_checkpoint"]
    background = [e for e in others if e[0] == "bg_checkpoint"]
    slow = [a for a in appends if window[0] <= a[1] < window[1] and a[2] - a[1] > bound]
    kinds = ("prune", "vacuum", "bg_checkpoint", "own_checkpoint", "forced_checkpoint")
    split = {"wait": 0.0, "body": 0.0, "commit": 0.0, "forced_checkpoint_own": 0.0}
    commit_overlaps = dict.fromkeys(kinds, 0.0)
    slow_commits = 0
    for _, queued, end, (admitted, body) in slow:
        own_forced = sum(_overlap((body, end), (f[1], f[2])) for f in forced)
        split["wait"] += admitted - queued
        split["body"] += body - admitted
        split["forced_checkpoint_own"] += own_forced
        split["commit"] += end - body - own_forced
        if end - body - own_forced > bound / 2:
            slow_commits += 1
            for k in kinds:
                commit_overlaps[k] += sum(
                    _overlap((body, end), _held(e)) for e in others if e[0] == k
                )
    total = sum(split.values()) or 1.0
    in_window = [s for s in samples if window[0] <= s[0] < window[1]]
    return {
        "slow_appends": len(slow),
        "time_split_share": {k: round(v / total, 3) for k, v in split.items()},
        "slow_commits_over_half_the_bound": slow_commits,
        "seconds_those_commits_overlapped": {k: round(v, 3) for k, v in commit_overlaps.items()},
        "wal_frames_max": max((int(s[1]) for s in in_window), default=0),
        "wal_frames_p50": sorted(int(s[1]) for s in in_window)[len(in_window) // 2]
        if in_window
        else 0,
        "forced_checkpoints": _summary(
            [e[2] - e[1] for e in forced if window[0] <= e[1] < window[1]]
        ),
        "bg_checkpoints": _summary(
            [e[2] - e[1] for e in background if window[0] <= e[1] < window[1]]
        ),
    }


def _held(event: tuple[str, float, float, Any]) -> Span:
    """A write transaction's span from its admission (not from when it queued)."""
    kind, start, end, extra = event
    if kind in ("prune", "vacuum") and isinstance(extra, tuple):
        return (extra[0], end)
    return (start, end)


def _summary(values: list[float]) -> dict[str, Any]:
    values = sorted(values)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(values[len(values) // 2] * 1000, 2),
        "max_ms": round(values[-1] * 1000, 2),
        "total_s": round(sum(values), 2),
    }
