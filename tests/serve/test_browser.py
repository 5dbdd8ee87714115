"""The viewer in a real browser (issue 19): Debian's chromium driven by Playwright.

List and paging; a transcript with folded tool calls; a hostile corpus where no script runs and
the text shows literally; the live tail of 300 messages from 3 writer processes, resumed after a
server restart; search highlight and jump; the doctor naming a write-lock holder; an export that
re-imports exactly. One browser per test session (conftest.py), one server per module.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import sessiondb
from sessiondb.core.blocks import Builder, input_json
from sessiondb.serve import Viewer
from tests._workers_store import hold_write_lock

from ._corpus import HOSTILE, HOSTILE_ID, hostile_corpus, long_session, serving, tool_session
from ._workers import tail_writer

pytestmark = pytest.mark.browser

BULK = 123  # sessions of source "bulk": three pages of 50


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("browser") / "s.db")
    with sessiondb.open(path) as s:
        for i in range(BULK):
            s.create_session(
                f"bulk-{i:03d}",
                source="bulk",
                title=f"Bulk session {i:03d}",
                created_at=1_700_000_000 + i,
            )
            s.append(f"bulk-{i:03d}", "user", f"bulk {i}", created_at=1_700_000_000 + i)
        hostile_corpus(s)
        tool_session(s)
        long_session(s)
    return path


@pytest.fixture(scope="module")
def viewer(store_path: str) -> Iterator[Viewer]:
    with serving(store_path) as v:
        yield v


def base(v: Viewer) -> str:
    return f"http://127.0.0.1:{v.port}"


def test_sessions_list_tabs_filter_and_paging(page: Any, viewer: Viewer) -> None:
    page.goto(base(viewer) + "/?source=bulk")
    rows = page.locator("tr.session-row")
    assert rows.count() == 50
    assert rows.first.inner_text().startswith("Bulk session 122")  # newest activity first
    page.click("a[rel=next]")
    assert page.locator("tr.session-row").first.inner_text().startswith("Bulk session 072")
    page.click("a[rel=next]")
    assert page.locator("tr.session-row").count() == BULK - 100
    assert page.locator(".pager span").inner_text() == "page 3 of 3"
    page.select_option("select[name=sort]", "oldest")
    page.fill(".filter input[name=q]", "session 00")
    page.click(".filter button")
    titles = page.locator("tr.session-row td:first-child a").all_inner_texts()
    assert titles == [f"Bulk session {i:03d}" for i in range(10)]
    page.click("nav.tabs a:text-is('all')")
    assert "source=" not in page.url


def test_transcript_folds_tool_calls_with_their_results(page: Any, viewer: Viewer) -> None:
    page.goto(base(viewer) + "/s/tools")
    calls = page.locator("details.tool-call")
    assert calls.count() == 2
    first = calls.nth(0)
    assert not first.evaluate("d => d.open")
    assert not first.locator("pre.tool-input").is_visible()  # folded
    assert "Bash" in first.locator("summary").inner_text()
    first.locator("summary").click()
    assert first.locator("pre.tool-input").is_visible()
    assert '"command": "ls"' in first.locator("pre.tool-input").inner_text()
    assert first.locator("pre.tool-result-text").inner_text() == "README.md\nsrc"
    second = calls.nth(1)
    assert "error in #3" in second.locator("summary").inner_text()
    thinking = page.locator("details.thinking")
    assert not thinking.evaluate("d => d.open")
    thinking.locator("summary").click()
    assert "I should run ls first." in thinking.inner_text()
    assert page.locator("#m4 pre.hl").count() == 1  # highlighted code


def test_hostile_corpus_runs_no_script_and_shows_text_literally(page: Any, viewer: Viewer) -> None:
    page.goto(base(viewer) + "/s/" + quote(HOSTILE_ID, safe=""))
    page.wait_for_load_state("load")
    page.mouse.move(300, 300)
    page.mouse.move(600, 500)  # an injected onmouseover would fire
    for a in page.locator("article.msg a").all():
        href = a.get_attribute("href") or ""
        assert href.startswith(("#", "/", "http")), href
    time.sleep(0.3)
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []
    assert page.evaluate("document.scripts.length") == 1
    assert page.locator("article img, article svg, article style, textarea").count() == 0
    text = page.locator("#transcript").inner_text()
    for item in HOSTILE:
        if "javascript:" in item or "\u202e" in item:
            continue
        first_line = item.split("*")[0]
        assert first_line in text, first_line
    assert "[click me](javascript:window.__pwned=3)" in text  # a javascript: link stays text
    assert "abc\\u202edcba\\u2066iso\\u2069 end" in text  # bidi controls shown, not obeyed
    assert page.locator("h1").inner_text().startswith("<script>window.__pwned = 1")
    # the 16 MiB message: shown cut, as plain text, with a link to the whole of it
    huge = page.locator("article.msg").last
    assert huge.inner_text().count("hugestart <script>window.__pwned = 1") == 1
    assert huge.locator("a", has_text="the whole text").count() == 1
    # the tool call named in markup, folded
    call = page.locator("details.tool-call")
    assert "<script>tool</script>" in call.locator("summary").inner_text()
    call.locator("summary").click()
    assert "<img src=x onerror=" in call.locator("pre.tool-result-text").inner_text()
    assert page.evaluate("window.__pwned") is None and page.dialogs == []


def test_search_highlights_and_jumps_to_the_message(page: Any, viewer: Viewer) -> None:
    page.goto(base(viewer) + "/search?q=number+12345")
    marks = page.locator(".hit").first.locator("mark").all_inner_texts()
    assert marks == ["number", "12345"]
    page.locator(".hit a.jump").first.click()
    page.wait_for_url("**/s/long?at=12345#m12345")
    target = page.locator("#m12345")
    target.wait_for()
    box = target.bounding_box()
    assert box is not None and -2 <= box["y"] < 900  # scrolled into view
    assert page.evaluate("document.querySelector(':target').id") == "m12345"
    page.goto(base(viewer) + "/search?q=%22unclosed&mode=fts")
    assert page.locator(".query-error").is_visible()
    page.goto(base(viewer) + "/search?q=" + quote("<script>"))
    assert page.dialogs == [] and page.evaluate("window.__pwned") is None


def test_a_long_transcript_loads_more_on_demand(page: Any, viewer: Viewer) -> None:
    page.goto(base(viewer) + "/s/long")
    assert page.locator("article.msg").count() == 200
    page.click("a.more")
    page.wait_for_function("() => document.querySelectorAll('article.msg').length == 400")
    seqs = page.eval_on_selector_all("article.msg", "els => els.map(e => +e.dataset.seq)")
    assert seqs == list(range(1, 401))


def test_export_downloads_a_transcript_that_reimports_exactly(
    page: Any, viewer: Viewer, store_path: str, tmp_path: Path
) -> None:
    page.goto(base(viewer) + "/s/tools")
    with page.expect_download() as info:
        page.click("a:text-is('jsonl')")
    saved = tmp_path / "tools.jsonl"
    info.value.save_as(saved)
    original = tmp_path / "original.jsonl"
    with sessiondb.open(store_path, readonly=True) as s:
        s.export_jsonl("tools", original)
    assert saved.read_bytes() == original.read_bytes()
    again = tmp_path / "again.jsonl"
    with sessiondb.open(str(tmp_path / "copy.db")) as copy:
        copy.import_jsonl(saved)
        copy.export_jsonl("tools", again)
    assert again.read_bytes() == original.read_bytes()


def test_doctor_page_names_the_write_lock_holder(page: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "locked.db")
    with sessiondb.open(path) as s:
        s.append("x", "user", "hello")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=hold_write_lock, args=(path, 30.0, ready))
    holder.start()
    try:
        assert ready.wait(30)
        with serving(path) as v:
            page.goto(base(v) + "/health")
            row = page.locator("tr.check[data-check=write_lock]")
            row.wait_for(timeout=20_000)
            assert str(holder.pid) in row.inner_text()
            assert "warn" in row.inner_text()
    finally:
        holder.kill()
        holder.join()


def test_live_tail_of_three_writers_resumes_after_a_server_restart(
    page: Any, tmp_path: Path
) -> None:
    path = str(tmp_path / "live.db")
    with sessiondb.open(path) as s:
        s.create_session("live", source="test", title="Live")
    per = 100
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    writers = [
        ctx.Process(target=tail_writer, args=(path, w, per, "live", barrier)) for w in range(3)
    ]
    for w in writers:
        w.start()
    with serving(path) as v:
        port = v.port
        page.goto(base(v) + "/s/live")
        page.locator("#live").wait_for()
        barrier.wait()
        page.wait_for_function("() => document.querySelectorAll('article.msg').length >= 60")
    # the server is down: the page keeps what it has and its EventSource retries
    shown_while_down = page.locator("article.msg").count()
    time.sleep(0.5)
    with serving(path, port=port):
        for w in writers:
            w.join(60)
        page.wait_for_function(
            f"() => document.querySelectorAll('article.msg').length >= {3 * per}", timeout=30_000
        )
        time.sleep(0.5)  # nothing more arrives
        # the resumed stream began after the last event shown (Last-Event-ID): none came twice
        assert page.locator("#transcript").get_attribute("data-duplicates") is None
        seqs = page.eval_on_selector_all("article.msg", "els => els.map(e => +e.dataset.seq)")
        texts = page.eval_on_selector_all(
            "article.msg .text", "els => els.map(e => e.innerText.trim())"
        )
    assert all(w.exitcode == 0 for w in writers)
    assert shown_while_down < 3 * per  # the restart came mid-way: the rest came by resuming
    assert seqs == list(range(1, 3 * per + 1))  # in order, no gap, no duplicate
    with sessiondb.open(path, readonly=True) as s:
        stored = [m.content for m in s.messages("live")]
    assert texts == stored
    for w in range(3):
        mine = [t for t in texts if t.startswith(f"w{w} ")]
        assert mine == [f"w{w} m{i}" for i in range(per)]


def test_live_tail_shows_a_removed_newest_message_correctly(page: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "pop.db")
    with sessiondb.open(path) as w, serving(path) as v:
        w.create_session("p")
        for i in range(3):
            w.append("p", "user", f"kept {i}")
        page.goto(base(v) + "/s/p")
        page.locator("#live").wait_for()
        w.append("p", "user", "soon removed")
        page.locator("#m4").wait_for()
        w.pop_message("p")
        w.append("p", "user", "the new fourth")
        w.append("p", "user", "fifth")
        page.wait_for_function(
            "() => document.querySelector('#m5') && document.querySelector('#m4').innerText"
            ".includes('the new fourth')"
        )
        texts = page.eval_on_selector_all(
            "article.msg .text", "els => els.map(e => e.innerText.trim())"
        )
        assert texts == ["kept 0", "kept 1", "kept 2", "the new fourth", "fifth"]
        w.pop_message("p")
        page.wait_for_function("() => !document.querySelector('#m5')")
        assert page.locator("article.msg").count() == 4


def test_live_tail_pairs_a_result_with_its_call(page: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "pair.db")
    with sessiondb.open(path) as w, serving(path) as v:
        w.create_session("p")
        page.goto(base(v) + "/s/p")
        page.locator("#live").wait_for()
        b = Builder()
        b.tool_call("c<1>", "Bash", input_json({"command": "date"}))
        w.append("p", "assistant", b.content, meta={"blocks": b.blocks})
        call = page.locator("details.tool-call")
        call.wait_for()
        assert "no result yet" in call.locator("summary").inner_text()
        r = Builder()
        r.tool_result("c<1>", "<b>Fri</b>")
        w.append("p", "user", r.content, meta={"blocks": r.blocks})
        page.locator("#m2").wait_for()
        assert "result in #2" in call.locator("summary").inner_text()
        call.locator("summary").click()
        assert call.locator("pre.tool-result-text").inner_text() == "<b>Fri</b>"
