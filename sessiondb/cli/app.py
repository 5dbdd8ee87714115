"""Root command group, shared options and the translation of errors into friendly exits."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="sessiondb")
def cli() -> None:
    """sessiondb: durable, searchable sessions and transcripts for AI agents."""


def main() -> None:
    cli()


from .doctor import doctor as _doctor  # noqa: E402

cli.add_command(_doctor)
