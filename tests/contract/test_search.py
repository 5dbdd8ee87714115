"""Search over the Store contract: the plain mode's rules, the advanced grammar, filters,
ranking, paging, context and snippets (docs/search.md), on every backend."""

from __future__ import annotations

import pytest

import sessiondb
from sessiondb import InvalidInput, QueryError
from sessiondb.core.query import MAX_QUERY_CHARS
from sessiondb.core.terms import MAX_INDEXED_WORDS

DOCS = {
    "code": [
        ("user", "please rename foo.bar to foo_baz before the release"),
        ("assistant", "the key x:y is read by chat-send in /usr/local/bin/agent"),
        ("user", "mail user@example.com about the C++ build and the C# port"),
        ("assistant", "Café naïve résumé; we retry with backoff"),
        ("tool", "東京都に住んでいる。データベース検索"),
    ],
    "other": [
        ("user", "foo and bar are separate words here, x and y too"),
        ("assistant", "nothing else"),
    ],
}


@pytest.fixture()
def docs(store: sessiondb.Store) -> sessiondb.Store:
    for sid, msgs in DOCS.items():
        for role, content in msgs:
            store.append(sid, role, content)
    return store


def where(hits: list[sessiondb.Hit]) -> list[tuple[str, int]]:
    return [(h.message.session_id, h.message.seq) for h in hits]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("foo.bar", [("code", 1)]),
        ("x:y", [("code", 2)]),
        ("chat-send", [("code", 2)]),
        ("/usr/local/bin", [("code", 2)]),
        ("user@example.com", [("code", 3)]),
        ("C++", [("code", 3)]),
        ("C#", [("code", 3)]),
        ("foo_baz", [("code", 1)]),
        ("cafe", [("code", 4)]),
        ("RESUME", [("code", 4)]),
        ("東京", [("code", 5)]),
        ("東京都", [("code", 5)]),
        ("検索", [("code", 5)]),
        ("データベース", [("code", 5)]),
        ('"retry', [("code", 4)]),
        ("retry backoff", [("code", 4)]),
        ("retry nothing", []),
        ("AND", [("code", 3), ("other", 1)]),
    ],
)
def test_plain_queries_find_the_messages_containing_their_words(
    docs: sessiondb.Store, query: str, expected: list[tuple[str, int]]
) -> None:
    store = docs
    assert sorted(where(store.search(query))) == expected


def test_punctuated_word_does_not_match_its_parts_apart(docs: sessiondb.Store) -> None:
    store = docs
    # "other" holds foo, bar, x and y as separate words: a literal needs them joined.
    assert where(store.search("foo.bar")) == [("code", 1)]
    assert sorted(where(store.search("foo bar"))) == [("code", 1), ("other", 1)]


def test_operators_and_syntax_typed_in_plain_mode_are_words(docs: sessiondb.Store) -> None:
    store = docs
    for query in ["NEAR(foo bar)", 'foo" OR "bar', "foo AND bar*", "{content}: x", "(", '"']:
        store.search(query)  # must not raise
    assert store.search("foo OR nothing") == []  # OR is a word: no message holds all three


def test_snippet_marks_matches_with_configurable_markers(docs: sessiondb.Store) -> None:
    store = docs
    [hit] = store.search("foo.bar")
    assert "[foo.bar]" in hit.snippet
    [hit] = store.search("cafe retry", markers=("<<", ">>"))
    assert "<<Café>>" in hit.snippet and "<<retry>>" in hit.snippet


def test_advanced_mode_phrases_prefix_boolean_groups_and_negation(docs: sessiondb.Store) -> None:
    store = docs
    assert where(store.search('"retry with"', mode="fts")) == [("code", 4)]
    assert where(store.search("backof*", mode="fts")) == [("code", 4)]
    assert sorted(where(store.search("cafe OR chat", mode="fts"))) == [("code", 2), ("code", 4)]
    assert where(store.search("retry NOT backoff", mode="fts")) == []
    assert where(store.search("retry -backoff", mode="fts")) == []
    assert where(store.search("retry AND -nothing", mode="fts")) == [("code", 4)]
    assert sorted(where(store.search("(foo OR mail) -release", mode="fts"))) == [
        ("code", 3),
        ("other", 1),
    ]
    assert where(store.search("foo.bar", mode="fts")) == [("code", 1)]  # the phrase "foo bar"
    assert where(store.search("RESUM*", mode="fts")) == [("code", 4)]  # folded like plain mode
    # lower-case operators are words; a lone symbol is skipped; nothing left: no hits
    assert store.search("retry and backoff", mode="fts") == []
    assert store.search("+++", mode="fts") == []


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ('"unbalanced', "a quote is never closed"),
        ("foo AND", '"AND" needs a search term after it'),
        ("NEAR(", 'a "(" is never closed'),
        ("(foo", 'a "(" is never closed'),
        ("foo)", 'a ")" has no "(" before it'),
        ("AND", '"AND" needs a search term before it'),
        ("OR foo", '"OR" needs a search term before it'),
        ("()", "empty parentheses"),
        ("-foo", "must exclude from something"),
        ("foo OR -bar", "must exclude from something"),
        ('"..."', "holds no letters or digits"),
        ("(" * 17 + "a" + ")" * 17, "nested more than 16 deep"),
        (" ".join(f"w{i}" for i in range(65)), "more than 64 search terms"),
    ],
)
def test_malformed_advanced_queries_raise_query_error_with_reason(
    docs: sessiondb.Store, query: str, reason: str
) -> None:
    with pytest.raises(QueryError, match="malformed search query") as info:
        docs.search(query, mode="fts")
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_filters_by_session_source_role_and_time(store: sessiondb.Store) -> None:
    st = store
    st.create_session("a", source="cli")
    st.create_session("b", source="gateway")
    for i in range(6):
        st.append("a" if i % 2 else "b", "user" if i < 3 else "assistant", f"deploy step {i}")
    everything = st.search("deploy", limit=100)
    assert len(everything) == 6
    assert {h.message.session_id for h in st.search("deploy", session_id="a")} == {"a"}
    assert {h.message.session_id for h in st.search("deploy", source="gateway")} == {"b"}
    assert {h.message.role for h in st.search("deploy", role="assistant")} == {"assistant"}
    stamps = sorted(h.message.created_at for h in everything)
    mid = stamps[3]
    assert all(h.message.created_at >= mid for h in st.search("deploy", since=mid))
    assert len(st.search("deploy", since=mid)) == 3
    assert len(st.search("deploy", until=mid)) == 3
    assert st.search("deploy", session_id="missing") == []


def test_ranking_bm25_then_newest_first(store: sessiondb.Store) -> None:
    st = store
    st.append("s", "user", "retry mentioned once among many other filler words here today")
    st.append("s", "user", "retry retry retry policy")
    st.append("s", "user", "same text for a tie")
    st.append("s", "user", "same text for a tie")
    assert where(st.search("retry")) == [("s", 2), ("s", 1)]
    hits = st.search("tie")
    assert where(hits) == [("s", 4), ("s", 3)] and hits[0].score == hits[1].score
    assert where(st.search("tie", limit=1, offset=1)) == [("s", 3)]


def test_context_comes_from_the_same_session_only(store: sessiondb.Store) -> None:
    st = store
    for i in range(1, 11):  # interleaved: neighbours by id belong to the other session
        st.append("left", "user", f"left {i} needle" if i == 5 else f"left {i}")
        st.append("right", "user", f"right {i}")
    [hit] = st.search("needle", context=3)
    assert [m.seq for m in hit.before] == [2, 3, 4]
    assert [m.seq for m in hit.after] == [6, 7, 8]
    assert {m.session_id for m in hit.before + hit.after} == {"left"}
    st.append("edge", "user", "needle2 at start")
    st.append("edge", "user", "after")
    [edge] = st.search("needle2", context=5)
    assert edge.before == () and [m.content for m in edge.after] == ["after"]


def test_bad_arguments_are_invalid_input(docs: sessiondb.Store) -> None:
    store = docs
    for kwargs in ({"limit": -1}, {"context": -1}, {"offset": -2}, {"mode": "regex"}):
        with pytest.raises(InvalidInput):
            store.search("foo", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        store.search("x" * (MAX_QUERY_CHARS + 1))


def test_short_cjk_words_are_found_among_many_plain_messages(store: sessiondb.Store) -> None:
    st = store
    for i in range(300):
        st.append(f"s{i % 3}", "user", f"filler message {i} about nothing")
    st.append("s1", "user", "会議は東京で")
    st.append("s2", "user", "京")
    assert where(st.search("東京")) == [("s1", 101)]
    assert where(st.search("京", session_id="s2")) == [("s2", 101)]
    assert sorted(where(st.search("京"))) == [("s1", 101), ("s2", 101)]
    assert st.search("東京", session_id="s0") == []


def test_long_punctuated_words_match_exactly(store: sessiondb.Store) -> None:
    st = store
    st.append("s", "user", "run /usr/local/hitor/barbar now")
    st.append("s", "user", "usr local hitor barbar as words, and /usr/local/hitor/other")
    for i in range(30):
        st.append("s", "user", f"/usr/local/bin/tool{i} and https://example.com/x/{i}")
    st.append("s", "user", "see https://example.com/docs/retry-policy.html")
    assert where(st.search("/usr/local/hitor/barbar")) == [("s", 1)]
    assert where(st.search("https://example.com/docs/retry-policy.html")) == [("s", 33)]
    assert len(st.search("/usr/local/bin", limit=100)) == 30


def test_the_searchable_prefix_is_the_same_rule_on_every_backend(store: sessiondb.Store) -> None:
    """docs/search.md, "The searchable prefix": each word and phrase among a message's first
    MAX_INDEXED_WORDS words is found on every backend; a message of more than 1 MiB of distinct
    tokens (hashes in tool output) is stored whole and its first words are found."""
    st = store
    filler = " ".join(f"w{i}x" for i in range(MAX_INDEXED_WORDS - 3))
    long = f"alpha {filler} last.word"  # "last" and "word" are words 16 382 and 16 383
    st.append("s", "tool", long)
    assert where(st.search("alpha")) == [("s", 1)]
    assert where(st.search("last.word")) == [("s", 1)]
    assert where(st.search(f'"w{MAX_INDEXED_WORDS - 4}x last"', mode="fts")) == [("s", 1)]
    hashes = " ".join(f"{i:08x}{'deadbeef' * 3}" for i in range(40_000))  # 1.3 MB, all distinct
    st.append("s", "tool", f"needle {hashes}")
    assert where(st.search("needle")) == [("s", 2)]
    assert st.messages("s")[1].content == f"needle {hashes}"
