"""Appending, the backend-neutral part: validated items and the plan that decides, per item, what
an append does with it — pure functions, no database.

A batch (``append`` is a batch of one) goes through :func:`plan` inside the write transaction,
once the keys of the batch that are already stored have been looked up:

* an item without a key, or with a key neither stored nor seen earlier in the batch: **fresh**,
  inserted with the next seq;
* a key already stored with the same role, content and meta: **already stored**, the stored
  message is returned and nothing is written (a retry after a timeout or a crash);
* a key repeated within the batch with the same role, content and meta: **repeated**, the first
  occurrence's message is returned;
* a key stored, or repeated in the batch, with a different role, content or meta:
  :class:`~sessiondb.errors.KeyConflict`, and the whole batch writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput, KeyConflict
from ..models import Message
from . import validate as v

ITEM_FIELDS = frozenset({"role", "content", "key", "meta", "created_at"})


class Item:
    """A validated message about to be appended; ``meta`` is its canonical JSON text."""

    __slots__ = ("content", "created_at", "key", "meta", "role")

    def __init__(
        self,
        role: str,
        content: str,
        key: str | None,
        meta: str | None,
        created_at: float | None = None,
    ) -> None:
        self.role = role
        self.content = content
        self.key = key
        self.meta = meta
        self.created_at = created_at  # None: the time of the append

    @classmethod
    def of(
        cls, role: object, content: object, key: object, meta: object, created_at: object = None
    ) -> Item:
        text = v.content(content)
        meta_text = None if meta is None else v.meta(meta)
        v.message_size(text, meta_text)
        return cls(
            v.role(role),
            text,
            None if key is None else v.key(key),
            meta_text,
            None if created_at is None else v.timestamp(created_at, "created_at"),
        )

    def same_as(self, m: Message) -> bool:
        """Does this item say what the stored message ``m`` says (role, content, meta)?"""
        return (m.role, m.content, m.meta) == (self.role, self.content, v.load_meta(self.meta))


def items_of(items: Iterable[Mapping[str, Any]]) -> list[Item]:
    """Validate the dicts given to ``append_many``; errors name the item (``items[3]: …``)."""
    out: list[Item] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidInput(f"items[{i}] must be a dict, not {type(item).__name__}")
        extra = set(item) - ITEM_FIELDS
        if extra:
            raise InvalidInput(
                f"items[{i}] has unknown field(s) {sorted(extra)};"
                " allowed: role, content, key, meta, created_at"
            )
        if "role" not in item or "content" not in item:
            raise InvalidInput(f"items[{i}] needs both 'role' and 'content'")
        try:
            out.append(
                Item.of(
                    item["role"],
                    item["content"],
                    item.get("key"),
                    item.get("meta"),
                    item.get("created_at"),
                )
            )
        except InvalidInput as e:
            raise InvalidInput(f"items[{i}]: {e}") from None
    return out


def stored_keys(items: Sequence[Item]) -> list[str]:
    """The distinct keys of a batch, to look up before planning."""
    if len(items) == 1:
        return [] if items[0].key is None else [items[0].key]
    return list(dict.fromkeys(item.key for item in items if item.key is not None))


@dataclass(frozen=True)
class Plan:
    """What an append does with each item of its batch (module docstring).

    ``fresh``: indexes of the items to insert, in batch order; ``stored``: item index -> the
    message already stored under its key; ``repeats``: item index -> index of the first item of
    the batch with the same key.
    """

    fresh: tuple[int, ...]
    stored: Mapping[int, Message]
    repeats: Mapping[int, int]

    def result(self, inserted: Sequence[Message]) -> list[Message]:
        """The message for every item of the batch, given the fresh items as inserted."""
        made = dict(zip(self.fresh, inserted, strict=True))
        made.update(self.stored)
        # A repeat's first occurrence is always fresh: a stored key never enters first_of_key.
        made.update({i: made[first] for i, first in self.repeats.items()})
        return [made[i] for i in range(len(made))]


def plan(session_id: str, items: Sequence[Item], stored: Mapping[str, Message]) -> Plan:
    """Decide fresh / already stored / repeated for each item; raise ``KeyConflict`` on a key
    whose role, content or meta differ (from the stored message, or within the batch)."""
    if len(items) == 1 and items[0].key is None:
        return Plan((0,), {}, {})  # the common case of an agent loop
    fresh: list[int] = []
    found: dict[int, Message] = {}
    repeats: dict[int, int] = {}
    first_of_key: dict[str, int] = {}
    for i, item in enumerate(items):
        k = item.key
        if k is None:
            fresh.append(i)
            continue
        earlier = stored.get(k)
        if earlier is not None:
            if not item.same_as(earlier):
                raise KeyConflict(session_id, k, earlier.seq)
            found[i] = earlier
        elif k in first_of_key:
            first = items[first_of_key[k]]
            if (first.role, first.content, first.meta) != (item.role, item.content, item.meta):
                raise KeyConflict(session_id, k, None)
            repeats[i] = first_of_key[k]
        else:
            first_of_key[k] = i
            fresh.append(i)
    return Plan(tuple(fresh), found, repeats)


__all__ = ["ITEM_FIELDS", "Item", "Plan", "items_of", "plan", "stored_keys"]
