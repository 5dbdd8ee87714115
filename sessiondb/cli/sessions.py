"""Session and message verbs: sessions, show, append, rm, info."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..core.contract import Store
from ..errors import InvalidInput, SessionNotFound
from ..models import Message, Session
from .common import confirm_or_refuse, console, emit_json, get_store, to_jsonable
from .render import clip, safe, size, stored, when


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
    store = get_store(ctx, readonly=True)
    found = store.list_sessions(source=source, limit=limit, offset=offset)
    if as_json:
        emit_json(found)
        return
    total = store.count_sessions(source=source)
    console.print(_page_header(len(found), offset, total, source))
    if not found:
        return
    if console.width >= _TABLE_WIDTH + min(max(len(s.session_id) for s in found), _MAX_ID):
        console.print(_table(found), soft_wrap=False)
    else:
        for s in found:
            console.print(_two_lines(s))


# Widest session id shown whole (Claude Code's are 36 characters); longer ones are clipped.
_MAX_ID = 64
# Everything but the id in a one-line row: source up to 14, messages 4, time 16, a title of 24
# at least, the gaps, and an "ended" column when one is shown.
_TABLE_WIDTH = 14 + 4 + 16 + 24 + 8 + 14


def _page_header(shown: int, offset: int, total: int, source: str | None) -> Text:
    of = f" from {source}" if source else ""
    if shown == total:
        line = f"{total} session{'s' if total != 1 else ''}{of}, most recent activity first"
    else:
        line = f"sessions {offset + 1}–{offset + shown} of {total}{of}, most recent activity first"
        if offset + shown < total:
            line += f" — more: --offset {offset + shown}"
    return Text(line, style="bold")


def _table(found: list[Session]) -> Text:
    """One line per session, in columns: ids, sources, counts and times whole (ids up to
    _MAX_ID), the title clipped to what is left of the line — nothing ever wraps."""
    id_w = min(max(len(s.session_id) for s in found), _MAX_ID)
    src_w = min(max(6, *(len(s.source) for s in found)), 14)
    msg_w = max(4, *(len(str(s.message_count)) for s in found))
    ended = any(s.ended_at for s in found)
    title_w = console.width - (id_w + src_w + msg_w + 16 + 8) - (14 if ended else 0)
    cells = [("session", id_w), ("source", src_w), ("msgs", msg_w), ("last activity", 16)]
    head = "  ".join(name.rjust(w) if name == "msgs" else name.ljust(w) for name, w in cells)
    out = Text(
        head + "  title" + ("".ljust(max(0, title_w - 5)) + "  ended" if ended else ""),
        style="bold",
    )
    for s in found:
        out.append("\n")
        out.append(safe(clip(s.session_id, id_w)).ljust(id_w), style="bold")
        out.append("  " + clip(safe(s.source, one_line=True), src_w).ljust(src_w), style="dim")
        out.append("  " + str(s.message_count).rjust(msg_w))
        out.append("  " + when(s.updated_at).ljust(16), style="dim")
        title = clip(safe(s.title or "", one_line=True), title_w)
        out.append("  " + (title.ljust(title_w) if ended else title))
        if ended and s.ended_at:
            out.append("  " + clip(safe(s.end_reason or "", one_line=True), 12), style="dim")
    return out


def _two_lines(s: Session) -> Text:
    """A session for a narrow terminal: the id and facts, then the title, each on one line."""
    facts = f"  {s.source} · {s.message_count} msgs · {when(s.updated_at)}"
    if s.ended_at:
        facts += f" · ended ({s.end_reason or ''})"
    width = max(20, console.width - 2)
    line = Text.assemble(
        stored(clip(s.session_id, width), "bold"), Text(clip(safe(facts), width), "dim")
    )
    line.truncate(console.width, overflow="ellipsis")
    title = Text("  ") + stored(clip(s.title or "(no title)", width), one_line=True)
    title.truncate(console.width, overflow="ellipsis")
    return line + Text("\n") + title


@click.command("show")
@click.argument("session")
@click.option(
    "--after", type=click.IntRange(min=0), default=0, help="Only messages after this seq."
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many.")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Then keep printing new messages as they are appended, until Ctrl-C "
    "(with --json: one JSON object per line).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the messages as JSON.")
@click.pass_context
def show_cmd(
    ctx: click.Context,
    session: str,
    after: int,
    limit: int | None,
    follow: bool,
    as_json: bool,
) -> None:
    """Print the transcript of SESSION."""
    store = get_store(ctx, readonly=True)
    info = store.get_session(session)
    if info is None:
        raise SessionNotFound(session)
    msgs = store.messages(session, after=after, limit=limit)
    if as_json and not follow:
        emit_json({"session": info, "messages": msgs})
        return
    if not as_json:
        head = stored(info.session_id, "bold")
        if info.title:
            head += Text(" — ") + stored(info.title, one_line=True)
        n = info.message_count
        head += Text(f"  ({safe(info.source, one_line=True)}, {n} message{'s' * (n != 1)})", "dim")
        console.print(head)
    for m in msgs:
        _print_message(m, as_json)
    if not follow:
        return
    try:
        _follow(store, session, msgs, after, info.revision, as_json)
    except KeyboardInterrupt:
        return


#: Seconds of one wait of ``show --follow`` (each wait is bounded; it waits again after).
FOLLOW_WAIT = 30.0
#: After a removal, how many messages before the last one printed are read again to find
#: those replaced (a popped seq is the next append's).
FOLLOW_REREAD = 100


def _follow(
    store: Store, session: str, shown: list[Message], after: int, revision: int, as_json: bool
) -> None:
    """Print each message appended after ``shown`` as it comes. The wait watches the session's
    revision too, so a removal followed by an append that takes the removed seq again is seen
    (docs/design.md, "Removing messages"): the recent messages are then read again and those
    that differ from what was printed are printed, under their seq."""
    printed = {m.seq: m for m in shown[-FOLLOW_REREAD:]}
    last = shown[-1].seq if shown else after
    while True:
        store.wait_for_messages(session, after=last, revision=revision, timeout=FOLLOW_WAIT)
        s = store.get_session(session)
        now = 0 if s is None else s.revision  # a deleted session reads as revision 0 (wait.py)
        if now == revision:
            batch = store.messages(session, after=last)
        else:
            count = 0 if s is None else s.message_count
            batch = store.messages(session, after=max(0, min(last, count) - FOLLOW_REREAD))
        check = store.get_session(session)
        if (0 if check is None else check.revision) != now:
            continue  # another removal while reading: read again
        revision = now
        for m in batch:
            if printed.get(m.seq) != m:
                _print_message(m, as_json)
                printed[m.seq] = m
        last = batch[-1].seq if batch else min(last, 0 if s is None else s.message_count)
        for seq in [q for q in printed if q <= last - FOLLOW_REREAD or q > last]:
            del printed[seq]


def _print_message(m: Message, as_json: bool) -> None:
    if as_json:  # one JSON object per line, so `--follow --json` is a stream
        sys.stdout.write(json.dumps(to_jsonable(m), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    console.print()
    console.print(
        Text.assemble(
            (f"#{m.seq} ", "bold cyan"),
            stored(m.role, "bold cyan", one_line=True),
            (f" · {when(m.created_at, seconds=True)} UTC", "dim"),
        )
    )
    console.print(stored(m.content))


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
        raw = sys.stdin.buffer.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(
                f"standard input is not UTF-8 text (at byte {e.start}); a message is text — "
                "encode binary data (base64, say) and note it in --meta"
            ) from None
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
        confirm_or_refuse(
            f"Delete session {session!r} and its {info.message_count} messages?",
            f"not deleting session {session!r} ({info.message_count} messages)",
        )
    store.delete_session(session)
    console.print(f"deleted {escape(session)} ({info.message_count} messages)")


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def info_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show the store's path, file sizes, counts, journal mode, versions, and the file's space
    by part: messages, search index, other tables, free pages."""
    facts = get_store(ctx, readonly=True).info()
    if as_json:
        emit_json(facts)
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for k, val in facts.items():
        if k == "sizes":
            val = ", ".join(f"{name} {'—' if n is None else f'{n:,} B'}" for name, n in val.items())
        elif k == "space" and val:  # the database file by what it holds (space.split)
            val = ", ".join(f"{name.replace('_', ' ')} {size(n)}" for name, n in val.items())
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
