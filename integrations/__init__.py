"""``make integrations``: the frameworks' own test suites, run against sessiondb's adapters.

Each framework has its own virtual environment (``.venv-int-<name>``, from
``requirements-<name>.txt``, pinned); :mod:`integrations.run` fetches the framework's pinned sdist
from the package index, unpacks its tests (never committed here) and runs them with a pytest
plugin from :mod:`integrations.fixtures` that puts the adapter where the reference store was.
"""
