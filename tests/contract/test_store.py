"""The Store contract (README, docs/design.md), defined once, run against every backend."""

from __future__ import annotations

import dataclasses
import time

import pytest

import sessiondb
from sessiondb import (
    InvalidInput,
    KeyConflict,
    Message,
    Session,
    SessionExists,
    SessionNotFound,
)
from sessiondb.core.store import READ_PAGE


def test_create_session_returns_session(store: sessiondb.Store) -> None:
    before = time.time()
    s = store.create_session("s1", source="cli", title="T", meta={"a": 1})
    assert isinstance(s, Session)
    assert (s.session_id, s.source, s.title, s.meta) == ("s1", "cli", "T", {"a": 1})
    assert before - 1 <= s.created_at <= time.time() + 1
    assert s.ended_at is None and s.end_reason is None and s.message_count == 0
    assert store.get_session("s1") == s


def test_create_session_generates_id(store: sessiondb.Store) -> None:
    a, b = store.create_session(), store.create_session()
    assert a.session_id != b.session_id
    assert store.get_session(a.session_id) is not None


def test_create_session_taken_raises(store: sessiondb.Store) -> None:
    store.create_session("s1")
    with pytest.raises(SessionExists, match="s1"):
        store.create_session("s1")


def test_ensure_session_is_idempotent(store: sessiondb.Store) -> None:
    a = store.ensure_session("s1", source="gateway", title="first")
    b = store.ensure_session("s1", source="other", title="second")
    assert a == b and b.source == "gateway" and b.title == "first"
    assert len(store.list_sessions()) == 1


def test_get_session_missing_is_none(store: sessiondb.Store) -> None:
    assert store.get_session("nope") is None


def test_list_sessions_most_recent_activity_first(store: sessiondb.Store) -> None:
    for sid in ("a", "b", "c"):
        store.create_session(sid, source="x" if sid != "b" else "y")
    store.append("a", "user", "activity makes a the most recent")
    assert [s.session_id for s in store.list_sessions()] == ["a", "c", "b"]
    assert [s.session_id for s in store.list_sessions(source="x")] == ["a", "c"]
    assert [s.session_id for s in store.list_sessions(limit=1, offset=1)] == ["c"]
    assert store.list_sessions(limit=0) == []


def test_list_sessions_bad_limit(store: sessiondb.Store) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        store.list_sessions(limit=-1)


def test_end_session(store: sessiondb.Store) -> None:
    store.create_session("s1")
    s = store.end_session("s1", reason="user quit")
    assert s.ended_at is not None and s.end_reason == "user quit"
    assert store.get_session("s1") == s


def test_end_session_missing_raises(store: sessiondb.Store) -> None:
    with pytest.raises(SessionNotFound):
        store.end_session("nope")


def test_delete_session(store: sessiondb.Store) -> None:
    store.append("s1", "user", "hi")
    store.append("s2", "user", "keep me")
    assert store.delete_session("s1") is True
    assert store.get_session("s1") is None
    assert store.messages("s1") == []
    assert store.count() == 1
    assert store.delete_session("s1") is False


def test_deleted_session_id_can_be_reused_without_old_messages(
    store: sessiondb.Store,
) -> None:
    store.append_many("s1", [{"role": "user", "content": str(i)} for i in range(5)])
    store.delete_session("s1")
    m = store.append("s1", "user", "fresh")
    assert m.seq == 1 and [x.content for x in store.messages("s1")] == ["fresh"]


def test_append_creates_session_and_assigns_seq(store: sessiondb.Store) -> None:
    m1 = store.append("s1", "user", "hello", meta={"tokens": 3})
    m2 = store.append("s1", "assistant", "hi")
    assert isinstance(m1, Message)
    assert (m1.seq, m2.seq) == (1, 2)
    assert m1.meta == {"tokens": 3} and m2.meta is None
    s = store.get_session("s1")
    assert s is not None and s.message_count == 2 and s.source == "unknown"


def test_append_key_is_idempotent(store: sessiondb.Store) -> None:
    a = store.append("s1", "user", "hello", key="k")
    b = store.append("s1", "user", "hello", key="k")
    assert a == b
    assert store.count("s1") == 1


def test_same_key_in_other_session_is_independent(store: sessiondb.Store) -> None:
    store.append("s1", "user", "hello", key="k")
    m = store.append("s2", "user", "other", key="k")
    assert m.seq == 1 and store.count() == 2


def test_append_key_conflict(store: sessiondb.Store) -> None:
    store.append("s1", "user", "hello", key="k")
    for role, content, meta in [
        ("user", "changed", None),
        ("assistant", "hello", None),
        ("user", "hello", {"x": 1}),
    ]:
        with pytest.raises(KeyConflict) as exc:
            store.append("s1", role, content, key="k", meta=meta)
        assert exc.value.seq == 1
    assert store.count("s1") == 1


def test_append_many_all_or_nothing(store: sessiondb.Store) -> None:
    store.append("s1", "user", "first", key="a")
    with pytest.raises(KeyConflict):
        store.append_many(
            "s1",
            [{"role": "user", "content": "new"}, {"role": "user", "content": "DIFF", "key": "a"}],
        )
    assert [m.content for m in store.messages("s1")] == ["first"]
    with pytest.raises(InvalidInput, match=r"items\[1\]"):
        store.append_many("s1", [{"role": "user", "content": "ok"}, {"role": "", "content": "x"}])
    assert store.count("s1") == 1


def test_append_many_resend_tail_never_duplicates(store: sessiondb.Store) -> None:
    items = [{"role": "user", "content": f"m{i}", "key": f"k{i}"} for i in range(6)]
    first = store.append_many("s1", items[:4])
    again = store.append_many("s1", items)  # the whole tail re-sent after a "failure"
    assert again[:4] == first
    assert [m.seq for m in store.messages("s1")] == [1, 2, 3, 4, 5, 6]


def test_append_many_duplicate_key_within_batch(store: sessiondb.Store) -> None:
    out = store.append_many(
        "s1",
        [
            {"role": "user", "content": "x", "key": "k"},
            {"role": "user", "content": "x", "key": "k"},
        ],
    )
    assert out[0] == out[1] and store.count("s1") == 1


def test_append_many_bad_items(store: sessiondb.Store) -> None:
    with pytest.raises(InvalidInput, match="dict"):
        store.append_many("s1", ["text"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="unknown field"):
        store.append_many("s1", [{"role": "user", "content": "x", "colour": "red"}])
    with pytest.raises(InvalidInput, match="role"):
        store.append_many("s1", [{"content": "x"}])
    assert store.append_many("s1", []) == []
    assert store.get_session("s1") is None


def test_messages_after_and_limit(store: sessiondb.Store) -> None:
    store.append_many("s1", [{"role": "user", "content": str(i)} for i in range(10)])
    assert [m.seq for m in store.messages("s1", after=7)] == [8, 9, 10]
    assert [m.seq for m in store.messages("s1", after=2, limit=3)] == [3, 4, 5]
    assert store.messages("s1", limit=0) == []
    assert store.messages("missing") == []


def test_messages_pages_long_sessions(store: sessiondb.Store) -> None:
    n = READ_PAGE * 2 + 3
    store.append_many("long", [{"role": "user", "content": str(i)} for i in range(n)])
    msgs = store.messages("long")
    assert [m.seq for m in msgs] == list(range(1, n + 1))
    assert len(store.messages("long", limit=READ_PAGE + 1)) == READ_PAGE + 1


def test_count(store: sessiondb.Store) -> None:
    assert store.count() == 0
    store.append("a", "user", "1")
    store.append("a", "user", "2")
    store.append("b", "user", "3")
    assert (store.count(), store.count("a"), store.count("b"), store.count("zz")) == (3, 2, 1, 0)


def test_types_are_frozen(store: sessiondb.Store) -> None:
    m = store.append("s1", "user", "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.content = "y"  # type: ignore[misc]


def test_context_manager_closes(db_path) -> None:  # type: ignore[no-untyped-def]
    with sessiondb.open(db_path) as s:
        s.append("a", "user", "x")
    with pytest.raises(sessiondb.Error, match="closed"):
        s.append("a", "user", "y")
    with sessiondb.open(db_path) as s2:
        assert s2.count() == 1


def test_default_path_from_env(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SESSIONDB_PATH", str(tmp_path / "env.db"))
    with sessiondb.open() as s:
        assert s.path == tmp_path / "env.db"
    monkeypatch.delenv("SESSIONDB_PATH")
    with sessiondb.open() as s:
        assert s.path == tmp_path / "xdg-data" / "sessiondb" / "sessions.db"


def test_bad_options(db_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput, match="durability"):
        sessiondb.open(db_path, durability="sometimes")
    with pytest.raises(InvalidInput, match="journal_mode"):
        sessiondb.open(db_path, journal_mode="memory")
    with pytest.raises(InvalidInput, match="write_timeout"):
        sessiondb.open(db_path, write_timeout=0)
    with pytest.raises(InvalidInput, match="folder"):
        sessiondb.open(db_path.parent.parent)


def test_append_many_same_key_different_content_in_one_batch(store: sessiondb.Store) -> None:
    with pytest.raises(KeyConflict, match="twice in one batch"):
        store.append_many(
            "s1",
            [
                {"role": "user", "content": "x", "key": "k"},
                {"role": "user", "content": "y", "key": "k"},
            ],
        )
    assert store.get_session("s1") is None


def test_append_many_mixes_stored_new_and_repeated_keys(store: sessiondb.Store) -> None:
    store.append("s1", "user", "a", key="a")
    out = store.append_many(
        "s1",
        [
            {"role": "user", "content": "b", "key": "b"},
            {"role": "user", "content": "a", "key": "a"},
            {"role": "user", "content": "plain"},
            {"role": "user", "content": "b", "key": "b"},
        ],
    )
    assert [m.seq for m in out] == [2, 1, 3, 2]
    assert [m.content for m in store.messages("s1")] == ["a", "b", "plain"]
