"""Token usage in one backend-neutral shape: ``meta["usage"]`` (docs/transcripts.md).

``{"input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"}``, each a
non-negative integer, only those known. ``input_tokens`` counts input read without the cache, as
Anthropic reports it; OpenAI's ``prompt_tokens`` / Responses ``input_tokens`` include cached
tokens, which are moved to ``cache_read_tokens``. With ``meta["model"]`` (the model's name) and
``meta["response_id"]`` (the API response the message came from) it is what ``store.stats``
counts: a response's tokens once, however many messages it was split into.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def normalize(raw: Any) -> dict[str, int] | None:
    """The neutral usage of a provider's usage object (Anthropic, OpenAI chat or Responses, or
    already neutral); None when it holds no token count."""
    if not isinstance(raw, Mapping):
        return None
    out: dict[str, int] = {}
    if "prompt_tokens" in raw or "completion_tokens" in raw:  # OpenAI chat completions
        details = raw.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else None
        prompt = _count(raw.get("prompt_tokens"))
        if prompt is not None:
            out["input_tokens"] = max(prompt - (cached or 0), 0)
        if cached:
            out["cache_read_tokens"] = cached
        completion = _count(raw.get("completion_tokens"))
        if completion is not None:
            out["output_tokens"] = completion
        return out or None
    details = raw.get("input_tokens_details")
    if isinstance(details, Mapping):  # OpenAI Responses: input_tokens include cached ones
        cached = _count(details.get("cached_tokens")) or 0
        given = _count(raw.get("input_tokens"))
        if given is not None:
            out["input_tokens"] = max(given - cached, 0)
        if cached:
            out["cache_read_tokens"] = cached
        output = _count(raw.get("output_tokens"))
        if output is not None:
            out["output_tokens"] = output
        return out or None
    names = {
        "input_tokens": ("input_tokens",),
        "output_tokens": ("output_tokens",),
        "cache_read_tokens": ("cache_read_tokens", "cache_read_input_tokens"),
        "cache_write_tokens": ("cache_write_tokens", "cache_creation_input_tokens"),
    }
    for name, sources in names.items():
        for src in sources:
            n = _count(raw.get(src))
            if n is not None:
                out[name] = n
                break
    return out or None


__all__ = ["FIELDS", "normalize"]
