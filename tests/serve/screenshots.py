"""Screenshots of each viewer page for docs/img/ (README), taken with Playwright and Debian's
chromium over a small demo store: ``python -m tests.serve.screenshots``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import sessiondb
from sessiondb.core.blocks import Builder, input_json

from ._corpus import serving, tool_session
from .conftest import CHROMIUM

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "img"
DAY = 86400.0


def demo_store(path: str) -> None:
    now = time.time()
    with sessiondb.open(path) as s:
        s.import_jsonl(ROOT / "tests" / "data" / "claude_code_session.jsonl", source="claude")
        tool_session(s, "refactor-auth")
        s.update_session("refactor-auth", title="Refactor the auth middleware")
        topics = [
            ("codex", "Add retry with backoff to the webhook sender", "gpt-5-codex"),
            ("hermes", "Weekly standup notes from the team channel", "claude-sonnet-4-5"),
            ("claude", "Why does the migration lock the orders table?", "claude-opus-4-1"),
            ("codex", "Speed up the search index rebuild", "gpt-5-codex"),
            ("hermes", "Summarise the incident review", "claude-haiku-4-5"),
            ("claude", "Write tests for the CSV importer", "claude-sonnet-4-5"),
        ]
        for i, (source, title, model) in enumerate(topics):
            sid = f"{source}-{1000 + i}"
            start = now - (13 - 2 * i) * DAY
            s.create_session(sid, source=source, title=title, created_at=start)
            for j in range(6 + 3 * i):
                role = "user" if j % 2 == 0 else "assistant"
                meta = None
                if role == "assistant":
                    usage = {"input_tokens": 900 + 37 * j, "output_tokens": 240 + 11 * j}
                    meta = {"model": model, "usage": usage, "response_id": f"r{i}-{j}"}
                text = (
                    f"Step {j}: the retry policy backs off exponentially, capped at 30 s."
                    if role == "assistant"
                    else f"What about step {j}? Keep the retry budget small."
                )
                s.append(sid, role, text, meta=meta, created_at=start + j * 1800)
        b = Builder()
        b.text("Running the linter before the commit.")
        b.tool_call("call_9", "Bash", input_json({"command": "ruff check ."}))
        s.append("codex-1003", "assistant", b.content, meta={"blocks": b.blocks})


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "demo.db")
        demo_store(path)
        with serving(path) as v, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False)
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            base = f"http://127.0.0.1:{v.port}"
            shots = [
                ("sessions", "/", None),
                ("transcript", "/s/refactor-auth", "details.tool-call"),
                ("transcript-claude", "/s/7f3c2a10-5b8e-4c1d-9a2f-0e6d4b8c1a3f", None),
                ("search", "/search?q=retry+budget", ".hit"),
                ("stats", "/stats", None),
                ("health", "/health", "tr.check"),
            ]
            page.goto(base + "/")  # counts each session's tokens in the background
            time.sleep(1.0)
            for name, url, wait in shots:
                page.goto(base + url)
                if wait:
                    page.locator(wait).first.wait_for(timeout=20_000)
                if name == "transcript":
                    page.locator("details.tool-call summary").first.click()
                    page.locator("details.thinking summary").first.click()
                page.screenshot(path=str(OUT / f"serve-{name}.png"), full_page=False)
                print(OUT / f"serve-{name}.png")
            browser.close()


if __name__ == "__main__":
    main()
