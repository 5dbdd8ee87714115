"""The Claude Code hook: write tools take the workspace lease, Stop/SessionEnd release it,
internal errors fail open."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sessiondb import lease
from sessiondb.integrations import claude_code as hooks


def event(name: str, session: str, cwd: Path | str, tool: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "session_id": session,
        "transcript_path": "/dev/null",
        "cwd": str(cwd),
        "permission_mode": "default",
        "hook_event_name": name,
    }
    if tool is not None:
        ev["tool_name"] = tool
        ev["tool_input"] = {"file_path": str(Path(cwd) / "f.txt"), "content": "x"}
    return ev


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SESSIONDB_RUNTIME_DIR", str(tmp_path / "rt"))
    w = tmp_path / "project"
    (w / ".git").mkdir(parents=True)
    (w / "src").mkdir()
    return w


def handle(ev: dict[str, Any]) -> hooks.HookResult:
    # session_pid: this test process stands for every session (it is alive).
    return hooks.handle_claude_code(ev, session_pid=os.getpid())


@pytest.mark.parametrize("tool", sorted(hooks.WRITE_TOOLS))
def test_write_tool_of_second_session_is_blocked_with_holder(ws: Path, tool: str) -> None:
    assert handle(event("PreToolUse", "sess-A", ws, "Edit")).exit_code == 0
    r = handle(event("PreToolUse", "sess-B", ws / "src", tool))  # a subfolder: same tree
    assert r.exit_code == 2
    assert f"workspace lease on {ws} held by session sess-A (pid {os.getpid()}) since" in r.stderr
    assert "wait or close that session first" in r.stderr
    assert r.stdout == ""


def test_read_tools_and_other_events_pass_and_take_nothing(ws: Path) -> None:
    assert handle(event("PreToolUse", "sess-A", ws, "Write")).exit_code == 0
    for ev in (
        event("PreToolUse", "sess-B", ws, "Read"),
        event("PreToolUse", "sess-B", ws, "Grep"),
        event("UserPromptSubmit", "sess-B", ws),
        event("SessionStart", "sess-B", ws),
        event("PostToolUse", "sess-B", ws, "Edit"),
    ):
        assert handle(ev) == hooks.HookResult(0), ev
    holder = lease.workspace(ws, "probe").holder
    assert holder is not None and holder.session_id == "sess-A"


@pytest.mark.parametrize("end", ["Stop", "SessionEnd"])
def test_stop_and_session_end_release(ws: Path, end: str) -> None:
    assert handle(event("PreToolUse", "sess-A", ws, "Bash")).exit_code == 0
    assert handle(event("PreToolUse", "sess-B", ws, "Bash")).exit_code == 2
    assert handle(event(end, "sess-B", ws)) == hooks.HookResult(0)  # not B's to release
    assert handle(event("PreToolUse", "sess-B", ws, "Bash")).exit_code == 2
    assert handle(event(end, "sess-A", ws)) == hooks.HookResult(0)
    assert lease.workspace(ws, "probe").record is None
    assert handle(event("PreToolUse", "sess-B", ws, "Bash")).exit_code == 0


def test_same_session_refreshes(ws: Path) -> None:
    assert handle(event("PreToolUse", "sess-A", ws, "Edit")).exit_code == 0
    first = lease.workspace(ws, "probe").record
    assert handle(event("PreToolUse", "sess-A", ws / "src", "Write")).exit_code == 0
    second = lease.workspace(ws, "probe").record
    assert first is not None and second is not None
    assert second.acquired_at == first.acquired_at and second.refreshed_at >= first.refreshed_at
    assert second.ttl == hooks.DEFAULT_TTL


@pytest.mark.parametrize(
    "stdin",
    [
        "",
        "not json",
        "[1, 2]",
        json.dumps({"hook_event_name": "PreToolUse", "tool_name": "Edit"}),  # no session, cwd
        json.dumps(event("PreToolUse", "", "/tmp", "Edit")),  # invalid session id
        json.dumps(event("PreToolUse", "bad\nid", "/tmp", "Edit")),
    ],
)
def test_malformed_input_fails_open(ws: Path, stdin: str) -> None:
    r = hooks.run_claude_code(stdin)
    assert r.exit_code == 0
    assert r.stderr.startswith("sessiondb hook claude-code: internal error, tool allowed")


def test_unusable_runtime_folder_fails_open(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SESSIONDB_RUNTIME_DIR", str(blocker / "rt"))  # a folder under a file
    r = hooks.run_claude_code(json.dumps(event("PreToolUse", "sess-A", ws, "Edit")))
    assert r.exit_code == 0
    assert "internal error, tool allowed" in r.stderr and "UnsupportedStorage" in r.stderr


def test_workspace_root_and_session_process(ws: Path, tmp_path: Path) -> None:
    assert hooks.workspace_root(ws / "src") == str(ws)
    (tmp_path / "plain" / "sub").mkdir(parents=True)
    assert hooks.workspace_root(tmp_path / "plain" / "sub") == str(tmp_path / "plain" / "sub")
    # Run through a shell, the hook must pick this python process, not the shell in between.
    out = subprocess.run(
        [
            "/bin/sh",
            "-c",
            f'{sys.executable} -c "from sessiondb.integrations import claude_code as c;'
            ' print(c.session_process())"'
            "; true",  # keeps sh from exec-ing python directly
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == os.getpid()


SESSIONDB = str(Path(sys.executable).parent / "sessiondb")  # the installed console script


def run_cli(ev: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SESSIONDB, "hook", "claude-code"],
        input=json.dumps(ev),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_command_line_end_to_end(ws: Path, tmp_path: Path) -> None:
    env = {**os.environ, "SESSIONDB_RUNTIME_DIR": str(tmp_path / "rt")}
    a = run_cli(event("PreToolUse", "sess-A", ws, "Edit"), env)
    assert (a.returncode, a.stdout) == (0, ""), a.stderr
    rec = lease.workspace(ws, "probe").record
    # The lease follows the process that ran the hook (here: this test), not the hook itself.
    assert rec is not None and rec.pid == os.getpid() and rec.session_id == "sess-A"
    b = run_cli(event("PreToolUse", "sess-B", ws, "MultiEdit"), env)
    assert b.returncode == 2
    assert "held by session sess-A" in b.stderr
    assert run_cli(event("SessionEnd", "sess-A", ws), env).returncode == 0
    assert run_cli(event("PreToolUse", "sess-B", ws, "MultiEdit"), env).returncode == 0
    bad = subprocess.run(
        [SESSIONDB, "hook", "claude-code"],
        input="{oops",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 0 and "tool allowed" in bad.stderr


def test_an_absurd_cwd_fails_open_at_once(tmp_path: Path) -> None:
    """A 1 MB cwd made the hook resolve half a million path components (minutes). An event
    field is outside input: bounded, and the tool is allowed with a note."""
    event = {
        "hook_event_name": "PreToolUse",
        "tool_name": "Edit",
        "session_id": "s",
        "cwd": "/tmp" + "/a" * 500_000,
    }
    out = subprocess.run(
        [sys.executable, "-m", "sessiondb.cli", "hook", "claude-code"],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        timeout=60,  # a bound for a hung hook, not a measurement
        env={**os.environ, "SESSIONDB_RUNTIME_DIR": str(tmp_path / "rt")},
    )
    assert out.returncode == 0
    assert "cwd is not an absolute path" in out.stderr
    assert not (tmp_path / "rt").exists()  # no lease was taken for it
