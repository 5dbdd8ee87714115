"""``models.new_message``: the store's fast way to build a ``Message`` makes exactly what the
dataclass's own constructor makes."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from sessiondb.models import Message, new_message

VALUES = [
    ("s-1", 1, "user", "hello", None, None, 1.5),
    ("s-2", 42, "assistant", "", "k:1", {"usage": {"input_tokens": 3}, "tags": [1, "x"]}, 0.0),
]


@pytest.mark.parametrize("values", VALUES)
def test_new_message_is_the_dataclass(values: tuple) -> None:
    made, built = new_message(*values), Message(*values)
    assert type(made) is Message
    assert made == built
    if values[5] is None:  # a dict meta makes a Message unhashable, either way
        assert hash(made) == hash(built)
    assert repr(made) == repr(built)
    assert dataclasses.asdict(made) == dataclasses.asdict(built)
    assert [f.name for f in dataclasses.fields(made)] == list(vars(made))  # every field, in order
    assert pickle.loads(pickle.dumps(made)) == built
    assert copy.deepcopy(made) == built
    assert dataclasses.replace(made, seq=7) == dataclasses.replace(built, seq=7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.seq = 2  # type: ignore[misc]
    assert made.blocks() == built.blocks()
