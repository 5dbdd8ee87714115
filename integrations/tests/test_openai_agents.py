"""What openai-agents' own tests never do to a session: several processes, a killed writer."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from conftest import kill_mid_stream, run_all

import sessiondb
from integrations.workers import openai_batch, openai_writer
from sessiondb.integrations.openai_agents import SessionDBSession

SIZE = 5


def _items(db: str, sid: str) -> list[dict[str, object]]:
    async def read() -> list[dict[str, object]]:
        session = SessionDBSession(sid, db)
        try:
            return await session.get_items()
        finally:
            await session.aclose()

    return anyio.run(read)


def test_two_processes_write_one_session(db: str) -> None:
    run_all(openai_writer, [(db, "s", tag, 40, SIZE) for tag in ("a", "b")])
    items = _items(db, "s")
    assert len(items) == 2 * 40 * SIZE
    ids = [str(i["id"]) for i in items]
    assert len(set(ids)) == len(ids)  # nothing doubled
    for tag in ("a", "b"):  # each writer's items in its own order, each batch contiguous
        mine = [i for i in ids if i.startswith(tag + "-")]
        assert mine == [f"{tag}-{b}-{j}" for b in range(40) for j in range(SIZE)]
    for k in range(0, len(ids), SIZE):
        assert len({i.rsplit("-", 1)[0] for i in ids[k : k + SIZE]}) == 1
    with sessiondb.open(db) as store:
        assert [m.seq for m in store.messages("s")] == list(range(1, len(ids) + 1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_killed_writer_leaves_whole_batches_and_a_resend_doubles_nothing(
    db: str, seed: int
) -> None:
    last = kill_mid_stream(openai_writer, (db, "s", "k", 10_000, SIZE, True), seed)
    stored = _items(db, "s")
    assert len(stored) % SIZE == 0  # the batch in flight is all there or not at all
    assert len(stored) // SIZE in (last + 1, last + 2)

    async def resend() -> None:  # what a restarted agent re-sends: the batches not acked
        session = SessionDBSession("s", db, key_by_id=True)
        for b in (last, last + 1):
            await session.add_items(openai_batch("k", b, SIZE))
        await session.aclose()

    anyio.run(resend)
    ids = Counter(str(i["id"]) for i in _items(db, "s"))
    assert set(ids.values()) == {1}
    assert set(ids) == {f"k-{b}-{j}" for b in range(last + 2) for j in range(SIZE)}
