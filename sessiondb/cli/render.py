"""Stored text shown in a terminal, as text: nothing a message holds can act on the terminal.

Messages hold whatever agents and tools wrote, including terminal control sequences (a stored
tool output cleared the screen and retitled the window when `show` printed it) and strings that
rich would turn into emoji or markup (``:smile:``, ``[bold]``). Every stored string goes through
:func:`safe` and is printed as a rich ``Text`` (which rich never parses): control characters are
shown as escapes (``\\x1b``), bidirectional overrides too (they reorder what is displayed).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from rich.text import Text

# C0 controls but tab and newline, DEL, C1 controls; bidi embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r"[ \t\n]+")


def _escape(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str, *, one_line: bool = False) -> str:
    """``text`` with every control character shown as an escape; ``one_line`` also folds
    newlines and tabs into single spaces (for tables and one-line previews)."""
    if one_line:
        text = _SPACES.sub(" ", text)
        return _UNSAFE_ONE_LINE.sub(_escape, text)
    return _UNSAFE.sub(_escape, text)


def stored(text: str, style: str = "", *, one_line: bool = False) -> Text:
    """A stored string as a rich Text: printed as it is, never as markup or emoji."""
    return Text(safe(text, one_line=one_line), style=style)


def when(ts: float | None, *, seconds: bool = False) -> str:
    if ts is None:
        return ""
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts, timezone.utc).strftime(fmt)


def clip(text: str, width: int) -> str:
    """At most ``width`` characters, an ellipsis marking a cut."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def size(n: int | None) -> str:
    """Bytes for a person: 512 B, 3.4 MiB, 1.2 GiB."""
    if n is None:
        return "unknown"
    for step, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= step:
            return f"{n / step:.1f} {unit}"
    return f"{n} B"


__all__ = ["clip", "safe", "size", "stored", "when"]
