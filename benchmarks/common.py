"""Shared benchmark helpers: machine facts, percentiles, JSON results, deterministic turns.

Every figure a benchmark writes goes through here so that all results carry the same machine
facts (Python, apsw and SQLite versions, cpu count, git commit, peer versions) and the same
percentile definition.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
# Scratch databases live here (gitignored), on the same disk for every system so that the
# comparison is not skewed by one system writing to tmpfs and another to a real disk.
WORK_DIR = BENCH_DIR / "work"

PEER_DISTRIBUTIONS = (
    "apsw",
    "hermes-agent",
    "openai-agents",
    "langchain-community",
    "langchain-core",
    "SQLAlchemy",
)


def sqlite_engine(store: Any) -> Any:
    """The SQLite engine under a store opened on a file (schema in place): what the benchmarks
    that drive SQLite directly (the ceiling, index experiments) need."""
    return store.backend.engine


def git_commit() -> str:
    """The commit of the checkout the benchmark runs from ('unknown' outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=BENCH_DIR,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def _fs_type(path: Path) -> str:
    """Filesystem type of the mount holding *path* (longest mount-point prefix)."""
    best, fstype = "", "unknown"
    target = str(path.resolve())
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].encode().decode("unicode_escape")
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(
                    best
                ):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge a figure: versions, cores, commit, disk type."""
    facts: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git_commit": git_commit(),
        "work_dir_fs": _fs_type(WORK_DIR if WORK_DIR.exists() else BENCH_DIR),
        "timestamp": time.time(),
    }
    try:
        import apsw

        facts["apsw"] = apsw.apsw_version()
        facts["sqlite"] = apsw.sqlite_lib_version()
    except ImportError:
        facts["apsw"] = None
    try:
        import sqlite3

        # The peers use the stdlib driver, i.e. this SQLite, not apsw's bundled one.
        facts["stdlib_sqlite"] = sqlite3.sqlite_version
    except ImportError:
        facts["stdlib_sqlite"] = None
    versions: dict[str, str | None] = {}
    for dist in PEER_DISTRIBUTIONS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    facts["packages"] = versions
    return facts


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(seconds: Iterable[float]) -> dict[str, float | int]:
    """p50/p99/max in milliseconds (never the mean alone) plus the sample count."""
    values = sorted(seconds)
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "max_ms": round(values[-1] * 1000, 3) if values else math.nan,
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write benchmarks/results/<name>.json (0644: results are meant to be published)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    dest = RESULTS_DIR / f"{name}.json"
    tmp = dest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(dest)
    return dest


def fresh_dir(*parts: str) -> Path:
    """An empty scratch folder benchmarks/work/<parts...> (removed first if it exists)."""
    path = WORK_DIR.joinpath(*parts)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    return path


_WORDS = (  # noqa: SIM905 - a sentence reads better than a 52-item list
    "the agent read file test patch diff error trace function module import return value "
    "session store append message tool call result search query index build deploy config "
    "retry timeout lock write read commit branch merge review comment fix bug feature docs "
    "python sqlite process thread queue worker latency throughput checkpoint journal wal"
).split()


def marker(worker: int, index: int) -> str:
    """The prefix that identifies one append, so read-back can find lost and duplicated ones."""
    return f"[w{worker}:i{index}]"


def parse_marker(content: str) -> tuple[int, int] | None:
    """(worker, index) from a turn's content, or None if it carries no marker."""
    if not content.startswith("[w"):
        return None
    end = content.find("]")
    head = content[2:end]
    worker, sep, index = head.partition(":i")
    if not sep or not worker.isdigit() or not index.isdigit():
        return None
    return int(worker), int(index)


def turn(worker: int, index: int, seed: int = 0) -> str:
    """A realistic 200-2000-byte ASCII turn, the same for every system given the same args."""
    rng = random.Random((seed * 1_000_003 + worker) * 1_000_003 + index)
    size = rng.randint(200, 2000)
    head = marker(worker, index) + " "
    words: list[str] = []
    length = len(head)
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return (head + " ".join(words))[:size]


def role_for(index: int) -> str:
    """Alternate user/assistant turns as a conversation would."""
    return "user" if index % 2 == 0 else "assistant"
