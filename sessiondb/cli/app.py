"""Root command group, the ``--db`` option, and friendly errors instead of tracebacks.

Exit codes: 0 success; 1 an error from the store; 2 bad input or usage; 3 session not found;
4 store busy; 5 corrupt database. (``doctor`` has its own: 0 ok, 1 warnings, 2 problems.)
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from rich.markup import escape

from ..errors import (
    CorruptDatabase,
    Error,
    InvalidInput,
    ReadOnlyStore,
    SessionNotFound,
    StoreBusy,
    StoreNotFound,
)
from .common import err_console

EXIT_ERROR, EXIT_INPUT, EXIT_NOT_FOUND, EXIT_BUSY, EXIT_CORRUPT = 1, 2, 3, 4, 5

_HINTS: list[tuple[type[Error], str, int]] = [
    (SessionNotFound, "list sessions with `sessiondb sessions`", EXIT_NOT_FOUND),
    (StoreBusy, "another process is writing; `sessiondb doctor` names it", EXIT_BUSY),
    (CorruptDatabase, "`sessiondb doctor --repair` keeps a copy and recovers", EXIT_CORRUPT),
    (InvalidInput, "see `sessiondb COMMAND --help`", EXIT_INPUT),
    (StoreNotFound, "commands that only read never create a store", EXIT_ERROR),
    (ReadOnlyStore, "this command only reads; use one that writes", EXIT_ERROR),
]


def report_error(e: Error, command: str | None = None) -> int:
    """Print ``e`` as one line with a hint on stderr; return the exit code for it."""
    for cls, hint, code in _HINTS:
        if isinstance(e, cls):
            hint = hint.replace("COMMAND", command) if command else hint.replace(" COMMAND", "")
            err_console.print(f"[bold red]error:[/] {escape(str(e))}\n[dim]hint: {hint}[/]")
            return code
    err_console.print(f"[bold red]error:[/] {escape(str(e))}")
    return EXIT_ERROR


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Error as e:
            sys.exit(report_error(e, ctx.invoked_subcommand))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # click's own flow: --help, usage errors, a declined prompt
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)
        except BrokenPipeError:
            # The reader went away (`sessiondb export | head`): stop quietly, as `cat` does, and
            # keep Python from complaining again when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        except OSError as e:  # the CLI's own files (an export's output, an import's input)
            where = f"{e.filename}: " if e.filename else ""
            err_console.print(f"[bold red]error:[/] {escape(where + (e.strerror or str(e)))}")
            sys.exit(EXIT_ERROR)
        except Exception as e:
            if os.environ.get("SESSIONDB_DEBUG"):
                raise
            err_console.print(
                f"[bold red]error:[/] internal error: {escape(type(e).__name__)}: {escape(str(e))}"
                "\n[dim]hint: this is a bug in sessiondb — please report it; "
                "SESSIONDB_DEBUG=1 shows the traceback[/]"
            )
            sys.exit(EXIT_ERROR)


@click.group(cls=_Group)
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    envvar="SESSIONDB_PATH",
    help="Database file (default: $SESSIONDB_PATH, else the platform data folder).",
)
@click.version_option(package_name="sessiondb")
@click.pass_context
def cli(ctx: click.Context, db: str | None) -> None:
    """sessiondb: durable, searchable sessions and transcripts for AI agents."""
    ctx.ensure_object(dict)["db"] = db


def main() -> None:
    cli()


# One module per group of verbs; each is a thin layer over the Python API.
from . import sessions as _sessions  # noqa: E402
from . import transcripts as _transcripts  # noqa: E402
from .channel import channel as _channel  # noqa: E402
from .demo import demo as _demo  # noqa: E402
from .doctor import doctor as _doctor  # noqa: E402
from .lease import hook_group as _hook_group  # noqa: E402
from .lease import lease_group as _lease_group  # noqa: E402

for _cmd in (
    *_sessions.COMMANDS,
    *_transcripts.COMMANDS,
    _doctor,
    _lease_group,
    _hook_group,
    _channel,
    _demo,
):
    cli.add_command(_cmd)

from .prune import prune_cmd as _prune_cmd  # noqa: E402
from .search import search_cmd as _search_cmd  # noqa: E402
from .serve import serve_cmd as _serve_cmd  # noqa: E402
from .stats import stats_cmd as _stats_cmd  # noqa: E402

cli.add_command(_search_cmd)
cli.add_command(_stats_cmd)
cli.add_command(_prune_cmd)
cli.add_command(_serve_cmd)
