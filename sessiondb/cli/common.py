"""What every command shares: the store from ``--db``, JSON output, the console."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from datetime import date, datetime, timedelta, timezone
from typing import Any

import click
from rich.console import Console

import sessiondb
from sessiondb.errors import InvalidInput

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


def confirm_or_refuse(question: str, refusal: str) -> None:
    """Ask ``question`` on a terminal (no: abort); where no one can answer — a script, cron, an
    agent's shell tool — refuse with ``refusal`` (exit 2) instead of deleting unasked."""
    if not sys.stdin.isatty():
        raise InvalidInput(
            f"{refusal} without confirmation: standard input is not a terminal — pass --yes"
        )
    click.confirm(question, abort=True)


_SPAN = re.compile(r"(\d+)\s*(m|min|h|d|w)", re.IGNORECASE)
_SPAN_SECONDS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> timedelta:
    """``90m``, ``12h``, ``30d``, ``2w`` as a timedelta; ``click.BadParameter`` otherwise."""
    m = _SPAN.fullmatch(text.strip())
    if m is None or int(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration such as 90m, 12h, 30d or 2w")
    return timedelta(seconds=int(m.group(1)) * _SPAN_SECONDS[m.group(2).lower()])


def period_start(text: str) -> date | datetime | None:
    """A day given on the command line: ``all`` (None), a date (``2026-11-01``), or a span back
    from now (``30d``: the last 30 days, today included; ``12h``: since 12 hours ago)."""
    if text.strip().lower() == "all":
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        pass
    span = duration(text)
    now = datetime.now(timezone.utc)
    if span.seconds == 0:  # whole days: count today as the first of them
        return (now - span + timedelta(days=1)).date()
    return now - span
