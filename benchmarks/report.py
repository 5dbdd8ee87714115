"""Render benchmark results (benchmarks/results/*.json) as the Markdown tables of
docs/benchmarks.md, so the figures there are copied from a run, never typed.

    python -m benchmarks.report              # contention
    python -m benchmarks.report search.json  # a search run (any file written by benchmarks.search)
"""

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


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def search(d: dict[str, Any]) -> str:
    systems = [s for s in ("sessiondb", "ceiling", "hermes") if isinstance(d.get(s), dict)]
    out = [
        f"{d['messages']:,} messages in {d['sessions']:,} sessions, {d['queries']} queries,"
        f" commit {d['machine']['commit']}, `python -m benchmarks.search`",
        "",
        "| system | p50 ms | p99 ms | max ms |"
        + "".join(f" {k} p50/p99 |" for k in d["sessiondb"]["by_kind"]),
        "|---|---:|---:|---:|" + "---:|" * len(d["sessiondb"]["by_kind"]),
    ]
    for name in systems:
        r = d[name]
        kinds = "".join(f" {v['p50_ms']:.1f} / {v['p99_ms']:.1f} |" for v in r["by_kind"].values())
        out.append(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |{kinds}")
    sdb = d["sessiondb"]
    out += ["", "| ratio (same run) | p50 | p99 |", "|---|---:|---:|"]
    for name in systems[1:]:
        r = d[name]
        out.append(
            f"| sessiondb / {name} | {sdb['p50_ms'] / r['p50_ms']:.2f} |"
            f" {sdb['p99_ms'] / r['p99_ms']:.2f} |"
        )
    out += [
        "",
        "| measure | sessiondb | hermes-agent |",
        "|---|---:|---:|",
        f"| recall@20 in X's session | {_pct(sdb['recall_session_at_20'])}"
        " | n/a (no session filter) |",
        "| recall@20 in X's session, queries whose session holds ≤ 20 matches"
        f" ({sdb['queries_with_at_most_20_session_matches']}) |"
        f" {_pct(sdb['recall_session_at_20_when_at_most_20_match'])} | n/a |",
        f"| recall over all matches in X's session | {_pct(sdb['recall_session_all_matches'])}"
        " | n/a |",
    ]
    hermes = d.get("hermes") if isinstance(d.get("hermes"), dict) else None
    for kind in sdb["no_hits_by_kind"]:
        theirs = _pct(hermes["no_hits_by_kind"][kind]) if hermes else "-"
        out.append(
            f"| queries answered with no hit at all, {kind} | {_pct(sdb['no_hits_by_kind'][kind])}"
            f" | {theirs} |"
        )
    size = d["sessiondb_size"]
    out.append(
        f"| index / raw content | {size['ratio']:.2f} | {hermes['size']['ratio']:.2f} |"
        if hermes
        else f"| index / raw content | {size['ratio']:.2f} | - |"
    )
    load = (
        f"{d['load_msgs_per_s_index']:,} (first 50 000: {d['load_msgs_per_s_index_first_50k']:,};"
        f" without the index: {d['load_msgs_per_s_no_index']:,})"
    )
    out.append(
        f"| load, messages/s | {load} | {hermes['load_msgs_per_s']:,} |"
        if hermes
        else f"| load, messages/s | {load} | - |"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    if argv:
        print(search(json.loads((RESULTS / argv[0]).read_text())))
        return 0
    d = json.loads((RESULTS / "contention.json").read_text())
    print(f"commit {d['machine'].get('git_commit', '?')[:10]}, `{d.get('command')}`\n")
    print(contention(d))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
