"""The HTTP side: the standard library's threading server, the safety rules, the routes.

Safety rules (issue 19; tests/serve/test_http.py checks each one):

* binds 127.0.0.1 by default; another address needs a token (``Viewer`` refuses without);
* the ``Host`` header must name this server (DNS rebinding): a foreign host gets 421;
* read-only: any method but GET and HEAD gets 405;
* static files come from a fixed table (:mod:`.static`), never from the URL path;
* every response carries a strict Content-Security-Policy with no inline script, ``nosniff``,
  no referrer and no framing; JSON twins escape ``<``, ``>`` and ``&``.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

from jinja2 import Environment

from ..core.contract import Store
from ..errors import Error, SessionNotFound
from ..models import Message
from . import export, tail
from .health import HealthWorker
from .pages import BadRequest, NotFound, Pages, session_url
from .render import environment
from .static import Static
from .transcript import view

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
TOKEN_COOKIE = "sessiondb_token"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _machine_names() -> set[str]:
    names = {socket.gethostname().lower(), socket.getfqdn().lower(), "localhost"}
    return {n for n in names if n}


@dataclass
class Reply:
    status: int
    content_type: str = "text/html; charset=utf-8"
    body: bytes = b""
    stream: Callable[[BinaryIO], None] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_bytes(value: Any) -> bytes:
    """JSON with ``<``, ``>`` and ``&`` escaped: never markup, whatever sniffs it."""
    text = json.dumps(value, ensure_ascii=False, indent=1, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.encode("utf-8", "surrogatepass")


class Viewer:
    """The routes over one read-only store; ``start`` serves them."""

    def __init__(
        self,
        store: Store,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
    ) -> None:
        if not is_loopback(host) and not token:
            raise Error(f"binding {host} (not this machine only) needs a token (--token)")
        self.store = store
        self.host = host
        self.port = port
        self.token = token
        path = store.path
        self.health = HealthWorker.for_store(None if path is None else str(path), store.check)
        self.pages = Pages(store, self.health)
        self.env: Environment = environment()
        self.static = Static()
        self.stop = threading.Event()
        self.httpd: ThreadingHTTPServer | None = None

    # -- serving ---------------------------------------------------------------------------------

    def start(self) -> ThreadingHTTPServer:
        viewer = self

        class Handler(_Handler):
            pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        Handler.viewer = viewer
        httpd = Server((self.host, self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self.httpd = httpd
        self.health.refresh()
        return httpd

    def shutdown(self) -> None:
        self.stop.set()
        self.pages.tokens.stop.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"http://{host}:{self.port}/"
        return base + (f"?token={self.token}" if self.token else "")

    def allowed_host(self, header: str | None) -> bool:
        """Whether a request's ``Host`` names this server (a rebinding page's host does not)."""
        if not header:
            return False
        if header.startswith("["):
            end = header.find("]")
            host, rest = header[: end + 1], header[end + 1 :]
            if end < 0 or (rest and not rest.startswith(":")):
                return False
            port = rest[1:]
        else:
            host, _, port = header.partition(":")
        if not (port == str(self.port) or (not port and self.port == 80)):
            return False
        host = host.lower()
        bound = f"[{self.host}]" if ":" in self.host else self.host
        if is_loopback(self.host):
            return host in {bound, "localhost", "127.0.0.1", "[::1]"}
        if self.host in ("0.0.0.0", "::", ""):
            # Every address of the machine (a token is required there): any IP literal, and the
            # machine's own names. A rebinding page reaches us under its own DNS name, never
            # under an IP literal, so its Host is still refused.
            return _ip_literal(host) or host in _machine_names()
        return host == bound

    # -- routes ----------------------------------------------------------------------------------

    def route(self, path: str, q: dict[str, str], wants_json: bool, headers: Any) -> Reply:
        parts = [unquote(p) for p in path.split("/")[1:]]
        try:
            if parts == [""]:
                data = self.pages.sessions(q)
                return self.page("sessions.html", data, wants_json, data)
            if parts[0] == "static" and len(parts) == 2:
                found = self.static.get(parts[1])
                if found is None:
                    raise NotFound("no such file")
                return Reply(200, found[1], found[0], headers={"Cache-Control": "max-age=60"})
            if parts[0] == "s" and len(parts) >= 2:
                return self.session_route(parts[1], parts[2:], q, wants_json, headers)
            if parts == ["search"]:
                data = self.pages.search(q)
                return self.page("search.html", data, wants_json, Pages.search_twin(data))
            if parts == ["stats"]:
                data = self.pages.stats(q)
                return self.page("stats.html", data, wants_json, data)
            if parts == ["health"]:
                data = self.pages.health_page()
                return self.page("health.html", data, wants_json, data)
            raise NotFound("no such page")
        except NotFound as e:
            return self.error(404, str(e), wants_json)
        except BadRequest as e:
            return self.error(400, str(e), wants_json)
        except SessionNotFound as e:
            return self.error(404, str(e), wants_json)

    def session_route(
        self, sid: str, rest: list[str], q: dict[str, str], wants_json: bool, headers: Any
    ) -> Reply:
        if not rest:
            data = self.pages.session(sid, q)
            return self.page("session.html", data, wants_json, Pages.session_twin(data))
        if rest == ["fragment"]:
            data = self.pages.session(sid, q)
            return self.page("messages.html", data, wants_json, Pages.session_twin(data))
        if rest == ["events"]:
            return self.events(sid, q, headers)
        if len(rest) == 1 and rest[0].startswith("export."):
            fmt = rest[0].removeprefix("export.")
            if fmt not in export.FORMATS:
                raise NotFound("export formats: jsonl, json, md")
            if self.store.get_session(sid) is None:
                raise NotFound(f"no session {sid!r}")
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in sid)[:80]
            return Reply(
                200,
                export.FORMATS[fmt],
                stream=lambda out: export.write(self.store, sid, fmt, out),
                headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
            )
        if len(rest) == 2 and rest[0] == "m" and rest[1].endswith(".txt"):
            try:
                seq = int(rest[1].removesuffix(".txt"))
            except ValueError:
                raise NotFound("no such message") from None
            msgs = self.store.messages(sid, after=seq - 1, limit=1) if seq > 0 else []
            if not msgs or msgs[0].seq != seq:
                raise NotFound("no such message")
            body = msgs[0].content.encode("utf-8", "surrogatepass")
            return Reply(200, "text/plain; charset=utf-8", body)
        raise NotFound("no such page")

    def events(self, sid: str, q: dict[str, str], headers: Any) -> Reply:
        last_id = headers.get("Last-Event-ID")
        raw = last_id if last_id not in (None, "") else q.get("after", "0")
        try:
            after = max(0, int(raw))
            rev = int(q["rev"]) if q.get("rev") else None
        except ValueError:
            raise BadRequest("after, rev and Last-Event-ID are whole numbers") from None
        if self.store.get_session(sid) is None:
            raise NotFound(f"no session {sid!r}")
        template = self.env.get_template("message.html")

        def html(m: Message) -> str:
            return template.render(v=view(m), sid=sid, txt_url=self.txt_url)

        return Reply(
            200,
            "text/event-stream; charset=utf-8",
            stream=lambda out: tail.stream(self.store, sid, after, rev, out, self.stop, html),
            headers={"Cache-Control": "no-store"},
        )

    @staticmethod
    def txt_url(sid: str, seq: int) -> str:
        return session_url(sid, f"/m/{seq}.txt")

    def page(self, name: str, data: dict[str, Any], wants_json: bool, twin: Any) -> Reply:
        if wants_json:
            return Reply(200, "application/json; charset=utf-8", json_bytes(twin))
        html = self.env.get_template(name).render(
            d=data, txt_url=self.txt_url, session_url=session_url
        )
        return Reply(200, body=html.encode("utf-8", "surrogatepass"))

    def error(self, status: int, message: str, wants_json: bool) -> Reply:
        if wants_json:
            return Reply(status, "application/json; charset=utf-8", json_bytes({"error": message}))
        html = self.env.get_template("error.html").render(status=status, message=message)
        return Reply(status, body=html.encode("utf-8", "surrogatepass"))


class _Handler(BaseHTTPRequestHandler):
    viewer: Viewer
    server_version = "sessiondb"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints the URL
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method but GET and HEAD: read-only
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._send(
            Reply(405, "text/plain; charset=utf-8", b"read-only\n", headers={"Allow": "GET, HEAD"})
        )

    def do_HEAD(self) -> None:
        self._get(head=True)

    def do_GET(self) -> None:
        self._get(head=False)

    def _get(self, head: bool) -> None:
        v = self.viewer
        if not v.allowed_host(self.headers.get("Host")):
            self._send(Reply(421, "text/plain; charset=utf-8", b"misdirected request\n"))
            return
        url = urlsplit(self.path)
        q = dict(parse_qsl(url.query, keep_blank_values=True))
        cookie_set = None
        if v.token is not None:
            given = q.pop("token", None)
            if given is not None and hmac.compare_digest(given.encode(), v.token.encode()):
                cookie_set = f"{TOKEN_COOKIE}={v.token}; HttpOnly; SameSite=Strict; Path=/"
            elif not self._cookie_ok(v.token):
                self._send(Reply(401, "text/plain; charset=utf-8", b"token required\n"))
                return
        accept = self.headers.get("Accept", "")
        wants_json = q.pop("format", "") == "json" or accept.startswith("application/json")
        try:
            reply = v.route(url.path, q, wants_json, self.headers)
        except Error as e:
            reply = v.error(500, f"{type(e).__name__}: {e}", wants_json)
        except Exception as e:  # a bug: an answer, not a dropped connection
            reply = v.error(500, f"internal error: {type(e).__name__}: {e}", wants_json)
        if cookie_set:
            reply.headers["Set-Cookie"] = cookie_set
        self._send(reply, head=head)

    def _cookie_ok(self, token: str) -> bool:
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == TOKEN_COOKIE and hmac.compare_digest(value.encode(), token.encode()):
                return True
        return False

    def _send(self, reply: Reply, head: bool = False) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for k, val in SECURITY_HEADERS.items():
            self.send_header(k, val)
        if "Cache-Control" not in reply.headers:
            self.send_header("Cache-Control", "no-store")
        for k, val in reply.headers.items():
            self.send_header(k, val)
        if reply.stream is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(reply.body)
            return
        self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the reader went away
            reply.stream(self.wfile)  # type: ignore[arg-type]


__all__ = ["CSP", "Reply", "Viewer", "is_loopback", "json_bytes"]
