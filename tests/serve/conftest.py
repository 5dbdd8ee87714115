"""The browser for tests/serve/test_browser.py: Debian's chromium driven by Playwright's Python
package (no browser download), one per test session. Without Chromium the browser tests skip with
the reason, except under CI=true, where they fail (as the clock-skew tests do without faketime,
tests/channel/test_channel_clocks.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import in_ci

CHROMIUM = os.environ.get("SESSIONDB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is missing: `make test` installs the dev extra")
    if not os.path.exists(CHROMIUM):
        _unavailable("Chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab that records dialogs (an alert would be a script run from stored text)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.dialogs = []
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    try:
        yield tab
    finally:
        context.close()
