"""The pure rules of retention (sessiondb/core/prune.py): the cutoff, the selection, the batches."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sessiondb.core.prune import batches, cutoff, stale, unchanged
from sessiondb.models import Session

NOW = 1_790_000_000.0


def _s(
    sid: str = "s", *, at: float = NOW - 100, n: int = 3, source: str = "cli", rev: int = 0
) -> Session:
    return Session(sid, source, None, None, at - 50, at, None, None, n, rev)


def test_cutoff_from_an_age_or_a_time() -> None:
    assert cutoff(timedelta(days=30), NOW) == NOW - 30 * 86400
    assert cutoff(timedelta(minutes=90), NOW) == NOW - 5400
    at = datetime.fromtimestamp(NOW - 3600, timezone.utc)
    assert cutoff(at, NOW) == NOW - 3600
    naive_local = datetime.fromtimestamp(NOW - 7200)  # naive: local time, as everywhere
    assert cutoff(naive_local, NOW) == pytest.approx(NOW - 7200)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (timedelta(0), "positive age"),
        (timedelta(seconds=-1), "positive age"),
        (datetime.fromtimestamp(NOW + 60, timezone.utc), "in the future"),
        (30, "not int"),  # seconds of age or an epoch time? refused, never guessed
        (30.0, "not float"),
        (True, "not bool"),
        ("30d", "not str"),
        (None, "not NoneType"),
    ],
)
def test_cutoff_refuses_what_could_delete_the_wrong_sessions(value: object, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        cutoff(value, NOW)


def test_stale_is_last_activity_strictly_before_the_cutoff_and_of_the_source() -> None:
    c = NOW - 1000
    assert stale(_s(at=c - 0.001), c, None)
    assert not stale(_s(at=c), c, None)  # exactly at the cutoff: kept
    assert not stale(_s(at=c + 1), c, None)
    assert stale(_s(at=c - 1, source="cli"), c, "cli")
    assert not stale(_s(at=c - 1, source="gateway"), c, "cli")


def test_a_session_that_changed_since_it_was_selected_is_not_removed() -> None:
    c = NOW - 1000
    seen = _s(at=c - 10, n=5)
    assert unchanged(seen, seen, c)
    assert not unchanged(seen, _s(at=NOW, n=6), c)  # a new message
    assert not unchanged(seen, _s(at=c - 10, n=6), c)  # a message with an old created_at
    assert not unchanged(seen, _s(at=c - 10, n=5, rev=1), c)  # popped and appended again
    assert not unchanged(seen, _s(at=c + 1, n=5), c)  # ended or retitled after the cutoff


def test_batches_are_bounded_by_sessions_and_by_messages() -> None:
    many = [_s(f"s{i:03d}", n=1) for i in range(120)]
    sizes = [len(b) for b in batches(many, max_sessions=50, max_messages=5000)]
    assert sizes == [50, 50, 20]
    mixed = [_s("a", n=10), _s("b", n=10), _s("giant", n=100_000), _s("c", n=10), _s("d", n=5)]
    groups = [[s.session_id for s in b] for b in batches(mixed, max_sessions=50, max_messages=25)]
    assert groups == [["a", "b"], ["giant"], ["c", "d"]]  # a giant session goes alone
    flat = [s for b in batches(mixed, 2, 25) for s in b]
    assert flat == mixed  # every session once, in order
    assert list(batches([], 50, 5000)) == []
