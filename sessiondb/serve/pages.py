"""The viewer's pages: each reads through the Store contract in short reads and returns its data
twice, for the template and as its JSON twin (``?format=json`` or ``Accept: application/json``).

No SQL here: sessions, messages, search, stats and the doctor's report come from the contract's
verbs (sessiondb/core/contract.py), so the viewer works on any backend.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

from ..core.contract import Store
from ..errors import InvalidInput, QueryError
from ..models import Session
from .health import HealthWorker
from .render import iso, marked
from .tokens import SessionTokens
from .transcript import message_json, views

SESSIONS_PER_PAGE = 50
MESSAGES_PER_PAGE = 200
HITS_PER_PAGE = 20
TITLE_SCAN_PAGE = 500
MARKS = ("\ue000", "\ue001")  # private-use characters: the store's match markers for snippets


class NotFound(Exception):
    """The page names something that is not there (404)."""


class BadRequest(Exception):
    """A parameter is not acceptable (400)."""


def session_url(session_id: str, suffix: str = "", **query: object) -> str:
    url = "/s/" + quote(session_id, safe="") + suffix
    params = {k: v for k, v in query.items() if v is not None}
    return url + ("?" + urlencode(params) if params else "")


def _int(q: Mapping[str, str], name: str, default: int, low: int = 0) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number") from None
    if value < low:
        raise BadRequest(f"{name} must be at least {low}")
    return value


def session_json(s: Session) -> dict[str, Any]:
    d = asdict(s)
    d["created_at_iso"] = iso(s.created_at)
    d["updated_at_iso"] = iso(s.updated_at)
    return d


class Pages:
    """Page data over one read-only store."""

    def __init__(self, store: Store, health: HealthWorker) -> None:
        self.store = store
        self.health = health
        self.tokens = SessionTokens(store)
        self._sources: tuple[float, list[str]] = (0.0, [])

    # -- sessions --------------------------------------------------------------------------------

    def sources(self) -> list[str]:
        """The sources with any activity, from the stats rollup (cached for 10 s)."""
        at, cached = self._sources
        if time.monotonic() - at < 10:
            return cached
        stats = self.store.stats()
        found = sorted({u.source for d in stats.days for u in d.by})
        self._sources = (time.monotonic(), found)
        return found

    def sessions(self, q: Mapping[str, str]) -> dict[str, Any]:
        source = q.get("source") or None
        title = (q.get("q") or "").strip()
        sort = q.get("sort") or "recent"
        if sort not in ("recent", "oldest"):
            raise BadRequest("sort is recent or oldest")
        page = _int(q, "page", 1, low=1)
        per = SESSIONS_PER_PAGE
        if title:
            rows, total = self._by_title(source, title, sort, page, per)
        else:
            total = self.store.count_sessions(source=source)
            offset = (page - 1) * per
            if sort == "recent":
                rows = self.store.list_sessions(source=source, limit=per, offset=offset)
            else:  # the oldest activity first: the same order read from its end
                start = max(0, total - offset - per)
                limit = max(0, min(per, total - offset))
                rows = self.store.list_sessions(source=source, limit=limit, offset=start)[::-1]
        pages = max(1, -(-total // per))
        base = {"source": source, "q": title or None, "sort": sort if sort != "recent" else None}
        return {
            "sessions": [session_json(s) | {"tokens": self.tokens.get(s)} for s in rows],
            "total": total,
            "page": page,
            "pages": pages,
            "source": source,
            "q": title,
            "sort": sort,
            "sources": self.sources(),
            "prev_url": _url("/", base, page=page - 1) if page > 1 else None,
            "next_url": _url("/", base, page=page + 1) if page < pages else None,
        }

    def _by_title(
        self, source: str | None, title: str, sort: str, page: int, per: int
    ) -> tuple[list[Session], int]:
        """Sessions whose title or id holds ``title`` (case-insensitive): the contract has no
        title filter, so the list is read page by page, each page its own short read."""
        needle = title.casefold()
        found: list[Session] = []
        offset = 0
        while True:
            rows = self.store.list_sessions(source=source, limit=TITLE_SCAN_PAGE, offset=offset)
            found.extend(
                s
                for s in rows
                if needle in (s.title or "").casefold() or needle in s.session_id.casefold()
            )
            if len(rows) < TITLE_SCAN_PAGE:
                break
            offset += len(rows)
        if sort == "oldest":
            found.reverse()
        return found[(page - 1) * per : page * per], len(found)

    # -- a transcript ----------------------------------------------------------------------------

    def session(self, session_id: str, q: Mapping[str, str]) -> dict[str, Any]:
        s = self.store.get_session(session_id)
        if s is None:
            raise NotFound(f"no session {session_id!r}")
        count = s.message_count
        per = MESSAGES_PER_PAGE
        if q.get("at"):
            at = _int(q, "at", 1, low=1)
            after = max(0, min(at, count) - per // 4)
        elif q.get("last"):
            after = max(0, count - per)
        else:
            after = _int(q, "after", 0)
        msgs = self.store.messages(session_id, after=after, limit=per)
        last = msgs[-1].seq if msgs else after
        at_end = last >= count
        return {
            "session": session_json(s) | {"tokens": self.tokens.get(s)},
            "messages": msgs,
            "views": views(msgs),
            "after": after,
            "last": last,
            "count": count,
            "at_end": at_end,
            "earlier_url": session_url(session_id, after=max(0, after - per)) if after else None,
            "later_url": None if at_end else session_url(session_id, after=last),
            "newest_url": None if at_end else session_url(session_id, last=1),
            "events_url": session_url(session_id, "/events", after=last, rev=s.revision),
            "fragment_url": session_url(session_id, "/fragment"),
            "export_urls": {
                fmt: session_url(session_id, f"/export.{fmt}") for fmt in ("jsonl", "json", "md")
            },
        }

    @staticmethod
    def session_twin(data: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in data.items() if k not in ("messages", "views", "export_urls")}
        out["messages"] = [message_json(m) for m in data["messages"]]
        out["export_urls"] = data["export_urls"]
        return out

    # -- search ----------------------------------------------------------------------------------

    def search(self, q: Mapping[str, str]) -> dict[str, Any]:
        text = (q.get("q") or "").strip()
        mode = q.get("mode") or "plain"
        if mode not in ("plain", "fts"):
            raise BadRequest("mode is plain or fts")
        source = q.get("source") or None
        session_id = q.get("session") or None
        page = _int(q, "page", 1, low=1)
        hits: list[dict[str, Any]] = []
        error = None
        if text:
            try:
                found = self.store.search(
                    text,
                    mode=mode,
                    source=source,
                    session_id=session_id,
                    context=1,
                    limit=HITS_PER_PAGE + 1,
                    offset=(page - 1) * HITS_PER_PAGE,
                    markers=MARKS,
                )
            except QueryError as e:
                error = str(e)
                found = []
            except InvalidInput as e:
                raise BadRequest(str(e)) from None
            for h in found[:HITS_PER_PAGE]:
                m = h.message
                hits.append(
                    {
                        "session_id": m.session_id,
                        "seq": m.seq,
                        "role": m.role,
                        "created_at": m.created_at,
                        "score": h.score,
                        "snippet": h.snippet.replace(MARKS[0], "[").replace(MARKS[1], "]"),
                        "snippet_html": marked(h.snippet, *MARKS),
                        "before": [message_json(b) for b in h.before],
                        "after": [message_json(a) for a in h.after],
                        "url": session_url(m.session_id, at=m.seq) + f"#m{m.seq}",
                    }
                )
            more = len(found) > HITS_PER_PAGE
        else:
            more = False
        base = {"q": text, "mode": mode if mode != "plain" else None, "source": source}
        base["session"] = session_id
        return {
            "q": text,
            "mode": mode,
            "source": source,
            "session": session_id,
            "page": page,
            "hits": hits,
            "error": error,
            "prev_url": _url("/search", base, page=page - 1) if page > 1 else None,
            "next_url": _url("/search", base, page=page + 1) if more else None,
        }

    @staticmethod
    def search_twin(data: dict[str, Any]) -> dict[str, Any]:
        out = dict(data)
        out["hits"] = [{k: v for k, v in h.items() if k != "snippet_html"} for h in data["hits"]]
        return out

    # -- stats and health ------------------------------------------------------------------------

    def stats(self, q: Mapping[str, str]) -> dict[str, Any]:
        since_text = (q.get("since") or "30d").strip()
        source = q.get("source") or None
        since = _since(since_text)
        stats = self.store.stats(since=since, source=source)
        days = [asdict(d) for d in stats.days]
        by: dict[tuple[str, str], dict[str, Any]] = {}
        for d in stats.days:
            for u in d.by:
                row = by.setdefault(
                    (u.source, u.model or ""),
                    {"source": u.source, "model": u.model, "messages": 0, "tokens": 0},
                )
                row["messages"] += u.messages
                row["tokens"] += u.tokens.total
        top = max((d.messages for d in stats.days), default=0)
        return {
            "since": stats.since,
            "until": stats.until,
            "since_param": since_text,
            "source": source,
            "sources": self.sources(),
            "sessions": stats.sessions,
            "messages": stats.messages,
            "tokens": asdict(stats.tokens) | {"total": stats.tokens.total},
            "days": days,
            "by": sorted(by.values(), key=lambda r: -int(r["messages"])),
            "top": top,
        }

    def health_page(self) -> dict[str, Any]:
        return self.health.snapshot()


def _since(text: str) -> date | datetime | None:
    """``all``, a date (2026-11-01), or days back from today (``30d``), as `sessiondb stats`
    takes them (sessiondb/cli/common.py)."""
    if text.lower() == "all":
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    if text.endswith("d") and text[:-1].isdigit() and int(text[:-1]) > 0:
        return (datetime.now(timezone.utc) - timedelta(days=int(text[:-1]) - 1)).date()
    raise BadRequest("since is 'all', a date (2026-11-01) or a number of days (30d)")


def _url(path: str, base: Mapping[str, object], **more: object) -> str:
    params = {k: v for k, v in {**base, **more}.items() if v is not None and v != ""}
    return path + ("?" + urlencode(params) if params else "")


__all__ = ["BadRequest", "NotFound", "Pages", "session_url"]
