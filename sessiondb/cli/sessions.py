"""Session and message verbs: sessions, show, append, rm, info."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import click
from rich.markup import escape
from rich.table import Table

from ..errors import InvalidInput, SessionNotFound
from .common import console, emit_json, get_store


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@click.command("sessions")
@click.option("--source", help="Only sessions from this source (e.g. cli, gateway).")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def sessions_cmd(
    ctx: click.Context, source: str | None, limit: int, offset: int, as_json: bool
) -> None:
    """List sessions, most recent activity first."""
    found = get_store(ctx, readonly=True).list_sessions(source=source, limit=limit, offset=offset)
    if as_json:
        emit_json(found)
        return
    table = Table(title=f"{len(found)} session(s)", title_justify="left")
    for col in ("session", "source", "messages", "updated (UTC)", "title", "ended"):
        table.add_column(
            col, justify="right" if col == "messages" else "left", no_wrap=col != "title"
        )
    for s in found:
        table.add_row(
            escape(s.session_id),
            escape(s.source),
            str(s.message_count),
            _when(s.updated_at),
            escape(s.title or ""),
            escape(s.end_reason or "") if s.ended_at else "",
        )
    console.print(table)


@click.command("show")
@click.argument("session")
@click.option(
    "--after", type=click.IntRange(min=0), default=0, help="Only messages after this seq."
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@click.pass_context
def show_cmd(
    ctx: click.Context, session: str, after: int, limit: int | None, as_json: bool
) -> None:
    """Print the transcript of SESSION."""
    store = get_store(ctx, readonly=True)
    info = store.get_session(session)
    if info is None:
        raise SessionNotFound(session)
    msgs = store.messages(session, after=after, limit=limit)
    if as_json:
        emit_json({"session": info, "messages": msgs})
        return
    title = f" — {escape(info.title)}" if info.title else ""
    console.print(
        f"[bold]{escape(info.session_id)}[/]{title} [dim]({info.source}, "
        f"{info.message_count} messages)[/]"
    )
    for m in msgs:
        console.print(f"\n[bold cyan]#{m.seq} {escape(m.role)}[/] [dim]{_when(m.created_at)}[/]")
        console.print(escape(m.content))


@click.command("append")
@click.argument("session")
@click.argument("role")
@click.argument("text", required=False)
@click.option("--key", help="Idempotency key: appending the same key again writes nothing.")
@click.option("--meta", help="A JSON object stored with the message.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored message as JSON.")
@click.pass_context
def append_cmd(
    ctx: click.Context,
    session: str,
    role: str,
    text: str | None,
    key: str | None,
    meta: str | None,
    as_json: bool,
) -> None:
    """Append a message to SESSION (created if missing); TEXT or '-' reads standard input."""
    if text is None or text == "-":
        if sys.stdin.isatty() and text is None:
            raise InvalidInput("give TEXT, or pipe the message on standard input")
        text = sys.stdin.read()
    meta_obj = None
    if meta is not None:
        try:
            meta_obj = json.loads(meta)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"--meta is not valid JSON: {e}") from None
    msg = get_store(ctx).append(session, role, text, key=key, meta=meta_obj)
    if as_json:
        emit_json(msg)
    else:
        console.print(f"{escape(msg.session_id)} #{msg.seq}")


@click.command("rm")
@click.argument("session")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def rm_cmd(ctx: click.Context, session: str, yes: bool) -> None:
    """Delete SESSION and all its messages."""
    store = get_store(ctx)
    info = store.get_session(session)
    if info is None:
        raise SessionNotFound(session)
    if not yes:
        if not sys.stdin.isatty():
            # A script, cron or an agent's shell tool cannot answer: never delete unasked.
            raise InvalidInput(
                f"not deleting session {session!r} ({info.message_count} messages) without "
                "confirmation: standard input is not a terminal — pass --yes"
            )
        click.confirm(
            f"Delete session {session!r} and its {info.message_count} messages?", abort=True
        )
    store.delete_session(session)
    console.print(f"deleted {escape(session)} ({info.message_count} messages)")


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def info_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show the store's path, file sizes, counts, journal mode and versions."""
    facts = get_store(ctx, readonly=True).info()
    if as_json:
        emit_json(facts)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for k, val in facts.items():
        if k == "sizes":
            val = ", ".join(
                f"{name} {'—' if size is None else f'{size:,} B'}" for name, size in val.items()
            )
        table.add_row(k.replace("_", " "), escape(str(val)))
    console.print(table)


@click.command("migrate")
@click.pass_context
def migrate_cmd(ctx: click.Context) -> None:
    """Bring the store's schema up to this sessiondb's version (any write does it too; the
    commands that only read never do)."""
    before = get_store(ctx, readonly=True).info().get("schema_version")
    after = get_store(ctx).info().get("schema_version")
    if before == after:
        console.print(f"schema version {after}: nothing to do")
    else:
        console.print(f"schema version {before} → {after}")


COMMANDS = [sessions_cmd, show_cmd, append_cmd, rm_cmd, info_cmd, migrate_cmd]
