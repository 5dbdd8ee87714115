"""The search plan's shortcuts on PostgreSQL give what the plain plan gives (docs/postgres.md,
"Search"): the bounded newest-first walk for common words finds exactly the newest matches the
index finds, and the literal re-check (a regular expression spelling ASCII letters both ways)
matches what SQLite's LIKE matches."""

from __future__ import annotations

from typing import Any

import pytest

import sessiondb
from sessiondb.postgres import search
from tests import pg


@pytest.fixture(scope="module")
def common() -> Any:
    with sessiondb.open(pg.new_url()) as store:
        items = []
        for i in range(6000):
            words = ["alpha"] + (["beta"] if i % 3 else []) + (["gamma"] if i % 2 else [])
            items.append({"role": "user", "content": f"{' '.join(words)} message {i}"})
        store.append_many("s", items)
        with store.backend.connections.write() as conn:
            conn.execute("ANALYZE messages")  # the words' shares, as autovacuum would find them
        yield store


def _hits(store: Any, query: str) -> list[int]:
    return [h.message.seq for h in store.search(query, limit=50)]


@pytest.mark.parametrize("query", ["alpha", "alpha beta", "beta gamma", "alpha gamma message"])
def test_the_walk_finds_the_newest_matches_the_index_finds(
    common: Any, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    walked: list[bool] = []
    real = search._walk

    def spy(*args: Any) -> list[int] | None:
        out = real(*args)
        walked.append(out is not None)
        return out

    monkeypatch.setattr(search, "_walk", spy)
    by_walk = _hits(common, query)
    assert walked == [True]  # common enough: the walk found the whole budget
    monkeypatch.setattr(search, "WALK_ROWS", 0)  # the index's way only
    assert _hits(common, query) == by_walk
    assert len(by_walk) == 50


def test_older_matches_come_newest_first_window_by_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A punctuated word whose index word is common: the budget of candidates holds none of its
    literal matches, so they are all older matches (search._older), looked for in growing
    windows of ids — exactly every message holding it, newest first, and no more windows than
    it takes to find ``need`` of them."""
    with sessiondb.open(pg.new_url()) as store:
        items = []
        for i in range(3000):
            literal = i % 97 == 5 and i < 2500  # none among the newest 500
            items.append({"role": "user", "content": f"alpha{'++' if literal else ''} row {i}"})
        store.append_many("s", items)
        every = [i + 1 for i in range(2500) if i % 97 == 5][::-1]
        windows: list[str] = []
        real = search._older

        def spy(conn: Any, *args: Any) -> Any:
            class Counting:
                def execute(self, query: str, params: Any = None) -> Any:
                    if "m.id >= " in query:
                        windows.append(query)
                    return conn.execute(query, params)

            return real(Counting(), *args)

        monkeypatch.setattr(search, "CANDIDATE_BUDGET", 100)
        monkeypatch.setattr(search, "OLDER_WINDOW", 50)
        monkeypatch.setattr(search, "_older", spy)
        assert _hits(store, "alpha++") == every[:50]  # all 26, newest first
        # below id 2 901 (the budget's oldest): 50, 200, 800 ids, then the rest down to id 1
        assert len(windows) == 4
        windows.clear()
        assert [h.message.seq for h in store.search("alpha++", limit=3)] == every[:3]
        assert len(windows) == 3  # the newest match, 2 431, is in the third window


def test_a_walk_that_falls_short_gives_way_to_the_index(
    common: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "WALK_MARGIN", 0.1)  # too few rows read: fewer than the budget
    short = _hits(common, "beta gamma")
    monkeypatch.setattr(search, "WALK_ROWS", 0)
    assert short == _hits(common, "beta gamma")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_literal_recheck_is_ascii_case_insensitive_only(backend: str, tmp_path: Any) -> None:
    where = str(tmp_path / "s.db") if backend == "sqlite" else pg.new_url()
    with sessiondb.open(where) as st:
        texts = [
            "build ZACOR++ now",  # 1: ASCII case differs: found
            "build zacor+ now",  # 2: not the word
            "mail Toka@Vuvu.org",  # 3
            "mail toka@vuvuXorg",  # 4: the dot is a dot, not any character
            "path a\\b:c here",  # 5
            "ÉCOLE.fr vs école.fr",  # 6: only the second spelling holds école.fr
            "東京.jp",  # 7
        ]
        for t in texts:
            st.append("s", "user", t)
        seqs = lambda q: sorted(h.message.seq for h in st.search(q))  # noqa: E731
        assert seqs("zacor++") == [1]
        assert seqs("TOKA@vuvu.ORG") == [3]
        assert seqs("a\\b:c") == [5]
        assert seqs("école.fr") == [6]
        assert seqs("東京.jp") == [7]
