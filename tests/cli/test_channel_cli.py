"""`sessiondb channel send|tail|status`: help, outputs, JSON, friendly errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sessiondb.channel import AgentEnd
from sessiondb.cli.app import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("args", [[], ["send"], ["tail"], ["status"]])
def test_help(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(cli, ["channel", *args, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_send_tail_status_round_trip(runner: CliRunner, tmp_path: Path) -> None:
    folder = str(tmp_path / "chan")
    r = runner.invoke(cli, ["channel", "send", folder, "hello"])
    assert r.exit_code == 0 and r.output.strip() == "2"
    r = runner.invoke(cli, ["channel", "send", folder, "--kind", "command", "--json"], input="ls\n")
    assert r.exit_code == 0 and json.loads(r.output) == {"seq": 4, "kind": "command", "key": None}
    r = runner.invoke(cli, ["channel", "send", folder, "again", "--key", "k", "--json"])
    r2 = runner.invoke(cli, ["channel", "send", folder, "again", "--key", "k", "--json"])
    assert json.loads(r.output)["seq"] == json.loads(r2.output)["seq"] == 6

    with AgentEnd(folder, heartbeat_every=1.0) as agent:
        got = agent.receive(limit=10)
        assert [(m.kind, m.content) for m in got] == [
            ("message", "hello"),
            ("command", "ls"),
            ("message", "again"),
        ]
        agent.reply("hi there", in_reply_to=2)
        agent.ack(4, "failed", error="no shell here")

        r = runner.invoke(cli, ["channel", "status", folder, "--json"])
        assert r.exit_code == 0, r.output
        st = json.loads(r.output)
        assert st["alive"] is True and st["run_id"] == agent.run_id
        assert st["processing"] == [6] and st["failed"] == [4] and st["completed"] == 1

        r = runner.invoke(cli, ["channel", "status", folder])
        assert r.exit_code == 0 and "agent: alive" in r.output and "failed seqs: 4" in r.output

    r = runner.invoke(cli, ["channel", "tail", folder, "--json"])
    assert r.exit_code == 0
    lines = [json.loads(line) for line in r.output.splitlines()]
    assert [(x["kind"], x["content"], x["in_reply_to"]) for x in lines] == [
        ("message", "hi there", 2),
        ("error", "no shell here", 4),
    ]
    r = runner.invoke(cli, ["channel", "tail", folder, "--after", str(lines[0]["seq"])])
    assert r.exit_code == 0 and "no shell here" in r.output and "hi there" not in r.output

    r = runner.invoke(cli, ["channel", "status", folder, "--sweep", "--json"])
    assert r.exit_code == 0
    out = json.loads(r.output)
    assert out["status"]["alive"] is False  # the agent closed: its last beat says stopped
    assert out["sweep"]["reoffered"] == [6]


def test_friendly_errors(runner: CliRunner, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    for cmd in ("tail", "status"):
        r = runner.invoke(cli, ["channel", cmd, missing])
        assert r.exit_code == 2 and "no such channel folder" in r.output
        assert "Traceback" not in r.output
    assert not Path(missing).exists()
    r = runner.invoke(cli, ["channel", "send", str(tmp_path / "c"), "x", "--kind", "error"])
    assert r.exit_code == 2 and "Invalid value" in r.output
    (tmp_path / "notdir").write_text("x")
    r = runner.invoke(cli, ["channel", "send", str(tmp_path / "notdir"), "x"])
    assert r.exit_code != 0
