"""Unit tests for transcript line formats: pure parsing, no store involved."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessiondb.core.formats import (
    Format,
    Header,
    LineError,
    LineParser,
    PlainFormat,
    Record,
    Title,
    formats,
    parse_time,
    register_format,
)
from sessiondb.core.reader import iter_raw_lines
from sessiondb.models import BadLine


def parse_lines(lines: list[bytes], *, max_bytes: int = 1024) -> list[Any]:
    parser = LineParser("f.jsonl", max_bytes=max_bytes)
    data = b"".join(lines)
    return [parser.parse(r) for r in iter_raw_lines(io.BytesIO(data), max_bytes=max_bytes)]


def spans(rec: Any) -> list[tuple[str, str | None]]:
    """Each block's type and the part of the content its span names."""
    out: list[tuple[str, str | None]] = []
    for b in rec.meta["blocks"]:
        span = b.get("span")
        out.append((b["type"], None if span is None else rec.content[span[0] : span[1]]))
    return out


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


# -- plain / OpenAI -------------------------------------------------------------------------------


def test_plain_string_content() -> None:
    (rec,) = parse_lines([j({"role": "user", "content": "hello"})])
    assert isinstance(rec, Record)
    assert (rec.role, rec.content, rec.meta, rec.created_at) == ("user", "hello", None, None)
    assert rec.key is not None and rec.key.startswith("jsonl:1:")


def test_plain_openai_parts_and_null_content() -> None:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]
    tool_call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}
    text_only = {"role": "user", "content": [{"type": "text", "text": "a"}, "b"]}
    nothing = {"role": "assistant", "content": None}
    a, b, c, d = parse_lines(
        [j({"role": "user", "content": parts}), j(tool_call), j(text_only), j(nothing)]
    )
    assert isinstance(a, Record) and a.content == "look\n[image]"
    image = {"type": "image", "media_type": None, "bytes": None, "sha256": None, "url": "x"}
    # the image is kept as a reference, not lost
    assert a.meta == {"blocks": [{"type": "text", "span": [0, 4]}, image]}
    assert isinstance(b, Record) and b.content == "[tool_call ?] null"
    assert b.meta == {"blocks": [{"type": "tool_call", "id": "c1", "name": "?", "span": [14, 18]}]}
    assert spans(b) == [("tool_call", "null")]
    assert isinstance(c, Record) and c.content == "a\nb"
    assert spans(c) == [("text", "a"), ("text", "b")]
    assert isinstance(d, Record) and d.content == "" and d.meta is None


def test_plain_timestamp_and_session_hint() -> None:
    (rec,) = parse_lines(
        [
            j(
                {
                    "role": "user",
                    "content": "x",
                    "timestamp": "2025-01-02T03:04:05Z",
                    "session_id": "s",
                }
            )
        ]
    )
    assert isinstance(rec, Record)
    assert rec.created_at == parse_time("2025-01-02T03:04:05+00:00") == 1735787045.0
    assert rec.session_id == "s" and rec.meta is None


def test_key_depends_on_line_and_bytes_not_path() -> None:
    line = j({"role": "user", "content": "same"})
    a = LineParser("/a/x.jsonl").parse(next(iter_raw_lines(io.BytesIO(line))))
    b = LineParser("/b/y.jsonl").parse(next(iter_raw_lines(io.BytesIO(line))))
    assert isinstance(a, Record) and isinstance(b, Record) and a.key == b.key
    r1, r2, r3 = parse_lines([line, line, j({"role": "user", "content": "other"})])
    assert isinstance(r1, Record) and isinstance(r2, Record) and isinstance(r3, Record)
    assert len({r1.key, r2.key, r3.key}) == 3  # repeated content is still two messages
    # A grown file keeps the keys of the lines it already had.
    grown = parse_lines([line, line, j({"role": "user", "content": "other"}), line])
    assert [getattr(r, "key", None) for r in grown[:3]] == [r1.key, r2.key, r3.key]


# -- bad lines ------------------------------------------------------------------------------------


def test_bad_lines_are_reported_with_numbers_and_reasons() -> None:
    lines = [
        j({"role": "user", "content": "ok"}),
        b"{not json\n",
        j({"content": "no role"}),
        b"\xff\xfe\x00garbage\x00\n",
        b"\n",
        j([1, 2]),
        b"x" * 5000 + b"\n",
        j({"role": "user"}),
        j({"role": "user", "content": 5}),
        b'{"role": "user", "content": "\\ud800"}\n',
        j({"role": "user", "content": "last"})[:-1],  # no trailing newline: still read
    ]
    out = parse_lines(lines)
    bad = {o.line: o.reason for o in out if isinstance(o, BadLine)}
    assert set(bad) == {2, 3, 4, 6, 7, 8, 9, 10}
    assert "invalid JSON" in bad[2]
    assert bad[3] == "missing role"
    assert "UTF-8" in bad[4]
    assert bad[6] == "not a JSON object"
    assert "longer than 1024 bytes" in bad[7]
    assert bad[8] == "missing content"
    assert "surrogate" in bad[10]
    assert out[4] is None  # blank line: neither message nor bad
    assert isinstance(out[10], Record) and out[10].content == "last"
    assert {o.file for o in out if isinstance(o, BadLine)} == {"f.jsonl"}


def test_first_line_unrecognised_is_missing_role() -> None:
    (bad,) = parse_lines([j({"hello": 1})])
    assert isinstance(bad, BadLine) and "missing role" in bad.reason


def test_oversize_line_is_skipped_without_losing_the_next_line() -> None:
    big = b'{"role":"user","content":"' + b"a" * (3 * 1024 * 1024) + b'"}\n'
    data = io.BytesIO(big + j({"role": "user", "content": "after"}))
    raws = list(iter_raw_lines(data, max_bytes=1000))
    assert [(r.number, r.data is None) for r in raws] == [(1, True), (2, False)]
    assert raws[0].end == len(big)


def test_stop_at_limits_reading() -> None:
    first = j({"role": "user", "content": "1"})
    data = io.BytesIO(first + j({"role": "user", "content": "2"}))
    raws = list(iter_raw_lines(data, stop_at=len(first)))
    assert [r.number for r in raws] == [1]


def test_bom_and_crlf_are_tolerated() -> None:
    (rec,) = parse_lines([b"\xef\xbb\xbf" + j({"role": "user", "content": "x"})[:-1] + b"\r\n"])
    assert isinstance(rec, Record) and rec.content == "x"


# -- Claude Code ----------------------------------------------------------------------------------

CLAUDE = [
    {"type": "summary", "summary": "Fix the build", "leafUuid": "u3"},
    {"type": "file-history-snapshot", "messageId": "m0", "snapshot": {}, "isSnapshotUpdate": False},
    {
        "parentUuid": None,
        "isSidechain": False,
        "userType": "external",
        "cwd": "/p",
        "sessionId": "0a6a-sess",
        "version": "2.1.45",
        "type": "user",
        "message": {"role": "user", "content": "why does make fail?"},
        "uuid": "u1",
        "timestamp": "2025-05-26T07:27:40.079Z",
    },
    {
        "parentUuid": "u1",
        "sessionId": "0a6a-sess",
        "type": "assistant",
        "message": {
            "id": "msg_1",
            "model": "claude-x",
            "role": "assistant",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
                "service_tier": "standard",
            },
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "make"}},
            ],
        },
        "uuid": "u2",
        "timestamp": "2025-05-26T07:27:41.000Z",
    },
    {
        "parentUuid": "u2",
        "sessionId": "0a6a-sess",
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "error 2"}],
                    "is_error": True,
                }
            ],
        },
        "uuid": "u3",
        "timestamp": "2025-05-26T07:27:42.000Z",
    },
    {"type": "system", "subtype": "turn_duration", "sessionId": "0a6a-sess", "uuid": "u4"},
    {"type": "queue-operation", "operation": "dequeue", "sessionId": "0a6a-sess"},
]


def test_claude_code_transcript() -> None:
    out = parse_lines([j(o) for o in CLAUDE], max_bytes=1 << 20)
    recs = [o for o in out if o is not None]
    assert all(isinstance(r, (Record, Title)) for r in recs)
    assert out[0] == Title("Fix the build", "u3")  # the summary line: the session's title
    recs = [o for o in recs if not isinstance(o, Title)]
    assert [(r.role, r.key, r.session_id) for r in recs] == [
        ("user", "claude:u1", "0a6a-sess"),
        ("assistant", "claude:u2", "0a6a-sess"),
        ("tool", "claude:u3", "0a6a-sess"),
    ]
    user, assistant, result = recs
    assert user.content == "why does make fail?"
    assert user.created_at == pytest.approx(1748244460.079)
    assert assistant.content == (
        '[thinking] hmm\nLet me look.\n[tool_call Bash] {"command": "make"}'
    )
    assert assistant.meta == {
        "uuid": "u2",
        "parentUuid": "u1",
        "response_id": "msg_1",
        "model": "claude-x",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_tokens": 100,
            "cache_write_tokens": 20,
        },
        "blocks": assistant.meta["blocks"],
    }
    assert spans(assistant) == [
        ("thinking", "hmm"),
        ("text", "Let me look."),
        ("tool_call", '{"command": "make"}'),
    ]
    assert assistant.meta["blocks"][0]["signature"] == "s"
    assert assistant.meta["blocks"][2] | {"span": None} == {
        "type": "tool_call",
        "id": "t1",
        "name": "Bash",
        "span": None,
    }
    assert result.role == "tool"  # a user entry that only carries a tool result
    assert result.content == "[tool_result error] error 2"
    assert result.meta is not None and spans(result) == [("tool_result", "error 2")]
    assert result.meta["blocks"][0] | {"span": None} == {
        "type": "tool_result",
        "call_id": "t1",
        "is_error": True,
        "span": None,
    }


def test_claude_entry_without_message_is_bad() -> None:
    out = parse_lines([j(CLAUDE[2]), j({"type": "user", "sessionId": "s", "uuid": "x"})])
    assert isinstance(out[1], BadLine) and "without a message" in out[1].reason


# -- sessiondb export -----------------------------------------------------------------------------


def test_sessiondb_header_and_messages() -> None:
    header = {
        "sessiondb_export": 1,
        "session_id": "s1",
        "source": "cli",
        "title": "T",
        "meta": None,
    }
    msg = {
        "session_id": "s1",
        "seq": 1,
        "role": "user",
        "content": "hi",
        "key": None,
        "meta": {"a": 1},
        "created_at": 1700000000.25,
    }
    h, m = parse_lines([j(header), j(msg)])
    assert h == Header("s1", "cli", "T", None)  # an export of before times were in headers
    timed = {**header, "created_at": 1.5, "updated_at": 2, "ended_at": 3, "end_reason": "done"}
    (h2,) = parse_lines([j(timed)])
    assert h2 == Header("s1", "cli", "T", None, 1.5, 2.0, 3.0, "done")
    assert isinstance(m, Record) and m.alt_key is not None and m.alt_key.startswith("sessiondb:1:")
    assert m == Record("user", "hi", None, {"a": 1}, 1700000000.25, "s1", 1, m.alt_key)
    (bad,) = parse_lines([j({**header, "sessiondb_export": 9})])
    assert isinstance(bad, BadLine) and "version 9" in bad.reason


def test_sessiondb_headerless_is_recognised() -> None:
    msg = {"session_id": "s", "seq": 3, "role": "a", "content": "", "key": "k", "created_at": 1}
    (rec,) = parse_lines([j(msg)])
    assert isinstance(rec, Record) and rec.seq == 3 and rec.key == "k"


# -- registry -------------------------------------------------------------------------------------


class _Csvish(Format):
    name = "test-speaker"

    def sniff(self, obj: dict[str, Any]) -> bool:
        return "speaker" in obj

    def parse(self, obj: dict[str, Any], line: int, raw: bytes) -> Record | Header | None:
        return Record(str(obj["speaker"]), str(obj.get("said", "")), f"t:{line}", None, None)


def test_register_format() -> None:
    register_format(_Csvish())
    try:
        assert [f.name for f in formats()][-2:] == ["test-speaker", "plain"]
        (rec,) = parse_lines([j({"speaker": "bob", "said": "hey"})])
        assert isinstance(rec, Record) and (rec.role, rec.content) == ("bob", "hey")
        with pytest.raises(ValueError):
            register_format(_Csvish())
    finally:
        from sessiondb.core import formats as mod

        mod._FORMATS[:] = [f for f in mod._FORMATS if f.name != "test-speaker"]


# -- fuzz -----------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for out in parse_lines([data]):
        assert out is None or isinstance(out, (Record, Header, BadLine))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["user", "assistant", "tool", "system"]))
def test_plain_content_round_trips(content: str, role: str) -> None:
    line = json.dumps({"role": role, "content": content}, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    (out,) = parse_lines([line + b"\n"], max_bytes=1 << 20) or [None]
    if any(0xD800 <= ord(c) <= 0xDFFF for c in content):
        assert isinstance(out, BadLine)
    else:
        assert isinstance(out, Record) and out.content == content and out.role == role


@settings(max_examples=300)
@given(
    role=st.one_of(st.text(max_size=8), st.integers(), st.none()),
    content=st.one_of(st.text(max_size=40), st.none(), st.integers(), st.just([])),
    line=st.integers(1, 10**6),
)
def test_plain_shortcut_is_the_general_path(role: Any, content: Any, line: int) -> None:
    """PlainFormat.parse's shortcut for a line holding only role and content gives what
    parse_general gives (or the same error)."""
    obj = {"role": role, "content": content}
    raw = json.dumps(obj).encode()
    fmt = PlainFormat()

    def run(f: Any) -> Any:
        try:
            return f(dict(obj), line, raw)
        except LineError as e:
            return ("error", str(e))

    assert run(fmt.parse) == run(fmt.parse_general)
