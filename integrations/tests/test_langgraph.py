"""LangGraph's published checkpointer conformance suite (langgraph-checkpoint-conformance, pinned
in integrations/requirements-langgraph.txt) against SessionDBSaver, then what it never tests:
several processes, a killed writer and a re-sent checkpoint."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import kill_mid_stream, run_all
from langgraph.checkpoint.conformance import checkpointer_test, validate

from integrations.workers import (
    langgraph_checkpoint,
    langgraph_writer,
    langgraph_writer_or_pruner,
)
from sessiondb.integrations.langgraph import SessionDBSaver


@pytest.mark.anyio
async def test_langgraph_conformance(tmp_path: Any) -> None:
    made = 0

    @checkpointer_test(name="SessionDBSaver")
    async def saver() -> Any:
        nonlocal made
        made += 1
        yield SessionDBSaver(str(tmp_path / f"conf-{made}.db"))

    report = await validate(saver)
    report.print_report()
    assert report.passed_all_base()
    assert report.passed_all() if hasattr(report, "passed_all") else True


def _thread(db: str, thread_id: str) -> list[Any]:
    return list(SessionDBSaver(db).list({"configurable": {"thread_id": thread_id}}))


def test_two_processes_checkpoint_one_thread(db: str) -> None:
    run_all(langgraph_writer, [(db, "t", ns, 30) for ns in ("", "child")])
    for ns in ("", "child"):
        got = [c for c in _thread(db, "t") if c.config["configurable"]["checkpoint_ns"] == ns]
        assert len(got) == 30
        assert [c.checkpoint["channel_values"]["n"] for c in got] == list(range(29, -1, -1))
        assert [len(c.pending_writes) for c in got] == [1] * 30


@pytest.mark.parametrize("seed", [1, 2])
def test_a_killed_writer_and_a_resent_checkpoint_double_nothing(db: str, seed: int) -> None:
    last = kill_mid_stream(langgraph_writer, (db, "t", "", 10_000), seed)
    saver = SessionDBSaver(db)
    for i in (last, last + 1):  # re-sent: the acked step and the one in flight
        config, checkpoint, versions = langgraph_checkpoint("t", "", i)
        saved = saver.put(config, checkpoint, {"step": i}, versions)
        saver.put_writes(saved, [("n", i)], f"task-{i}")
    got = _thread(db, "t")
    assert [c.checkpoint["channel_values"]["n"] for c in got] == list(range(last + 1, -1, -1))
    assert all(len(c.pending_writes) == 1 for c in got)
    latest = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
    assert latest is not None and latest.checkpoint["channel_values"]["n"] == last + 1


def test_a_prune_beside_a_writer_loses_no_checkpoint_it_did_not_judge(db: str) -> None:
    """A prune rewrites the namespace in one transaction, on the condition that nothing was
    appended since it read it (else it reads again): a checkpoint put meanwhile is never
    dropped unjudged, and every checkpoint left has its values and its write."""
    run_all(langgraph_writer_or_pruner, [(db, "write", 60), (db, "prune", 40)])
    left = _thread(db, "t")
    assert left and left[0].checkpoint["channel_values"]["n"] == 59  # the newest survived
    for c in left:
        assert c.checkpoint["channel_values"]["n"] == c.metadata["step"]
        assert [w[2] for w in c.pending_writes] == [c.metadata["step"]]
    SessionDBSaver(db).prune(["t"])
    assert [c.metadata["step"] for c in _thread(db, "t")] == [59]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
