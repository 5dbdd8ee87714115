"""Lines parsed in a forked reader (core/reader.py, bulk imports): exactly what the importing
process would have parsed itself, the formats it registered included; a reader that dies is an
error, never a silently short import."""

from __future__ import annotations

import json
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import sessiondb
from sessiondb import Error
from sessiondb.core import formats, reader, transcript
from sessiondb.core.reader import parsed_lines, read_lines
from tests.unit.test_formats import _Csvish

MAX = formats.MAX_LINE_BYTES


def mixed(path: Path, n: int = 2500) -> Path:
    """Every kind of line: plain, structured, a sessiondb export's header and keyed lines, a
    Claude Code summary, bad lines of each sort, blank lines, a line over the cap."""
    lines: list[bytes] = [
        json.dumps({"role": "user", "content": "plain 東京 😀"}).encode(),
        json.dumps({"role": "assistant", "content": [{"type": "text", "text": "parts"}]}).encode(),
        json.dumps(
            {"role": "user", "content": "with usage", "usage": {"prompt_tokens": 3}}
        ).encode(),
        b"",
        b"{broken",
        b"[1, 2]",
        b"\xff\xfe binary",
        json.dumps({"content": "no role"}).encode(),
        json.dumps({"role": "user", "content": "lone \ud800 surrogate"}).encode(),
        b"x" * 300,
    ]
    lines += [json.dumps({"role": "user", "content": f"line {i}"}).encode() for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def export(path: Path) -> Path:
    with sessiondb.open(path.parent / "src.db") as store:
        store.create_session("s1", source="cli", title="T", meta={"a": 1})
        store.append_many(
            "s1", [{"role": "user", "content": f"m{i}", "key": f"k{i}"} for i in range(5)]
        )
        store.append("s2", "user", "keyless")
        store.export_jsonl(None, path)
    return path


@pytest.mark.parametrize("make", [mixed, export])
def test_the_reader_yields_what_the_importer_would_parse(tmp_path: Path, make: Any) -> None:
    src = make(tmp_path / "t.jsonl")
    here = list(read_lines(src, max_bytes=200))
    there = list(parsed_lines(str(src), max_bytes=200, stop_at=None))
    assert there == here
    assert len(here) > 5
    assert all(type(a[2]) is type(b[2]) for a, b in zip(here, there, strict=True))
    stop = src.stat().st_size // 2
    assert list(parsed_lines(str(src), max_bytes=MAX, stop_at=stop)) == list(
        read_lines(src, max_bytes=MAX, stop_at=stop)
    )


def test_the_reader_knows_the_formats_registered_in_this_process(tmp_path: Path) -> None:
    formats.register_format(_Csvish())  # tests/unit/test_formats.py
    try:
        src = tmp_path / "t.jsonl"
        src.write_text(
            "".join(json.dumps({"speaker": "bob", "said": f"hi {i}"}) + "\n" for i in range(3))
        )
        with sessiondb.open(tmp_path / "s.db") as store:
            report = store.import_jsonl(src, session_id="s", bulk=True)
            assert report.imported == 3 and not report.bad_lines
            assert [m.role for m in store.messages("s")] == ["bob"] * 3
    finally:
        formats._FORMATS[:] = [f for f in formats._FORMATS if f.name != _Csvish.name]


def test_a_plain_import_of_a_large_file_parses_in_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From reader.FORK_BYTES on, a plain import too parses in a forked reader, and stores
    # exactly what it stores parsing in-process (messages, keys, meta, bad lines).
    src = mixed(tmp_path / "t.jsonl")
    forks: list[str] = []
    real = reader._fork

    def counted(path: str, *args: Any) -> Any:
        forks.append(path)
        return real(path, *args)

    monkeypatch.setattr(reader, "_fork", counted)
    got = []
    for name, fork_bytes in [("a", src.stat().st_size), ("b", src.stat().st_size + 1)]:
        monkeypatch.setattr(reader, "FORK_BYTES", fork_bytes)
        with sessiondb.open(tmp_path / f"{name}.db") as store:
            report = store.import_jsonl(src, session_id="s")
            stored = [(m.seq, m.role, m.content, m.key, m.meta) for m in store.messages("s")]
            got.append((report, stored))
        assert forks == [str(src)]  # forked at FORK_BYTES, not below it
    assert got[0] == got[1]
    assert got[0][0].imported > 2500 and got[0][0].bad_lines


def test_forking_the_reader_beside_threads_raises_no_deprecation_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Python 3.12+ warns of os.fork() in a process with threads (every store has its
    # checkpointer's); the reader is safe to fork (ADR 15) and says nothing. Simulated here on
    # any Python: this fork warns as 3.12's does (checked by hand on 3.12.1).
    real = os.fork
    forks = []

    def warning_fork() -> int:
        warnings.warn(
            f"This process (pid={os.getpid()}) is multi-threaded, use of fork() may lead to"
            " deadlocks in the child.",
            DeprecationWarning,
            stacklevel=2,
        )
        forks.append(1)
        return real()

    monkeypatch.setattr(os, "fork", warning_fork)
    src = mixed(tmp_path / "t.jsonl", 50)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with sessiondb.open(tmp_path / "s.db") as store:
            report = store.import_jsonl(src, session_id="s", bulk=True)
    assert forks and report.imported == 53
    assert [w for w in seen if issubclass(w.category, DeprecationWarning)] == []


def test_a_reader_that_dies_is_an_error_and_the_batches_stored_stay_searchable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batches stored before the reader died are committed and indexed; the lines of the
    # batch being gathered are not stored (as when a plain import's read fails); importing
    # again stores the rest, nothing twice.
    src = mixed(tmp_path / "t.jsonl", 6000)
    monkeypatch.setattr(reader, "CHUNK", 500)
    real = reader.read_lines

    def dies(*args: Any, **kwargs: Any) -> Any:  # runs in the reader: kill -9 itself midway
        for n, item in enumerate(real(*args, **kwargs)):
            if n == 4500:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item

    monkeypatch.setattr(reader, "read_lines", dies)
    with sessiondb.open(tmp_path / "s.db") as store:
        with pytest.raises(Error, match="reader process ended"):
            store.import_jsonl(src, session_id="s", bulk=True)
        stored = store.count("s")
        assert stored == 2 * transcript.BULK_BATCH
        assert len(store.search("line", limit=10_000)) == stored - 3
        monkeypatch.setattr(reader, "read_lines", real)
        report = store.import_jsonl(src, session_id="s", bulk=True)
        assert store.count("s") == 6003 and report.imported == 6003 - stored
        assert len(store.search("line", limit=10_000)) == 6000


def test_a_reading_error_in_the_reader_is_raised_by_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = mixed(tmp_path / "t.jsonl")

    def fails(*args: Any, **kwargs: Any) -> Any:
        yield from ()
        raise Error("reading t.jsonl failed: I/O error")

    monkeypatch.setattr(reader, "read_lines", fails)
    with sessiondb.open(tmp_path / "s.db") as store, pytest.raises(Error, match="I/O error"):
        store.import_jsonl(src, session_id="s", bulk=True)


def test_the_reader_leaves_when_the_importer_stops_reading(tmp_path: Path) -> None:
    src = mixed(tmp_path / "t.jsonl", 20_000)  # more than the pipe holds: the reader waits
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = set(children.read_text().split())
    lines = parsed_lines(str(src), max_bytes=MAX, stop_at=None)
    next(lines)
    ours = set(children.read_text().split()) - before
    assert len(ours) == 1, "no reader process was started"
    began = time.monotonic()
    lines.close()  # the importer gave up (an error while storing): the reader is ended
    assert not ours & set(children.read_text().split()), "the reader outlived the import"
    assert time.monotonic() - began < reader.JOIN_SECONDS, "the reader had to be killed"


def test_the_reader_runs_below_the_stores_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked at READER_NICE: live writers beside an import preempt its parsing."""

    def report_niceness(send: Any, *args: object) -> int:
        send.send(os.nice(0))
        return 0

    monkeypatch.setattr(reader, "_reader", report_niceness)  # the child runs this copy
    path = tmp_path / "t.jsonl"
    path.write_text("{}\n")
    forked = reader._fork(str(path), 1024, None)
    assert forked is not None
    pid, receive = forked
    try:
        assert receive.recv() == min(19, os.nice(0) + reader.READER_NICE)
    finally:
        receive.close()
        reader._reap(pid)
