"""Fuzz: arbitrary strings never break plain search; malformed fts queries are QueryError."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiondb
from sessiondb import InvalidInput, QueryError
from sessiondb.searchquery import MAX_QUERY_CHARS
from sessiondb.sqlite.store import SQLiteStore

NASTY = [
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "NEAR(",
    "*",
    '"',
    "'",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    "^",
    "-",
    "+",
    "\x00",
    "\u200f",
    "\u202e",
    "\ud800",
    "\udfff",
    "😀",
    "東京",
    "C++",
    "foo.bar",
    "x:y",
    "content:",
    "%",
    "_",
    "\\",
    "\n",
    "\t",
    " ",
]
ANY_CHAR = st.characters(blacklist_categories=())  # includes lone surrogates (Cs)
QUERIES = st.one_of(
    st.text(ANY_CHAR, max_size=60),
    st.lists(st.sampled_from(NASTY) | st.text(ANY_CHAR, max_size=6), max_size=12).map("".join),
)
# 500 examples x 20 queries = 10 000 strings; batching keeps hypothesis' per-example overhead
# (shrinking bookkeeping, database) from dominating the run on a 2-core CI machine.
FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteStore]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "f.db"
    with sessiondb.open(path) as s:
        rng = random.Random(3)
        for i in range(200):
            words = [rng.choice([*NASTY, "retry", "policy", "agent", "deploy"]) for _ in range(12)]
            s.append(f"s{i % 5}", "user", " ".join(words).replace("\x00", " "))
        yield s


@FUZZ
@given(queries=st.lists(QUERIES, min_size=20, max_size=20))
def test_plain_mode_accepts_any_string(store: SQLiteStore, queries: list[str]) -> None:
    for query in queries:
        hits = store.search(query, limit=5, context=1)
        assert len(hits) <= 5
        assert all(isinstance(h, sessiondb.Hit) for h in hits)


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=QUERIES)
def test_fts_mode_either_answers_or_raises_query_error(store: SQLiteStore, query: str) -> None:
    try:
        store.search(query, mode="fts", limit=5)
    except QueryError as e:
        assert str(e).startswith("malformed search query")


def test_ten_thousand_character_queries(store: SQLiteStore) -> None:
    rng = random.Random(5)
    for _ in range(5):
        query = "".join(rng.choice([*NASTY, "a", "b", "é"]) for _ in range(4000))[:MAX_QUERY_CHARS]
        query = query.ljust(MAX_QUERY_CHARS, "x")
        assert isinstance(store.search(query), list)
        assert isinstance(store.search(" ".join(query.split()[:3])), list)
    with pytest.raises(InvalidInput):
        store.search("a" * (MAX_QUERY_CHARS + 1))


def test_stored_text_with_surrogates_is_found_by_the_same_text(store: SQLiteStore) -> None:
    store.append("sur", "user", "broken \ud83d surrogate marker")
    [hit] = store.search("\ud83d surrogate", session_id="sur")
    assert hit.message.content == "broken \ufffd surrogate marker"
