"""Transcript verbs: ``import`` (files and folders, with a progress bar) and ``export``."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import click
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..core import export as ex
from ..core import transcript as tr
from ..core.contract import Store
from ..errors import InvalidInput, SessionNotFound
from ..host.paths import open_private
from ..models import BadLine, Session
from .common import console, emit_json, err_console, get_store

EXIT_BAD_LINES = 2


def _files(paths: tuple[str, ...]) -> list[Path]:
    """Files named, plus every ``*.jsonl`` under the folders named (sorted, recursively)."""
    out: list[Path] = []
    for name in paths:
        p = Path(name).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.jsonl") if q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise InvalidInput(f"{p}: no such file or folder")
    return out


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--session", "session_id", help="Import everything into this session.")
@click.option("--source", default="import", show_default=True, help="Source of new sessions.")
@click.option("--strict", is_flag=True, help="Any bad line in any file: import nothing.")
@click.option(
    "--bulk",
    is_flag=True,
    help="A large import into a store nobody else is writing: the search index is built "
    "after loading each file (faster; the messages become searchable when it is done).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@click.pass_context
def import_cmd(
    ctx: click.Context,
    paths: tuple[str, ...],
    session_id: str | None,
    source: str,
    strict: bool,
    bulk: bool,
    as_json: bool,
) -> None:
    """Import JSONL transcripts (files, or folders of *.jsonl).

    Formats are recognised per file: plain {"role", "content"} lines (OpenAI chat messages),
    sessiondb's own export, Claude Code sessions (~/.claude/projects). Importing again, or a file
    that has grown, adds only what is new. Bad lines are reported and skipped; exit 2 if any.
    """
    store = get_store(ctx)
    files = _files(paths)
    if strict:
        # Validate every file before writing anything, so one bad file stops them all.
        bad = [b for f in files for b in tr.validate_jsonl(f)[0]]
        if bad:
            _print_bad(bad, as_json, aborted=True)
            sys.exit(EXIT_BAD_LINES)
    reports: dict[str, Any] = {}
    total = sum(f.stat().st_size for f in files)
    done_before = 0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("importing", total=total)
        for f in files:
            bar.update(task, description=escape(f.name))
            base = done_before

            def step(done: int, _total: int, base: int = base) -> None:
                bar.update(task, completed=base + done)

            def indexing(done: int, total: int, name: str = f.name) -> None:
                bar.update(
                    task, description=f"indexing {escape(name)} {done * 100 // max(total, 1)}%"
                )

            reports[str(f)] = tr.import_jsonl(
                store,
                f,
                session_id=session_id,
                source=source,
                strict=strict,
                progress=step,
                bulk=bulk,
                index_progress=indexing,
            )
            done_before += f.stat().st_size
    bad = [b for r in reports.values() for b in r.bad_lines]
    if as_json:
        emit_json({"files": reports, "imported": sum(r.imported for r in reports.values())})
    else:
        for name, r in reports.items():
            console.print(
                f"{escape(name)}: {r.imported} imported, {r.duplicates} already stored, "
                f"{len(r.bad_lines)} bad line(s)"
            )
        if bad:
            _print_bad(bad, False, aborted=False)
    if bad:
        sys.exit(EXIT_BAD_LINES)


def _print_bad(bad: list[BadLine], as_json: bool, *, aborted: bool) -> None:
    if as_json:
        emit_json({"aborted": aborted, "bad_lines": bad})
        return
    for b in bad[:50]:
        err_console.print(f"{escape(b.file)}:{b.line}: {escape(b.reason)}")
    if len(bad) > 50:
        err_console.print(f"… and {len(bad) - 50} more bad line(s)")
    if aborted:
        err_console.print(
            f"[bold red]error:[/] {len(bad)} bad line(s); --strict: nothing was imported"
        )


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _sessions(store: Store, session_id: str | None) -> Iterator[Session]:
    if session_id is not None:
        found = store.get_session(session_id)
        if found is None:
            raise SessionNotFound(session_id)
        yield found
        return
    yield from ex.all_sessions(store)  # by id: sessions changing meanwhile hide none


def _write_json(store: Store, sessions: Iterator[Session], out: IO[bytes]) -> int:
    """A JSON array of {"session": …, "messages": […]}, written message by message."""
    n = 0
    out.write(b"[")
    for i, s in enumerate(sessions):
        head = json.dumps(ex.header_of(s), ensure_ascii=False)
        out.write((",\n" if i else "\n").encode() + b'{"session":' + head.encode())
        out.write(b',"messages":[')
        for j, m in enumerate(ex.iter_messages(store, s.session_id)):
            line = json.dumps(ex.message_of(m), ensure_ascii=False)
            out.write((",\n  " if j else "\n  ").encode() + line.encode())
            n += 1
        out.write(b"]}")
    out.write(b"\n]\n")
    return n


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _open_fence(text: str) -> str | None:
    """The fence that closes a code block ``text`` leaves open (CommonMark's rule: a line of at
    least as many of the same character closes it), or None."""
    open_fence: str | None = None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if not m:
            continue
        run = m.group(1)
        if open_fence is None:
            if run[0] == "`" and "`" in line[m.end() :]:
                continue  # an info string may not hold a backtick: not a fence
            open_fence = run
        elif (
            run[0] == open_fence[0] and len(run) >= len(open_fence) and not line[m.end() :].strip()
        ):
            open_fence = None
    return open_fence


def _write_md(store: Store, sessions: Iterator[Session], out: IO[bytes]) -> int:
    n = 0
    for s in sessions:
        out.write(f"# {s.title or s.session_id}\n\n".encode())
        out.write(f"session `{s.session_id}` · source {s.source}\n\n".encode())
        for m in ex.iter_messages(store, s.session_id):
            out.write(f"## {m.seq}. {m.role} · {_when(m.created_at)}\n\n".encode())
            out.write(m.content.encode("utf-8") + b"\n")
            fence = _open_fence(m.content)
            if fence:  # a message cut inside a code block must not swallow the rest
                out.write(fence.encode("utf-8") + b"\n")
            out.write(b"\n")
            n += 1
    return n


@click.command("export")
@click.argument("session_id", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "json", "md"]),
    default="jsonl",
    show_default=True,
    help="jsonl re-imports byte-exact; json is one document; md is for reading.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File (default: stdout).")
@click.pass_context
def export_cmd(ctx: click.Context, session_id: str | None, fmt: str, output: str | None) -> None:
    """Export one session, or all sessions (in id order: a backup) when none is named."""
    store = get_store(ctx, readonly=True)
    sessions = _sessions(store, session_id)

    def run(out: IO[bytes]) -> int:
        if fmt == "json":
            return _write_json(store, sessions, out)
        if fmt == "md":
            return _write_md(store, sessions, out)
        return sum(ex.write_session(store, s, out) for s in sessions)

    if output is None:
        n = run(sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        try:
            fd = open_private(Path(output), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except OSError as e:
            raise InvalidInput(f"cannot write {output}: {e.strerror or e}") from None
        with os.fdopen(fd, "wb") as f:
            n = run(f)
        err_console.print(f"{n} message(s) written to {escape(output)}")


COMMANDS = [import_cmd, export_cmd]
