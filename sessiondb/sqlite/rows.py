"""Rows ↔ public types, and the validated form of a message about to be appended."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import validate as v
from ..errors import InvalidInput
from ..models import Message, Session

ITEM_FIELDS = frozenset({"role", "content", "key", "meta", "created_at"})


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
    )


def message_of(row: Sequence[Any]) -> Message:
    return Message(
        session_id=row[0],
        seq=row[1],
        role=row[2],
        content=row[3],
        key=row[4],
        meta=v.load_meta(row[5]),
        created_at=row[6],
    )


def created_at_of(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"created_at must be epoch seconds (a finite number), not {value!r}")
    return float(value)


class Item:
    """A validated message about to be appended."""

    __slots__ = ("content", "created_at", "key", "meta", "role")

    def __init__(
        self,
        role: str,
        content: str,
        key: str | None,
        meta: str | None,
        created_at: float | None = None,
    ) -> None:
        self.role = role
        self.content = content
        self.key = key
        self.meta = meta
        # Set only by imports, which keep a transcript's original times (round-trip exactness).
        self.created_at = created_at

    @classmethod
    def of(cls, role: object, content: object, key: object, meta: object) -> Item:
        return cls(v.role(role), v.content(content), v.key(key), v.meta(meta))
