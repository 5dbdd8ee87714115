"""A reply lost on the wire after the commit (docs/postgres.md, evidence 4): a proxy between
the store and the server forwards everything, then drops the connection instead of passing on
the reply to a COMMIT. The append was stored; the client cannot know. A keyed retry returns the
stored message (no duplicate); an unkeyed append raises ConnectionLost instead of being retried
blindly."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit, urlunsplit

import pytest

import sessiondb
from tests import pg


class DropReplyProxy:
    """TCP proxy to the server; when armed, the server's reply to the next COMMIT is dropped
    and both connections closed (what a network failure after the commit looks like)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            commit = threading.Event()
            threading.Thread(target=self._up, args=(client, server, commit), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, commit), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket, commit: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if self.armed.is_set() and b"COMMIT\x00" in data:  # the query, not COMMITTED;
                    commit.set()
                dst.sendall(data)
        except OSError:
            pass

    def _down(self, src: socket.socket, dst: socket.socket, commit: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if commit.is_set():  # the reply to COMMIT: the commit happened, drop it
                    self.armed.clear()
                    self.dropped.set()
                    for sock in (src, dst):  # shutdown wakes the other thread's recv
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                    return
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def test_keyed_retry_after_a_lost_commit_reply_never_duplicates() -> None:
    url = pg.new_url()
    sessiondb.open(url).close()
    target = urlsplit(url)
    proxy = DropReplyProxy(target.hostname or "127.0.0.1", target.port or 5432)
    try:
        with sessiondb.open(_through(url, proxy.port)) as store:
            store.append("s", "user", "before")
            proxy.armed.set()
            with pytest.raises(sessiondb.ConnectionLost, match="may or may not"):
                store.append("s", "user", "keyed", key="k1")
            assert proxy.dropped.is_set()
            again = store.append("s", "user", "keyed", key="k1")  # the retry
            assert again.seq == 2
            proxy.dropped.clear()
            proxy.armed.set()
            with pytest.raises(sessiondb.ConnectionLost):
                store.append("s", "user", "unkeyed")  # stored, and not sent again by us
            assert proxy.dropped.is_set()
        with sessiondb.open(url) as direct:
            assert [(m.seq, m.content) for m in direct.messages("s")] == [
                (1, "before"),
                (2, "keyed"),
                (3, "unkeyed"),
            ]
    finally:
        proxy.close()
