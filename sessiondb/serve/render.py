"""Stored text made into HTML that can do nothing but show itself.

Everything a page shows comes from agents, tools and files: it goes through Jinja2 with
autoescape on (every ``{{ }}`` is escaped), and message text through markdown-it-py's safe
preset (``js-default``: raw HTML is text) with links narrowed to http(s) and mailto and images
off (a remote image would be a request made on the reader's behalf). Control characters and
bidirectional overrides are shown as escapes first, as the CLI does (sessiondb/cli/render.py):
an override would reorder what is displayed.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

# C0 controls but tab and newline, DEL, C1 controls; bidi embeddings, overrides and isolates
# (the set of sessiondb/cli/render.py).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LIVE_SCHEMES = ("http://", "https://", "mailto:")

#: Messages longer than this are shown as plain text, cut here, with a link to the whole text.
MAX_RENDERED = 100_000
#: Pygments' classes live under this CSS class (static/highlight.css is generated from it).
HIGHLIGHT_CLASS = "hl"


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with every control character and bidi override shown as an escape."""
    return _UNSAFE.sub(_escape_char, text)


def live_link(url: str) -> bool:
    """Only http(s) and mailto links are live; anything else stays text."""
    return url.strip().lower().startswith(_LIVE_SCHEMES)


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang.strip()) if lang.strip() else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return ""  # markdown-it escapes it itself
    formatter = HtmlFormatter(nowrap=True)  # pygments escapes the code it wraps
    return f'<pre class="{HIGHLIGHT_CLASS}"><code>{highlight(code, lexer, formatter)}</code></pre>'


def _make_markdown() -> MarkdownIt:
    md = MarkdownIt("js-default", {"highlight": _highlight})
    md.disable("image")
    md.validateLink = live_link  # type: ignore[method-assign]

    def link_open(renderer: Any, tokens: Any, idx: int, options: Any, env: Any) -> str:
        tokens[idx].attrSet("rel", "noopener noreferrer nofollow")
        return str(renderer.renderToken(tokens, idx, options, env))

    md.add_render_rule("link_open", link_open)
    return md


_local = threading.local()


def markdown(text: str) -> Markup:
    """Message text as safe HTML (one parser per thread)."""
    md: MarkdownIt | None = getattr(_local, "md", None)
    if md is None:
        md = _local.md = _make_markdown()
    return Markup(md.render(visible(text)))


def highlight_css() -> str:
    return str(HtmlFormatter(style="default").get_style_defs(f".{HIGHLIGHT_CLASS}"))


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def marked(snippet: str, start: str, end: str) -> Markup:
    """A search snippet, escaped, with the store's match markers turned into ``<mark>``."""
    out = str(escape(visible(snippet)))
    return Markup(out.replace(start, "<mark>").replace(end, "</mark>"))


def compact(n: int) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("sessiondb.serve", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["visible"] = visible
    env.filters["when"] = when
    env.filters["compact"] = compact
    return env


__all__ = [
    "MAX_RENDERED",
    "environment",
    "highlight_css",
    "iso",
    "live_link",
    "markdown",
    "marked",
    "visible",
    "when",
]
