"""Start-up time where a person or an agent waits: each command as a whole process, against the
bare interpreter start of the same environment, in turn (A B A B …), ratios per round.

    python -m benchmarks.startup [--rounds 15]

Commands: ``import sessiondb``; the Claude Code hook on a read-only tool's event (decided without
a lease) and on an editing tool's event (takes the workspace lease); ``sessiondb --help``;
``sessiondb sessions`` on a small store. Targets (docs/benchmarks.md): the hook at most 3× a
bare start, ``import sessiondb`` at most 2×. Writes ``results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import machine_facts, write_json

TARGETS = {"hook (editing tool)": 3.0, "hook (read-only tool)": 3.0, "import sessiondb": 2.0}


def _event(tool: str, cwd: str) -> bytes:
    return json.dumps(
        {"hook_event_name": "PreToolUse", "tool_name": tool, "session_id": "bench", "cwd": cwd}
    ).encode()


def _time(argv: list[str], stdin: bytes | None, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, input=stdin, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    py = sys.executable
    cli = str(Path(py).with_name("sessiondb"))
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env = {**os.environ, "SESSIONDB_RUNTIME_DIR": f"{tmp}/rt", "SESSIONDB_PATH": f"{tmp}/s.db"}
        subprocess.run(
            [cli, "append", "s", "user", "hello"], env=env, check=True, stdout=subprocess.DEVNULL
        )
        work = Path(tmp) / "work"
        work.mkdir()
        commands: dict[str, tuple[list[str], bytes | None]] = {
            "import sessiondb": ([py, "-c", "import sessiondb"], None),
            "hook (read-only tool)": ([cli, "hook", "claude-code"], _event("Read", str(work))),
            "hook (editing tool)": ([cli, "hook", "claude-code"], _event("Edit", str(work))),
            "sessiondb --help": ([cli, "--help"], None),
            "sessiondb sessions": ([cli, "sessions"], None),
        }
        bare = [py, "-c", "pass"]
        for argv_, stdin in commands.values():  # warm the page cache
            _time(argv_, stdin, env)
        rows: dict[str, dict[str, Any]] = {}
        for name, (argv_, stdin) in commands.items():
            pairs = [(_time(argv_, stdin, env), _time(bare, None, env)) for _ in range(args.rounds)]
            ratios = sorted(a / b for a, b in pairs)
            rows[name] = {
                "median_ms": round(statistics.median(a for a, _ in pairs) * 1000, 1),
                "bare_median_ms": round(statistics.median(b for _, b in pairs) * 1000, 1),
                "ratio_median": round(statistics.median(ratios), 2),
                "ratio_range": [round(ratios[0], 2), round(ratios[-1], 2)],
                "target": TARGETS.get(name),
            }
            r = rows[name]
            print(
                f"{name:24} {r['median_ms']:7.1f} ms  bare {r['bare_median_ms']:5.1f} ms"
                f"  x{r['ratio_median']:.2f} ({r['ratio_range'][0]}-{r['ratio_range'][1]})"
                + (f"  target <= {r['target']}x" if r["target"] else ""),
                flush=True,
            )
    dest = write_json(
        "startup",
        {
            "benchmark": "startup",
            "command": "python -m benchmarks.startup " + " ".join(argv),
            "machine": machine_facts(),
            "rounds": args.rounds,
            "commands": rows,
        },
    )
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
