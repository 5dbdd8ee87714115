"""Render the contention and mixed-workload results (benchmarks/results/*.json) as the Markdown
tables of docs/benchmarks.md, so the figures there are copied from a run, never typed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
ORDER = ["ceiling", "sessiondb", "hermes", "openai-agents", "langchain"]


def contention(d: dict[str, Any]) -> str:
    fair = {(f["system"], f["k"], f["layout"]): f for f in d.get("fairness", [])}
    out = [
        "| layout | K | system | appends/s | p50 ms | p99 ms | max ms | errors | lost | dups"
        " | fairness min/max |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    runs = sorted(d["runs"], key=lambda r: (r["layout"], r["k"], ORDER.index(r["system"])))
    for r in runs:
        lat = r["latency"]
        f = fair.get((r["system"], r["k"], r["layout"]))
        fs = f"{f['min_completions']}/{f['max_completions']}" if f else "-"
        errors = sum((r.get("errors_all_tries") or r.get("errors") or {}).values())
        lost = r.get("lost_all_tries", r["lost"])
        dups = r.get("duplicates_all_tries", r["duplicates"])
        out.append(
            f"| {r['layout']} | {r['k']} | {r['system']} | {r['appends_per_s']:.0f}"
            f" | {lat['p50_ms']:.1f} | {lat['p99_ms']:.1f} | {lat['max_ms']:.1f} | {errors}"
            f" | {lost} | {dups} | {fs} |"
        )
    out += ["", "| K | layout | sessiondb / ceiling | sessiondb / hermes |", "|---:|---|---:|---:|"]
    for s in d.get("sessiondb_ratios", []):
        out.append(f"| {s['k']} | {s['layout']} | {s['vs_ceiling']:.2f} | {s['vs_hermes']:.1f}× |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    d = json.loads((RESULTS / "contention.json").read_text())
    print(f"commit {d['machine'].get('git_commit', '?')[:10]}, `{d.get('command')}`\n")
    print(contention(d))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
