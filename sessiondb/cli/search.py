"""`sessiondb search QUERY`: ranked matches with highlighted snippets and same-session context."""

from __future__ import annotations

from datetime import datetime, timezone

import click
from rich.text import Text

from ..models import Hit, Message
from .common import console, emit_json, get_store

# Private-use characters as markers: they never clash with the text, and rich styles what lies
# between them (the plain-text markers "[" and "]" are what --json and the API hand out).
_OPEN, _CLOSE = "\ue000", "\ue001"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")


def _highlighted(snippet: str) -> Text:
    text = Text()
    rest = snippet
    while _OPEN in rest:
        before, _, tail = rest.partition(_OPEN)
        match, _, rest = tail.partition(_CLOSE)
        text.append(before)
        text.append(match, style="bold black on yellow")
    text.append(rest)
    return text


def _neighbour(m: Message) -> Text:
    line = " ".join(m.content.split())
    if len(line) > 110:
        line = line[:109] + "…"
    return Text.assemble(("    ", ""), (f"#{m.seq} {m.role}: ", "dim cyan"), (line, "dim"))


def _print_hit(rank: int, hit: Hit) -> None:
    m = hit.message
    console.print(
        Text.assemble(
            (f"{rank}. ", "bold"),
            (m.session_id, "bold magenta"),
            (f" #{m.seq} {m.role}", "cyan"),
            (f"  {_when(m.created_at)} UTC  score {hit.score:.3g}", "dim"),
        )
    )
    for n in hit.before:
        console.print(_neighbour(n))
    console.print(Text("  ▶ ", style="bold") + _highlighted(hit.snippet))
    for n in hit.after:
        console.print(_neighbour(n))
    console.print()


@click.command("search")
@click.argument("query")
@click.option(
    "--context",
    "-C",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    help="Also show N messages before and after each match (same session).",
)
@click.option("--session", "session_id", help="Only this session.")
@click.option("--source", help="Only sessions from this source (e.g. cli, gateway).")
@click.option("--role", help="Only messages with this role (user, assistant, tool, ...).")
@click.option(
    "--fts",
    "fts_mode",
    is_flag=True,
    help='QUERY is the advanced grammar: "phrases", prefix*, AND, OR, NOT or -word, ( ).',
)
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
@click.pass_context
def search_cmd(
    ctx: click.Context,
    query: str,
    context: int,
    session_id: str | None,
    source: str | None,
    role: str | None,
    fts_mode: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """Search messages for QUERY, best matches first.

    By default every word of QUERY must appear in a message; words with punctuation
    (foo.bar, x:y, C++, /usr/local/bin) and CJK text are matched literally.
    """
    hits = get_store(ctx, readonly=True).search(
        query,
        session_id=session_id,
        source=source,
        role=role,
        context=context,
        limit=limit,
        offset=offset,
        mode="fts" if fts_mode else "plain",
        markers=("[", "]") if as_json else (_OPEN, _CLOSE),
    )
    if as_json:
        emit_json(hits)
        return
    if not hits:
        console.print(f"no messages match {query!r}", style="dim", markup=False)
        return
    for rank, hit in enumerate(hits, start=offset + 1):
        _print_hit(rank, hit)
