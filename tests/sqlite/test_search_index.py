"""The SQLite search index: sync with the messages, migrations and backfills, the CJK trigram
index, ranking without FTS5's frequency walk, and the candidate budget. The search rules
themselves are tested over every backend in tests/contract/test_search.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import sessiondb
from sessiondb.core.query import split_words
from sessiondb.sqlite import deferred, fts, fts_v3, schema, selfindex
from tests.helpers import engine_of, legacy_appends

VOCAB = ["alpha", "beta", "gamma", "delta"]


def where(hits: list[sessiondb.Hit]) -> list[tuple[str, int]]:
    return [(h.message.session_id, h.message.seq) for h in hits]


def test_index_follows_deletes_pops_and_clears(tmp_path: Path) -> None:
    store = sessiondb.open(tmp_path / "s.db")
    store.append("code", "user", "please rename foo.bar before the release")
    store.append("code", "tool", "東京都に住んでいる")
    store.append("other", "user", "foo and bar, 東京")
    store.append("other", "user", "popped foo")
    store.append("cleared", "user", "cleared foo 東京都")
    assert store.delete_session("code")
    assert store.pop_message("other") is not None
    assert store.clear_session("cleared") == 1
    assert store.search("foo.bar") == [] and store.search("東京都") == []
    assert where(store.search("foo")) == [("other", 1)]
    with engine_of(store).write() as conn:
        conn.execute(f"INSERT INTO {fts.WORD_TABLE}({fts.WORD_TABLE}) VALUES ('integrity-check')")
        conn.execute(
            f"INSERT INTO {fts.TRIGRAM_TABLE}({fts.TRIGRAM_TABLE}) VALUES ('integrity-check')"
        )
    store.close()


# -- migration of a store created before search -------------------------------------------------


def test_migration_backfills_existing_messages_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
    monkeypatch.setattr(schema, "LATEST", 1)
    legacy_appends(monkeypatch)  # a schema older than the deferred index
    with sessiondb.open(path) as st:
        for i in range(1200):
            st.append(f"s{i % 7}", "user", f"legacy message {i} token{i}")
    monkeypatch.undo()
    batches: list[bool] = []
    real_step = fts.backfill_step

    def counting_step(engine: object, batch: int = fts.BACKFILL_BATCH) -> bool:
        more = real_step(engine, batch)
        batches.append(more)
        return more

    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        [
            dataclasses.replace(m, backfill=counting_step) if m.version == 2 else m
            for m in schema.MIGRATIONS
        ],
    )
    with sessiondb.open(path) as st:
        assert len(st.search("legacy", limit=2000)) == 1200
        assert where(st.search("token777")) == [("s0", 777 // 7 + 1)]
        with engine_of(st).read() as conn:
            assert not fts.backfill_pending(conn)
    # 1 200 rows in batches of BACKFILL_BATCH, each its own transaction
    full, rest = divmod(1200, fts.BACKFILL_BATCH)
    assert batches == [True] * (full - (rest == 0)) + [False]


def test_rows_deleted_or_reinserted_during_backfill_keep_the_index_sound(tmp_path: Path) -> None:
    with sessiondb.open(tmp_path / "b.db") as st:
        engine = engine_of(st)
        with engine.write() as conn:  # simulate a pre-search store: drop and recreate the index
            fts.drop(conn)
        for i in range(30):
            st.append("a" if i < 20 else "b", "user", f"row {i} marker")
        with engine.write() as conn:
            fts.create(conn)
            fts_v3.upgrade(conn)
            selfindex.install_triggers(conn)
            deferred.install(conn)
            assert fts.backfill_pending(conn)
            assert fts.backfill_batch(conn, 10) is False  # rows 1..10 indexed
        st.delete_session("b")  # rows 21..30 never indexed: delete must skip them
        st.append("c", "user", "fresh marker")  # may reuse an id inside the pending range
        fts.backfill(engine, batch=7)
        assert len(st.search("marker", limit=100)) == 21
        with engine.write() as conn:
            for table in (fts.WORD_TABLE, fts.TRIGRAM_TABLE):
                conn.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")


# -- the trigram index holds only messages with CJK-like text ------------------------------------


def _trigram_rows(st: sessiondb.Store) -> set[int]:
    """The trigram index's rows once the deferred backlog is indexed (deferred.py)."""
    with engine_of(st).write() as conn:
        deferred.finish(conn)
        return {r[0] for r in conn.execute(f"SELECT id FROM {fts.TRIGRAM_ROWS}")}


def _check_index(st: sessiondb.Store) -> None:
    # rank=1 compares each index with its content (the trigram one: with the view's subset),
    # once the deferred backlog is indexed (deferred.py).
    with engine_of(st).write() as conn:
        deferred.finish(conn)
        for table in (fts.WORD_TABLE, fts.TRIGRAM_TABLE):
            conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")


def test_trigram_condition_covers_every_no_space_character(tmp_path: Path) -> None:
    from sessiondb.core.query import _NO_SPACE_RANGES, _is_no_space_char

    chars = [
        chr(cp)
        for lo, hi in _NO_SPACE_RANGES
        for cp in (range(lo, hi + 1) if hi < 0x10000 else range(lo, hi + 1, 97))
    ]
    chars.append(chr(0x3FFFF))
    assert all(map(_is_no_space_char, chars))
    assert split_words("東京 x.y")[0].no_space and not split_words("x.y")[0].no_space
    with sessiondb.open(tmp_path / "g.db") as st, engine_of(st).read() as conn:
        cond = fts.trigram_condition("value")
        missed = conn.execute(
            f"SELECT value FROM json_each(?) WHERE NOT {cond}",
            (json.dumps([f"ascii {c} text" for c in chars]),),
        ).fetchall()
        assert missed == []
        # Text without such characters stays out: accents, dashes, emoji, replacement char.
        others = ["plain ascii", "Café naïve — “quoted” …", "done ✔️ 😀", "\ufffd", "Привет"]
        chosen = conn.execute(
            f"SELECT value FROM json_each(?) WHERE {cond}", (json.dumps(others),)
        ).fetchall()
        assert chosen == []


@pytest.mark.parametrize("indexed", [True, False])  # edits of indexed rows, of backlog rows
def test_only_cjk_messages_enter_the_trigram_index_and_edits_keep_it_exact(
    tmp_path: Path, indexed: bool
) -> None:
    with sessiondb.open(tmp_path / "t.db") as st:
        st.append("s", "user", "plain english text")  # id 1
        st.append("s", "user", "日本語のテキスト")  # id 2
        st.append("s", "user", "한국어 and 東京 mixed")  # id 3
        if indexed:
            assert _trigram_rows(st) == {2, 3}
        with engine_of(st).write() as conn:  # content edits: CJK removed from 2, added to 1
            conn.execute("UPDATE messages SET content = 'now english' WHERE id = 2")
            conn.execute("UPDATE messages SET content = '今は日本語だ' WHERE id = 1")
        assert _trigram_rows(st) == {1, 3}
        _check_index(st)
        assert where(st.search("日本語")) == [("s", 1)]
        assert where(st.search("日本語だ")) == [("s", 1)]
        assert where(st.search("english")) == [("s", 2)]
        st.delete_session("s")
        assert _trigram_rows(st) == set()
        _check_index(st)


def test_punctuated_literals_need_their_exact_text(tmp_path: Path) -> None:
    with sessiondb.open(tmp_path / "p.db") as st:
        st.append("s", "user", "call foo.bar() then foo:bar and x-y")
        st.append("s", "user", "foo bar x y separately, and FOO.BAR shouted")
        st.append("s", "user", "rule === here")
        assert sorted(where(st.search("foo.bar"))) == [("s", 1), ("s", 2)]  # ASCII case folded
        assert where(st.search("foo:bar")) == [("s", 1)]
        assert where(st.search("x-y")) == [("s", 1)]
        assert where(st.search("===")) == [("s", 3)]  # punctuation only: a scan, still found
        _check_index(st)


def test_backfill_builds_the_cjk_only_trigram_index(tmp_path: Path) -> None:
    with sessiondb.open(tmp_path / "m.db") as st:
        with engine_of(st).write() as conn:
            fts.drop(conn)
        for i in range(40):
            st.append("s", "user", f"row {i} 東京" if i % 10 == 0 else f"row {i}")
        with engine_of(st).write() as conn:
            fts.create(conn)
            fts_v3.upgrade(conn)
            selfindex.install_triggers(conn)
            deferred.install(conn)
        fts.backfill(engine_of(st), batch=7)
        assert _trigram_rows(st) == {1, 11, 21, 31}
        _check_index(st)
        assert len(st.search("東京", limit=100)) == 4


# -- ranking without FTS5's document-frequency walk, and the candidate budget ----------------


def test_rank_equals_fts5_bm25_when_frequencies_are_exact(tmp_path: Path) -> None:
    texts = [
        "retry policy retry",
        "the policy on retry is documented in the policy file",
        "retry",
        "policy policy policy and nothing else at all here",
        "a long message that mentions retry once among a great many other filler words " * 3,
        "unrelated text",
    ]
    with sessiondb.open(tmp_path / "r.db") as st:
        for text in texts[:3]:
            st.append("s", "user", text)
        with engine_of(st).write() as conn:
            deferred.finish(conn)
        for text in texts[3:]:  # left to the deferred backlog: searched through tail.py
            st.append("s", "user", text)
        queries = ("retry", "retry policy", "policy")
        split = {query: {h.message.seq: h.score for h in st.search(query)} for query in queries}
        with engine_of(st).write() as conn:
            deferred.finish(conn)
        for query in queries:
            ours = {h.message.seq: h.score for h in st.search(query)}
            assert split[query].keys() == ours.keys()
            for seq, score in split[query].items():  # index + backlog rank as one index
                assert score == pytest.approx(ours[seq], rel=1e-9), (query, seq)
            match = " ".join(f'"{w}"' for w in query.split())
            with engine_of(st).read() as conn:
                theirs = dict(
                    conn.execute(
                        "SELECT rowid, -bm25(messages_fts) FROM messages_fts"
                        " WHERE messages_fts MATCH ?",
                        (match,),
                    ).fetchall()
                )
            assert ours.keys() == theirs.keys() and ours
            for seq, score in ours.items():
                assert score == pytest.approx(theirs[seq], rel=1e-9), (query, seq)


def test_frequency_estimate_beyond_the_exact_count(tmp_path: Path) -> None:
    from sessiondb.sqlite import rank

    with sessiondb.open(tmp_path / "f.db") as st:
        st.append_many("s", [{"role": "user", "content": f"word{i % 2} x"} for i in range(40)])
        with engine_of(st).write() as conn:
            deferred.finish(conn)
            assert rank.doc_freq(conn, fts.WORD_TABLE, '"word0"', 40) == (20.0, True, None, None)
            old = rank.DF_SAMPLE
            rank.DF_SAMPLE = 5
            try:  # every other message: the 5 newest span ids 31..39, so 5 * 40 / 10
                est = rank.doc_freq(conn, fts.WORD_TABLE, '"word0"', 40)
                # ... and 5 of the 10 rows of that span match: half of the index's rows.
                assert est == (20.0, False, 31, 0.5) and est.rank_arg == -0.5
            finally:
                rank.DF_SAMPLE = old


def test_frequencies_stay_within_the_rows_after_deletes(tmp_path: Path) -> None:
    """Deleted sessions leave gaps in the message ids: a common word's count extrapolated over
    the id range exceeded the rows that exist, and every search for it raised "math domain
    error". The estimate is now a share of the rows, so ranking equals FTS5's exact bm25 here,
    where every remaining message matches."""
    with sessiondb.open(tmp_path / "d.db") as st:
        for i in range(30):
            st.append_many(
                f"s{i}", [{"role": "user", "content": f"common {j}"} for j in range(200)]
            )
        for i in range(25):
            st.delete_session(f"s{i}")
        hits = st.search("common", limit=5)
        assert len(hits) == 5
        with engine_of(st).read() as conn:
            exact = dict(
                conn.execute(
                    "SELECT rowid, -bm25(messages_fts) FROM messages_fts"
                    " WHERE messages_fts MATCH '\"common\"' ORDER BY rowid DESC LIMIT 5"
                ).fetchall()
            )
        assert [h.score for h in hits] == pytest.approx(list(exact.values()), rel=1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=hs.lists(
        hs.one_of(
            hs.tuples(
                hs.just("append"),
                hs.integers(0, 3),
                hs.lists(hs.sampled_from(VOCAB), min_size=1, max_size=4),
            ),
            hs.tuples(hs.just("delete"), hs.integers(0, 3)),
            hs.tuples(hs.just("pop"), hs.integers(0, 3)),
            hs.tuples(hs.just("clear"), hs.integers(0, 3)),
            hs.tuples(hs.just("search"), hs.sampled_from(VOCAB)),
        ),
        max_size=60,
    )
)
def test_search_matches_a_brute_force_scan_through_appends_and_removals(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple]
) -> None:
    """Appends, deletes, pops, clears and searches interleaved; each search returns exactly the
    messages a scan of the live messages finds (the frequency sample shrunk to 3, so that the
    estimates and the candidate budget are exercised with a handful of messages)."""
    from sessiondb.sqlite import rank
    from sessiondb.sqlite import search as search_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rank, "DF_SAMPLE", 3)
        mp.setattr(search_module, "CANDIDATE_BUDGET", 3)
        mp.setattr(search_module, "RANK_WINDOW", 2)
        path = tmp_path_factory.mktemp("prop") / "p.db"
        with sessiondb.open(path) as store:
            for op in ops:
                kind, arg = op[0], op[1]
                if kind == "append":
                    store.append(f"s{arg}", "user", " ".join(op[2]) + " filler")
                elif kind == "delete":
                    store.delete_session(f"s{arg}")
                elif kind == "pop":
                    store.pop_message(f"s{arg}")
                elif kind == "clear" and store.get_session(f"s{arg}") is not None:
                    store.clear_session(f"s{arg}")
                elif kind == "search":
                    live = {
                        (sid, m.seq)
                        for sid in (f"s{i}" for i in range(4))
                        for m in store.messages(sid)
                        if arg in m.content.split()
                    }
                    found = {
                        (h.message.session_id, h.message.seq) for h in store.search(arg, limit=1000)
                    }
                    assert found == live, (arg, ops)


@pytest.mark.parametrize("sample", [10, 1000])  # 10: the frequency lookup yields the floor
def test_sparse_matches_beyond_the_candidate_budget_are_all_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: int
) -> None:
    from sessiondb.sqlite import rank
    from sessiondb.sqlite import search as search_module

    monkeypatch.setattr(search_module, "CANDIDATE_BUDGET", 10)
    monkeypatch.setattr(rank, "DF_SAMPLE", sample)
    monkeypatch.setattr(search_module, "RANK_WINDOW", 3)
    with sessiondb.open(tmp_path / "b.db") as st:
        st.append("s", "user", "old foo.bar match")  # seq 1
        st.append("s", "user", "older C++ and 東京 here")  # seq 2
        for i in range(60):  # candidates of every plan that fail the check
            st.append("s", "user", f"foo bar {i} C 東 京")
        st.append("s", "user", "new foo.bar match C++ 東京")  # seq 63
        assert where(st.search("foo.bar")) == [("s", 63), ("s", 1)]
        assert where(st.search("C++")) == [("s", 63), ("s", 2)]
        assert where(st.search("東京")) == [("s", 63), ("s", 2)]
        assert where(st.search("foo.bar", offset=1)) == [("s", 1)]
        assert where(st.search("foo.bar", limit=1)) == [("s", 63)]
        assert where(st.search("foo.bar", role="user", session_id="s")) == [("s", 63), ("s", 1)]


# -- two-character CJK words through the trigram index (migration 3) -------------------------


def test_two_character_cjk_words_are_found_through_the_index(tmp_path: Path) -> None:
    from sessiondb.sqlite import search as search_module

    with sessiondb.open(tmp_path / "p.db") as st:
        for i in range(50):
            st.append("f", "user", f"東の{i}京 filler")  # both characters, never adjacent
        st.append("s", "user", "会議は東京で")  # seq 1: inside
        st.append("s", "user", "行き先は東京")  # seq 2: at the very end of the text
        st.append("s", "user", "東京")  # seq 3: the whole text
        st.append("s", "user", "京都")  # seq 4
        with engine_of(st).write() as conn:
            deferred.finish(conn)
            terms = search_module._trigrams_starting(conn, "東京", fts_v3.VOCAB)
        assert terms is not None and sorted(terms) == ["東京\x1f", "東京で"]
        assert sorted(where(st.search("東京"))) == [("s", 1), ("s", 2), ("s", 3)]
        assert where(st.search("京都")) == [("s", 4)]
        assert st.search("都会") == []
        assert where(st.search("東京 会議")) == [("s", 1)]
        with engine_of(st).write() as conn:  # an edit moves a row in and out of the index
            conn.execute("UPDATE messages SET content = 'plain now' WHERE seq = 1 AND sid = 2")
            conn.execute("UPDATE messages SET content = '京都と東京' WHERE seq = 4 AND sid = 2")
        assert sorted(where(st.search("東京"))) == [("s", 2), ("s", 3), ("s", 4)]
        st.delete_session("s")
        assert st.search("東京") == [] and len(st.search("東の0京")) == 1
        _check_index(st)


@pytest.mark.parametrize("start", [1, 2])  # a store before search, or with migration 2's index
def test_migration_3_reindexes_the_cjk_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start: int
) -> None:
    path = tmp_path / "old.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:start])
    monkeypatch.setattr(schema, "LATEST", start)
    legacy_appends(monkeypatch)  # a schema older than the deferred index
    with sessiondb.open(path) as st:
        for i in range(250):
            st.append(f"s{i % 3}", "user", f"{i} 行き先は東京" if i % 5 == 0 else f"row {i}")
    monkeypatch.undo()
    with sessiondb.open(path) as st:
        assert len(st.search("東京", limit=100)) == 50
        assert len(st.search("行き先", limit=100)) == 50
        with engine_of(st).read() as conn:
            assert conn.execute(f"SELECT count(*) FROM {fts_v3.PENDING}").get == 0
            assert conn.execute("SELECT max(version) FROM schema_version").get == schema.LATEST
        assert len(_trigram_rows(st)) == 50
        _check_index(st)
        st.append("new", "user", "東京")
        assert len(st.search("東京", limit=100)) == 51
