"""``python -m sessiondb.cli``: the same as the ``sessiondb`` command."""

from . import main

main()
