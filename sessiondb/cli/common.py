"""What every command shares: the store from ``--db``, JSON output, the console."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click
from rich.console import Console

import sessiondb

# No emoji codes (":smile:" in a message stays text) and no highlighting of numbers or paths in
# what we print; stored text is printed as rich Text, never parsed as markup (render.py).
console = Console(highlight=False, soft_wrap=True, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def get_store(ctx: click.Context, *, readonly: bool = False) -> sessiondb.Store:
    """The store named by ``--db`` / ``$SESSIONDB_PATH`` (opened once, closed at exit).

    Commands that only read open it read-only: a mistyped path is an error, never a new store.
    """
    root = ctx.find_root()
    obj: dict[str, Any] = root.ensure_object(dict)
    store: sessiondb.Store | None = obj.get("store")
    if store is None or (store.readonly and not readonly):
        store = sessiondb.open(obj.get("db"), readonly=readonly)
        obj["store"] = store
        root.call_on_close(store.close)
    return store


def db_option_path(ctx: click.Context) -> str | None:
    obj: dict[str, Any] = ctx.find_root().ensure_object(dict)
    db = obj.get("db")
    return None if db is None else str(db)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


def emit_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (dataclasses become objects)."""
    json.dump(to_jsonable(value), sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")
