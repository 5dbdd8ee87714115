"""What claude-agent-sdk's own tests never do to a SessionStore: several processes, a killed
writer, and the SDK's own retry of a batch whose first append landed but reported failure."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import anyio
import pytest
from claude_agent_sdk._internal.transcript_mirror_batcher import TranscriptMirrorBatcher
from conftest import kill_mid_stream, run_all

from integrations.workers import claude_batch, claude_key, claude_writer
from sessiondb.integrations.claude_agent_sdk import SessionDBSessionStore

SIZE = 5


def _load(db: str, sid: str) -> list[Any]:
    async def read() -> list[Any]:
        store = SessionDBSessionStore(db)
        try:
            return await store.load(claude_key(sid)) or []
        finally:
            await store.aclose()

    return anyio.run(read)


def test_two_processes_append_one_transcript(db: str) -> None:
    run_all(claude_writer, [(db, "s", tag, 40, SIZE) for tag in ("a", "b")])
    uuids = [e["uuid"] for e in _load(db, "s")]
    assert len(uuids) == len(set(uuids)) == 2 * 40 * SIZE
    for tag in ("a", "b"):
        assert [u for u in uuids if u.startswith(tag + "-")] == [
            f"{tag}-{b}-{j}" for b in range(40) for j in range(SIZE)
        ]

    async def summary() -> list[Any]:
        store = SessionDBSessionStore(db)
        try:
            return await store.list_session_summaries("proj")
        finally:
            await store.aclose()

    # The summary was folded under a conditional append: the racing writers lost no fold.
    (folded,) = anyio.run(summary)
    assert folded["session_id"] == "s" and folded["data"]["first_prompt"].startswith(
        uuids[0].split("-")[0]
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_killed_writer_and_a_resent_batch_double_nothing(db: str, seed: int) -> None:
    last = kill_mid_stream(claude_writer, (db, "s", "k", 10_000, SIZE), seed)
    stored = _load(db, "s")
    assert len(stored) % SIZE == 0  # the batch in flight is all there or not at all

    async def resend() -> None:  # the acked batch and the one in flight, sent again
        store = SessionDBSessionStore(db)
        for b in (last, last + 1):
            await store.append(claude_key("s"), claude_batch("k", b, SIZE))
        await store.aclose()

    anyio.run(resend)
    uuids = Counter(e["uuid"] for e in _load(db, "s"))
    assert set(uuids.values()) == {1}
    assert set(uuids) == {f"k-{b}-{j}" for b in range(last + 2) for j in range(SIZE)}


class LostAck(SessionDBSessionStore):
    """An append that lands, then fails (a connection reset after the commit), once."""

    failed = 0

    async def append(self, key: Any, entries: list[Any]) -> None:
        await super().append(key, entries)
        if not self.failed:
            self.failed += 1
            raise ConnectionResetError("reply lost after the commit")


@pytest.mark.anyio
async def test_the_sdks_retry_of_a_landed_batch_doubles_nothing(db: str, tmp_path: Any) -> None:
    store = LostAck(db)
    errors: list[Any] = []

    async def on_error(key: Any, message: str) -> None:
        errors.append((key, message))

    projects = str(tmp_path / "projects")
    batcher = TranscriptMirrorBatcher(store=store, projects_dir=projects, on_error=on_error)
    path = os.path.join(projects, "proj", "s.jsonl")
    batcher.enqueue(path, claude_batch("r", 0, SIZE))
    batcher.enqueue(path, claude_batch("r", 1, SIZE))
    await batcher.flush()
    assert store.failed == 1 and errors == []  # the SDK retried and the retry succeeded
    loaded = await store.load(claude_key("s"))
    await store.aclose()
    assert [e["uuid"] for e in loaded or []] == [
        f"r-{b}-{j}" for b in range(2) for j in range(SIZE)
    ]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
