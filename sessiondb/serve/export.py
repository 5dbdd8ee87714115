"""A session's export, streamed: sessiondb's JSONL (``store.export_jsonl``, which imports back
exactly), a JSON document, or Markdown. Messages are read page by page, each page its own short
read, so a long download never holds a read snapshot open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import BinaryIO

from ..core.contract import Store
from ..errors import SessionNotFound
from ..models import Message
from .pages import session_json
from .render import when
from .transcript import message_json

PAGE = 500
FORMATS = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "json": "application/json; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}


def _pages(store: Store, session_id: str) -> Iterator[list[Message]]:
    after = 0
    while True:
        rows = store.messages(session_id, after=after, limit=PAGE)
        if not rows:
            return
        yield list(rows)
        after = rows[-1].seq


def write(store: Store, session_id: str, fmt: str, out: BinaryIO) -> None:
    session = store.get_session(session_id)
    if session is None:
        raise SessionNotFound(session_id)
    if fmt == "jsonl":
        store.export_jsonl(session_id, out)
    elif fmt == "json":
        out.write(b'{"session": ')
        out.write(json.dumps(session_json(session), ensure_ascii=False).encode())
        out.write(b', "messages": [')
        first = True
        for page in _pages(store, session_id):
            for m in page:
                out.write((b"" if first else b",") + b"\n")
                out.write(json.dumps(message_json(m), ensure_ascii=False).encode())
                first = False
        out.write(b"\n]}\n")
    else:
        title = session.title or session.session_id
        out.write(f"# {title}\n\nsession `{session.session_id}` · {session.source}\n".encode())
        for page in _pages(store, session_id):
            for m in page:
                head = f"\n## {m.role} · {when(m.created_at)} · #{m.seq}\n\n"
                out.write(head.encode())
                out.write(m.content.encode("utf-8", "surrogatepass"))
                out.write(b"\n")
    out.flush()


__all__ = ["FORMATS", "write"]
