"""What cross-process combining sends over its socket (combine.py): requests and answers.

A request travels as bytes the receiving head checks like API input (core/validate.py,
``Item.of``) — never pickle: any process of the user can connect. Two forms each way:

* the common append (one request of one item: no key, meta, time, expected seq or patch) as
  ``S`` + a fixed header (token, lengths) + the UTF-8 strings, and its fresh answer as ``F`` +
  (seq, time): 3–7 µs to encode and decode against 16–32 µs for JSON (docs/benchmarks.md,
  "Cross-process combining");
* anything else as ``J`` + JSON: one entry per request, items with their meta as canonical JSON
  text; answers one entry per request — the messages, or the per-request failure
  (``KeyConflict``, ``StaleSession``).

``R`` alone is the answer "not committed: commit it yourself"; ``A`` alone is "committed, the
answer is too large to send: read it back by its token"; ``H`` alone, with two descriptors, is
"not committed: you are the next head" (combine_baton.py).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import struct
from collections.abc import Sequence
from typing import Any

from ..core import append as ap
from ..core import state
from ..core import validate as v
from ..core.writes import Request
from ..errors import InvalidInput, KeyConflict, StaleSession
from ..models import Message, new_message

#: Largest request (bytes); a larger one queues for its own turn, as without combining.
MAX_REQUEST = 60 * 1024
#: Largest answer sent; a larger one is ``A`` and is read back (JSON escapes can grow text).
MAX_ANSWER = 128 * 1024

RETRY = b"R"
READ_BACK = b"A"
HEAD = b"H"

Outcome = list[Message] | Exception

#: What a malformed request raises while it is decoded.
MALFORMED = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    InvalidInput,
    UnicodeDecodeError,
    struct.error,
    RecursionError,
)

_CRED = struct.Struct("3i")
_SIMPLE = struct.Struct("<16sHH")  # token, len(session id), len(role)
_FRESH = struct.Struct("<qd")  # seq, created_at
_TOKEN_PREFIX: list[Any] = [secrets.token_hex(8), 0]


def token() -> str:
    """A request's token: unique across processes (a random prefix per process, then a
    counter: no system call per request)."""
    _TOKEN_PREFIX[1] += 1
    return f"{_TOKEN_PREFIX[0]}{_TOKEN_PREFIX[1]:016x}"


def _new_prefix() -> None:
    _TOKEN_PREFIX[:] = [secrets.token_hex(8), 0]


# A child process must not hand out its parent's tokens again.
os.register_at_fork(after_in_child=_new_prefix)


def _simple(requests: list[Request]) -> bool:
    if len(requests) != 1:
        return False
    r = requests[0]
    if len(r.items) != 1 or r.expect_last is not None or r.patch:
        return False
    item = r.items[0]
    return item.key is None and item.meta is None and item.created_at is None


def encode_requests(requests: list[Request]) -> tuple[bytes, list[str]]:
    """The requests' bytes and their tokens."""
    if _simple(requests):
        r, item = requests[0], requests[0].items[0]
        t = token()
        sid, role = r.sid.encode(), item.role.encode()
        head = _SIMPLE.pack(bytes.fromhex(t), len(sid), len(role))
        return b"S" + head + sid + role + item.content.encode(), [t]
    tokens = [token() for _ in requests]
    wire = [
        [
            t,
            r.sid,
            [[i.role, i.content, i.key, i.meta, i.created_at] for i in r.items],
            r.expect_last,
            r.patch,
        ]
        for t, r in zip(tokens, requests, strict=True)
    ]
    return b"J" + _dumps(wire), tokens


def decode_requests(data: bytes) -> tuple[list[Request], list[str]]:
    """Another process's requests, checked like API input; raises one of :data:`MALFORMED`."""
    if len(data) > MAX_REQUEST:
        raise ValueError("request too large")
    if data[:1] == b"S":
        raw, ls, lr = _SIMPLE.unpack_from(data, 1)
        at = 1 + _SIMPLE.size
        sid = data[at : at + ls].decode()
        role = data[at + ls : at + ls + lr].decode()
        content = data[at + ls + lr :].decode()
        item = ap.Item.of(role, content, None, None, None)
        return [Request(v.session_id(sid), [item], None, None)], [raw.hex()]
    if data[:1] != b"J":
        raise ValueError("unknown request form")
    wire = json.loads(data[1:])
    if not isinstance(wire, list) or not wire:
        raise ValueError("not a list of requests")
    requests, tokens = [], []
    for entry in wire:
        if not isinstance(entry, list) or len(entry) != 5:
            raise ValueError("not a request")
        t, sid, items, last, patch = entry
        if not isinstance(t, str) or len(t) != 32:
            raise ValueError("bad token")
        int(t, 16)
        if not isinstance(items, list) or not items:
            raise ValueError("no items")
        made = []
        for it in items:
            if not isinstance(it, list) or len(it) != 5:
                raise ValueError("not an item")
            role, content, key, meta, at = it
            if meta is not None and not isinstance(meta, str):
                raise ValueError("meta is not JSON text")
            parsed = None if meta is None else json.loads(meta)
            made.append(ap.Item.of(role, content, key, parsed, at))
        last = None if last is None else v.non_negative_int(last, "expect_last")
        requests.append(Request(v.session_id(sid), made, last, state.check(patch)))
        tokens.append(t)
    return requests, tokens


def encode_answer(outcomes: Sequence[Outcome]) -> bytes:
    """One outcome per request: messages, or a per-request failure (append_group's)."""
    if len(outcomes) == 1:
        o = outcomes[0]
        if not isinstance(o, BaseException) and len(o) == 1:
            return b"F" + _FRESH.pack(o[0].seq, o[0].created_at)
    wire: list[Any] = []
    for o in outcomes:
        if isinstance(o, KeyConflict):
            wire.append(["K", o.key, o.seq])
        elif isinstance(o, StaleSession):
            wire.append(["S", o.expected, o.actual])
        elif isinstance(o, BaseException):  # pragma: no cover - a group fails as a whole
            raise TypeError(f"not a per-request failure: {o!r}")
        else:
            wire.append(["m", [[m.seq, m.role, m.content, m.key, m.meta, m.created_at] for m in o]])
    data = b"J" + _dumps(wire)
    return data if len(data) <= MAX_ANSWER else READ_BACK


def decode_answer(data: bytes, requests: list[Request]) -> list[Outcome]:
    """The head's answer to ``requests``; raises one of :data:`MALFORMED` if it is not one."""
    if data[:1] == b"F":
        if len(requests) != 1 or len(requests[0].items) != 1 or len(data) != 1 + _FRESH.size:
            raise ValueError("a one-message answer to another request")
        seq, at = _FRESH.unpack_from(data, 1)
        r, it = requests[0], requests[0].items[0]
        return [[new_message(r.sid, seq, it.role, it.content, it.key, v.load_meta(it.meta), at)]]
    if data[:1] != b"J":
        raise ValueError("unknown answer form")
    wire = json.loads(data[1:])
    if not isinstance(wire, list) or len(wire) != len(requests):
        raise ValueError("not one outcome per request")
    out: list[Outcome] = []
    for r, o in zip(requests, wire, strict=True):
        kind = o[0]
        if kind == "m":
            out.append(
                [
                    new_message(r.sid, int(seq), str(role), str(content), key, meta, float(at))
                    for seq, role, content, key, meta, at in o[1]
                ]
            )
        elif kind == "K":
            out.append(KeyConflict(r.sid, str(o[1]), None if o[2] is None else int(o[2])))
        elif kind == "S":
            out.append(StaleSession(r.sid, int(o[1]), int(o[2])))
        else:
            raise ValueError(f"unknown outcome {kind!r}")
    return out


def peer(sock: socket.socket) -> tuple[int, int]:
    """The (pid, uid) of the process at the other end of ``sock`` (``SO_PEERCRED``): each end
    talks only to its own user's processes."""
    pid, uid, _gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


__all__ = [
    "HEAD",
    "MALFORMED",
    "MAX_ANSWER",
    "MAX_REQUEST",
    "READ_BACK",
    "RETRY",
    "Outcome",
    "decode_answer",
    "decode_requests",
    "encode_answer",
    "encode_requests",
    "peer",
    "token",
]
