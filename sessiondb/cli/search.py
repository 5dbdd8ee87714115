"""`sessiondb search QUERY`: ranked matches with highlighted snippets and same-session context."""

from __future__ import annotations

import click
from rich.text import Text

from ..errors import SessionNotFound
from ..models import Hit, Message
from .common import console, emit_json, get_store
from .render import safe, stored, when

# In a terminal, matches are marked with private-use characters (they never clash with the
# text) and styled; piped, with "[" and "]" as in --json and the API, since styles are dropped.
_OPEN, _CLOSE = "\ue000", "\ue001"


def _highlighted(snippet: str) -> Text:
    text = Text()
    rest = snippet
    while _OPEN in rest:
        before, _, tail = rest.partition(_OPEN)
        match, _, rest = tail.partition(_CLOSE)
        text.append(safe(before))
        text.append(safe(match), style="bold black on yellow")
    text.append(safe(rest))
    return text


def _neighbour(m: Message) -> Text:
    line = Text.assemble(
        ("    ", ""),
        (f"#{m.seq} ", "dim cyan"),
        stored(m.role + ": ", "dim cyan", one_line=True),
        stored(m.content, "dim", one_line=True),
    )
    line.truncate(console.width, overflow="ellipsis")  # one line per neighbour, whatever it holds
    return line


def _print_hit(rank: int, hit: Hit) -> None:
    m = hit.message
    console.print(
        Text.assemble(
            (f"{rank}. ", "bold"),
            stored(m.session_id, "bold magenta"),
            (f" #{m.seq} ", "cyan"),
            stored(m.role, "cyan", one_line=True),
            (f" · {when(m.created_at)} UTC", "dim"),
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
    store = get_store(ctx, readonly=True)
    if session_id is not None and store.get_session(session_id) is None:
        raise SessionNotFound(session_id)  # as show, export and rm: exit 3, not "no matches"
    styled = console.is_terminal and not as_json
    hits = store.search(
        query,
        session_id=session_id,
        source=source,
        role=role,
        context=context,
        limit=limit,
        offset=offset,
        mode="fts" if fts_mode else "plain",
        markers=(_OPEN, _CLOSE) if styled else ("[", "]"),
    )
    if as_json:
        emit_json(hits)
        return
    if not hits:
        console.print(Text(f"no messages match {safe(query, one_line=True)!r}", style="dim"))
        return
    for rank, hit in enumerate(hits, start=offset + 1):
        if styled:
            _print_hit(rank, hit)
        else:
            _print_plain(rank, hit)


def _print_plain(rank: int, hit: Hit) -> None:
    """Piped output: the same facts, the matches between [ and ], no styles to lose."""
    m = hit.message
    print(f"{rank}. {safe(m.session_id)} #{m.seq} {safe(m.role, one_line=True)}", end="")
    print(f" · {when(m.created_at)} UTC")
    for n in hit.before:
        print(f"    #{n.seq} {safe(n.role, one_line=True)}: {safe(n.content, one_line=True)}")
    print(f"  > {safe(hit.snippet, one_line=True)}")
    for n in hit.after:
        print(f"    #{n.seq} {safe(n.role, one_line=True)}: {safe(n.content, one_line=True)}")
    print()
