"""Per-session state: a patch of the session's ``meta`` applied in a write transaction.

An append may carry ``session_meta`` (a patch) so that the session's state changes in the same
transaction as its messages — ADK's event ``state_delta``, a LangGraph thread's latest
checkpoint id, a title or tag set by an entry (docs/adr/0009-framework-primitives.md). The patch
is shallow: each top-level key it names replaces that key of the session's meta, and a key whose
value is None is removed. ``update_session(meta_patch=…)`` applies the same rule without a
message. Written once here; the backend only stores the resulting ``meta`` text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput
from . import validate as v


def check(value: object, field: str = "session_meta") -> dict[str, Any] | None:
    """Validate a patch (a dict of JSON values, or None) and return it as plain JSON values."""
    text = v.meta(value, field)
    return v.load_meta(text)


def check_others(
    value: object, own: str, field: str = "other_meta"
) -> list[tuple[str, dict[str, Any]]]:
    """Validate ``other_meta`` (``{session_id: patch}``, never the appended session itself):
    its patches, empty ones left out, in session id order — the order a write takes their
    rows in, so two writers patching the same sessions never wait on each other in a cycle."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be a dict of session id -> patch, not {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for name, patch in value.items():
        sid = v.session_id(name)
        if sid == own:
            raise InvalidInput(f"{field} names the appended session {sid!r}: use session_meta")
        checked = check(patch, f"{field}[{sid!r}]")
        if checked:
            out[sid] = checked
    return sorted(out.items())


def apply(current: Mapping[str, Any] | None, patch: Mapping[str, Any]) -> str | None:
    """The canonical meta text after ``patch``; None when nothing is left."""
    out = dict(current or {})
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    if not out:
        return None
    text = v.meta(out)
    # A session is one line of an export too: the message size limit (docs/transcripts.md).
    if text is not None and len(text.encode()) > v.MAX_MESSAGE_BYTES:
        raise InvalidInput(
            f"the session's meta would be {len(text)} bytes after this patch, over the limit of "
            f"{v.MAX_MESSAGE_BYTES}: keep large state in messages"
        )
    return text


__all__ = ["apply", "check"]
