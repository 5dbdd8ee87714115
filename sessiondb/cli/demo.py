"""`sessiondb demo` (what `make demo` runs): concurrent agent processes, then verification."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from .. import demo as demo_mod
from .common import console


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-store"),
    show_default=True,
    help="Folder for the demo store (a demo run there before is replaced; nothing else is).",
)
@click.option(
    "--turns",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Turns each process writes.",
)
@click.pass_context
def demo(ctx: click.Context, folder: Path, turns: int) -> None:
    """Show several agent processes sharing one store, then verify every message."""
    path = demo_mod.fresh_store(folder)
    console.rule("[bold]sessiondb demo")
    console.print(
        f"Store: [bold]{escape(str(path))}[/]\n"
        f"{len(demo_mod.ACTORS)} processes ({', '.join(demo_mod.ACTORS)}) write {turns} turns "
        "each, to their own sessions and to one shared session, at the same time.\n"
    )
    errors, seconds = demo_mod.run_writers(path, turns, console)
    result = demo_mod.verify(path, turns, errors, seconds)
    console.print()
    console.print(demo_mod.summary_table(result))
    console.print(f"\n[bold]$ sessiondb --db {escape(str(path))} sessions[/]")
    from .sessions import sessions_cmd

    ctx.find_root().ensure_object(dict)["db"] = str(path)
    ctx.invoke(sessions_cmd, source=None, limit=50, offset=0, as_json=False)
    query = "retry policy backoff"
    console.print(
        f'\n[bold]$ sessiondb --db {escape(str(path))} search "{query}" '
        f"--session {demo_mod.SHARED_SESSION} --context 1 --limit 2[/]"
    )
    from .search import search_cmd

    ctx.invoke(
        search_cmd,
        query=query,
        session_id=demo_mod.SHARED_SESSION,
        limit=2,
        context=1,
    )
    console.print(f"\n[bold]$ sessiondb doctor {escape(str(path))}[/]")
    from ..doctor import diagnose
    from .doctor import render

    render(diagnose(path), console)
    if not result.ok:
        raise click.ClickException("verification failed: see the table above")
    console.print("\n[bold green]All checks passed.[/]")
