"""The flush-helper example of docs/transcripts.md, run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import sessiondb

DOC = Path(__file__).resolve().parents[2] / "docs" / "transcripts.md"


def example_code() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Flush helper") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


class FlakyStore:
    """Fails some append_many calls: before the commit, or after it (the reply was lost)."""

    def __init__(self, real: Any, plan: list[str]) -> None:
        self.real = real
        self.plan = plan  # per call: "ok", "before" (nothing stored), "after" (stored, error)

    def append_many(self, session_id: str, items: Any) -> Any:
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "before":
            raise sessiondb.StoreBusy("injected: busy before commit")
        out = self.real.append_many(session_id, items)
        if step == "after":
            raise sessiondb.StoreBusy("injected: committed, but the caller saw a timeout")
        return out


def test_doc_example_never_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str
) -> None:
    real = sessiondb.open(location)
    flaky = FlakyStore(real, ["after", "before", "after", "ok", "after", "after", "ok"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sessiondb, "open", lambda *a, **k: flaky)
    ns: dict[str, Any] = {}
    exec(compile(example_code(), str(DOC), "exec"), ns)
    expected = []
    for turn in range(12):
        role = "user" if turn % 2 == 0 else "assistant"
        ns["remember"](role, f"turn {turn}", f"t{turn}")
        expected.append((role, f"turn {turn}"))
        if turn % 2 == 1:
            ns["flush"]("s")
    while ns["unsaved"]:
        ns["flush"]("s")
    got = [(m.role, m.content) for m in real.messages("s")]
    assert got == expected
    assert [m.seq for m in real.messages("s")] == list(range(1, 13))
    assert flaky.plan == []  # every injected failure really happened
    real.close()
