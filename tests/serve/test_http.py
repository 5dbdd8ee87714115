"""The viewer's safety rules and pages over HTTP, without a browser (issue 19): Host check (421),
read-only (405), the CSP and other headers, the static table, a token for other addresses,
escaping of a hostile corpus in HTML and in the JSON twins, paging, the live tail's events."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

import sessiondb
from sessiondb.cli import app
from sessiondb.errors import Error
from sessiondb.serve import Viewer
from sessiondb.serve.server import CSP

from ._corpus import (
    HOSTILE,
    HOSTILE_ID,
    SCRIPT,
    hostile_corpus,
    long_session,
    serving,
    tool_session,
)


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    path = str(tmp_path_factory.mktemp("serve") / "s.db")
    with sessiondb.open(path) as s:
        hostile_corpus(s, huge=False)
        tool_session(s)
        long_session(s)
    with serving(path) as v:
        yield v


def get(
    v: Viewer, path: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", v.port, timeout=30)
    h = {"Host": f"127.0.0.1:{v.port}", **(headers or {})}
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, val in h.items():
        conn.putheader(k, val)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read() if method != "HEAD" else b""
    conn.close()
    return r.status, {k.lower(): val for k, val in r.getheaders()}, body


HID = "/s/" + quote(HOSTILE_ID, safe="")
PAGES = ["/", "/?q=id", HID, "/s/tools", "/search?q=hostile", "/stats?since=all", "/health"]


class Markup(HTMLParser):
    """Every element and attribute of a page, to check nothing active came from the data."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[tuple[str, str]] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        if tag == "script":
            self.scripts.append(a)
        for name, _ in attrs:
            if name.startswith("on"):
                self.handlers.append((tag, name))
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")


# -- the safety rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:{port}", "127.0.0.1:1", "localhost.evil.example:{port}", ""],
)
def test_a_foreign_host_header_gets_421(viewer: Viewer, host: str) -> None:
    status, _, _ = get(viewer, "/", headers={"Host": host.format(port=viewer.port)})
    assert status == 421


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}"])
def test_this_servers_own_names_are_served(viewer: Viewer, host: str) -> None:
    status, _, _ = get(viewer, "/", headers={"Host": host.format(port=viewer.port)})
    assert status == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"])
def test_every_method_but_get_and_head_gets_405(viewer: Viewer, method: str) -> None:
    status, headers, _ = get(viewer, "/", method=method)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_head_answers_without_a_body(viewer: Viewer) -> None:
    status, headers, _ = get(viewer, "/", method="HEAD")
    assert status == 200 and headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("path", [*PAGES, "/static/app.js", "/nope", HID + "?format=json"])
def test_every_answer_carries_the_strict_csp(viewer: Viewer, path: str) -> None:
    _, headers, _ = get(viewer, path)
    assert headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("path", PAGES)
def test_no_page_has_inline_script_or_handlers(viewer: Viewer, path: str) -> None:
    status, _, body = get(viewer, path)
    assert status == 200, body[:500]
    page = Markup()
    page.feed(body.decode())
    assert page.scripts == [{"src": "/static/app.js", "defer": None}]
    assert page.handlers == []
    assert not page.tags & {"img", "svg", "iframe", "object", "embed", "style", "textarea"}
    for href in page.links:  # only the viewer's own pages, anchors and http(s)/mailto
        assert href.startswith(("/", "#", "http://", "https://", "mailto:")), href


@pytest.mark.parametrize(
    "path",
    [
        "/static/render.py",
        "/static/../server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/templates/base.html",
        "/static//etc/passwd",
        "/static/",
        "/static/APP.JS",
    ],
)
def test_static_files_come_from_the_fixed_table_only(viewer: Viewer, path: str) -> None:
    status, _, body = get(viewer, path)
    assert status == 404
    assert b"import" not in body and b"root:" not in body


def test_the_static_table_serves_its_entries(viewer: Viewer) -> None:
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        status, headers, body = get(viewer, f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(kind) and body
    status, _, body = get(viewer, "/static/highlight.css")
    assert status == 200 and b".hl" in body


def test_the_hostile_corpus_shows_as_text_in_html(viewer: Viewer) -> None:
    _, _, body = get(viewer, HID)
    html = body.decode()
    assert "&lt;script&gt;window.__pwned = 1" in html
    assert "&lt;img src=x onerror=" in html
    assert "&lt;/textarea&gt;" in html
    assert "{{ config.items() }} {% if true %}jinja{% endif %} ${user.name}" in html  # as text
    assert "\u202e" not in html and "\\u202e" in html  # a bidi override is shown, not obeyed
    assert "javascript:" not in html.replace("(javascript:window.__pwned=3)", "")
    assert "&lt;b&gt;id&lt;/b&gt;" in html


def test_the_hostile_corpus_round_trips_through_the_json_twin(viewer: Viewer) -> None:
    for how in ({"path": HID + "?format=json"}, {"path": HID, "accept": "application/json"}):
        status, headers, body = get(viewer, how["path"], headers={"Accept": how.get("accept", "")})
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert b"<" not in body and b">" not in body  # escaped as \u003c: never markup
        data = json.loads(body)
        contents = [m["content"] for m in data["messages"]]
        for text in HOSTILE:
            assert f"hostile {text}" in contents
        assert data["session"]["session_id"] == HOSTILE_ID
        assert data["session"]["meta"] == {"x": SCRIPT}


@pytest.mark.parametrize(
    "path", ["/?format=json", "/search?q=hostile&format=json", "/stats?format=json"]
)
def test_every_page_has_a_json_twin(viewer: Viewer, path: str) -> None:
    status, headers, body = get(viewer, path)
    assert status == 200 and headers["content-type"].startswith("application/json")
    json.loads(body)


def test_health_twin_is_the_doctors_report(viewer: Viewer) -> None:
    deadline = time.monotonic() + 20
    while True:
        data = json.loads(get(viewer, "/health?format=json")[2])
        if data["report"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert data["report"]["format"] == 1
    assert {c["name"] for c in data["report"]["checks"]} >= {"write_lock", "integrity"}


def test_another_address_needs_a_token(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    sessiondb.open(path).close()
    with sessiondb.open(path, readonly=True) as store, pytest.raises(Error, match="token"):
        Viewer(store, host="0.0.0.0", port=0)
    r = CliRunner().invoke(app.cli, ["--db", path, "serve", "--host", "0.0.0.0", "--port", "0"])
    assert r.exit_code == 2 and "--token" in r.output


def test_a_token_is_asked_once_then_kept_in_a_cookie(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    sessiondb.open(path).close()
    with serving(path, token="s3cret") as v:
        assert get(v, "/")[0] == 401
        assert get(v, "/?token=wrong")[0] == 401
        status, headers, _ = get(v, "/?token=s3cret")
        assert status == 200 and "HttpOnly" in headers["set-cookie"]
        cookie = headers["set-cookie"].split(";")[0]
        assert get(v, "/stats", headers={"Cookie": cookie})[0] == 200
        assert get(v, "/stats", headers={"Cookie": "sessiondb_token=nope"})[0] == 401


def test_a_missing_store_is_an_error_that_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "s.db"
    for args in (["--db", str(path), "serve"], ["serve", "--db", str(path)]):
        r = CliRunner().invoke(app.cli, [*args, "--port", "0"])
        assert r.exit_code == 1 and "StoreNotFound" not in r.output
        assert "error" in r.output
        assert not path.exists() and not path.parent.exists()


# -- the pages ------------------------------------------------------------------------------------


def test_sessions_list_pages_filters_and_sorts(viewer: Viewer) -> None:
    data = json.loads(get(viewer, "/?format=json")[2])
    assert data["total"] == 3 and set(data["sources"]) >= {"claude", "codex"}
    ids = [s["session_id"] for s in data["sessions"]]
    oldest = [
        s["session_id"] for s in json.loads(get(viewer, "/?sort=oldest&format=json")[2])["sessions"]
    ]
    assert oldest == ids[::-1]
    assert [
        s["session_id"]
        for s in json.loads(get(viewer, "/?source=codex&format=json")[2])["sessions"]
    ] == ["long"]
    assert [
        s["session_id"] for s in json.loads(get(viewer, "/?q=TOOL&format=json")[2])["sessions"]
    ] == ["tools"]
    assert get(viewer, "/?sort=sideways")[0] == 400
    assert get(viewer, "/?page=0")[0] == 400


def test_a_25000_message_session_opens_at_once_and_pages(viewer: Viewer) -> None:
    t0 = time.perf_counter()
    status, _, body = get(viewer, "/s/long")
    took = time.perf_counter() - t0
    assert status == 200 and took < 5, took
    html = body.decode()
    assert html.count('<article class="msg') == 200
    assert 'id="m1"' in html and 'id="m200"' in html and 'id="m201"' not in html
    assert 'href="/s/long?after=200"' in html
    data = json.loads(get(viewer, "/s/long?after=24900&format=json")[2])
    assert [m["seq"] for m in data["messages"]] == list(range(24901, 25001))
    assert data["at_end"] and data["later_url"] is None
    at = json.loads(get(viewer, "/s/long?at=12345&format=json")[2])
    assert 12345 in [m["seq"] for m in at["messages"]]
    frag = get(viewer, "/s/long/fragment?after=200")[2].decode()
    assert frag.count("<article") == 200 and "<html" not in frag


def test_tool_calls_are_folded_and_paired_with_their_results(viewer: Viewer) -> None:
    html = get(viewer, "/s/tools")[2].decode()
    assert html.count('<details class="tool-call"') == 2
    assert html.count('<details class="thinking">') == 1
    assert "→ result in #3" in html and "→ error in #3" in html
    assert "README.md\nsrc" in html and "no such file" in html
    assert 'class="hl"' in html  # the code block is highlighted


def test_search_highlights_and_links_to_the_message(viewer: Viewer) -> None:
    data = json.loads(get(viewer, "/search?q=number+12345&format=json")[2])
    hit = data["hits"][0]
    assert hit["session_id"] == "long" and hit["seq"] == 12345
    assert hit["url"] == "/s/long?at=12345#m12345"
    html = get(viewer, "/search?q=number+12345")[2].decode()
    assert "<mark>12345</mark>" in html
    bad = get(viewer, "/search?q=%22unclosed&mode=fts")[2].decode()
    assert 'class="error query-error"' in bad


def test_export_in_each_format(viewer: Viewer, tmp_path: Path) -> None:
    status, headers, body = get(viewer, "/s/tools/export.jsonl")
    assert status == 200 and "attachment" in headers["content-disposition"]
    (tmp_path / "t.jsonl").write_bytes(body)
    with sessiondb.open(str(tmp_path / "copy.db")) as copy:
        copy.import_jsonl(tmp_path / "t.jsonl")
        again = tmp_path / "again.jsonl"
        copy.export_jsonl("tools", again)
    assert again.read_bytes() == body
    doc = json.loads(get(viewer, "/s/tools/export.json")[2])
    assert len(doc["messages"]) == 4
    md = get(viewer, "/s/tools/export.md")[2].decode()
    assert md.startswith("# Tool use")
    assert get(viewer, "/s/tools/export.exe")[0] == 404
    assert get(viewer, "/s/nope/export.jsonl")[0] == 404


def test_unknown_pages_and_sessions_are_404(viewer: Viewer) -> None:
    assert get(viewer, "/s/nope")[0] == 404
    assert get(viewer, "/nowhere")[0] == 404
    assert get(viewer, "/s/tools/m/99.txt")[0] == 404
    status, headers, body = get(viewer, "/s/tools/m/1.txt")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert body.startswith(b"List the files")


# -- the live tail --------------------------------------------------------------------------------


def read_events(
    port: int, path: str, want: int, last_id: str | None = None
) -> list[tuple[str, str | None, dict[str, object]]]:
    """The first ``want`` events (kind, id, data) of a stream."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
    if last_id is not None:
        head += f"Last-Event-ID: {last_id}\r\n"
    sock.sendall((head + "\r\n").encode())
    buf = b""
    events: list[tuple[str, str | None, dict[str, object]]] = []
    while len(events) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf and len(events) < want:
            block, buf = buf.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            for line in block.decode().split("\n"):
                k, _, val = line.partition(": ")
                fields[k] = val
            if "event" in fields:
                events.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
    sock.close()
    return events


def test_live_tail_events_carry_the_seq_and_resume_after_last_event_id(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with sessiondb.open(path) as w, serving(path) as v:
        w.create_session("t")
        for i in range(5):
            w.append("t", "user", f"m{i}")
        got = read_events(v.port, "/s/t/events?after=0", 5)
        assert [(k, e) for k, e, _ in got] == [("message", str(i)) for i in range(1, 6)]
        assert 'id="m3"' in str(got[2][2]["html"])
        w.append("t", "user", "<script>x</script>")
        resumed = read_events(v.port, "/s/t/events?after=0", 1, last_id="5")
        assert resumed[0][1] == "6" and "&lt;script&gt;" in str(resumed[0][2]["html"])


def test_a_removed_newest_message_sends_a_revision_event(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with sessiondb.open(path) as w, serving(path) as v:
        w.create_session("t")
        for i in range(3):
            w.append("t", "user", f"m{i}")
        rev = w.get_session("t").revision  # type: ignore[union-attr]
        w.pop_message("t")
        w.append("t", "user", "replacement")
        got = read_events(v.port, f"/s/t/events?after=3&rev={rev}", 1)
        assert got[0][0] == "revision" and got[0][2]["count"] == 3
        assert got[0][2]["revision"] != rev


def test_an_open_live_tail_never_pins_the_wal(tmp_path: Path) -> None:
    """Between polls the stream holds no read snapshot: a writer's TRUNCATE checkpoint, which
    needs every reader off the WAL, completes while three streams are open."""
    import threading

    import apsw

    path = str(tmp_path / "s.db")
    with sessiondb.open(path) as w, serving(path) as v:
        w.create_session("t")
        w.append("t", "user", "first")
        readers = [
            threading.Thread(target=read_events, args=(v.port, "/s/t/events?after=0", 21))
            for _ in range(3)
        ]
        for r in readers:
            r.start()
        conn = apsw.Connection(path)
        conn.set_busy_timeout(2000)
        for i in range(20):
            w.append("t", "user", f"m{i} " + "x" * 5000)
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
        assert Path(path + "-wal").stat().st_size == 0
        conn.close()
        for r in readers:
            r.join(10)


def test_search_finds_cjk_and_escapes_snippets(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with sessiondb.open(path) as w:
        w.append("cjk", "user", "数据库被锁定了 <b>怎么办</b>")
    with serving(path) as v:
        data = json.loads(get(v, "/search?q=" + quote("被锁定") + "&format=json")[2])
        assert [h["seq"] for h in data["hits"]] == [1]
        html = get(v, "/search?q=" + quote("被锁定"))[2].decode()
        assert "<mark>被锁定</mark>" in html and "&lt;b&gt;怎么办&lt;/b&gt;" in html


def test_every_address_with_a_token_takes_ip_literals_and_refuses_dns_names(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "s.db")
    sessiondb.open(path).close()
    with serving(path, host="0.0.0.0", token="t0k") as v:
        assert get(v, "/", headers={"Host": f"10.1.2.3:{v.port}"})[0] == 401
        assert get(v, "/?token=t0k", headers={"Host": f"10.1.2.3:{v.port}"})[0] == 200
        assert get(v, "/?token=t0k", headers={"Host": f"[fe80::1]:{v.port}"})[0] == 200
        assert get(v, "/?token=t0k", headers={"Host": f"evil.example:{v.port}"})[0] == 421
        assert get(v, "/?token=t0k", headers={"Host": "10.1.2.3:1"})[0] == 421


def test_the_command_serves_until_interrupted(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import urllib.request

    path = tmp_path / "s.db"
    with sessiondb.open(str(path)) as s:
        s.append("hello", "user", "hi")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sessiondb.cli", "serve", "--db", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        url = line[line.index("http://") :].split()[0]
        with urllib.request.urlopen(url + "s/hello?format=json", timeout=10) as r:
            assert json.loads(r.read())["messages"][0]["content"] == "hi"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and b"stopped" in out
    finally:
        proc.kill()
        proc.wait()


def test_tokens_per_session_are_counted_in_the_background(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with sessiondb.open(path) as w:
        w.create_session("u")
        for i, out in enumerate([5, 9, 12]):  # one response in three entries: counted once
            usage = {"input_tokens": 100, "output_tokens": out}
            w.append("u", "assistant", f"part {i}", meta={"usage": usage, "response_id": "r1"})
        w.append("u", "assistant", "other", meta={"usage": {"output_tokens": 7}})
    with serving(path) as v, sessiondb.open(path) as w:

        def tokens() -> object:
            deadline = time.monotonic() + 10
            while True:
                rows = json.loads(get(v, "/?format=json")[2])["sessions"]
                if rows[0]["tokens"] is not None or time.monotonic() > deadline:
                    return rows[0]["tokens"]
                time.sleep(0.05)

        assert tokens() == 112 + 7
        w.append("u", "assistant", "more", meta={"usage": {"input_tokens": 1000}})
        assert tokens() == 112 + 7 + 1000
        w.pop_message("u")
        assert tokens() == 112 + 7
        assert "119 tokens" in get(v, "/s/u")[2].decode()
