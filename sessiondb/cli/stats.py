"""``sessiondb stats``: sessions, messages and tokens per day, with a small terminal chart."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from ..models import Stats, Tokens
from .common import console, emit_json, get_store, period_start
from .render import clip, safe


def _n(value: int) -> str:
    """1234 -> 1.2k, 3400000 -> 3.4M: tokens run to millions."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def _tokens(t: Tokens) -> str:
    if not t.total:
        return ""
    return (
        f"{_n(t.total)} tokens (in {_n(t.input)} · out {_n(t.output)} · "
        f"cache read {_n(t.cache_read)} · write {_n(t.cache_write)})"
    )


def _bar(value: int, top: int, width: int) -> str:
    """A horizontal bar of ``value`` out of ``top`` in ``width`` cells, in eighths of a cell."""
    if top <= 0 or width <= 0:
        return ""
    eighths = round(value / top * width * 8)
    if value and not eighths:
        eighths = 1  # any activity shows
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def _render(stats: Stats) -> None:
    span = f"{stats.since or 'the first day'} – {stats.until or 'today'}"
    console.print(
        Text(
            f"{span} (UTC days): {stats.sessions} session(s), {stats.messages:,} message(s)"
            + (f", {_n(stats.tokens.total)} tokens" if stats.tokens.total else ""),
            style="bold",
        )
    )
    if not stats.days:
        console.print("no activity in this period")
        return
    top = max(d.messages for d in stats.days)
    width = max(10, min(40, console.width - 60))
    for d in stats.days:
        line = Text(f"{d.day}  ")
        line.append(f"{_bar(d.messages, top, width):<{width}}", style="cyan")
        line.append(f" {d.messages:>7,} msgs {d.sessions:>4} sess")
        if d.tokens.total:
            line.append(f" {_n(d.tokens.total):>7} tok")
        console.print(line, soft_wrap=False, overflow="ellipsis", no_wrap=True)
    models: dict[tuple[str, str], list[int]] = {}
    totals: dict[tuple[str, str], Tokens] = {}
    for d in stats.days:
        for u in d.by:
            k = (u.source, u.model or "")
            models.setdefault(k, [0])[0] += u.messages
            t = totals.get(k, Tokens())
            totals[k] = Tokens(
                t.input + u.tokens.input,
                t.output + u.tokens.output,
                t.cache_read + u.tokens.cache_read,
                t.cache_write + u.tokens.cache_write,
            )
    table = Table(title="by source and model", title_justify="left", box=None, pad_edge=False)
    table.add_column("source")
    table.add_column("model")
    table.add_column("messages", justify="right")
    table.add_column("tokens")
    for (source, model), (n,) in sorted(models.items(), key=lambda kv: -kv[1][0]):
        table.add_row(
            Text(clip(safe(source, one_line=True), 24)),
            Text(clip(safe(model, one_line=True), 40) if model else "(none)"),
            f"{n:,}",
            Text(_tokens(totals[(source, model)])),
        )
    console.print()
    console.print(table)


@click.command("stats")
@click.option(
    "--since",
    default="30d",
    show_default=True,
    help="First day: a date (2026-11-01), a span back from today (30d, 12w), or 'all'.",
)
@click.option("--until", help="Last day, a date (default: today).")
@click.option("--source", help="Only sessions from this source.")
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
@click.pass_context
def stats_cmd(
    ctx: click.Context, since: str, until: str | None, source: str | None, as_json: bool
) -> None:
    """Sessions, messages and tokens per day (UTC), by source and model.

    Read from a rollup kept as messages are written, so it answers at once on any store size.
    Tokens are those recorded in messages' meta["usage"] (imported Claude Code and OpenAI
    transcripts carry them), each API response counted once.
    """
    store = get_store(ctx, readonly=True)
    stats = store.stats(
        since=period_start(since),
        until=None if until is None else period_start(until),
        source=source,
    )
    if as_json:
        emit_json(stats)
    else:
        _render(stats)


COMMANDS = [stats_cmd]
