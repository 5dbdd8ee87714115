"""Stores for the viewer's tests: a hostile corpus, a session with tool calls, a long session."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import sessiondb
from sessiondb.core.blocks import Builder, input_json
from sessiondb.serve import Viewer

SCRIPT = "<script>window.__pwned = 1; alert('xss')</script>"
IMG = '<img src=x onerror="window.__pwned = 2">'
JS_LINK = "[click me](javascript:window.__pwned=3)"
TEXTAREA = "</textarea><script>window.__pwned = 4</script>"
TEMPLATE = "{{ config.items() }} {% if true %}jinja{% endif %} ${user.name} <%= evil %>"
RTL = "abc\u202edcba\u2066iso\u2069 end"
SVG = '<svg onload="window.__pwned = 5"></svg>'
STYLE = "<style>body{display:none}</style>"
ATTR = '" onmouseover="window.__pwned = 6" x="'
HOSTILE = [SCRIPT, IMG, JS_LINK, TEXTAREA, TEMPLATE, RTL, SVG, STYLE, ATTR]
HOSTILE_ID = "<b>id</b>\"'&"
HUGE = 16 * 1024 * 1024 - 16_384  # about the largest message the store takes (16 MiB line)


def hostile_corpus(store: sessiondb.Store, *, huge: bool = True) -> None:
    """Every field the viewer shows made of markup: ids, titles, sources, roles, content, meta,
    tool names, snippets."""
    store.create_session(HOSTILE_ID, source="<i>src</i>", title=SCRIPT + IMG, meta={"x": SCRIPT})
    for i, text in enumerate(HOSTILE):
        store.append(HOSTILE_ID, "user" if i % 2 else "<u>role</u>", f"hostile {text}")
    b = Builder()
    b.text("call " + IMG)
    b.tool_call("call<1>", "<script>tool</script>", input_json({"cmd": SCRIPT}))
    store.append(HOSTILE_ID, "assistant", b.content, meta={"blocks": b.blocks, "model": IMG})
    r = Builder()
    r.tool_result("call<1>", TEXTAREA + IMG, is_error=True)
    store.append(HOSTILE_ID, "tool", r.content, meta={"blocks": r.blocks})
    if huge:
        body = "hugestart " + SCRIPT + " " + "x" * HUGE + " hugeend"
        store.append(HOSTILE_ID, "assistant", body)


def tool_session(store: sessiondb.Store, sid: str = "tools") -> None:
    """A conversation with thinking, two tool calls and their results (paired by call id)."""
    store.create_session(sid, source="claude", title="Tool use")
    store.append(sid, "user", "List the files and read **README**.")
    b = Builder()
    b.thinking("I should run ls first.")
    b.text("Let me look.")
    b.tool_call("toolu_1", "Bash", input_json({"command": "ls"}))
    b.tool_call("toolu_2", "Read", input_json({"path": "README.md"}))
    store.append(
        sid,
        "assistant",
        b.content,
        meta={
            "blocks": b.blocks,
            "model": "claude-x",
            "usage": {"input_tokens": 100, "output_tokens": 20},
        },
    )
    r = Builder()
    r.tool_result("toolu_1", "README.md\nsrc")
    r.tool_result("toolu_2", "no such file", is_error=True)
    store.append(sid, "user", r.content, meta={"blocks": r.blocks})
    store.append(sid, "assistant", "Here is `README.md`:\n\n```python\nprint('hi')\n```")


def long_session(store: sessiondb.Store, sid: str = "long", n: int = 25_000) -> None:
    store.create_session(sid, source="codex", title="A long one")
    batch = 5000
    for start in range(0, n, batch):
        store.append_many(
            sid,
            [
                {"role": "user" if i % 2 else "assistant", "content": f"message number {i + 1}"}
                for i in range(start, min(n, start + batch))
            ],
        )


@contextlib.contextmanager
def serving(path: str, **options: Any) -> Iterator[Viewer]:
    """A viewer of the store at ``path`` on a free port, in this process."""
    store = sessiondb.open(path, readonly=True)
    viewer = Viewer(store, port=options.pop("port", 0), **options)
    httpd = viewer.start()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield viewer
    finally:
        viewer.shutdown()
        thread.join(5)
        store.close()
