"""``sessiondb serve``: the local web viewer over a store opened read-only (docs/design.md).

Needs the ``serve`` extra (``pip install 'sessiondb[serve]'``): Jinja2 and markdown-it-py.
"""

from __future__ import annotations

from .server import Viewer

__all__ = ["Viewer"]
