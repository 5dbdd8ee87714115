"""``python -m sessiondb.cli``: the same as the ``sessiondb`` command."""

from .app import main

main()
