"""The append plan, pure: fresh / already stored / repeated within one batch / KeyConflict."""

from __future__ import annotations

import pytest

from sessiondb import InvalidInput, KeyConflict, Message
from sessiondb.core.append import Item, items_of, plan, stored_keys


def item(content: str, key: str | None = None, role: str = "user") -> Item:
    return Item.of(role, content, key, None)


def stored(seq: int, content: str, key: str) -> Message:
    return Message("s", seq, "user", content, key, None, 1.0)


def inserted(seqs: list[int], items: list[Item]) -> list[Message]:
    return [
        Message("s", q, i.role, i.content, i.key, None, 2.0)
        for q, i in zip(seqs, items, strict=True)
    ]


def test_keyless_items_are_all_fresh() -> None:
    batch = [item("a"), item("a"), item("b")]
    p = plan("s", batch, {})
    assert p.fresh == (0, 1, 2) and not p.stored and not p.repeats
    assert [m.seq for m in p.result(inserted([1, 2, 3], batch))] == [1, 2, 3]


def test_stored_keys_are_returned_as_stored() -> None:
    batch = [item("a", "ka"), item("new", "kn")]
    old = stored(7, "a", "ka")
    p = plan("s", batch, {"ka": old})
    assert p.fresh == (1,) and p.stored == {0: old}
    out = p.result(inserted([8], [batch[1]]))
    assert out[0] is old and out[1].seq == 8


def test_a_key_repeated_in_the_batch_is_written_once() -> None:
    batch = [item("x", "k"), item("y"), item("x", "k")]
    p = plan("s", batch, {})
    assert p.fresh == (0, 1) and p.repeats == {2: 0}
    out = p.result(inserted([1, 2], [batch[0], batch[1]]))
    assert out[2] is out[0] and [m.seq for m in out] == [1, 2, 1]


def test_key_conflicts_with_the_stored_message_or_within_the_batch() -> None:
    with pytest.raises(KeyConflict) as e:
        plan("s", [item("changed", "k")], {"k": stored(3, "original", "k")})
    assert e.value.seq == 3 and "already stored as seq 3" in str(e.value)
    with pytest.raises(KeyConflict, match="twice in one batch"):
        plan("s", [item("x", "k"), item("y", "k")], {})
    with pytest.raises(KeyConflict):
        plan("s", [Item.of("user", "a", "k", {"m": 1})], {"k": stored(1, "a", "k")})


def test_lookup_keys_are_distinct_and_items_are_validated_by_position() -> None:
    assert stored_keys([item("a", "k"), item("b"), item("a", "k"), item("c", "j")]) == ["k", "j"]
    with pytest.raises(InvalidInput, match=r"items\[1\]: role"):
        items_of([{"role": "user", "content": "ok"}, {"role": "", "content": "x"}])
    with pytest.raises(InvalidInput, match=r"items\[0\]: created_at"):
        items_of([{"role": "user", "content": "ok", "created_at": "noon"}])
