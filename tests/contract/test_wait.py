"""``wait_for_messages``: a bounded wait for new messages (core/wait.py), on every backend and
API; a waiting process is woken by another process's append (docs/adr/0017-wait-for-messages.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import sessiondb
from sessiondb import InvalidInput
from tests._workers_wait import LONG, waited_until_woken
from tests.conftest import new_location

#: A listener's timeout in the multi-process tests: far above any wake-up on a loaded machine,
#: so a True returned in under half of it was a wake-up, not the end of the wait.


def test_false_when_the_timeout_passes_with_nothing_new(store: sessiondb.Store) -> None:
    store.append("s", "user", "one")
    started = time.monotonic()
    assert store.wait_for_messages("s", after=1, timeout=0.3) is False
    assert time.monotonic() - started >= 0.3
    assert store.wait_for_messages(None, after=1, timeout=0.2) is False
    assert store.wait_for_messages("nobody", after=0, timeout=0.1) is False
    assert store.wait_for_messages("s", after=1, timeout=0) is False


def test_true_at_once_when_the_position_is_not_the_stores(store: sessiondb.Store) -> None:
    store.append("s", "user", "one")
    store.append("t", "user", "two")
    started = time.monotonic()
    assert store.wait_for_messages("s", after=0, timeout=LONG) is True
    assert store.wait_for_messages(None, after=1, timeout=LONG) is True
    store.pop_message("s")  # removed: the last seq is no longer the caller's either
    assert store.wait_for_messages("s", after=1, timeout=LONG) is True
    assert time.monotonic() - started < LONG / 2


def test_with_the_revision_a_removal_and_an_append_that_restore_the_last_seq_are_seen(
    store: sessiondb.Store,
) -> None:
    store.append("s", "user", "one")
    store.append("s", "user", "two")
    before = store.get_session("s")
    assert before is not None
    store.pop_message("s")
    store.append("s", "user", "three")  # seq 2 again: the last seq alone cannot tell
    assert store.wait_for_messages("s", after=2, timeout=0.2) is False
    started = time.monotonic()
    assert store.wait_for_messages("s", after=2, revision=before.revision, timeout=LONG) is True
    assert time.monotonic() - started < LONG / 2
    now = store.get_session("s")
    assert now is not None and now.revision != before.revision
    assert store.wait_for_messages("s", after=2, revision=now.revision, timeout=0.2) is False
    assert store.wait_for_messages("s", after=1, revision=now.revision, timeout=LONG) is True
    # A session that does not exist reads as revision 0 with no messages.
    assert store.wait_for_messages("nobody", after=0, revision=0, timeout=0.1) is False
    assert store.wait_for_messages("nobody", after=0, revision=1, timeout=LONG) is True


def test_arguments_are_checked(store: sessiondb.Store) -> None:
    with pytest.raises(TypeError):
        store.wait_for_messages("s", after=0)  # type: ignore[call-arg]  # timeout is mandatory
    for bad in (-1, float("inf"), float("nan"), 3600.5, True, "1", None):
        with pytest.raises(InvalidInput):
            store.wait_for_messages("s", after=0, timeout=bad)  # type: ignore[arg-type]
    for after in (-1, 1.5, None):
        with pytest.raises(InvalidInput):
            store.wait_for_messages("s", after=after, timeout=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        store.wait_for_messages("bad\x00id", after=0, timeout=0)
    for revision in (-1, 1.5, "2", True):
        with pytest.raises(InvalidInput):
            store.wait_for_messages("s", after=0, timeout=0, revision=revision)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="session_id"):
        store.wait_for_messages(None, after=0, timeout=0, revision=0)


@pytest.mark.parametrize("session_id", ["s", None], ids=["session", "store"])
def test_a_waiting_process_is_woken_by_another_process_append(
    backend: str, tmp_path: Path, session_id: str | None
) -> None:
    waited = waited_until_woken(new_location(backend, tmp_path), session_id)
    assert waited < LONG / 2  # woken by the append, not by its timeout
