"""The README's Python examples run as printed (the quickstart, the flush helper, async)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quickstart_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    quickstart = next(b for b in _blocks() if "chat-42" in b)
    assert "sessiondb.open" in quickstart
    exec(compile(quickstart, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "2 assistant Exponential backoff, 5 tries." in out
    assert "2 ['chat-42']" in out  # the retried append wrote nothing


def test_flush_helper_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    flush = next(b for b in _blocks() if "def flush" in b)
    ns: dict[str, object] = {}
    exec(compile("import sessiondb\n" + flush, "README.md", "exec"), ns)
    remember, flush_fn = ns["remember"], ns["flush"]
    remember("user", "hi", "t1")  # type: ignore[operator]
    flush_fn("s")  # type: ignore[operator]
    remember("assistant", "hello", "t2")  # type: ignore[operator]
    flush_fn("s")  # type: ignore[operator]
    store = ns["store"]
    assert [m.content for m in store.messages("s")] == ["hi", "hello"]  # type: ignore[attr-defined]
    store.close()  # type: ignore[attr-defined]


def test_new_verbs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    block = next(b for b in _blocks() if "pop_message" in b)
    ns: dict[str, object] = {}
    exec(compile("import sessiondb\n" + block, "README.md", "exec"), ns)
    # one pop, one clear; then the week's stats: every message was removed again
    assert capsys.readouterr().out.splitlines() == ["2", "0 0 []"]
    reader = ns["reader"]
    assert reader.readonly and reader.get_session("chat-7").title == "Renamed"  # type: ignore[attr-defined]
    reader.close()  # type: ignore[attr-defined]


def test_first_five_minutes_loop_runs_twice_and_finds_both_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SESSIONDB_PATH", str(tmp_path / "readme.db"))
    loop = next(b for b in _blocks() if "first-steps" in b)
    exec(compile(loop, "README.md", "exec"), {})
    first = capsys.readouterr().out.split("\n")
    exec(compile(loop, "README.md", "exec"), {})
    second = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in first if line] == ["2"]
    assert sorted(line.split()[0] for line in second) == ["2", "4"]
    assert all("[backoff]" in line for line in second)


def test_async_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    block = next(b for b in _blocks() if "sessiondb.aio.open" in b)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    # 16 questions and the late one, stored once although it was cancelled and appended again
    assert capsys.readouterr().out.splitlines() == ["17 [15, 16, 17]"]
