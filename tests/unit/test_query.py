"""Search queries, pure: the plain mode's words and the advanced grammar's parse trees."""

from __future__ import annotations

import pytest

from sessiondb import InvalidInput, QueryError
from sessiondb.core.query import (
    MAX_QUERY_CHARS,
    And,
    Not,
    Or,
    Term,
    normalize_query,
    parse_advanced,
    split_words,
)


def test_words_with_punctuation_are_literals_and_plain_words_are_tokens() -> None:
    words = {w.text: w for w in split_words("foo.bar retry C++ 東京 AND NEAR *")}
    assert words["foo.bar"].literal and words["foo.bar"].tokens == ("foo", "bar")
    assert words["C++"].literal and words["東京"].literal and words["東京"].tokens == ()
    assert not words["retry"].literal and not words["AND"].literal and not words["NEAR"].literal
    assert "*" not in words  # one punctuation character means nothing


def test_wrapping_quotes_brackets_and_sentence_punctuation_are_trimmed() -> None:
    assert [w.text for w in split_words('"retry (foo.bar) done? x:y, C++ .bashrc')] == [
        "retry",
        "foo.bar",
        "done",
        "x:y",
        "C++",
        ".bashrc",
    ]


def test_query_length_limit_and_cleaning() -> None:
    assert normalize_query("a" * MAX_QUERY_CHARS) == "a" * MAX_QUERY_CHARS
    with pytest.raises(InvalidInput, match="limit is 10000"):
        normalize_query("a" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(InvalidInput):
        normalize_query(b"bytes")
    assert normalize_query("a\x00b\ud800c") == "a b\ufffdc"


def p(query: str) -> object:
    return parse_advanced(normalize_query(query))


def test_advanced_grammar_precedence_not_and_or() -> None:
    a, b, c = Term(("a",)), Term(("b",)), Term(("c",))
    assert p("a b OR c") == Or((And((a, b)), c))  # AND binds tighter than OR
    assert p("a AND (b OR c)") == And((a, Or((b, c))))
    assert p("a -b") == p("a NOT b") == And((a, Not(b)))
    assert p("NOT b a") == And((Not(b), a))
    assert p("((a))") == a


def test_advanced_terms_phrases_prefixes_and_operators_as_words() -> None:
    assert p('"exponential backoff"') == Term(("exponential", "backoff"))
    assert p('"foo ba"*') == Term(("foo", "ba"), prefix=True)
    assert p("retr*") == Term(("retr",), prefix=True)
    assert p("foo.bar") == Term(("foo", "bar"))  # punctuation splits a term into a phrase
    assert p("and or not near") == And(tuple(Term((w,)) for w in ("and", "or", "not", "near")))
    assert p("a - b") == And((Term(("a",)), Term(("b",))))  # a lone "-" is no operator
    assert p("") is None and p("+++ -") is None


@pytest.mark.parametrize("query", ['"x', "a OR", "NOT", "()", "(a", "a)", "-a", "a OR -b"])
def test_malformed_advanced_queries_are_query_errors(query: str) -> None:
    with pytest.raises(QueryError):
        p(query)
