"""System calls per PostgreSQL verb: this checkout against an older one (``--base``), counted by
``strace -f -c`` on a process doing N of the verb minus one doing 0 (docs/benchmarks.md,
"PostgreSQL: round trips and the search plan"; ADR 0013, amendment). Load-insensitive: a count,
not a time.

    git archive <commit> | tar -x -C /tmp/base
    python -m benchmarks.pg_wire --base /tmp/base [--appends 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import machine_facts, write_json

HERE = Path(__file__).resolve().parent.parent
CALLS = ("sendto", "recvfrom", "poll", "ppoll", "select", "pselect6", "epoll_wait")

# Run inside a checkout (PYTHONPATH): its sessiondb.
_VERBS = """
import sys
import sessiondb
from benchmarks.pg_common import drop_pg, new_pg_store
verb, n = sys.argv[1], int(sys.argv[2])
url, name = new_pg_store()
try:
    with sessiondb.open(url) as s:
        s.append("s", "user", "first")
        items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
        do = {
            "append": lambda i: s.append("s", "user", f"x{i}"),
            "keyed append": lambda i: s.append("s", "user", "k", key=f"k{i}"),
            "append to a new session": lambda i: s.append(f"n{i}", "user", "x"),
            "append_many (5)": lambda i: s.append_many("s", items),
            "get_session": lambda i: s.get_session("s"),
        }[verb]
        for i in range(n):
            do(i)
finally:
    drop_pg(name)
"""


def _calls(checkout: Path, verb: str, n: int) -> dict[str, int]:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        strace = ["strace", "-f", "-c", "-o", out.name, "-e", "trace=" + ",".join(CALLS)]
        subprocess.run(
            [*strace, sys.executable, "-c", _VERBS, verb, str(n)],
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": str(checkout)},
            check=True,
            capture_output=True,
            timeout=600,
        )
        found: dict[str, int] = {}
        for line in out.read().splitlines():
            parts = line.split()
            if parts and parts[-1] in CALLS:
                found[parts[-1]] = int(parts[3])  # % time, seconds, usecs/call, calls[, errors]
        return found


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pg_wire", description=__doc__)
    ap.add_argument("--base", required=True, type=Path, help="the older checkout")
    ap.add_argument("--appends", type=int, default=200, help="calls of each verb")
    args = ap.parse_args(argv)
    if shutil.which("strace") is None:
        print("strace is needed", file=sys.stderr)
        return 2
    checkouts = {"base": args.base.resolve(), "new": HERE}
    verbs = ("append", "keyed append", "append to a new session", "append_many (5)", "get_session")
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "args": vars(args) | {"base": str(args.base)},
    }
    for label, checkout in checkouts.items():
        zero = _calls(checkout, "append", 0)
        per: dict[str, dict[str, float]] = {}
        for verb in verbs:
            got = _calls(checkout, verb, args.appends)
            per[verb] = {
                call: round((got.get(call, 0) - zero.get(call, 0)) / args.appends, 2)
                for call in CALLS
                if got.get(call, 0) - zero.get(call, 0)
            }
            per[verb]["total"] = round(sum(per[verb].values()), 2)
        result[label] = per
        print(label, per, flush=True)
    print(write_json("postgres_wire_syscalls_pgwire", result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
