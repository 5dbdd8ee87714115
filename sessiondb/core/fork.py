"""``Store.fork_session``: a new session holding another's messages up to a seq, in one write
transaction (docs/adr/0009-framework-primitives.md)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput, SessionExists, SessionNotFound
from ..models import Session
from . import validate as v
from .contract import MISSING, Backend


def fork(
    backend: Backend,
    session_id: str,
    new_session_id: str | None,
    at: int | None,
    title: str | object | None,
    meta: Mapping[str, Any] | object | None,
) -> Session:
    """See ``Store.fork_session`` (core/store.py) for the rules."""
    sid = v.session_id(session_id)
    new = uuid.uuid4().hex if new_session_id is None else v.session_id(new_session_id)
    upto = None if at is None else v.non_negative_int(at, "at")
    keep_title = title is MISSING
    new_title = None if keep_title else v.optional_text(title, "title", v.MAX_TITLE)
    given = None if meta is MISSING else v.load_meta(v.meta(meta))
    with backend.write() as tx:
        ref = tx.session_ref(sid)
        origin = tx.session(sid)
        if ref is None or origin is None:
            raise SessionNotFound(sid)
        last = origin.message_count if upto is None else upto
        if last > origin.message_count:
            raise InvalidInput(
                f"at={last} is past the last seq ({origin.message_count}) of session {sid!r}"
            )
        if tx.session_ref(new) is not None:
            raise SessionExists(new)
        lineage = {**((origin.meta or {}) if meta is MISSING else (given or {}))}
        lineage["forked_from"] = {"session_id": sid, "seq": last}
        made = tx.insert_session(
            new,
            origin.source,
            origin.title if keep_title else new_title,
            v.meta(lineage),
            time.time(),
        )
        if last:
            tx.copy_messages(ref, made, last)
        forked = tx.session(new)
        if forked is None:  # pragma: no cover - read inside the transaction that made it
            raise SessionNotFound(new)
        return forked


__all__ = ["fork"]
