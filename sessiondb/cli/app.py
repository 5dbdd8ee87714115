"""Root command group, shared options and the translation of errors into friendly exits."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="sessiondb")
def cli() -> None:
    """sessiondb: durable, searchable sessions and transcripts for AI agents."""


def main() -> None:
    cli()


from .lease import hook_group, lease_group  # noqa: E402

cli.add_command(lease_group)
cli.add_command(hook_group)
