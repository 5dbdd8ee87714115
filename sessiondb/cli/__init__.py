"""The ``sessiondb`` command line: a thin layer over the Python API."""

from __future__ import annotations

from .app import main

__all__ = ["main"]
