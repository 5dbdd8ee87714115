"""Messages as the transcript page shows them: blocks (``Message.blocks()``, docs/transcripts.md)
with each tool call paired with its result by call id, thinking folded, long texts cut."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from ..core.export import message_of
from ..models import Message
from .render import MAX_RENDERED, markdown, visible, when


@dataclass
class Part:
    """One block of a message, ready for the template."""

    kind: str  # text | thinking | tool_call | tool_result | image | other
    html: Markup | None = None  # text, thinking: rendered Markdown
    text: str | None = None  # tool input (pretty JSON), tool result, plain text
    name: str | None = None  # tool name, other's kind
    call_id: str | None = None
    is_error: bool = False
    result: Part | None = None  # a tool call's paired result
    paired_seq: int | None = None  # the message holding the other half of a call/result pair
    cut: int = 0  # characters not shown (the whole text is at the message's .txt link)


@dataclass
class View:
    seq: int
    role: str
    time: str
    key: str | None
    model: str | None
    backfilled: bool
    parts: list[Part] = field(default_factory=list)
    tokens: int = 0


def _pretty(b_input: Any, text: str) -> str:
    if b_input is None:
        return text
    return json.dumps(b_input, ensure_ascii=False, indent=2, sort_keys=True)


def _cut(text: str) -> tuple[str, int]:
    if len(text) <= MAX_RENDERED:
        return text, 0
    return text[:MAX_RENDERED], len(text) - MAX_RENDERED


def _prose(kind: str, text: str) -> Part:
    if len(text) > MAX_RENDERED:  # a huge text is shown as it is, never parsed as Markdown
        shown, cut = _cut(text)
        return Part(kind, text=visible(shown), cut=cut)
    return Part(kind, html=markdown(text))


def _tokens(meta: dict[str, Any] | None) -> int:
    usage = meta.get("usage") if isinstance(meta, dict) else None
    if not isinstance(usage, dict):
        return 0
    total = 0
    for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        v = usage.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            total += v
    return total


def _str_field(meta: dict[str, Any] | None, name: str) -> str | None:
    value = meta.get(name) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def view(m: Message) -> View:
    """One message without pairing (what the live tail sends)."""
    v = View(
        seq=m.seq,
        role=m.role,
        time=when(m.created_at),
        key=m.key,
        model=_str_field(m.meta, "model"),
        backfilled=isinstance(m.meta, dict) and "sessiondb_backfill" in m.meta,
        tokens=_tokens(m.meta),
    )
    for b in m.blocks():
        if b.type in ("text", "thinking"):
            v.parts.append(_prose(b.type, b.text or ""))
        elif b.type == "tool_call":
            shown, cut = _cut(_pretty(b.input, b.text or ""))
            v.parts.append(
                Part("tool_call", text=visible(shown), name=b.name, call_id=b.id, cut=cut)
            )
        elif b.type == "tool_result":
            shown, cut = _cut(b.text or "")
            v.parts.append(
                Part(
                    "tool_result",
                    text=visible(shown),
                    call_id=b.call_id,
                    is_error=b.is_error,
                    cut=cut,
                )
            )
        elif b.type == "image":
            media = b.fields.get("media_type")
            v.parts.append(Part("image", name=media if isinstance(media, str) else None))
        else:
            kind = b.fields.get("kind")
            v.parts.append(Part("other", name=kind if isinstance(kind, str) else "other"))
    return v


def views(messages: Sequence[Message]) -> list[View]:
    """Messages in order, each tool call given its result when the result is among them."""
    out = [view(m) for m in messages]
    calls: dict[str, tuple[View, Part]] = {}
    for v in out:
        for p in v.parts:
            if p.kind == "tool_call" and p.call_id:
                calls[p.call_id] = (v, p)
            elif p.kind == "tool_result" and p.call_id and p.call_id in calls:
                call_view, call = calls[p.call_id]
                if call.result is None:
                    call.result = p
                    call.paired_seq = v.seq
                    p.paired_seq = call_view.seq
    return out


def message_json(m: Message) -> dict[str, Any]:
    """A message as the JSON twins give it: the stored fields as they are, as an export writes
    them (sessiondb.core.export)."""
    return message_of(m)


__all__ = ["Part", "View", "message_json", "view", "views"]
