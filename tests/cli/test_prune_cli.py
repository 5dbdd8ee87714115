"""`sessiondb prune`: a dry run first, never a deletion unasked, JSON for scripts, stored text
shown escaped (docs/adr/0006-retention.md)."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import sessiondb
from sessiondb.cli.app import cli

OLD = time.time() - 60 * 86400


def run(db: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args], input=input)
    return result.exit_code, result.output


def run_json(db: Path, *args: str) -> tuple[int, dict[str, object]]:
    """The JSON on stdout (progress goes to stderr)."""
    result = CliRunner().invoke(cli, ["--db", str(db), *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "s.db"
    with sessiondb.open(path) as s:
        for i in range(3):
            s.ensure_session(f"old-{i}", source="cli", created_at=OLD)
            s.append_many(
                f"old-{i}", [{"role": "user", "content": "x" * 100, "created_at": OLD}] * 4
            )
        s.update_session("old-0", title="evil\x1b]0;pwned\x07\x1b[2J")
        s.append("new", "user", "today")
    return path


def _left(db: Path) -> list[str]:
    with sessiondb.open(db, readonly=True) as s:
        return sorted(s.session_ids())


def test_dry_run_shows_what_would_go_escaped_and_changes_nothing(db: Path) -> None:
    code, out = run(db, "prune", "--older-than", "30d", "--dry-run")
    assert code == 0
    assert "would remove 3 session(s), 12 message(s)" in out
    assert "old-0" in out and "old-2" in out and "new" not in out.replace("news", "")
    assert "\x1b" not in out and "\x07" not in out and "evil\\x1b]0;pwned\\x07" in out
    assert _left(db) == ["new", "old-0", "old-1", "old-2"]


def test_json_for_scripts(db: Path) -> None:
    code, plan = run_json(db, "prune", "--older-than", "30d", "--dry-run")
    assert code == 0 and plan["dry_run"] is True and plan["messages"] == 12
    assert [s["session_id"] for s in plan["sessions"]] == ["old-0", "old-1", "old-2"]
    assert plan["bytes"] == 1200 and plan["compacted"] is None
    code, done = run_json(db, "prune", "--older-than", "30d", "--source", "cli", "--yes")
    assert code == 0 and done["dry_run"] is False and done["messages"] == 12
    assert isinstance(done["freed"], int) and done["kept"] == 0
    assert _left(db) == ["new"]


def test_refuses_to_delete_unasked_when_no_one_can_answer(db: Path) -> None:
    code, out = run(db, "prune", "--older-than", "30d", input="")  # stdin is not a terminal
    assert code == 2 and "pass --yes" in out
    assert _left(db) == ["new", "old-0", "old-1", "old-2"]


def test_asks_on_a_terminal(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sessiondb.cli.common as common

    tty = types.SimpleNamespace(stdin=types.SimpleNamespace(isatty=lambda: True))
    monkeypatch.setattr(common, "sys", tty)
    code, out = run(db, "prune", "--older-than", "30d", input="n\n")
    assert code == 1 and "Remove 3 session(s) and 12 message(s)?" in out
    assert _left(db) == ["new", "old-0", "old-1", "old-2"]
    code, out = run(db, "prune", "--older-than", "30d", "--session", "old-1", input="y\n")
    assert code == 0 and "removed 1 session(s), 4 message(s)" in out
    assert _left(db) == ["new", "old-0", "old-2"]


@pytest.mark.parametrize("bad", ["3x", "0d", "", "-5d", "30"])
def test_a_bad_older_than_exits_2(db: Path, bad: str) -> None:
    code, out = run(db, "prune", "--older-than", bad, "--yes")
    assert code == 2 and "--older-than" in out
    assert len(_left(db)) == 4


def test_compact_and_info_show_the_space(db: Path) -> None:
    code, out = run(db, "prune", "--older-than", "30d", "--yes", "--compact")
    assert code == 0 and "removed 3 session(s)" in out and "gave back" in out
    code, out = run(db, "info")
    assert code == 0 and "search index" in out
    code, info = run_json(db, "info")
    assert code == 0 and isinstance(info["space"], dict)
    assert set(info["space"]) == {"messages", "search_index", "other", "free"}
    assert info["space"]["free"] == 0


def test_a_dry_run_never_creates_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    code, _ = run(missing, "prune", "--older-than", "30d", "--dry-run")
    assert code == 1 and not missing.exists()
