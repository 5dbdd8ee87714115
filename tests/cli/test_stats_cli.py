"""`sessiondb stats` and `sessiondb export` of every session (a backup)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from click.testing import CliRunner

import sessiondb
from sessiondb.cli.app import cli
from sessiondb.cli.common import period_start

CLAUDE = Path(__file__).parent.parent / "data" / "claude_code_session.jsonl"


def run(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--db", str(db), *args])
    return result.exit_code, result.output


def test_stats_chart_and_json(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with sessiondb.open(db) as s:
        s.import_jsonl(CLAUDE)
        s.append("live", "user", "today", meta={"model": "m\x1b[2J"})  # a hostile model name
    code, out = run(db, "stats", "--since", "all")
    assert code == 0
    assert "2026-03-02" in out and "9 msgs" in out and "claude-sonnet-4-5-20250929" in out
    assert "\x1b" not in out and "m\\x1b[2J" in out  # shown, never executed
    code, out = run(db, "stats")  # the last 30 days: only today's message
    assert code == 0 and "2026-03-02" not in out and "1 message(s)" in out
    code, out = run(db, "stats", "--since", "2026-03-01", "--until", "2026-03-31", "--json")
    data = json.loads(out)
    assert code == 0 and data["since"] == "2026-03-01" and data["until"] == "2026-03-31"
    assert data["tokens"] == {"input": 9, "output": 191, "cache_read": 36102, "cache_write": 1536}
    assert [d["day"] for d in data["days"]] == ["2026-03-02"]


def test_stats_refuses_a_bad_period(tmp_path: Path) -> None:
    sessiondb.open(tmp_path / "s.db").close()
    code, out = run(tmp_path / "s.db", "stats", "--since", "yesterday")
    assert code == 2 and "not a duration" in out


def test_period_start() -> None:
    today = datetime.now(timezone.utc).date()
    assert period_start("all") is None
    assert period_start("2026-11-01") == date(2026, 11, 1)
    assert period_start("1d") == today
    assert period_start("30d") == today - timedelta(days=29)
    twelve_hours = period_start("12h")
    assert isinstance(twelve_hours, datetime)
    assert abs((datetime.now(timezone.utc) - twelve_hours).total_seconds() - 43200) < 60


def test_export_of_everything_is_a_backup(tmp_path: Path) -> None:
    db, copy = tmp_path / "s.db", tmp_path / "copy.db"
    with sessiondb.open(db) as s:
        s.import_jsonl(CLAUDE)
        s.create_session("empty", source="cli", title="nothing yet")
        s.append("b", "user", "bye")
        s.end_session("b", reason="done")
    backup = tmp_path / "all.jsonl"
    assert run(db, "export", "-o", str(backup))[0] == 0
    assert run(copy, "import", str(backup))[0] == 0
    code, again = run(copy, "export")
    assert code == 0 and again.encode() == backup.read_bytes()
    ids = [json.loads(x)["session_id"] for x in again.splitlines() if "sessiondb_export" in x]
    assert ids == sorted(ids) and len(ids) == 3


def test_a_reader_that_goes_away_is_not_an_error_message(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with sessiondb.open(db) as s:
        s.append_many("big", [{"role": "user", "content": "x" * 1000}] * 2000)
    pipe = subprocess.Popen(
        [sys.executable, "-m", "sessiondb.cli", "--db", str(db), "export"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert pipe.stdout is not None and pipe.stderr is not None
    pipe.stdout.read(100)
    pipe.stdout.close()  # as `| head -c 100` does
    err = pipe.stderr.read().decode()
    assert pipe.wait(timeout=60) != 0 and err == ""
