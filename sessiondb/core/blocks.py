"""Structured message content: the ``meta["blocks"]`` shape, backend-neutral (docs/transcripts.md).

An agent's message is more than text: text, thinking, tool calls and their results, images. An
import keeps that structure without storing any text twice: ``content`` holds the searchable text
rendered from the blocks, one block after another separated by a newline, and each block in
``meta["blocks"]`` names its part of ``content`` with ``span: [start, end]`` (``content[start:end]``
in Python's str indexes, i.e. Unicode code points):

=============== ================================================ ==================================
``type``        fields                                           ``content[start:end]``, rendered
=============== ================================================ ==================================
``text``        ``span``                                         the text
``thinking``    ``span``, ``signature`` (if the model gave one)  the thinking, after ``[thinking]``
``tool_call``   ``id``, ``name``, ``span``                       the input as JSON text, after
                                                                 ``[tool_call NAME]``
``tool_result`` ``call_id``, ``is_error``, ``span``,             the result's text, after
                ``images`` (references, if any)                  ``[tool_result]`` or
                                                                 ``[tool_result error]``
``image``       ``media_type``, ``bytes``, ``sha256``, ``url``   none: ``[image]`` is rendered
``other``       ``kind``, ``data`` (the block as it came)        none: ``[KIND]`` is rendered
=============== ================================================ ==================================

An image is kept as a reference — its media type, size and SHA-256, or its URL — never its
bytes. :func:`blocks_of` turns a stored message back into full blocks (text filled in, a tool
call's input parsed); it reads untrusted meta and skips anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The key of ``Message.meta`` holding the blocks.
BLOCKS = "blocks"


class Builder:
    """Renders blocks into one searchable text, recording each block's span."""

    __slots__ = ("_blocks", "_parts", "_pos")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._blocks: list[dict[str, Any]] = []
        self._pos = 0

    def _emit(self, prefix: str, text: str | None) -> list[int] | None:
        if self._parts:
            self._parts.append("\n")
            self._pos += 1
        self._parts.append(prefix)
        self._pos += len(prefix)
        if text is None:
            return None
        start = self._pos
        self._parts.append(text)
        self._pos += len(text)
        return [start, self._pos]

    def text(self, text: str) -> None:
        self._blocks.append({"type": "text", "span": self._emit("", text)})

    def thinking(self, text: str, signature: str | None = None) -> None:
        block: dict[str, Any] = {"type": "thinking", "span": self._emit("[thinking] ", text)}
        if signature:
            block["signature"] = signature
        self._blocks.append(block)

    def tool_call(self, call_id: str | None, name: str, input_json: str) -> None:
        """``input_json``: the tool's input as JSON text (an OpenAI ``arguments`` string as it
        came; :func:`input_json` for an object)."""
        span = self._emit(f"[tool_call {name}] ", input_json)
        self._blocks.append({"type": "tool_call", "id": call_id, "name": name, "span": span})

    def tool_result(
        self,
        call_id: str | None,
        text: str,
        *,
        is_error: bool = False,
        images: list[dict[str, Any]] | None = None,
    ) -> None:
        prefix = "[tool_result error] " if is_error else "[tool_result] "
        block: dict[str, Any] = {
            "type": "tool_result",
            "call_id": call_id,
            "is_error": is_error,
            "span": self._emit(prefix, text),
        }
        if images:
            block["images"] = images
        self._blocks.append(block)

    def image(self, ref: dict[str, Any]) -> None:
        self._emit("[image]", None)
        self._blocks.append({"type": "image", **ref})

    def other(self, kind: str, data: Mapping[str, Any]) -> None:
        self._emit(f"[{kind}]", None)
        self._blocks.append({"type": "other", "kind": kind, "data": dict(data)})

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return self._blocks

    @property
    def content(self) -> str:
        return "".join(self._parts)


def input_json(value: Any) -> str:
    """A tool input object as the JSON text a ``tool_call`` span holds (keys sorted)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def image_ref(source: Any) -> dict[str, Any]:
    """A reference to an image from its source, never its bytes: an Anthropic ``source``
    (``base64`` with ``media_type`` and ``data``, or ``url``), or an OpenAI ``image_url``."""
    ref: dict[str, Any] = {"media_type": None, "bytes": None, "sha256": None, "url": None}
    if not isinstance(source, Mapping):
        return ref
    media = source.get("media_type")
    if isinstance(media, str):
        ref["media_type"] = media
    url = source.get("url")
    if isinstance(url, str):
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            ref["media_type"] = head[5:].split(";")[0] or ref["media_type"]
            source = {"data": payload}
        else:
            ref["url"] = url
    data = source.get("data")
    if isinstance(data, str):
        try:
            raw = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            raw = data.encode("utf-8", "replace")
        ref["bytes"] = len(raw)
        ref["sha256"] = hashlib.sha256(raw).hexdigest()
    return ref


# -- reading blocks back --------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One block of a message with its text filled in (what :func:`blocks_of` returns).

    ``text`` is the block's part of ``content`` (the tool input's JSON text for a ``tool_call``);
    ``input`` is that JSON parsed when it parses. The other fields are those of the stored block.
    """

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    call_id: str | None = None
    is_error: bool = False
    fields: Mapping[str, Any] = field(default_factory=dict)


def _span(block: Mapping[str, Any], content: str) -> str | None:
    span = block.get("span")
    if (
        isinstance(span, list)
        and len(span) == 2
        and all(isinstance(i, int) and not isinstance(i, bool) for i in span)
        and 0 <= span[0] <= span[1] <= len(content)
    ):
        return content[span[0] : span[1]]
    return None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def blocks_of(content: str, meta: Mapping[str, Any] | None) -> list[Block]:
    """The blocks of a stored message; one ``text`` block for a message without any.

    ``meta`` comes from files and other processes: a block that is not a JSON object, has an
    unknown ``type`` or a span outside ``content`` is skipped, never an error.
    """
    raw = meta.get(BLOCKS) if isinstance(meta, Mapping) else None
    if not isinstance(raw, list):
        return [Block("text", content)]
    out: list[Block] = []
    for b in raw:
        if not isinstance(b, Mapping):
            continue
        kind = b.get("type")
        text = _span(b, content)
        if kind in ("text", "thinking") and text is not None:
            out.append(Block(kind, text, fields=b))
        elif kind == "tool_call" and text is not None:
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = None
            out.append(
                Block(
                    "tool_call",
                    text,
                    id=_opt_str(b.get("id")),
                    name=_opt_str(b.get("name")),
                    input=parsed,
                    fields=b,
                )
            )
        elif kind == "tool_result" and text is not None:
            out.append(
                Block(
                    "tool_result",
                    text,
                    call_id=_opt_str(b.get("call_id")),
                    is_error=b.get("is_error") is True,
                    fields=b,
                )
            )
        elif kind in ("image", "other"):
            out.append(Block(kind, fields=b))
    return out


__all__ = ["BLOCKS", "Block", "Builder", "blocks_of", "image_ref", "input_json"]
