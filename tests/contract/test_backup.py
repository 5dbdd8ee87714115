"""A backup is a backup: export (all sessions) -> import into an empty store -> export gives the
same bytes, every session field and every message's time, key and meta included
(docs/transcripts.md, "Backups")."""

from __future__ import annotations

import io
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiondb
from tests.conftest import new_location

ident = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=12
)
text = st.text(st.characters(codec="utf-8"), max_size=40)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3),
    max_leaves=8,
)
metas = st.none() | st.dictionaries(text, json_values, max_size=3)


@st.composite
def sessions(draw: st.DrawFn) -> list[dict[str, Any]]:
    ids = draw(st.lists(ident, min_size=1, max_size=4, unique=True))
    out = []
    for sid in ids:
        n = draw(st.integers(0, 5))
        keys = draw(st.lists(st.none() | ident, min_size=n, max_size=n))
        seen: set[str] = set()
        messages = []
        for k in keys:
            key = k if k is not None and k not in seen else None
            if key is not None:
                seen.add(key)
            messages.append(
                {
                    "role": draw(ident),
                    "content": draw(text),
                    "key": key,
                    "meta": draw(metas),
                    "created_at": draw(times),
                }
            )
        ended = draw(st.none() | times)
        out.append(
            {
                "session_id": sid,
                "source": draw(ident),
                "title": draw(st.none() | text),
                "meta": draw(metas),
                "created_at": draw(times),
                "updated_at": draw(times),
                "ended_at": ended,
                "end_reason": None if ended is None else draw(st.none() | text),
                "messages": messages,
            }
        )
    return out


def fill(store: sessiondb.Store, spec: list[dict[str, Any]]) -> None:
    for s in spec:
        store.create_session(
            s["session_id"],
            source=s["source"],
            title=s["title"],
            meta=s["meta"],
            created_at=s["created_at"],
        )
        store.append_many(s["session_id"], s["messages"])
        store.update_session(
            s["session_id"],
            updated_at=s["updated_at"],
            ended_at=s["ended_at"],
            end_reason=s["end_reason"],
        )


def backup(store: sessiondb.Store) -> bytes:
    out = io.BytesIO()
    store.export_jsonl(None, out)
    return out.getvalue()


def state(store: sessiondb.Store) -> list[Any]:
    rows = []
    for sid in store.session_ids():
        session = store.get_session(sid)
        assert session is not None
        rows.append((asdict(session) | {"revision": None}, store.messages(sid)))
    return rows


# `backend` only names the backend: nothing in it needs a reset between examples.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=sessions())
def test_export_import_export_is_byte_identical(backend: str, spec: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        original = sessiondb.open(new_location(backend, Path(tmp) / "a"))
        fill(original, spec)
        first = backup(original)
        dump = Path(tmp) / "backup.jsonl"
        dump.write_bytes(first)
        restored = sessiondb.open(new_location(backend, Path(tmp) / "b"))
        report = restored.import_jsonl(dump)
        assert report.bad_lines == ()
        assert backup(restored) == first
        assert state(restored) == state(original)
        original.close()
        restored.close()


def test_backup_keeps_empty_and_ended_sessions(store: sessiondb.Store, tmp_path: Path) -> None:
    store.create_session("empty", source="cli", title="nothing yet", created_at=1000.0)
    store.append("done", "user", "bye", created_at=2000.0)
    ended = store.end_session("done", reason="user quit")
    dump = tmp_path / "all.jsonl"
    assert store.export_jsonl(None, dump) == 1
    with sessiondb.open(tmp_path / "copy" / "s.db") as copy:
        copy.import_jsonl(dump)
        got = copy.get_session("done")
        assert got is not None and (got.ended_at, got.end_reason) == (ended.ended_at, "user quit")
        assert got.updated_at == ended.updated_at and got.created_at == 2000.0
        empty = copy.get_session("empty")
        assert empty is not None and (empty.title, empty.created_at) == ("nothing yet", 1000.0)
        assert backup(copy) == dump.read_bytes()


def test_restoring_twice_changes_nothing(store: sessiondb.Store, tmp_path: Path) -> None:
    store.append("s", "user", "a", created_at=10.0)
    store.update_session("s", updated_at=20.0)
    dump = tmp_path / "all.jsonl"
    store.export_jsonl(None, dump)
    with sessiondb.open(tmp_path / "copy" / "s.db") as copy:
        copy.import_jsonl(dump)
        copy.append("s", "assistant", "b")  # the restored session goes on living
        before = backup(copy)
        report = copy.import_jsonl(dump)
        assert (report.imported, report.duplicates) == (0, 1)
        assert backup(copy) == before  # an existing session's times are not rolled back
