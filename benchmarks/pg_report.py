"""Render benchmarks/postgres.py's results as the Markdown tables of docs/benchmarks.md, so the
figures there are copied from a run, never typed.

    python -m benchmarks.pg_report postgres_appends.json postgres_search.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _spread(d: dict[str, float], fmt: str = "{:.0f}") -> str:
    if 0 < d["median"] < 10 ** -int(fmt[-3]):  # small figures keep two significant digits
        fmt = "{:.2g}"
    med, lo, hi = (fmt.format(d[k]) for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo}–{hi})"


def _checks(rounds: list[dict[str, Any]], case: str, system: str) -> str:
    """What was stored against what was acknowledged, over every round."""
    runs = [rd[case][system] for rd in rounds if "n" in rd[case][system]]
    notes = []
    done = sum(r["n"] for r in runs)
    planned = sum(r["of_planned"] for r in runs)
    if done < planned:
        notes.append(f"{done}/{planned} done in the budget")
    stored = [r["stored"] for r in runs if "stored" in r]
    if stored and any(s["rows"] != s["expected_rows"] for s in stored):
        notes.append(
            "rows ≠ acked: " + ", ".join(f"{s['rows']}/{s['expected_rows']}" for s in stored)
        )
    elif stored:
        notes.append("rows = acked")
    kept = [s for s in stored if "messages_in_last_checkpoint" in s]
    if kept and "shared" in case:
        notes.append(
            "messages in the last checkpoint: "
            + ", ".join(f"{s['messages_in_last_checkpoint']}/{s['expected_rows']}" for s in kept)
        )
    retries = [r["stale_retries"] for r in runs if "stale_retries" in r]
    if any(retries):
        notes.append(f"StaleSessionError retries: {', '.join(map(str, retries))}")
    skipped = [rd[case][system] for rd in rounds if "n" not in rd[case][system]]
    if skipped:
        notes.append(f"not run: {skipped[0]}")
    if not stored and not skipped:
        notes.append("rows not counted (a file store)")
    return "; ".join(notes)


def appends(d: dict[str, Any]) -> str:
    summary, rounds = d["appends"]["summary"], d["appends"]["rounds"]
    ceiling = any("throughput_vs_ceiling" in r for row in summary.values() for r in row.values())
    extra = " × PG ceiling |" if ceiling else ""
    out = [
        "| case | system | appends/s | p50 ms | p99 ms | × SQLite | × sessiondb on PG |"
        + extra
        + " checks |",
        "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if ceiling else "") + "---|",
    ]
    for case, row in summary.items():
        for system, r in row.items():
            if "rounds" not in r:
                dashes = " – |" * (6 if ceiling else 5)
                out.append(f"| {case} | {system} |{dashes} {_checks(rounds, case, system)} |")
                continue
            vs_ceiling = (
                f" | {_spread(r['throughput_vs_ceiling'], '{:.2f}')}"
                if ceiling and "throughput_vs_ceiling" in r
                else (" | –" if ceiling else "")
            )
            out.append(
                f"| {case} | {system} | {_spread(r['appends_per_s'])}"
                f" | {_spread(r['p50_ms'], '{:.1f}')} | {_spread(r['p99_ms'], '{:.0f}')}"
                f" | {_spread(r['throughput_vs_sqlite'], '{:.2f}')}"
                f" | {_spread(r['throughput_vs_postgresql'], '{:.2f}')}"
                f"{vs_ceiling} | {_checks(rounds, case, system)} |"
            )
    return "\n".join(out)


def _med(rows: list[dict[str, Any]], store: str, key: str) -> str:
    vals = sorted(r[store][key] for r in rows)
    med = statistics.median(vals)
    return f"{med:.1f}" if vals[0] == vals[-1] else f"{med:.1f} ({vals[0]:.1f}–{vals[-1]:.1f})"


def search(d: dict[str, Any]) -> str:
    out = [
        "| messages | store | load s | p50 ms | p99 ms | max ms | recall@20 |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    ratios = [
        "",
        "| messages | PG / SQLite p50, each round | PG / SQLite p99, each round |",
        "|---:|---|---|",
    ]
    for s in d["search"].values():
        size = s.get("messages_loaded", s["messages"])  # a load cut short: what was loaded
        rows = s["rounds"]
        pl = s["postgresql_load"]
        sl = s["sqlite_load"]
        procs = "" if "loaders" not in sl else f", {pl['loaders']} loaders"
        loads = {
            "sqlite": f"{sl['append_many_s']:.0f} (append_many"
            + ("" if "loaders" not in sl else f", {sl['loaders']} loaders")
            + ")",
            "postgresql": f"{pl['total_s']:.0f} (append_many {pl['append_many_s']:.0f}"
            f"{procs} + GIN rebuild {pl['index_build_s']:.0f} + vacuum"
            f" {pl['vacuum_analyze_s']:.0f})",
        }
        for store in ("sqlite", "postgresql"):
            recall = {r[store]["recall_at_20"] for r in rows}
            out.append(
                f"| {int(size):,} | {store} | {loads[store]} | {_med(rows, store, 'p50_ms')}"
                f" | {_med(rows, store, 'p99_ms')} | {_med(rows, store, 'max_ms')}"
                f" | {', '.join(f'{x:.4f}' for x in sorted(recall))} |"
            )
        ratios.append(
            f"| {int(size):,} | {', '.join(str(r['p50_ratio_pg_vs_sqlite']) for r in rows)}"
            f" | {', '.join(str(r['p99_ratio_pg_vs_sqlite']) for r in rows)} |"
        )
    return "\n".join(out + ratios + _by_kind(d))


def _by_kind(d: dict[str, Any]) -> list[str]:
    """Per query kind (runs that record it): p50/p99 per store, median over rounds with the
    range, recall@20, and how many of SQLite's top 20 PostgreSQL's top 20 held."""
    out: list[str] = []
    for s in d["search"].values():
        size = s.get("messages_loaded", s["messages"])
        rows = s["rounds"]
        if not rows or "by_kind" not in rows[0]["sqlite"]:
            continue
        each = next(iter(rows[0]["sqlite"]["by_kind"].values()))["n"]
        out += [
            "",
            f"{int(size):,} messages, per query kind ({each} queries each per round;"
            " p99 of so few is close to the max):",
            "",
            "| kind | SQLite p50 ms | SQLite p99 ms | PG p50 ms | PG p99 ms | PG / SQLite p50"
            " | recall@20 SQLite / PG |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for kind in rows[0]["postgresql"]["by_kind"]:
            k = [{st: r[st]["by_kind"][kind] for st in ("sqlite", "postgresql")} for r in rows]
            ratio = sorted(r["postgresql"]["p50_ms"] / r["sqlite"]["p50_ms"] for r in k)
            rec = {
                st: ", ".join(sorted({f"{r[st]['recall_at_20']:.2f}" for r in k}))
                for st in ("sqlite", "postgresql")
            }
            out.append(
                f"| {kind} | {_med(k, 'sqlite', 'p50_ms')} | {_med(k, 'sqlite', 'p99_ms')}"
                f" | {_med(k, 'postgresql', 'p50_ms')} | {_med(k, 'postgresql', 'p99_ms')}"
                f" | {statistics.median(ratio):.1f} ({ratio[0]:.1f}–{ratio[-1]:.1f})"
                f" | {rec['sqlite']} / {rec['postgresql']} |"
            )
        agree = [r["agreement"] for r in rows if "agreement" in r]
        if agree:
            out += [
                "",
                "Agreement per round (same top 20 in the same order / mean share of SQLite's"
                " top 20 in PostgreSQL's / lowest share): "
                + "; ".join(
                    f"{a['same_top20_in_order']}/{a['queries']}, "
                    f"{a['sqlite_top20_found_by_pg_mean']:.3f}, {a['sqlite_top20_found_by_pg_min']}"
                    for a in agree
                ),
            ]
    return out


def main(argv: list[str]) -> int:
    for name in argv:
        d = json.loads((RESULTS / name).read_text())
        print(f"`{name}`, commit {d['machine']['git_commit'][:10]}\n")
        if "appends" in d:
            print(appends(d) + "\n")
        if "search" in d:
            print(search(d) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
