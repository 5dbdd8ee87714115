"""The race test's checker must find what it is there to find."""

from __future__ import annotations

from tests._workers_lease import check_race_log


def test_clean_log_with_a_takeover() -> None:
    rep = check_race_log("E 1 1.0 0\nX 1 2.0\nE 2 2.5 0\nK 2 3.0\nE 3 3.1 2\nX 3 3.5\n")
    assert (rep.cycles, rep.kills, rep.takeovers) == (2, 1, 1)
    assert rep.overlaps == [] and rep.problems == []
    assert [round(x, 3) for x in rep.takeover_latencies] == [0.1]


def test_overlap_is_found() -> None:
    rep = check_race_log("E 1 1.0 0\nE 2 1.5 0\nX 1 2.0\nX 2 3.0\n")
    assert len(rep.overlaps) == 1 and "pid 2 entered at 1.5" in rep.overlaps[0]


def test_overlap_with_a_killed_holder_is_found() -> None:
    rep = check_race_log("E 1 1.0 0\nE 2 1.5 0\nK 1 2.0\nX 2 3.0\n")
    assert rep.overlaps and any("never taken over" in p for p in rep.problems)


def test_takeover_of_a_live_holder_and_garbage_are_problems() -> None:
    rep = check_race_log("E 1 1.0 0\nX 1 1.2\nE 2 2.0 1\nX 2 2.5\nbogus\n")
    assert any("taken over while alive" in p for p in rep.problems)
    assert any("malformed" in p for p in rep.problems)


def test_a_taker_killed_before_it_logged_still_took_over() -> None:
    """Holder 1 killed; holder 2 takes over and is killed before writing its "E" line (the
    watcher saw it in the record): 1 was taken over, and 2 is no overlap."""
    rep = check_race_log("E 1 1.0 0\nK 1 1.1\nK 2 1.3\nE 3 1.4 2\nX 3 1.5\n")
    assert rep.problems == [] and rep.overlaps == []
    assert rep.takeovers == 2 and rep.kills == 2
