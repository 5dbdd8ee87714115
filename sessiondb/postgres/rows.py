"""Rows of the PostgreSQL schema <-> the public types (NUL offsets decoded: text.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core import validate as v
from ..models import Message, Session, new_message
from .text import decode

SESSION_COLUMNS = (
    "session_id, source, title, title_nul, meta, created_at, updated_at, ended_at, end_reason,"
    " reason_nul, message_count, revision"
)
#: A message with its session's id, from ``messages m JOIN sessions s``.
MESSAGE_COLUMNS = (
    "s.session_id, m.seq, m.role, m.content, m.content_nul, m.key, m.meta, m.created_at"
)


def session_of(row: Sequence[Any]) -> Session:
    return Session(
        session_id=row[0],
        source=row[1],
        title=decode(row[2], row[3]),
        meta=v.load_meta(row[4]),
        created_at=row[5],
        updated_at=row[6],
        ended_at=row[7],
        end_reason=decode(row[8], row[9]),
        message_count=int(row[10]),
        revision=int(row[11]),
    )


def message_of(row: Sequence[Any]) -> Message:
    content = decode(row[3], row[4])
    assert content is not None
    return new_message(row[0], int(row[1]), row[2], content, row[5], v.load_meta(row[6]), row[7])


__all__ = ["MESSAGE_COLUMNS", "SESSION_COLUMNS", "message_of", "session_of"]
