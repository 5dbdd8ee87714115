"""Providers' message content, turned into sessiondb's blocks (:mod:`.blocks`).

One renderer for the content lists of Anthropic messages (Claude Code transcripts) and OpenAI
chat / Responses items, since a transcript line may hold either: ``text`` / ``input_text`` /
``output_text`` / ``refusal``, ``thinking``, ``tool_use``, ``tool_result``, ``image`` /
``image_url`` / ``input_image``. A part of any other kind is kept as an ``other`` block, with a
base64 payload replaced by a reference (:func:`.blocks.image_ref`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .blocks import Builder, image_ref, input_json

_TEXT_PARTS = ("text", "input_text", "output_text")


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _opt_id(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _image(part: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(part.get("source"), Mapping):  # Anthropic
        return image_ref(part["source"])
    url = part.get("image_url")  # OpenAI chat: {"url": …}; Responses: the URL itself
    if isinstance(url, Mapping):
        return image_ref(url)
    if isinstance(url, str):
        return image_ref({"url": url})
    return image_ref(None)


def _is_image(part: Mapping[str, Any]) -> bool:
    return part.get("type") in ("image", "image_url", "input_image")


def result_text(content: Any) -> tuple[str, list[dict[str, Any]]]:
    """A tool result's text (its text parts joined by newlines) and references to its images."""
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        return ("" if content is None else input_json(content)), []
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping):
            if _is_image(part):
                images.append(_image(part))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "\n".join(texts), images


def _other(b: Builder, kind: str, part: Mapping[str, Any]) -> None:
    data = dict(part)
    if isinstance(data.get("source"), Mapping):
        data["source"] = image_ref(data["source"])  # a document's bytes are not kept either
    b.other(kind, data)


def render(parts: list[Any], b: Builder) -> None:
    """Add each part of a content list to ``b``."""
    for part in parts:
        if isinstance(part, str):
            b.text(part)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            b.text(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            b.text(part["refusal"])
        elif kind == "thinking":
            b.thinking(_str(part.get("thinking")), _opt_id(part.get("signature")))
        elif kind == "tool_use":
            name = _str(part.get("name")) or "?"
            b.tool_call(_opt_id(part.get("id")), name, input_json(part.get("input")))
        elif kind == "tool_result":
            text, images = result_text(part.get("content"))
            b.tool_result(
                _opt_id(part.get("tool_use_id")),
                text,
                is_error=part.get("is_error") is True,
                images=images,
            )
        elif _is_image(part):
            b.image(_image(part))
        else:
            _other(b, kind if isinstance(kind, str) and kind else "part", part)


def openai_tool_calls(calls: list[Any], b: Builder) -> None:
    """OpenAI chat ``tool_calls``: each ``{"id", "function": {"name", "arguments"}}``."""
    for call in calls:
        if not isinstance(call, Mapping):
            continue
        fn = call.get("function")
        fn = fn if isinstance(fn, Mapping) else {}
        args = fn.get("arguments")
        text = args if isinstance(args, str) else input_json(args)
        b.tool_call(_opt_id(call.get("id")), _str(fn.get("name")) or "?", text)


__all__ = ["openai_tool_calls", "render", "result_text"]
