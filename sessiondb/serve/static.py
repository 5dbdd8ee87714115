"""Static files from a fixed table: a request names an entry, never a path on disk."""

from __future__ import annotations

from importlib.resources import files

from .render import highlight_css

_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


class Static:
    """The table, read once: name -> (bytes, content type)."""

    def __init__(self) -> None:
        here = files("sessiondb.serve").joinpath("static")
        self._table: dict[str, tuple[bytes, str]] = {
            name: (here.joinpath(name).read_bytes(), kind) for name, kind in _FILES.items()
        }
        self._table["highlight.css"] = (highlight_css().encode(), "text/css; charset=utf-8")

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self._table.get(name)


__all__ = ["Static"]
