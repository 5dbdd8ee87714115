"""The verbs framework adapters need (update, newest N, removal, imported times, leases) and
the read-only store, over the contract on every backend."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

import sessiondb
from sessiondb import InvalidInput, ReadOnlyStore, SessionNotFound, StoreNotFound
from sessiondb.core.store import READ_PAGE
from tests.conftest import Opener


def _fill(store: sessiondb.Store, sid: str, n: int) -> None:
    store.append_many(sid, [{"role": "user", "content": f"m{i}"} for i in range(1, n + 1)])


# -- update_session ----------------------------------------------------------------------------


def test_update_session_changes_only_what_is_given(store: sessiondb.Store) -> None:
    made = store.create_session("s", source="cli", title="old", meta={"a": 1})
    s = store.update_session("s", title="new")
    assert (s.title, s.meta, s.source) == ("new", {"a": 1}, "cli")
    s = store.update_session("s", meta={"b": [1, 2]})
    assert (s.title, s.meta) == ("new", {"b": [1, 2]})
    s = store.update_session("s", title=None, meta=None)
    assert (s.title, s.meta) == (None, None)
    assert s.updated_at == made.updated_at  # a rename is not activity: the list order holds
    assert store.update_session("s") == s
    assert store.get_session("s") == s


def test_update_session_errors(store: sessiondb.Store) -> None:
    with pytest.raises(SessionNotFound):
        store.update_session("missing", title="x")
    store.create_session("s")
    with pytest.raises(InvalidInput, match="meta"):
        store.update_session("s", meta=[1])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="title"):
        store.update_session("s", title=3)  # type: ignore[arg-type]


# -- the newest N ----------------------------------------------------------------------------


def test_messages_last_n_in_seq_order(store: sessiondb.Store) -> None:
    _fill(store, "s", 30)
    assert [m.seq for m in store.messages("s", last=3)] == [28, 29, 30]
    assert [m.seq for m in store.messages("s", last=100)] == list(range(1, 31))
    assert [m.seq for m in store.messages("s", after=28, last=5)] == [29, 30]
    assert store.messages("s", last=0) == [] and store.messages("missing", last=3) == []
    with pytest.raises(InvalidInput, match="not both"):
        store.messages("s", limit=2, last=2)
    with pytest.raises(InvalidInput, match="last"):
        store.messages("s", last=-1)


def test_messages_last_more_than_a_page(store: sessiondb.Store) -> None:
    n = READ_PAGE + 50
    _fill(store, "s", n)
    got = store.messages("s", last=READ_PAGE + 10)
    assert [m.seq for m in got] == list(range(41, n + 1))


# -- removing messages ---------------------------------------------------------------------------


def test_pop_message_removes_the_newest_and_the_seq_is_reused(store: sessiondb.Store) -> None:
    _fill(store, "s", 3)
    before = store.get_session("s")
    assert before is not None and before.revision == 0
    popped = store.pop_message("s")
    assert popped is not None and (popped.seq, popped.content) == (3, "m3")
    after = store.get_session("s")
    assert after is not None and after.message_count == 2 and after.revision == 1
    assert [m.seq for m in store.messages("s")] == [1, 2]
    m = store.append("s", "assistant", "replacement")
    assert m.seq == 3  # gapless: the removed seq is taken again
    assert store.search("m3") == [] and [h.message.seq for h in store.search("replacement")] == [3]


def test_pop_message_frees_its_key_and_handles_empty_sessions(store: sessiondb.Store) -> None:
    store.append("s", "user", "keyed", key="k")
    assert store.pop_message("s") is not None
    assert store.pop_message("s") is None  # nothing left
    assert store.pop_message("missing") is None
    again = store.append("s", "user", "different now", key="k")  # the key is free again
    assert again.seq == 1


def test_tailing_reader_sees_a_removal_through_the_revision(store: sessiondb.Store) -> None:
    _fill(store, "s", 2)
    seen = store.messages("s")
    rev = store.get_session("s").revision  # type: ignore[union-attr]
    store.pop_message("s")
    store.append("s", "user", "new second")
    # Tailing by seq alone would miss the change: nothing after seq 2.
    assert store.messages("s", after=seen[-1].seq) == []
    now = store.get_session("s")
    assert now is not None and now.revision != rev  # so the reader re-reads
    assert [m.content for m in store.messages("s")] == ["m1", "new second"]


def test_clear_session_keeps_the_session(store: sessiondb.Store) -> None:
    store.create_session("s", source="gateway", title="T", meta={"x": 1})
    _fill(store, "s", 5)
    store.append("other", "user", "m1 elsewhere")
    assert store.clear_session("s") == 5
    s = store.get_session("s")
    assert s is not None and (s.source, s.title, s.meta) == ("gateway", "T", {"x": 1})
    assert (s.message_count, s.revision) == (0, 1)
    assert store.messages("s") == [] and store.count() == 1
    assert [h.message.session_id for h in store.search("m1")] == ["other"]
    assert store.append("s", "user", "fresh").seq == 1
    assert store.clear_session("s") == 1 and store.clear_session("s") == 0
    with pytest.raises(SessionNotFound):
        store.clear_session("missing")


# -- created_at on append -------------------------------------------------------------------------


def test_append_keeps_a_given_time(store: sessiondb.Store) -> None:
    at = 1_700_000_000.5
    m = store.append("s", "user", "imported", created_at=at)
    assert m.created_at == at and store.messages("s")[0].created_at == at
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    m2 = store.append("s", "user", "from a datetime", created_at=when)
    assert m2.created_at == when.timestamp()
    [m3] = store.append_many("s", [{"role": "user", "content": "x", "created_at": 5}])
    assert m3.created_at == 5.0
    assert abs(store.append("s", "user", "now").created_at - time.time()) < 60


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -1.0, 1e12 * 1000, "2024-01-01", True, [1]]
)
def test_append_refuses_absurd_times(store: sessiondb.Store, bad: object) -> None:
    with pytest.raises(InvalidInput, match="created_at"):
        store.append("s", "user", "x", created_at=bad)  # type: ignore[arg-type]
    assert store.get_session("s") is None


def test_search_accepts_datetimes(store: sessiondb.Store) -> None:
    old = datetime(2020, 1, 1, tzinfo=timezone.utc)
    store.append("s", "user", "deploy old", created_at=old)
    store.append("s", "user", "deploy new")
    recent = store.search("deploy", since=datetime(2021, 1, 1, tzinfo=timezone.utc))
    assert [h.message.content for h in recent] == ["deploy new"]
    assert [h.message.content for h in store.search("deploy", until=old.timestamp() + 1)] == [
        "deploy old"
    ]
    with pytest.raises(InvalidInput, match="since"):
        store.search("deploy", since="yesterday")  # type: ignore[arg-type]


# -- store leases through the contract --------------------------------------------------------


def test_store_leases_follow_the_session_id_rules(store: sessiondb.Store) -> None:
    for owner in ["c1\x85ctrl", "nul\x00", "", "x" * 257, "lone \ud800"]:
        with pytest.raises(InvalidInput, match="session_id"):
            store.lease("job", owner)
    with pytest.raises(InvalidInput, match="lease name"):
        store.lease("", "w1")
    with pytest.raises(InvalidInput, match="ttl"):
        store.lease("job", "w1", ttl=0)


def test_store_leases_are_listed(store: sessiondb.Store) -> None:
    assert store.leases() == []
    first = store.lease("job", "w1", ttl=60)
    assert first.acquire() and not store.lease("job", "w2").acquire()
    [held] = store.leases()
    assert (held.resource, held.session_id) == ("job", "w1")
    assert first.release() and store.leases() == []


# -- read-only ---------------------------------------------------------------------------------


def test_readonly_reads_everything_and_writes_nothing(location: str, open_store: Opener) -> None:
    with sessiondb.open(location) as rw:
        rw.create_session("s", title="T")
        rw.append("s", "user", "hello readonly world")
        rw.lease("job", "w1").acquire()
    with open_store(location, readonly=True) as ro:
        assert ro.readonly
        assert [s.session_id for s in ro.list_sessions()] == ["s"]
        assert ro.get_session("s") is not None and ro.count() == 1
        assert [m.content for m in ro.messages("s")] == ["hello readonly world"]
        assert [h.message.seq for h in ro.search("readonly", context=1)] == [1]
        assert [h.session_id for h in ro.leases()] == ["w1"]
        assert ro.info()["readonly"] is True
        writes = [
            lambda: ro.append("s", "user", "x"),
            lambda: ro.create_session("t"),
            lambda: ro.update_session("s", title="U"),
            lambda: ro.end_session("s"),
            lambda: ro.delete_session("s"),
            lambda: ro.pop_message("s"),
            lambda: ro.clear_session("s"),
            lambda: ro.lease("job", "w2").acquire(),
        ]
        for write in writes:
            with pytest.raises(ReadOnlyStore, match="read-only"):
                write()
    with sessiondb.open(location) as rw:
        assert rw.count("s") == 1 and rw.get_session("s").title == "T"  # type: ignore[union-attr]


def test_readonly_of_a_missing_store_creates_nothing(  # type: ignore[no-untyped-def]
    tmp_path, location: str, open_store: Opener
) -> None:
    before = sorted(tmp_path.rglob("*"))
    with (
        pytest.raises(StoreNotFound, match="no sessiondb store there") as info,
        open_store(location, readonly=True),
    ):
        pass
    assert location in str(info.value)
    assert sorted(tmp_path.rglob("*")) == before


# -- housekeeping --------------------------------------------------------------------------------


def test_check_and_info_through_the_contract(store: sessiondb.Store) -> None:
    store.append("s", "user", "x")
    report = store.check()
    assert isinstance(report, sessiondb.HealthReport) and report.status in ("ok", "warn")
    assert {c.name for c in report.checks} >= {"integrity", "schema"}
    facts = store.info()
    assert (facts["sessions"], facts["messages"], facts["readonly"]) == (1, 1, False)
    assert facts["location"] == store.location
    assert isinstance(store, sessiondb.Store)  # the protocol users annotate with


def test_conditional_append(store: sessiondb.Store) -> None:
    from sessiondb import StaleSession

    assert store.append("s", "user", "first", expect_last=0).seq == 1  # a new session ends at 0
    with pytest.raises(StaleSession) as info:
        store.append("s", "user", "stale", expect_last=0)
    assert (info.value.expected, info.value.actual) == (0, 1) and store.count("s") == 1
    out = store.append_many("s", [{"role": "user", "content": "x"}] * 2, expect_last=1)
    assert [m.seq for m in out] == [2, 3]
    store.pop_message("s")
    with pytest.raises(StaleSession):
        store.append_many("s", [{"role": "user", "content": "y"}], expect_last=3)
    assert store.append("s", "user", "after the pop", expect_last=2).seq == 3
    with pytest.raises(InvalidInput, match="expect_last"):
        store.append("s", "user", "x", expect_last=-1)


def test_count_sessions(store: sessiondb.Store) -> None:
    assert store.count_sessions() == 0
    for sid, src in (("a", "cli"), ("b", "cli"), ("c", "gateway")):
        store.create_session(sid, source=src)
    assert store.count_sessions() == 3 and store.count_sessions(source="cli") == 2
    assert store.count_sessions(source="none") == 0
    store.delete_session("a")
    assert store.count_sessions(source="cli") == 1
