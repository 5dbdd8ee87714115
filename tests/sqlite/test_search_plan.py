"""Words of an AND checked on the candidate rows instead of matched (sqlite/search.py
``_checked_words``, rank.py ``sessiondb_rank_checked``, termcheck.py; ADR 0004 amendment 1):
the results — messages, order and scores — equal those of the AND matched whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import sessiondb
from sessiondb.sqlite import fts, termcheck
from sessiondb.sqlite import search as search_module
from tests.helpers import engine_of

# Words in every case and with diacritics, CJK, digits, glued by ASCII punctuation or spaces: a
# checked word must be counted exactly as the index's tokenizer counts it.
WORDS = [
    "alpha", "Alpha", "ALPHA", "álpha", "alphа",  # the last one ends in a Cyrillic a
    "beta", "BETA", "béta", "gamma", "gamma2", "delta", "x", "東京", "é", "0", "9", "",
]  # fmt: skip
SEPARATORS = [" ", " ", " ", ".", "_", "-", "+", "'", "\n", "(", "@", ""]
QUERY_WORDS = ["alpha", "beta", "gamma", "delta", "gamma2", "x", "0", "Alpha", "BETA"]


def _tokenizer_counts(text: str, tokens: list[str]) -> list[int]:
    conn = apsw.Connection(":memory:")
    tok = conn.fts5_tokenizer("unicode61", ["remove_diacritics", "2"])
    cut = tok(text.encode(), apsw.FTS5_TOKENIZE_DOCUMENT, None, include_offsets=False)
    flat = [t if isinstance(t, str) else t[0] for t in cut]
    return [flat.count(t) for t in tokens]


@settings(max_examples=300, deadline=None)
@given(text=hs.text(alphabet=hs.characters(max_codepoint=127), max_size=60))
def test_ascii_counts_equal_the_tokenizer(text: str) -> None:
    tokens = ["a", "ab", "x1", "0", "z"]
    text = text + " a ab x1 " if len(text) % 3 == 0 else text
    low = text.encode().lower()
    got = [termcheck._ascii_count(low, n) for n in termcheck.needles(tokens)]
    assert got == _tokenizer_counts(text, tokens)


def _store(path: Path, texts: list[tuple[int, str]]) -> sessiondb.Store:
    store = sessiondb.open(path)
    for session, text in texts:
        store.append(f"s{session}", ("user", "assistant")[session % 2], text)
    return store


def _results(store: sessiondb.Store, query: str, **kw: Any) -> list[tuple[str, int, float]]:
    return [(h.message.session_id, h.message.seq, h.score) for h in store.search(query, **kw)]


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    texts=hs.lists(
        hs.tuples(
            hs.integers(0, 2),
            hs.lists(
                hs.tuples(hs.sampled_from(WORDS), hs.sampled_from(SEPARATORS)).map("".join),
                min_size=1,
                max_size=10,
            ).map("".join),
        ),
        min_size=1,
        max_size=40,
    ),
    queries=hs.lists(
        hs.lists(hs.sampled_from(QUERY_WORDS), min_size=2, max_size=4).map(" ".join),
        min_size=1,
        max_size=4,
    ),
)
def test_checked_words_give_the_results_of_the_whole_and(
    tmp_path_factory: pytest.TempPathFactory, texts: list[tuple[int, str]], queries: list[str]
) -> None:
    """Every word but the rarest checked on the row (cost 0) against none (the reference, the
    plan before the change), unfiltered and filtered (the plan with row checks), with a rank
    window and candidate budget small enough to be exceeded."""
    path = tmp_path_factory.mktemp("plan") / "p.db"
    with pytest.MonkeyPatch.context() as mp, _store(path, texts) as store:
        mp.setattr(search_module, "RANK_WINDOW", 3)
        mp.setattr(search_module, "CANDIDATE_BUDGET", 2)
        for query in queries:
            for kw in ({"limit": 5}, {"limit": 50}, {"session_id": "s1"}, {"role": "user"}):
                mp.setattr(search_module, "CHECKED_CANDIDATE_COST", None)
                reference = _results(store, query, **kw)
                mp.setattr(search_module, "CHECKED_CANDIDATE_COST", 0.0)
                assert _results(store, query, **kw) == reference, (query, kw)


def _matched(store: sessiondb.Store, query: str) -> list[str]:
    """The MATCH expressions the search ran on the word index."""
    seen: list[str] = []
    conn = engine_of(store).connection()

    def trace(_cursor: Any, sql: str, bindings: Any) -> bool:
        for name in ("kept", "words"):
            if f"{fts.WORD_TABLE} MATCH :{name}" in sql and isinstance(bindings, dict):
                seen.append(bindings[name])
        return True

    conn.exec_trace = trace
    try:
        store.search(query)
    finally:
        conn.exec_trace = None
    return seen


def test_a_word_in_every_message_is_checked_not_matched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``common`` in 3 000 messages, ``rare`` in 2; a candidate costs 100 doclist entries here
    (the default is calibrated on a million messages)."""
    monkeypatch.setattr(search_module, "CHECKED_CANDIDATE_COST", 100.0)
    texts = [f"common filler {i}" for i in range(3000)]
    texts[700] = "common rare one"
    texts[2900] = "rare Common two"
    with sessiondb.open(tmp_path / "s.db") as store:
        for block in range(3):
            chunk = texts[block * 1000 : (block + 1) * 1000]
            store.append_many(f"s{block}", [{"role": "user", "content": t} for t in chunk])
        assert _matched(store, "common rare") == ['"rare"']
        hits = store.search("common rare")
        assert [h.message.content for h in hits] == ["rare Common two", "common rare one"]
        # Two words about as rare: both stay in the MATCH.
        assert _matched(store, "one two") == ['"one" "two"']
        # A punctuated word is never checked this way: its phrase stays matched.
        matched = _matched(store, "common filler-x")[-1]
        assert '"filler x"' in matched and '"common"' in matched
