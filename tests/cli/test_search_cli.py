"""`sessiondb search`: output, JSON, filters, friendly errors, help."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import sessiondb
from sessiondb.cli.app import cli


def _db(tmp_path: Path) -> str:
    path = tmp_path / "cli.db"
    with sessiondb.open(path) as st:
        st.append("a", "user", "we renamed foo.bar yesterday")
        st.append("a", "assistant", "noted")
        st.append("b", "user", "foo.bar again in another session")
    return str(path)


def test_search_prints_highlighted_hits_with_context(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", _db(tmp_path), "search", "foo.bar", "-C", "1"])
    assert result.exit_code == 0, result.output
    assert "foo.bar" in result.output and "#2 assistant: noted" in result.output
    assert "\ue000" not in result.output  # internal markers never leak


def test_search_json_and_filters(tmp_path: Path) -> None:
    db = _db(tmp_path)
    result = CliRunner().invoke(cli, ["--db", db, "search", "foo.bar", "--session", "b", "--json"])
    assert result.exit_code == 0, result.output
    [hit] = json.loads(result.output)
    assert hit["message"]["session_id"] == "b" and "[foo.bar]" in hit["snippet"]
    result = CliRunner().invoke(cli, ["--db", db, "search", "foo", "--role", "assistant"])
    assert "no messages match" in result.output


def test_malformed_fts_query_is_a_friendly_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", _db(tmp_path), "search", "foo AND", "--fts"])
    assert result.exit_code != 0
    assert "malformed search query" in result.output and "Traceback" not in result.output


def test_help_explains_the_options() -> None:
    result = CliRunner().invoke(cli, ["search", "--help"])
    assert result.exit_code == 0
    for option in ("--context", "--session", "--source", "--role", "--fts", "--json"):
        assert option in result.output
