"""The CLI: every command has help, verbs mirror the API, errors are one friendly line."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import sessiondb
from sessiondb.cli.app import cli


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(_all_commands(cmd, (*prefix, name)))
    return out


@pytest.fixture
def run(db_path: Path):  # type: ignore[no-untyped-def]
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> click.testing.Result:
        return runner.invoke(cli, ["--db", str(db_path), *args], input=input)

    invoke.db = str(db_path)  # type: ignore[attr-defined]
    return invoke


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = _all_commands(cli)
    assert {("sessions",), ("show",), ("append",), ("rm",), ("info",), ("demo",)} <= set(commands)
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        cmd: click.Command = cli
        for part in path:
            assert isinstance(cmd, click.Group)
            cmd = cmd.commands[part]
        assert cmd.help and cmd.help.strip(), f"{' '.join(path)} has no help text"
        assert "Usage:" in result.output


def test_append_show_sessions_rm(run, db_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run("append", "s1", "user", "hello world")
    assert r.exit_code == 0 and "s1 #1" in r.output
    r = run("append", "s1", "assistant", input="from stdin\n")
    assert r.exit_code == 0 and "#2" in r.output
    r = run("append", "s1", "user", "-", "--key", "k", "--meta", '{"a": 1}', "--json", input="x")
    assert r.exit_code == 0 and json.loads(r.output)["meta"] == {"a": 1}
    r = run("show", "s1", "--json")
    data = json.loads(r.output)
    assert [m["content"] for m in data["messages"]] == ["hello world", "from stdin\n", "x"]
    r = run("show", "s1")
    assert "hello world" in r.output and "#2 assistant" in r.output
    r = run("sessions", "--json")
    assert [s["session_id"] for s in json.loads(r.output)] == ["s1"]
    r = run("sessions")
    assert r.exit_code == 0 and "s1" in r.output
    r = run("info", "--json")
    info = json.loads(r.output)
    assert info["messages"] == 3 and info["journal_mode"] == "wal" and info["path"] == str(db_path)
    r = run("info")
    assert r.exit_code == 0 and "sqlite version" in r.output
    r = run("rm", "s1", "--yes")
    assert r.exit_code == 0 and "deleted s1 (3 messages)" in r.output
    with sessiondb.open(db_path) as store:
        assert store.count() == 0


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("show", "missing"), 3, "not found"),
        (("rm", "missing", "--yes"), 3, "not found"),
        (("append", "s", "", "text"), 2, "role"),
        (("append", "s\x01", "user", "text"), 2, "session_id"),
        (("append", "s", "user", "x", "--meta", "{bad"), 2, "--meta"),
        (("append", "s", "user", "x", "--meta", "[1]"), 2, "meta"),
    ],
)
def test_errors_are_friendly(run, args: tuple[str, ...], code: int, words: str) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "other", "user", "so that the store exists").exit_code == 0
    r = run(*args)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    assert "error:" in r.output and words in r.output and "hint:" in r.output


@pytest.mark.parametrize(
    "args", [("sessions",), ("show", "s"), ("search", "x"), ("export",), ("info",)]
)
def test_read_commands_never_create_a_store(run, db_path: Path, args: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    r = run(*args)
    assert r.exit_code == 1, r.output
    assert "no sessiondb store there" in r.output and "Traceback" not in r.output
    assert not db_path.exists() and not db_path.parent.exists()


def test_migrate_upgrades_an_older_store(run, db_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "s", "user", "x").exit_code == 0
    r = run("migrate")
    assert r.exit_code == 0 and "nothing to do" in r.output


def test_key_conflict_exit_code(run) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "s", "user", "a", "--key", "k").exit_code == 0
    r = run("append", "s", "user", "b", "--key", "k")
    assert r.exit_code == 1 and "already stored" in r.output


def test_db_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONDB_PATH", str(tmp_path / "env.db"))
    r = CliRunner().invoke(cli, ["append", "s", "user", "hi"])
    assert r.exit_code == 0
    with sessiondb.open(tmp_path / "env.db") as store:
        assert store.count() == 1


def test_demo_runs_and_verifies(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["demo", "--dir", str(tmp_path / "demo"), "--turns", "40"])
    assert r.exit_code == 0, r.output
    assert "All checks passed" in r.output
    with sessiondb.open(tmp_path / "demo" / "demo.db") as store:
        assert store.count() == 160


def test_demo_removes_only_what_it_made(tmp_path: Path) -> None:
    """`demo --dir` pointed at a folder holding a real store deleted its sessions.db."""
    real = tmp_path / "data" / "sessions.db"
    with sessiondb.open(real) as store:
        store.append("mine", "user", "a real conversation")
    before = sorted(p.name for p in real.parent.iterdir())
    r = CliRunner().invoke(cli, ["demo", "--dir", str(real.parent), "--turns", "10"])
    assert r.exit_code == 0, r.output
    with sessiondb.open(real) as store:
        assert [m.content for m in store.messages("mine")] == ["a real conversation"]
    assert set(before) <= {p.name for p in real.parent.iterdir()}
    again = CliRunner().invoke(cli, ["demo", "--dir", str(real.parent), "--turns", "10"])
    assert again.exit_code == 0, again.output  # its own earlier run is replaced
    # A demo.db the demo did not make is refused, not removed.
    other = tmp_path / "other"
    with sessiondb.open(other / "demo.db") as store:
        store.append("x", "user", "not a demo")
    refused = CliRunner().invoke(cli, ["demo", "--dir", str(other), "--turns", "10"])
    assert refused.exit_code == 2 and "not made by the demo" in refused.output
    with sessiondb.open(other / "demo.db") as store:
        assert store.count() == 1


def test_unexpected_failures_are_one_line_not_a_traceback(
    run, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "s", "user", "x").exit_code == 0
    from sessiondb.core.store import SessionStore

    def boom(*a: object, **k: object) -> None:
        raise ValueError("math domain error")

    monkeypatch.setattr(SessionStore, "search", boom)
    r = run("search", "anything")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "internal error: ValueError: math domain error" in r.output
    assert "SESSIONDB_DEBUG" in r.output


def test_error_text_with_brackets_is_printed_as_text(run) -> None:  # type: ignore[no-untyped-def]
    r = run("append", "[bold]x[/bold]\x01", "user", "text")
    assert r.exit_code == 2 and "[bold]x[/bold]" in r.output


def test_rm_never_deletes_unasked_when_no_one_can_answer(run) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "keep", "user", "x").exit_code == 0
    r = run("rm", "keep", input="")  # stdin is not a terminal: a script, cron, an agent
    assert r.exit_code == 2 and "--yes" in r.output
    assert "keep" in run("sessions", "--json").output


def test_stored_text_is_shown_as_text(run) -> None:  # type: ignore[no-untyped-def]
    """A stored tool output cleared the screen and retitled the window when `show` printed it,
    and `:smile:` became an emoji."""
    hostile = "out \x1b[2J\x1b[H \x1b]0;PWNED\x07 :smile: [bold]x[/bold] \u202eevil \x85"
    assert run("append", "s", "tool", hostile).exit_code == 0
    for args in (("show", "s"), ("search", "out"), ("search", "out", "--context", "1")):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output and "\u202e" not in r.output
        assert "\\x1b[2J" in r.output and "\\u202e" in r.output
        assert ":smile:" in r.output and "[bold]x[/bold]" in r.output


def test_search_when_piped_keeps_a_plain_marker_and_no_score(run) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "s", "user", "retry with backoff").exit_code == 0
    r = run("search", "retry")
    assert "[retry] with backoff" in r.output and "score" not in r.output


def test_search_in_an_unknown_session_is_not_found(run) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "s", "user", "x").exit_code == 0
    r = run("search", "x", "--session", "nope")
    assert r.exit_code == 3 and "not found" in r.output


def test_binary_standard_input_is_refused(run) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    r = runner.invoke(cli, ["--db", run.db, "append", "s", "user"], input=b"\xff\xfe\x00binary")
    assert r.exit_code == 2 and "not UTF-8" in r.output
    assert run("sessions", "--json").exit_code == 1  # nothing was stored: no store yet


def test_usage_hint_names_the_command(run) -> None:  # type: ignore[no-untyped-def]
    r = run("append", "s", "", "text")
    assert "see `sessiondb append --help`" in r.output and "COMMAND" not in r.output


def test_sessions_page_header_says_how_many_and_how_to_see_more(run) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        assert run("append", f"s{i}", "user", "x").exit_code == 0
    assert "sessions 1–2 of 5" in run("sessions", "--limit", "2").output
    assert "--offset 2" in run("sessions", "--limit", "2").output
    assert "5 sessions" in run("sessions").output


def test_markdown_export_closes_a_code_fence_a_message_left_open(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("append", "s", "assistant", "here:\n```python\nprint('cut off'").exit_code == 0
    assert run("append", "s", "user", "# not code").exit_code == 0
    out = tmp_path / "s.md"
    assert run("export", "s", "--format", "md", "-o", str(out)).exit_code == 0
    lines = out.read_text().splitlines()
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    second = next(i for i, line in enumerate(lines) if line.startswith("## 2. user"))
    assert len(fences) == 2 and fences[1] < second  # closed before the next message
