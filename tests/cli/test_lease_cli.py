"""``sessiondb lease status|acquire|release|list``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessiondb import lease
from sessiondb.cli.app import cli


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SESSIONDB_RUNTIME_DIR", str(tmp_path / "rt"))
    w = tmp_path / "project"
    w.mkdir()
    return w


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_help_of_every_command() -> None:
    for cmd in ("status", "acquire", "release", "list"):
        code, out, _ = run("lease", cmd, "--help")
        assert code == 0 and "Usage:" in out and len(out.splitlines()) > 3
    code, out, _ = run("hook", "claude-code", "--help")
    assert code == 0 and "stdin" in out


def test_acquire_status_release(ws: Path) -> None:
    # The CLI exits at once, so by default the lease follows its parent (in-process here: ours).
    code, out, _ = run("lease", "acquire", str(ws), "--session", "A", "--ttl", "60")
    assert code == 0 and "acquired by session A" in out
    rec = lease.workspace(ws, "probe").record
    assert rec is not None and rec.pid == os.getppid() and rec.ttl == 60

    code, out, err = run("lease", "acquire", str(ws), "--session", "B")
    assert code == 1
    assert f"workspace lease on {ws} held by session A" in err
    assert "wait or close that session first" in err

    code, out, _ = run("lease", "status", str(ws))
    assert code == 0 and "held by session A" in out and "live" in out
    code, out, _ = run("lease", "status", str(ws), "--json")
    data = json.loads(out)
    assert data["workspace"] == str(ws) and data["holder"]["session_id"] == "A"
    assert data["holder"]["stale"] is False

    code, _, err = run("lease", "release", str(ws), "--session", "B")
    assert code == 1 and "not released" in err and "held by session A" in err
    code, out, _ = run("lease", "release", str(ws), "--session", "A")
    assert code == 0 and "released by session A" in out
    code, out, _ = run("lease", "status", str(ws))
    assert out.strip().endswith(": free")


def test_force_release_says_whose_lease_it_breaks(ws: Path) -> None:
    assert lease.workspace(ws, "victim-session", pid=os.getpid()).acquire()
    code, out, _ = run("lease", "release", str(ws), "--force")
    assert code == 0
    assert "broke the workspace lease" in out
    assert f"session victim-session (pid {os.getpid()}" in out and "live" in out
    assert lease.workspace(ws, "probe").record is None
    code, out, _ = run("lease", "release", str(ws), "--force")
    assert code == 0 and "nothing to break" in out


def test_release_needs_an_owner_or_force(ws: Path) -> None:
    r = CliRunner().invoke(cli, ["lease", "release", str(ws)])
    assert r.exit_code == 2 and "--session" in r.output


def test_list(ws: Path, tmp_path: Path) -> None:
    code, out, _ = run("lease", "list")
    assert code == 0 and "no leases" in out
    other = tmp_path / "other"
    other.mkdir()
    assert lease.workspace(ws, "A").acquire()
    assert lease.workspace(other, "B").acquire()
    code, out, _ = run("lease", "list", "--json")
    rows = json.loads(out)
    assert {(r["resource"], r["session_id"]) for r in rows} == {(str(ws), "A"), (str(other), "B")}
    code, out, _ = run("lease", "list")
    assert str(ws) in out and str(other) in out


def test_path_defaults_to_the_working_tree(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (ws / ".git").mkdir()
    (ws / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(ws / "deep" / "er")
    code, out, _ = run("lease", "acquire", "--session", "A")
    assert code == 0 and f"workspace lease on {ws}:" in out
