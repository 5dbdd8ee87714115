"""Rows of the SQLite schema ↔ the public types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core import validate as v
from ..models import Message, Session, new_message

SESSION_COLUMNS = (
    "session_id, source, title, meta, created_at, updated_at, ended_at, end_reason,"
    " message_count, revision"
)
# Files of schema version < 4 (opened read-only, so not migrated) have no revision column.
SESSION_COLUMNS_V3 = SESSION_COLUMNS.replace("revision", "0")
MESSAGE_COLUMNS = "s.session_id, m.seq, m.role, m.content, m.key, m.meta, m.created_at"


def session_of(row: Sequence[Any]) -> Session:
    return Session(
        session_id=row[0],
        source=row[1],
        title=row[2],
        meta=v.load_meta(row[3]),
        created_at=row[4],
        updated_at=row[5],
        ended_at=row[6],
        end_reason=row[7],
        message_count=row[8],
        revision=row[9],
    )


def message_of(row: Sequence[Any]) -> Message:
    return new_message(row[0], row[1], row[2], row[3], row[4], v.load_meta(row[5]), row[6])


__all__ = [
    "MESSAGE_COLUMNS",
    "SESSION_COLUMNS",
    "SESSION_COLUMNS_V3",
    "message_of",
    "session_of",
]
