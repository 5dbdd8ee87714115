"""``sessiondb doctor [PATH] [--full] [--json] [--repair [--yes]]``.

Exit 0 ok, 1 warnings, 2 failures (or a refused/failed repair).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..doctor import diagnose, repair, report_to_dict
from ..errors import Error
from ..host import paths
from ..models import HealthReport
from .common import db_option_path

_STYLE = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "bold red")}


def render(report: HealthReport, console: Console, code: int | None = None) -> None:
    """One line per check: status, name, what was found, and (dimmed) what to do next."""
    table = Table(show_header=False, box=None, pad_edge=False, expand=False)
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    for c in report.checks:
        label, style = _STYLE[c.status]
        detail = Text(c.detail)
        if c.hint:
            detail.append(f"\n→ {c.hint}", style="dim")
        table.add_row(Text(label, style=style), c.name, detail)
    console.print(Text(f"sessiondb doctor: {report.path}", style="bold"))
    console.print(table)
    label, style = _STYLE[report.status]
    code = report.exit_code if code is None else code
    if code != report.exit_code:  # a refused or failed repair: the store's state is not the verdict
        label, style = _STYLE["fail"]
        console.print(Text(f"status: {report.status}, repair not done (exit {code})", style=style))
        return
    console.print(Text(f"status: {report.status} (exit {code})", style=style))


@click.command("doctor")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--full", is_flag=True, help="Run integrity_check instead of quick_check (slower).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the stable JSON report (docs/doctor.md)."
)
@click.option(
    "--repair",
    "do_repair",
    is_flag=True,
    help="Repair: rebuild indexes, checkpoint; rebuild a corrupt file (a copy is kept).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation before repairing.")
@click.pass_context
def doctor(
    ctx: click.Context, path: str | None, full: bool, as_json: bool, do_repair: bool, yes: bool
) -> None:
    """Check the health of a store and say what to do: exit 0 ok, 1 warnings, 2 problems.

    PATH defaults to --db, then $SESSIONDB_PATH, else the platform's default store.
    """
    db = str(path or db_option_path(ctx) or paths.default_db_path())
    console = Console(stderr=as_json)
    repaired: dict[str, Any] | None = None
    if do_repair:
        if not yes and not click.confirm(
            f"Repair {db}? A damaged file is copied aside first and never modified", err=True
        ):
            raise SystemExit(1)
        try:
            result = repair(db)
        except (Error, OSError) as e:  # the repair translates OSError itself; never a traceback
            repaired = {"ok": False, "error": str(e)}
            if not as_json:
                console.print(Text(f"repair refused or failed: {e}", style="bold red"))
        else:
            repaired = {"ok": True, **dataclasses.asdict(result)}
            if not as_json:
                for line in (*result.actions, *result.notes):
                    console.print(Text(f"repair: {line}", style="cyan"))
    report = diagnose(db, full=full)
    code = report.exit_code
    if repaired is not None and not repaired["ok"]:
        code = 2
    if as_json:
        out = report_to_dict(report)
        if repaired is not None:
            out["repair"] = repaired
        out["exit_code"] = code
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")
    else:
        render(report, console, code)
    raise SystemExit(code)
