"""What the framework adapters need from the core (docs/adr/0009-framework-primitives.md):
conditional appends, session state changed with an append, reads by key, forks and usage per
session — over the contract on every backend and API."""

from __future__ import annotations

import pytest

import sessiondb
from sessiondb import InvalidInput, SessionExists, SessionNotFound, StaleSession

# -- conditional append ------------------------------------------------------------------------


def test_expect_last_appends_only_onto_the_seq_the_writer_read(store: sessiondb.Store) -> None:
    assert store.append("s", "user", "a", expect_last=0).seq == 1
    assert [
        m.seq for m in store.append_many("s", [{"role": "user", "content": "b"}], expect_last=1)
    ] == [2]
    with pytest.raises(StaleSession) as caught:
        store.append("s", "user", "late", expect_last=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    with pytest.raises(StaleSession):
        store.append_many("s", [{"role": "user", "content": "x"}], expect_last=5)
    assert [m.content for m in store.messages("s")] == ["a", "b"]  # nothing written


def test_expect_last_sees_a_pop(store: sessiondb.Store) -> None:
    store.append_many("s", [{"role": "user", "content": c} for c in "abc"])
    store.pop_message("s")
    with pytest.raises(StaleSession):
        store.append("s", "user", "d", expect_last=3)
    assert store.append("s", "user", "d", expect_last=2).seq == 3


# -- session state with an append --------------------------------------------------------------


def test_session_meta_patch_lands_with_the_append(store: sessiondb.Store) -> None:
    store.create_session("s", meta={"keep": 1, "drop": 2})
    store.append("s", "user", "a", session_meta={"drop": None, "step": 1})
    assert store.get_session("s").meta == {"keep": 1, "step": 1}  # type: ignore[union-attr]
    store.append_many("s", [{"role": "user", "content": "b", "key": "k"}], session_meta={"step": 2})
    assert store.get_session("s").meta == {"keep": 1, "step": 2}  # type: ignore[union-attr]


def test_a_refused_append_changes_no_state(store: sessiondb.Store) -> None:
    store.append("s", "user", "a", session_meta={"step": 1})
    with pytest.raises(StaleSession):
        store.append("s", "user", "b", expect_last=0, session_meta={"step": 2})
    assert store.get_session("s").meta == {"step": 1}  # type: ignore[union-attr]


def test_other_sessions_meta_patched_in_the_same_transaction(store: sessiondb.Store) -> None:
    """``other_meta``: state shared by sessions (an ADK app's and user's) changes with the
    message, or not at all (a refused append, a retry)."""
    store.create_session("app/", meta={"keep": 1, "n": 0})
    store.append("s", "user", "a", key="k1", other_meta={"app/": {"n": 1}, "user/": {"u": "x"}})
    assert store.get_session("app/").meta == {"keep": 1, "n": 1}  # type: ignore[union-attr]
    assert store.get_session("user/").meta == {"u": "x"}  # type: ignore[union-attr]  # made
    with pytest.raises(StaleSession):
        store.append("s", "user", "b", expect_last=0, other_meta={"app/": {"n": 2}})
    store.update_session("app/", meta_patch={"n": 5})
    store.append("s", "user", "a", key="k1", other_meta={"app/": {"n": 1}})  # a retry
    store.append_many(
        "s", [{"role": "user", "content": "c"}], other_meta={"app/": {"keep": None}, "e/": {}}
    )
    assert store.get_session("app/").meta == {"n": 5}  # type: ignore[union-attr]
    assert store.get_session("e/") is None  # an empty patch changes nothing
    assert store.count("s") == 2
    with pytest.raises(InvalidInput, match="use session_meta"):
        store.append("s", "user", "d", other_meta={"s": {"n": 1}})
    with pytest.raises(InvalidInput):
        store.append("s", "user", "d", other_meta={"x": "not a patch"})  # type: ignore[dict-item]
    with pytest.raises(InvalidInput):
        store.append("s", "user", "d", other_meta=["x"])  # type: ignore[arg-type]
    assert store.count("s") == 2


def test_shared_state_patched_by_writers_in_many_processes(location: str) -> None:
    """Four processes append, each append patching two shared sessions (its own key in each)
    in its transaction: nothing lost, no deadlock (rows taken in session id order), every
    writer's last value in both."""
    import multiprocessing

    from tests import _workers_store as w

    spawn = multiprocessing.get_context("spawn")
    sessiondb.open(location).close()
    barrier = spawn.Barrier(4)
    procs = [
        spawn.Process(target=w.shared_state_worker, args=(location, i, 60, barrier))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        assert p.exitcode == 0
    with sessiondb.open(location) as store:
        assert store.count() == 240 and store.count("shared") == 120
        for shared in ("app/", "user/"):
            assert store.get_session(shared).meta == {f"w{i}": 59 for i in range(4)}  # type: ignore[union-attr]


def test_append_many_can_replace_the_sessions_messages_in_one_transaction(
    store: sessiondb.Store,
) -> None:
    """``replace=True``: clear and append in one transaction — how an adapter removes messages
    from the middle of a session (a LangGraph prune) with seqs staying gapless."""
    store.append_many("s", [{"role": "user", "content": f"m{i}", "key": f"k{i}"} for i in range(5)])
    kept = [m for m in store.messages("s") if m.seq % 2]
    items = [
        {"role": m.role, "content": m.content, "key": m.key, "created_at": m.created_at}
        for m in kept
    ]
    with pytest.raises(StaleSession):  # a writer appended meanwhile: nothing replaced
        store.append_many("s", items, expect_last=4, replace=True, session_meta={"v": 1})
    got = store.append_many("s", items, expect_last=5, replace=True, session_meta={"v": 1})
    assert [(m.seq, m.key) for m in got] == [(1, "k0"), (2, "k2"), (3, "k4")]
    assert [(m.seq, m.content, m.created_at) for m in store.messages("s")] == [
        (i + 1, m.content, m.created_at) for i, m in enumerate(kept)
    ]
    assert store.get_session("s").meta == {"v": 1}  # type: ignore[union-attr]
    assert store.message("s", "k1") is None and store.message("s", "k2").seq == 2  # type: ignore[union-attr]
    assert store.count("s") == 3 and store.count() == 3
    assert store.search("m1") == [] and [h.message.key for h in store.search("m2")] == ["k2"]
    assert store.append_many("s", [], replace=True) == [] and store.count("s") == 0
    assert store.get_session("s") is not None  # cleared, kept
    assert store.append_many("new", [{"role": "user", "content": "x"}], replace=True)[0].seq == 1
    with pytest.raises(InvalidInput):
        store.append_many("s", [], replace=1)  # type: ignore[arg-type]


def test_a_retried_batch_does_not_reapply_its_patch(store: sessiondb.Store) -> None:
    store.append("s", "user", "a", key="k1", session_meta={"n": 1})
    store.update_session("s", meta_patch={"n": 5})
    store.append("s", "user", "a", key="k1", session_meta={"n": 1})  # a retry: already stored
    assert store.get_session("s").meta == {"n": 5}  # type: ignore[union-attr]


def test_session_meta_makes_the_session_when_missing(store: sessiondb.Store) -> None:
    store.append("new", "user", "a", session_meta={"x": [1]})
    assert store.get_session("new").meta == {"x": [1]}  # type: ignore[union-attr]


def test_update_session_meta_patch(store: sessiondb.Store) -> None:
    store.create_session("s", meta={"a": 1, "b": 2})
    assert store.update_session("s", meta_patch={"a": None, "c": 3}).meta == {"b": 2, "c": 3}
    assert store.update_session("s", meta_patch={"b": None, "c": None}).meta is None
    with pytest.raises(InvalidInput):
        store.update_session("s", meta={"a": 1}, meta_patch={"b": 1})
    with pytest.raises(InvalidInput):
        store.update_session("s", meta_patch=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(SessionNotFound):
        store.update_session("missing", meta_patch={"a": 1})


# -- reads by key ------------------------------------------------------------------------------


def test_message_by_key(store: sessiondb.Store) -> None:
    store.append("s", "user", "a", key="k1", meta={"x": 1})
    store.append("s", "assistant", "b")
    found = store.message("s", "k1")
    assert found is not None and (found.seq, found.content, found.meta) == (1, "a", {"x": 1})
    assert store.message("s", "nope") is None
    assert store.message("missing", "k1") is None
    with pytest.raises(InvalidInput):
        store.message("s", "")


# -- forks -------------------------------------------------------------------------------------


def test_fork_copies_up_to_a_seq_and_records_its_lineage(store: sessiondb.Store) -> None:
    store.create_session("s", source="cli", title="t", meta={"state": 1})
    store.append_many(
        "s", [{"role": "user", "content": f"m{i}", "key": f"k{i}"} for i in range(1, 6)]
    )
    fork = store.fork_session("s", "f", at=3)
    assert (fork.session_id, fork.source, fork.title, fork.message_count) == ("f", "cli", "t", 3)
    assert fork.meta == {"state": 1, "forked_from": {"session_id": "s", "seq": 3}}
    got = store.messages("f")
    assert [(m.seq, m.content, m.key) for m in got] == [(i, f"m{i}", f"k{i}") for i in (1, 2, 3)]
    assert [m.created_at for m in got] == [m.created_at for m in store.messages("s", limit=3)]
    # The fork goes its own way; the original is untouched; keys stay idempotent in the fork.
    assert store.append("f", "user", "other").seq == 4
    assert store.append("f", "user", "m2", key="k2").seq == 2
    assert store.count("s") == 5
    assert store.search("other", session_id="f")[0].message.session_id == "f"


def test_fork_whole_session_new_id_and_errors(store: sessiondb.Store) -> None:
    store.append_many("s", [{"role": "user", "content": c} for c in "ab"])
    fork = store.fork_session("s", title="copy", meta={"m": 1})
    assert fork.session_id != "s" and fork.message_count == 2 and fork.title == "copy"
    assert fork.meta == {"m": 1, "forked_from": {"session_id": "s", "seq": 2}}
    assert store.fork_session("s", "empty", at=0).message_count == 0
    with pytest.raises(SessionExists):
        store.fork_session("s", "empty")
    with pytest.raises(SessionNotFound):
        store.fork_session("missing", "x")
    with pytest.raises(InvalidInput):
        store.fork_session("s", "y", at=3)


# -- usage per session -------------------------------------------------------------------------


def test_stats_of_one_session(store: sessiondb.Store) -> None:
    usage = {"input_tokens": 10, "output_tokens": 5}
    store.append("a", "assistant", "x", meta={"model": "m", "usage": usage})
    store.append("a", "assistant", "y", meta={"model": "m", "usage": usage})
    store.append("b", "assistant", "z", meta={"model": "m", "usage": {"input_tokens": 7}})
    one = store.stats(session_id="a")
    assert (one.sessions, one.messages) == (1, 2)
    assert (one.tokens.input, one.tokens.output) == (20, 10)
    assert store.stats(session_id="missing").messages == 0
    assert store.stats().tokens.input == 27


def test_a_fork_counts_its_copied_tokens_once(store: sessiondb.Store) -> None:
    """The copies of a fork are its messages, but their tokens were spent once, by the session
    they came from: stats count them there only (docs/adr/0009-framework-primitives.md)."""
    store.append("s", "user", "q")
    store.append("s", "assistant", "a", meta={"model": "m", "usage": {"input_tokens": 10}})
    store.append(
        "s",
        "assistant",
        "b1",
        meta={"model": "m", "response_id": "r", "usage": {"output_tokens": 3}},
    )
    store.append(
        "s",
        "assistant",
        "b2",
        meta={"model": "m", "response_id": "r", "usage": {"output_tokens": 5}},
    )
    before = store.stats()
    store.fork_session("s", "f")
    after = store.stats()
    assert (after.tokens.input, after.tokens.output) == (before.tokens.input, before.tokens.output)
    assert (after.sessions, after.messages) == (2, 8)  # the fork's messages are its own
    fork = store.stats(session_id="f")
    assert (fork.messages, fork.tokens.input, fork.tokens.output) == (4, 0, 0)
    # The fork's own turns count; popping a copy takes nothing off anyone.
    store.append("f", "assistant", "c", meta={"model": "m", "usage": {"input_tokens": 7}})
    store.pop_message("f")
    store.append("f", "assistant", "d", meta={"model": "m", "usage": {"input_tokens": 2}})
    assert store.pop_message("f") is not None and store.pop_message("f") is not None
    fork = store.stats(session_id="f")
    assert (fork.messages, fork.tokens.input, fork.tokens.output) == (3, 0, 0)
    store.append("f", "assistant", "e", meta={"model": "m", "usage": {"input_tokens": 4}})
    total = store.stats()
    assert (total.tokens.input, total.tokens.output) == (14, 5)
    assert store.stats(session_id="s").tokens.input == 10
