"""The ``sessiondb`` command line: a thin layer over the Python API."""

from __future__ import annotations

import sys


def main() -> None:
    # The Claude Code hook runs on every tool call: it skips loading the CLI (click, rich and
    # every command) — see benchmarks/startup.py.
    if sys.argv[1:] == ["hook", "claude-code"]:
        from ..integrations.claude_code import main as hook

        sys.exit(hook())
    from .app import main as cli

    cli()


__all__ = ["main"]
