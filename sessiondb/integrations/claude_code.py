"""Agent hooks: keep one session at a time on a workspace from inside the agent's own tool loop.

Claude Code runs a command hook with the event as JSON on stdin (``hook_event_name``,
``session_id``, ``cwd``, and for tool events ``tool_name`` / ``tool_input``). For ``PreToolUse``,
exit code 2 blocks the tool call and its stderr is shown to Claude as the reason; exit 0 lets the
call go on (Claude Code hooks reference, "Exit code 2 behavior"). ``Stop`` fires when the agent
finishes its turn, ``SessionEnd`` when the session ends.

Policy: a tool that writes acquires (or refreshes) the session's lease on the workspace; another
live session holding it blocks the tool with the holder's name. Stop / SessionEnd release it.
Any internal error fails open — the tool is allowed and a note goes to stderr — so a bug in
sessiondb can never lock a user out of their own project.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ..host import procinfo

WRITE_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit", "Bash"})
RELEASE_EVENTS = frozenset({"Stop", "SessionEnd"})
# Long enough to cover a long Bash step or a pending permission prompt mid-turn; on this host a
# dead session is detected by its pid at once, so the TTL only matters for a frozen session.
DEFAULT_TTL = 1800.0
# Processes that may sit between the agent and this hook (`sh -c "sessiondb hook …"`): the
# lease must follow the agent, not a wrapper that exits with the hook.
WRAPPERS = frozenset(
    {"sh", "bash", "dash", "zsh", "fish", "ksh", "mksh", "busybox", "env", "timeout", "nice"}
)


class HookResult(NamedTuple):
    exit_code: int
    stdout: str = ""
    stderr: str = ""


def workspace_root(path: str | os.PathLike[str]) -> str:
    """The working tree that contains ``path`` (nearest folder holding ``.git``, a folder or a
    worktree's file), else ``path`` itself — so ``cd src`` inside a session keeps one lease."""
    p = Path(os.path.realpath(os.fspath(path)))
    for d in (p, *p.parents):
        if (d / ".git").exists():
            return str(d)
    return str(p)


def session_process(start: int | None = None) -> int:
    """The process standing for the agent session: the nearest ancestor of this hook that is
    not a shell or wrapper (Claude Code runs hooks through a shell)."""
    pid = os.getppid() if start is None else start
    for _ in range(16):
        if procinfo.process_name(pid) not in WRAPPERS:
            return pid
        parent = procinfo.parent_pid(pid)
        if parent is None or parent <= 1:
            return pid
        pid = parent
    return pid


# The longest path the kernel accepts (Linux PATH_MAX): a longer cwd is no working folder, and
# resolving one of a million characters component by component took minutes
# (tests/integrations/test_claude_code_hook.py::test_an_absurd_cwd_fails_open_at_once).
MAX_CWD = 4096


def _text(event: Mapping[str, Any], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the event has no {name!r} string")
    return value


def _cwd(event: Mapping[str, Any]) -> str:
    cwd = _text(event, "cwd")
    if len(cwd) > MAX_CWD or not os.path.isabs(cwd) or "\0" in cwd:
        raise ValueError(f"the event's cwd is not an absolute path of at most {MAX_CWD} characters")
    return cwd


def handle_claude_code(
    event: Mapping[str, Any],
    *,
    ttl: float = DEFAULT_TTL,
    session_pid: int | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> HookResult:
    """Decide on one Claude Code hook event. Raises on malformed events (the caller fails open)."""
    name = event.get("hook_event_name")
    if name == "PreToolUse":
        if event.get("tool_name") not in WRITE_TOOLS:
            return HookResult(0)
    elif name not in RELEASE_EVENTS:
        return HookResult(0)
    from ..lease import workspace  # only events that need the lease load it

    session_id = _text(event, "session_id")
    root = workspace_root(_cwd(event))
    pid = session_process() if session_pid is None else session_pid
    lease = workspace(root, session_id, ttl, pid=pid, directory=directory)
    if name == "PreToolUse":
        if lease.acquire():
            return HookResult(0)
        return HookResult(
            2,
            stderr=f"{lease.message}\n(see `sessiondb lease status {root}`; the person at the "
            f"keyboard can break it with `sessiondb lease release --force {root}`)\n",
        )
    # Stop / SessionEnd: release only our own lease; another session's is none of our business.
    record = lease.record
    if record is not None and record.session_id == session_id:
        lease.release()
    return HookResult(0)


#: The most of an event read from standard input; a Write tool's event carries the whole file.
MAX_EVENT_BYTES = 64 * 1024 * 1024


def main(ttl: float = DEFAULT_TTL) -> int:
    """``sessiondb hook claude-code``: the event on stdin, the verdict as the exit code (and the
    reason on stderr). Runs without the rest of the CLI (click, rich): it runs on every tool call
    (benchmarks/startup.py)."""
    import sys

    try:
        raw = sys.stdin.buffer.read(MAX_EVENT_BYTES + 1)
        if len(raw) > MAX_EVENT_BYTES:
            raise ValueError(f"the event is larger than {MAX_EVENT_BYTES} bytes")
        text = raw.decode("utf-8")
    except Exception as e:  # fail open, even on unreadable input
        sys.stderr.write(f"sessiondb hook claude-code: cannot read the event ({e}), tool allowed\n")
        return 0
    result = run_claude_code(text, ttl=ttl)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_code


def run_claude_code(
    stdin_text: str,
    *,
    ttl: float = DEFAULT_TTL,
    directory: str | os.PathLike[str] | None = None,
) -> HookResult:
    """The whole hook: parse stdin, decide, and fail open on any internal error."""
    try:
        event = json.loads(stdin_text)
        if not isinstance(event, dict):
            raise ValueError("the hook input is not a JSON object")
        return handle_claude_code(event, ttl=ttl, directory=directory)
    except Exception as e:  # fail open: a bug here must never block the user's tools
        return HookResult(
            0,
            stderr=f"sessiondb hook claude-code: internal error, tool allowed "
            f"({type(e).__name__}: {e})\n",
        )
