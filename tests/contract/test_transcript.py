"""Transcript import and export through the public Store API."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

import sessiondb
from sessiondb import InvalidInput, SessionNotFound
from sessiondb.core import transcript
from sessiondb.core.export import export_jsonl
from sessiondb.core.transcript import BATCH, file_session_id, import_jsonl
from tests.conftest import new_location


def write_jsonl(path: Path, objs: list[Any], *, extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(json.dumps(o).encode() + b"\n" for o in objs) + extra)
    return path


def msgs(n: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"}
        for i in range(start, start + n)
    ]


def test_import_plain_twice_adds_nothing(store: Any, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "chat.jsonl", msgs(5))
    r1 = store.import_jsonl(f)
    assert (r1.imported, r1.duplicates, r1.bad_lines) == (5, 0, ())
    r2 = store.import_jsonl(f)
    assert (r2.imported, r2.duplicates) == (0, 5)
    (sess,) = store.list_sessions()
    assert sess.session_id.startswith("chat-") and sess.source == "import"
    got = store.messages(sess.session_id)
    assert [m.content for m in got] == [f"m{i}" for i in range(5)]
    assert all(m.key and m.key.startswith("jsonl:") for m in got)


def test_grown_file_adds_only_the_new_lines(store: Any, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "chat.jsonl", msgs(3))
    store.import_jsonl(f, session_id="s")
    write_jsonl(f, msgs(3) + msgs(2, start=3))
    r = store.import_jsonl(f, session_id="s")
    assert (r.imported, r.duplicates) == (2, 3)
    assert [m.content for m in store.messages("s")] == [f"m{i}" for i in range(5)]


def test_moved_or_copied_file_is_recognised(store: Any, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "chat.jsonl", msgs(4))
    store.import_jsonl(f)
    (tmp_path / "other").mkdir()
    moved = tmp_path / "other" / "chat.jsonl"
    f.rename(moved)
    r = store.import_jsonl(moved)
    assert (r.imported, r.duplicates) == (0, 4)
    assert store.count() == 4
    # A different file that happens to have the same name is a different session.
    other = write_jsonl(tmp_path / "chat.jsonl", msgs(2, start=10))
    store.import_jsonl(other)
    assert len(store.list_sessions()) == 2


def test_bad_lines_are_reported_and_skipped(store: Any, tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    good = json.dumps({"role": "user", "content": "fine"}).encode() + b"\n"
    f.write_bytes(good + b"{oops\n" + b'{"content": "x"}\n' + b"\x00\xff\xfe\n" + good)
    r = store.import_jsonl(f, session_id="s")
    assert r.imported == 2
    assert [(b.file, b.line) for b in r.bad_lines] == [(str(f), 2), (str(f), 3), (str(f), 4)]
    assert "missing role" in r.bad_lines[1].reason


def test_huge_line_is_a_bad_line(store: Any, tmp_path: Path) -> None:
    f = tmp_path / "big.jsonl"
    with f.open("wb") as out:
        out.write(b'{"role":"user","content":"before"}\n{"role":"user","content":"')
        chunk = b"a" * (1 << 20)
        for _ in range(64):  # a 64 MiB line
            out.write(chunk)
        out.write(b'"}\n{"role":"user","content":"after"}\n')
    r = store.import_jsonl(f, session_id="s")
    assert r.imported == 2
    (bad,) = r.bad_lines
    assert bad.line == 2 and "longer than" in bad.reason
    assert [m.content for m in store.messages("s")] == ["before", "after"]


def test_strict_writes_nothing(store: Any, tmp_path: Path) -> None:
    objs = msgs(2 * BATCH + 3)
    f = write_jsonl(tmp_path / "t.jsonl", objs, extra=b"{truncated")
    with pytest.raises(InvalidInput, match="1 bad line") as e:
        store.import_jsonl(f, session_id="s", strict=True)
    assert f"line {2 * BATCH + 4}" in str(e.value)
    assert store.count() == 0 and store.get_session("s") is None
    write_jsonl(f, objs)
    r = store.import_jsonl(f, session_id="s", strict=True)
    assert r.imported == len(objs)


def test_batches_are_bounded_and_progress_reported(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = write_jsonl(tmp_path / "t.jsonl", msgs(3 * BATCH + 7))
    sizes: list[int] = []
    real = transcript._Importer._append  # every batch's one write

    def spy(self: Any, session_id: str, items: Any, expect_last: Any) -> Any:
        sizes.append(len(items))
        return real(self, session_id, items, expect_last)

    monkeypatch.setattr(transcript._Importer, "_append", spy)
    seen: list[tuple[int, int]] = []
    r = import_jsonl(store, f, session_id="s", progress=lambda d, t: seen.append((d, t)))
    assert r.imported == 3 * BATCH + 7
    assert sizes == [BATCH, BATCH, BATCH, 7]
    total = os.path.getsize(f)
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_bulk_import_is_searchable_when_it_returns_and_idempotent(
    store: Any, tmp_path: Path
) -> None:
    # docs/adr/0015-bulk-import.md: batches of BULK_BATCH, the index built after loading where
    # the backend defers it, every message searchable when the call returns.
    n = transcript.BULK_BATCH + 5
    objs = [{"role": "user", "content": f"bulkword{i} 東京都"} for i in range(n)]
    f = write_jsonl(tmp_path / "t.jsonl", objs)
    done: list[tuple[int, int]] = []
    r = store.import_jsonl(f, bulk=True, progress=lambda d, t: done.append((d, t)))
    assert (r.imported, r.duplicates) == (n, 0)
    assert done[-1] == (os.path.getsize(f), os.path.getsize(f))
    for i in (0, n // 2, n - 1):
        hits = store.search(f"bulkword{i}")
        assert [h.message.seq for h in hits] == [i + 1]
    assert len(store.search("東京都", limit=10_000)) == n
    again = store.import_jsonl(f, bulk=True)
    assert (again.imported, again.duplicates) == (0, n)
    assert store.count() == n


def test_session_override_and_missing_file(store: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        store.import_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(InvalidInput, match="folder"):
        store.import_jsonl(tmp_path)
    with pytest.raises(InvalidInput):
        store.import_jsonl(write_jsonl(tmp_path / "a.jsonl", msgs(1)), session_id="bad\x00id")


def test_claude_code_import(store: Any, tmp_path: Path) -> None:
    base = {"sessionId": "cc-1", "cwd": "/p", "version": "2.0"}
    f = write_jsonl(
        tmp_path / "cc-1.jsonl",
        [
            {"type": "summary", "summary": "x", "leafUuid": "u2"},
            {**base, "type": "user", "uuid": "u1", "parentUuid": None,
             "timestamp": "2025-01-01T00:00:00Z", "message": {"role": "user", "content": "hi"}},
            {**base, "type": "assistant", "uuid": "u2", "parentUuid": "u1",
             "timestamp": "2025-01-01T00:00:01Z",
             "message": {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}},
            {**base, "type": "system", "uuid": "u3", "subtype": "turn_duration"},
        ],
    )  # fmt: skip
    r = store.import_jsonl(f)
    assert (r.imported, r.bad_lines) == (2, ())
    got = store.messages("cc-1")
    assert [(m.role, m.content, m.key) for m in got] == [
        ("user", "hi", "claude:u1"),
        ("assistant", "hello", "claude:u2"),
    ]
    assert got[0].created_at == 1735689600.0
    # Claude Code rewrites nothing but appends: a copy elsewhere adds nothing either.
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(f.read_bytes())
    assert store.import_jsonl(copy).duplicates == 2


def test_a_resumed_claude_code_transcript_keeps_its_lineage(store: Any, tmp_path: Path) -> None:
    """``claude --resume`` writes a new file that starts with the earlier session's records
    (their own sessionId) and goes on under a new one: two sessions, the later one naming the
    earlier (``resumed_from``), not two unrelated ones."""

    def rec(sid: str, uuid: str, parent: str | None, text: str, second: int) -> dict[str, Any]:
        return {"sessionId": sid, "type": "user", "uuid": uuid, "parentUuid": parent,
                "timestamp": f"2025-01-01T00:00:0{second}Z",
                "message": {"role": "user", "content": text}}  # fmt: skip

    first = [rec("cc-a", "u1", None, "hi", 0), rec("cc-a", "u2", "u1", "more", 1)]
    resumed = write_jsonl(
        tmp_path / "cc-b.jsonl",
        [*first, rec("cc-b", "u3", "u2", "back again", 2), rec("cc-b", "u4", "u3", "and on", 3)],
    )
    store.import_jsonl(write_jsonl(tmp_path / "cc-a.jsonl", first))  # the earlier file
    r = store.import_jsonl(resumed)
    assert (r.imported, r.duplicates) == (2, 2)
    assert [m.key for m in store.messages("cc-b")] == ["claude:u3", "claude:u4"]
    assert store.get_session("cc-b").meta == {"resumed_from": "cc-a"}
    assert store.get_session("cc-a").meta is None
    store.update_session("cc-b", meta_patch={"resumed_from": "kept"})
    store.import_jsonl(resumed)  # again: nothing new, and a lineage is never replaced
    assert store.get_session("cc-b").meta == {"resumed_from": "kept"}
    assert store.import_jsonl(resumed, session_id="one").imported == 4  # one session asked
    assert store.get_session("one").meta is None
    # two transcripts in one file, the second answering nothing of the first: no lineage
    joined = write_jsonl(tmp_path / "two.jsonl", [*first, rec("cc-c", "u9", None, "new", 4)])
    assert store.import_jsonl(joined).imported == 1
    assert store.get_session("cc-c").meta is None


def _populate(store: Any) -> None:
    store.create_session("a", source="cli", title="Ä title", meta={"z": 1, "a": [1.5, None]})
    store.append("a", "user", 'hello \u2603 "quoted"\nnext', meta={"n": 1})
    store.append("a", "assistant", "", key="k-1")
    store.append("a", "tool", "x" * 5000)
    store.append("a", "user", "after \U0001f600")
    store.append("b", "user", "other session")


def test_export_round_trips_byte_exact(tmp_path: Path, backend: str) -> None:
    a_loc, b_loc = new_location(backend, tmp_path / "a"), new_location(backend, tmp_path / "b")
    with sessiondb.open(a_loc) as a:
        _populate(a)
        first = io.BytesIO()
        assert export_jsonl(a, "a", first) == 4
        assert a.export_jsonl("a", tmp_path / "a.jsonl") == 4
    assert (tmp_path / "a.jsonl").read_bytes() == first.getvalue()
    assert (tmp_path / "a.jsonl").stat().st_mode & 0o777 == 0o600
    with sessiondb.open(b_loc) as b:
        r = b.import_jsonl(tmp_path / "a.jsonl")
        assert (r.imported, r.duplicates, r.bad_lines) == (4, 0, ())
        second = io.BytesIO()
        export_jsonl(b, "a", second)
        assert second.getvalue() == first.getvalue()
        # ... and importing the export again (or into the store it came from) adds nothing.
        assert b.import_jsonl(tmp_path / "a.jsonl").duplicates == 4
    with sessiondb.open(a_loc) as a:
        assert a.import_jsonl(tmp_path / "a.jsonl").imported == 0


def test_export_lines_are_the_documented_format(store: Any, tmp_path: Path) -> None:
    _populate(store)
    out = io.BytesIO()
    store.export_jsonl("b", out)
    header, line = (json.loads(x) for x in out.getvalue().splitlines())
    b = store.get_session("b")
    assert header == {
        "sessiondb_export": 1,
        "session_id": "b",
        "source": "unknown",
        "title": None,
        "meta": None,
        "created_at": b.created_at,
        "updated_at": b.updated_at,
        "ended_at": None,
        "end_reason": None,
    }
    assert list(line) == ["session_id", "seq", "role", "content", "key", "meta", "created_at"]
    with pytest.raises(SessionNotFound):
        store.export_jsonl("nope", io.BytesIO())


def test_export_import_into_a_different_history_stays_idempotent(
    store: Any, tmp_path: Path
) -> None:
    _populate(store)
    f = tmp_path / "a.jsonl"
    store.export_jsonl("a", f)
    r1 = store.import_jsonl(f, session_id="b")  # b already holds one unrelated message
    r2 = store.import_jsonl(f, session_id="b")
    assert (r1.imported, r2.imported, r2.duplicates) == (4, 0, 4)
    assert store.count("b") == 5


def test_file_session_id_is_safe() -> None:
    from sessiondb.core.formats import Record

    sid = file_session_id("/x/we\x01ird.jsonl", Record("user", "c", "jsonl:1:ab", None, None))
    assert sid.startswith("we_ird-") and len(sid) == len("we_ird-") + 8


def test_two_imports_of_one_export_at_once(tmp_path: Path, backend: str) -> None:
    """Keyless export lines are placed by their seq: two imports racing stored 100-200 of 300
    lines twice, each reporting "imported 300". Three imports of 2 000 lines here, so that
    they overlap for certain."""
    import multiprocessing

    from tests._workers_transcripts import import_file

    src, dst = new_location(backend, tmp_path / "src"), new_location(backend, tmp_path / "dst")
    export = tmp_path / "export.jsonl"
    with sessiondb.open(src) as a:
        a.append_many("s", [{"role": "user", "content": f"line {i}"} for i in range(2000)])
        a.export_jsonl("s", export)
    sessiondb.open(dst).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(3)
    with ctx.Pool(3) as pool:
        runs = [pool.apply_async(import_file, (dst, str(export), barrier)) for _ in range(3)]
        added = [r.get(timeout=120) for r in runs]
    assert sum(added) == 2000
    with sessiondb.open(dst) as b:
        contents = [m.content for m in b.messages("s")]
    assert sorted(contents) == sorted(f"line {i}" for i in range(2000))
    assert [m for m in contents if contents.count(m) > 1] == []


def test_lines_the_store_would_refuse_are_bad_lines_not_an_abort(
    store: Any, tmp_path: Path
) -> None:
    """One odd but parseable line (NaN, Infinity, 1e400, a bad role or id) aborted the whole
    import with an error naming no file or line, and --strict then wrote part of the file."""
    good = [json.dumps({"role": "user", "content": f"m{i}"}) for i in range(500)]
    odd = {
        251: '{"role": "user", "content": "x", "meta": {"v": NaN}}',
        261: '{"role": "user", "content": "x", "created_at": 1e400}',
        271: '{"role": "user\\u0007", "content": "x"}',
        281: '{"role": "user", "content": "x", "meta": {"v": -Infinity}}',
        291: '{"role": "user", "content": "x", "meta": {"v": 1e999}}',
        301: '{"role": "user", "content": "x", "created_at": -5}',
    }
    for line, text in odd.items():
        good[line - 1] = text
    f = tmp_path / "odd.jsonl"
    f.write_text("\n".join(good) + "\n")
    with pytest.raises(InvalidInput) as info:
        store.import_jsonl(f, session_id="strict", strict=True)
    assert "6 bad line(s), nothing was imported" in str(info.value)
    assert store.count("strict") == 0 and store.get_session("strict") is None
    r = store.import_jsonl(f, session_id="s")
    assert r.imported == 494
    assert [(b.file, b.line) for b in r.bad_lines] == [(str(f), n) for n in sorted(odd)]
    reasons = " | ".join(b.reason for b in r.bad_lines)
    for word in ("NaN", "out of range", "role", "Infinity", "created_at"):
        assert word in reasons


def test_an_export_line_naming_an_impossible_session_is_a_bad_line(
    store: Any, tmp_path: Path
) -> None:
    lines = [
        {"sessiondb_export": 1, "session_id": "ok", "source": "cli", "title": "T", "meta": None},
        {
            "session_id": "ok",
            "seq": 1,
            "role": "user",
            "content": "fine",
            "key": None,
            "meta": None,
            "created_at": 1.0,
        },
        {
            "session_id": "bad\u0000id",
            "seq": 1,
            "role": "user",
            "content": "x",
            "key": None,
            "meta": None,
            "created_at": 1.0,
        },
    ]
    f = write_jsonl(tmp_path / "e.jsonl", lines)
    r = store.import_jsonl(f)
    assert r.imported == 1 and [b.line for b in r.bad_lines] == [3]
    assert "session_id" in r.bad_lines[0].reason
