"""``sessiondb prune``: remove sessions idle for longer than a span, and give the space back.

A thin layer over ``store.prune()`` (docs/adr/0006-retention.md): a dry run first, to show what
would go and how much space; the same cutoff then for the real run, after a confirmation.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import click
from rich.table import Table
from rich.text import Text

from ..models import PruneReport
from .common import (
    confirm_or_refuse,
    console,
    duration,
    emit_json,
    err_console,
    get_store,
    to_jsonable,
)
from .render import clip, safe, size, when

#: Sessions listed before "… and N more".
SHOWN = 20


def _plan(report: PruneReport) -> None:
    verb = "would remove" if report.dry_run else "removing"
    n = len(report.sessions)
    line = (
        f"{verb} {n} session(s), {report.messages:,} message(s), {size(report.bytes)} of text"
        f" — last active before {when(report.cutoff)} UTC"
    )
    console.print(Text(line, style="bold"))
    if report.estimated_space:
        console.print(
            f"about {size(report.estimated_space)} of the file to give back"
            " (their search index's share too with --compact)"
        )
    if not n:
        return
    table = Table(box=None, pad_edge=False)
    for column in ("session", "source", "last active", "messages", "title"):
        table.add_column(column, justify="right" if column == "messages" else "left")
    for s in report.sessions[:SHOWN]:
        table.add_row(
            Text(clip(safe(s.session_id, one_line=True), 40)),
            Text(clip(safe(s.source, one_line=True), 16)),
            when(s.updated_at),
            f"{s.message_count:,}",
            Text(clip(safe(s.title or "", one_line=True), 40)),
        )
    console.print(table)
    if n > SHOWN:
        console.print(f"… and {n - SHOWN:,} more")


def _done(report: PruneReport, compacted: int | None) -> None:
    console.print(
        Text(
            f"removed {len(report.sessions)} session(s), {report.messages:,} message(s); "
            f"the file gave back {size(report.freed + (compacted or 0))}",
            style="bold",
        )
    )
    if report.kept:
        console.print(f"kept {report.kept} session(s) that got a new message meanwhile")
    if report.needs_compact and compacted is None:
        console.print(
            Text(
                "this store was created before sessiondb gave space back in steps: its free "
                "pages are reused but the file does not shrink — run once with --compact when "
                "the store is quiet (it blocks writers while it rewrites the file)",
                style="yellow",
            )
        )


class _Progress:
    """One line on stderr at most every second: long prunes show they are moving."""

    def __init__(self) -> None:
        self._next = time.monotonic() + 1.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now < self._next and done < total:
            return
        self._next = now + 1.0
        what = "sessions removed" if phase == "remove" else "free pages given back"
        err_console.print(f"{phase}: {done:,}/{total:,} {what}", highlight=False)


@click.command("prune")
@click.option(
    "--older-than",
    "older_than",
    required=True,
    help="Remove sessions whose last activity is older than this: 90m, 12h, 30d, 2w.",
)
@click.option("--source", help="Only sessions from this source.")
@click.option("--session", "session_id", help="Only this session (if it is that old).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; change nothing.")
@click.option(
    "--compact",
    is_flag=True,
    help="Then merge the search index whole and rewrite the file (VACUUM): gives back the "
    "index's share too. BLOCKS EVERY WRITER while it runs (seconds per 100 MB); needed once for "
    "stores made before incremental auto-vacuum.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def prune_cmd(
    ctx: click.Context,
    older_than: str,
    source: str | None,
    session_id: str | None,
    dry_run: bool,
    compact: bool,
    as_json: bool,
    yes: bool,
) -> None:
    """Remove whole sessions (ended or idle) whose last activity is older than --older-than,
    then give the space back to the filesystem.

    Runs beside live agents in short steps; a session that gets a message meanwhile is kept.
    Shows what it would remove first, and asks (without --yes it refuses when no one can
    answer).
    """
    try:
        age = duration(older_than)
    except click.BadParameter as e:
        raise click.BadParameter(e.message, param_hint="'--older-than'") from None
    # One cutoff for the plan and the run: what was shown is what goes.
    cutoff = datetime.now(timezone.utc) - age
    store = get_store(ctx, readonly=dry_run)
    plan = store.prune(older_than=cutoff, source=source, session_id=session_id, dry_run=True)
    if dry_run or (not plan.sessions and not compact):
        _json(plan, None) if as_json else _plan(plan)
        return
    if not as_json:
        _plan(plan)
    if not yes:
        what = f"{len(plan.sessions)} session(s) and {plan.messages:,} message(s)"
        confirm_or_refuse(
            f"Remove {what}?" + (" Then compact (writers wait)?" if compact else ""),
            f"not removing {what}",
        )
    report = store.prune(
        older_than=cutoff, source=source, session_id=session_id, progress=_Progress()
    )
    compacted = None
    if compact:
        err_console.print("compacting: writers wait until it is done")
        compacted = store.compact()
    if as_json:
        _json(report, compacted)
    else:
        _done(report, compacted)


def _json(report: PruneReport, compacted: int | None) -> None:
    """The report's fields, and the bytes ``--compact`` gave back (null without it)."""
    emit_json({**to_jsonable(report), "compacted": compacted})


COMMANDS = [prune_cmd]
