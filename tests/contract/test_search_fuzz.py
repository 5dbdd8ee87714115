"""Fuzz: arbitrary strings never break plain search; malformed advanced queries are QueryError."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiondb
from sessiondb import InvalidInput, QueryError
from sessiondb.core.query import MAX_QUERY_CHARS
from tests.conftest import BACKENDS, new_location

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


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessiondb.Store]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with sessiondb.open(new_location(request.param, tmp)) as s:
        rng = random.Random(3)
        for i in range(200):
            words = [rng.choice([*NASTY, "retry", "policy", "agent", "deploy"]) for _ in range(12)]
            s.append(f"s{i % 5}", "user", " ".join(words).replace("\x00", " "))
        yield s


@FUZZ
@given(queries=st.lists(QUERIES, min_size=20, max_size=20))
def test_plain_mode_accepts_any_string(store: sessiondb.Store, queries: list[str]) -> None:
    for query in queries:
        hits = store.search(query, limit=5, context=1)
        assert len(hits) <= 5
        assert all(isinstance(h, sessiondb.Hit) for h in hits)


@settings(max_examples=1_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=QUERIES)
def test_fts_mode_either_answers_or_raises_query_error(store: sessiondb.Store, query: str) -> None:
    try:
        store.search(query, mode="fts", limit=5)
    except QueryError as e:
        assert str(e).startswith("malformed search query")


def test_ten_thousand_character_queries(store: sessiondb.Store) -> None:
    rng = random.Random(5)
    for _ in range(5):
        query = "".join(rng.choice([*NASTY, "a", "b", "é"]) for _ in range(4000))[:MAX_QUERY_CHARS]
        query = query.ljust(MAX_QUERY_CHARS, "x")
        assert isinstance(store.search(query), list)
        assert isinstance(store.search(" ".join(query.split()[:3])), list)
    with pytest.raises(InvalidInput):
        store.search("a" * (MAX_QUERY_CHARS + 1))


def test_stored_text_with_surrogates_is_found_by_the_same_text(store: sessiondb.Store) -> None:
    store.append("sur", "user", "broken \ud83d surrogate marker")
    [hit] = store.search("\ud83d surrogate", session_id="sur")
    assert hit.message.content == "broken \ufffd surrogate marker"


def _reference_snippet(light: object, text: str) -> str:
    """The snippet from every match of the whole text, clipped to the window (no region search)."""
    from sessiondb.core.highlight import _WS

    spans = light.spans(text)  # type: ignore[attr-defined]
    first = spans[0][0] if spans else 0
    start = max(0, first - light.width // 4)  # type: ignore[attr-defined]
    if start:
        space = text.rfind(" ", max(0, start - 20), start + 1)
        start = space + 1 if space >= 0 else start
    stop = min(len(text), start + light.width)  # type: ignore[attr-defined]
    if stop < len(text):
        space = text.rfind(" ", stop - 20, stop)
        stop = space if space > start else stop
    pieces = ["…" if start else ""]
    pos = start
    for a, b in spans:
        if b <= start or a >= stop:
            continue
        a, b = max(a, start), min(b, stop)
        pieces += [_WS.sub(" ", text[pos:a]), "[", _WS.sub(" ", text[a:b]), "]"]
        pos = b
    pieces += [_WS.sub(" ", text[pos:stop]), "…" if stop < len(text) else ""]
    return "".join(pieces)


_PIECES = ["retry", "Retrying", "foo.bar", "foo", "bar", "C++", "x", " ", "  ", ".", "\n", "ab"]
_PIECES += ["Café", "東京", "ﬁx", "İ", "naïve"]  # non-ASCII: one char each folded, and not


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), max_size=200),
    st.lists(
        st.sampled_from(["retry", "foo.bar", "C++", "x", "ab bar", "cafe", "東京", "fix", "naive"]),
        min_size=1,
        max_size=3,
    ),
)
def test_snippet_of_a_window_equals_the_whole_text_clipped(
    pieces: list[str], query: list[str]
) -> None:
    from sessiondb.core.highlight import Highlighter
    from sessiondb.core.query import split_words

    text = "".join(pieces)
    light = Highlighter(split_words(" ".join(query)), width=40)
    assert light.snippet(text) == _reference_snippet(light, text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_folding_by_table_equals_folding_each_character(text: str) -> None:
    from sessiondb.core.highlight import _fold, _fold_char

    parts = [_fold_char(ch) for ch in text]
    folded, where = _fold(text)
    assert folded == "".join(parts)
    if where is None:
        assert all(len(p) == 1 for p in parts)
    else:
        assert where == [i for i, p in enumerate(parts) for _ in p] + [len(text)]
