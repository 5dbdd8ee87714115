"""Transcripts kept whole: structure, usage, times and titles survive an import
(docs/transcripts.md, "Structured messages")."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import sessiondb
from sessiondb.core.formats import parse_time

DATA = Path(__file__).parent.parent / "data"
CLAUDE = DATA / "claude_code_session.jsonl"
SID = "7f3c2a10-5b8e-4c1d-9a2f-0e6d4b8c1a3f"


def entries() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CLAUDE.read_text().splitlines()]


def test_claude_code_session_imports_whole(store: sessiondb.Store) -> None:
    report = store.import_jsonl(CLAUDE)
    assert (report.imported, report.bad_lines) == (9, ())
    session = store.get_session(SID)
    assert session is not None
    assert session.title == "Fix the failing checkout test"  # the summary line
    lines = [e for e in entries() if e["type"] in ("user", "assistant")]
    # The transcript's own times, not the import's.
    assert session.created_at == parse_time(lines[0]["timestamp"])
    assert session.updated_at == parse_time(lines[-1]["timestamp"])
    got = store.messages(SID)
    assert [m.created_at for m in got] == [parse_time(e["timestamp"]) for e in lines]
    assert [m.role for m in got] == [
        "user",
        "assistant",
        "assistant",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "user",
        "assistant",
    ]
    # Every tool result is paired with the call it answers, which came before it.
    calls: dict[str, sessiondb.Block] = {}
    results = []
    for m in got:
        for b in m.blocks():
            if b.type == "tool_call":
                assert b.id is not None
                calls[b.id] = b
            elif b.type == "tool_result":
                results.append(b)
                assert b.call_id in calls
    assert [(r.call_id, r.is_error) for r in results] == [("toolu_01", False), ("toolu_02", True)]
    bash = calls["toolu_01"]
    assert bash.name == "Bash" and bash.input == {
        "command": "pytest tests/test_checkout.py -x",
        "description": "Run the checkout test",
    }
    assert "assert 105 == 100" in (results[0].text or "")
    # Thinking, with its signature; usage and model on each assistant entry.
    thinking = got[1].blocks()
    assert [(b.type, b.text) for b in thinking] == [
        ("thinking", "Run the test first to see the failure.")
    ]
    assert thinking[0].fields["signature"] == "EqQBCkYIBxgCKkB"
    assert got[3].meta is not None
    assert got[3].meta["model"] == "claude-sonnet-4-5-20250929"
    assert got[3].meta["response_id"] == "msg_01A"
    assert got[3].meta["usage"] == {
        "input_tokens": 3,
        "output_tokens": 96,
        "cache_read_tokens": 12034,
        "cache_write_tokens": 512,
    }
    # The image is a reference: type, size and hash, not its bytes.
    png = entries()[10]["message"]["content"][1]["source"]["data"]
    image = got[7].blocks()[1]
    assert image.type == "image" and image.fields["media_type"] == "image/png"
    assert image.fields["bytes"] == len(base64.b64decode(png))
    assert image.fields["sha256"] == hashlib.sha256(base64.b64decode(png)).hexdigest()
    assert png not in json.dumps(got[7].meta)
    # Still searchable as text, tool traffic included.
    assert [h.message.seq for h in store.search("checkout test_total")] == [5]


def test_sessions_sort_by_their_own_activity(store: sessiondb.Store, tmp_path: Path) -> None:
    old = tmp_path / "old.jsonl"
    old.write_text(
        json.dumps({"role": "user", "content": "hi", "timestamp": "2024-01-01T00:00:00Z"}) + "\n"
    )
    store.append("live", "user", "now")
    store.import_jsonl(old, session_id="old")
    assert [s.session_id for s in store.list_sessions()] == ["live", "old"]
    s = store.get_session("old")
    assert s is not None
    assert (
        s.created_at
        == s.updated_at
        == datetime.fromisoformat("2024-01-01T00:00:00+00:00").timestamp()
    )


def test_a_line_stored_by_an_older_reading_is_not_a_conflict(
    store: sessiondb.Store, tmp_path: Path
) -> None:
    """An earlier sessiondb flattened tool calls into the text: the same line, imported again,
    is already stored (kept as it was), never a bad line."""
    store.append(SID, "assistant", "[tool_use Bash] {...}", key="claude:a3")
    report = store.import_jsonl(CLAUDE)
    assert report.bad_lines == ()
    assert (report.imported, report.duplicates) == (8, 1)
    (kept,) = [m for m in store.messages(SID) if m.key == "claude:a3"]
    assert kept.content == "[tool_use Bash] {...}"


def test_a_user_key_stored_with_other_content_is_still_a_bad_line(
    store: sessiondb.Store, tmp_path: Path
) -> None:
    store.append("s", "user", "original", key="k1")
    f = tmp_path / "s.jsonl"
    line = {"session_id": "s", "seq": 1, "role": "user", "content": "edited", "key": "k1"}
    f.write_text(json.dumps({**line, "meta": None, "created_at": 1.0}) + "\n")
    report = store.import_jsonl(f)
    assert len(report.bad_lines) == 1 and "k1" in report.bad_lines[0].reason


def test_openai_chat_tool_calls_and_results(store: sessiondb.Store, tmp_path: Path) -> None:
    f = tmp_path / "chat.jsonl"
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}
    lines = [
        {"role": "user", "content": "add one"},
        {"role": "assistant", "content": None, "tool_calls": [call], "model": "gpt-x"},
        {"role": "tool", "tool_call_id": "call_1", "content": "2"},
        {
            "role": "assistant",
            "content": "It is 2.",
            "usage": {"prompt_tokens": 50, "completion_tokens": 4},
        },
    ]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    store.import_jsonl(f, session_id="oa")
    user, asked, answered, said = store.messages("oa")
    assert user.meta is None and user.blocks()[0].text == "add one"
    (b,) = asked.blocks()
    assert (b.type, b.id, b.name, b.text, b.input) == (
        "tool_call",
        "call_1",
        "add",
        '{"a":1}',
        {"a": 1},
    )
    assert asked.meta is not None and "tool_calls" not in asked.meta  # not stored twice
    (r,) = answered.blocks()
    assert (answered.role, r.type, r.call_id, r.text) == ("tool", "tool_result", "call_1", "2")
    assert said.meta == {"usage": {"input_tokens": 50, "output_tokens": 4}}


def test_openai_responses_items(store: sessiondb.Store, tmp_path: Path) -> None:
    f = tmp_path / "items.jsonl"
    lines = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Look it up."}],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_9",
            "name": "weather",
            "arguments": '{"city":"Oslo"}',
        },
        {"type": "function_call_output", "call_id": "call_9", "output": "-3 C"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "It is -3 C.", "annotations": []}],
        },
    ]
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = store.import_jsonl(f, session_id="r")
    assert report.bad_lines == ()
    got = store.messages("r")
    assert [m.role for m in got] == ["user", "assistant", "assistant", "tool", "assistant"]
    assert [(b.type, b.text) for b in got[1].blocks()] == [("thinking", "Look it up.")]
    (call,) = got[2].blocks()
    assert (call.id, call.name, call.input) == ("call_9", "weather", {"city": "Oslo"})
    assert got[2].meta is not None and got[2].meta["id"] == "fc_1"
    (result,) = got[3].blocks()
    assert (result.call_id, result.text) == ("call_9", "-3 C")
    assert got[4].content == "It is -3 C."


def test_summary_titles_a_live_session_without_changing_a_chosen_title(
    store: sessiondb.Store,
) -> None:
    store.append(SID, "user", "started by a hook")  # the agent's hook stored this live
    store.import_jsonl(CLAUDE)
    assert store.get_session(SID).title == "Fix the failing checkout test"  # type: ignore[union-attr]
    store.update_session(SID, title="mine")
    store.import_jsonl(CLAUDE)
    assert store.get_session(SID).title == "mine"  # type: ignore[union-attr]


def test_an_older_message_never_moves_activity_back(store: sessiondb.Store) -> None:
    first = store.append("s", "user", "now")
    store.append("s", "user", "backfilled", created_at=first.created_at - 3600)
    s = store.get_session("s")
    assert s is not None and s.updated_at == first.created_at
    assert s.created_at == first.created_at  # made by its first message, at that message's time
