"""Transcript line formats: reading JSONL safely and turning each line into a message record.

A file's format is recognised from its first classifiable line (no flags needed); every later line
is parsed with that format. Three formats ship:

* ``sessiondb`` — sessiondb's own export: a header line per session
  ``{"sessiondb_export": 1, "session_id", "source", "title", "meta", "created_at", "updated_at",
  "ended_at", "end_reason"}`` followed by one object per message with ``session_id, seq, role,
  content, key, meta, created_at``.
* ``claude-code`` — Claude Code session transcripts (``~/.claude/projects/<project>/<id>.jsonl``):
  entries of ``type`` ``user``/``assistant`` carry ``message.role`` and ``message.content`` (a
  string or a list of ``text``/``thinking``/``tool_use``/``tool_result``/``image`` blocks, kept
  as sessiondb's blocks, :mod:`.blocks`), ``message.usage`` and ``message.model``, plus ``uuid``,
  ``parentUuid``, ``sessionId`` and an ISO ``timestamp``. A ``summary`` line is the session's
  title; every other entry type (``file-history-snapshot``, ``system``, ``progress``,
  ``queue-operation``, …) is bookkeeping and is skipped, not reported as bad.
* ``plain`` — ``{"role", "content", …}`` lines: OpenAI chat messages (content a string, ``null``
  or a list of parts; ``tool_calls``; ``tool`` results) and OpenAI Responses items
  (``function_call``, ``function_call_output``, ``reasoning``).

A user adds a format by implementing :class:`Format` and passing it to :func:`register_format`;
formats are tried in registration order, most specific first, ``plain`` last.

Every record carries a key derived from its source, so importing the same file twice (or a file
that has grown) adds only what is new: ``claude:<uuid>`` for Claude Code, the exported key for
sessiondb's own format, and ``jsonl:<line>:<hash of the line's bytes>`` for plain lines. The plain
key names no path, so the same file moved or copied is still recognised, and the hash means an
edited line is a new message rather than a silent conflict.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import InvalidInput
from ..models import BadLine
from . import blocks, parts, usage, validate
from .blocks import BLOCKS, Builder

#: Longest accepted line: the store's one message size limit (``validate.MAX_MESSAGE_BYTES``).
#: Longer lines are bad lines, skipped without ever being held in memory whole (a 64 MiB line
#: must not blow the importer's memory bound).
MAX_LINE_BYTES = validate.MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class Record:
    """One message read from a transcript line."""

    role: str
    content: str
    key: str | None
    meta: dict[str, Any] | None
    created_at: float | None
    #: the session the line itself names (``sessionId``, ``session_id``), if any
    session_id: str | None = None
    #: the position the line claims in its session (sessiondb's own format only)
    seq: int | None = None
    #: the key to use when a keyless line cannot be matched by its position (sessiondb format)
    alt_key: str | None = None
    #: the key names the source line (not a key a user chose): the same key stored with other
    #: content was stored from this same line by an earlier sessiondb that read it differently
    derived_key: bool = False


_RECORD_FIELDS = tuple(Record.__dataclass_fields__)


def record_of(values: tuple[Any, ...]) -> Record:
    """The Record of ``values`` (every field, in order), built as unpickling builds a dataclass:
    the fields set at once rather than by one frozen ``__setattr__`` each (1.1 against 1.5 µs;
    the hot path of plain lines and of core/reader.py)."""
    rec = object.__new__(Record)
    rec.__dict__.update(zip(_RECORD_FIELDS, values, strict=True))
    return rec


@dataclass(frozen=True)
class Header:
    """A sessiondb export header: the session the following lines belong to, with every field
    a backup restores (older exports lack the times)."""

    session_id: str
    source: str | None
    title: str | None
    meta: dict[str, Any] | None
    created_at: float | None = None
    updated_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None


@dataclass(frozen=True)
class Title:
    """A transcript's own title for its session (Claude Code's ``summary`` line); ``leaf`` is the
    uuid of the message it summarises, when given."""

    text: str
    leaf: str | None


Parsed = Record | Header | Title
"""What a line of a transcript may hold."""


class LineError(Exception):
    """A line that cannot become a message; the text is the reason shown to the user."""


@dataclass(frozen=True)
class RawLine:
    """One physical line: ``data`` is None when the line was longer than the cap."""

    number: int
    data: bytes | None
    end: int  # byte offset just past this line


class Format(abc.ABC):
    """A transcript format. Subclass, set ``name``, implement :meth:`sniff` and :meth:`parse`."""

    name: str = "?"

    @abc.abstractmethod
    def sniff(self, obj: dict[str, Any]) -> bool:
        """True when ``obj`` (a decoded line) unmistakably belongs to this format."""

    @abc.abstractmethod
    def parse(self, obj: dict[str, Any], line: int, raw: bytes) -> Parsed | None:
        """Turn a decoded line into a record; None skips a non-message entry; raise
        :class:`LineError` for a line that should be reported as bad."""


def line_digest(raw: bytes) -> str:
    """Short content hash of a line's bytes (64 bits: collisions need 2**32 lines per session)."""
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def parse_time(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO 8601 string (``Z`` accepted); None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        # Milliseconds since the epoch are common in JS-written logs.
        return v / 1000.0 if v > 1e11 else v
    if isinstance(value, str) and value:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return None


class SessiondbFormat(Format):
    name = "sessiondb"
    _fields = ("session_id", "seq", "role", "content", "key", "created_at")

    def sniff(self, obj: dict[str, Any]) -> bool:
        return "sessiondb_export" in obj or all(f in obj for f in self._fields)

    def parse(self, obj: dict[str, Any], line: int, raw: bytes) -> Parsed | None:
        if "sessiondb_export" in obj:
            version = obj["sessiondb_export"]
            if version != 1:
                raise LineError(
                    f"export format version {version!r} is not supported by this sessiondb "
                    "(upgrade sessiondb to read it)"
                )
            sid = obj.get("session_id")
            if not isinstance(sid, str):
                raise LineError("export header without a session_id")
            return Header(
                sid,
                _opt_str(obj, "source"),
                _opt_str(obj, "title"),
                _opt_meta(obj),
                _opt_time(obj, "created_at"),
                _opt_time(obj, "updated_at"),
                _opt_time(obj, "ended_at"),
                _opt_str(obj, "end_reason"),
            )
        sid = obj.get("session_id")
        role = obj.get("role")
        content = obj.get("content")
        seq = obj.get("seq")
        key = obj.get("key")
        created = obj.get("created_at")
        if not isinstance(role, str) or not role:
            raise LineError("missing role")
        if not isinstance(sid, str):
            raise LineError("missing session_id")
        if not isinstance(content, str):
            raise LineError("content is not a string")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise LineError("seq is not a positive integer")
        if key is not None and not isinstance(key, str):
            raise LineError("key is not a string")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            raise LineError("created_at is not a number")
        alt = None if key is not None else f"sessiondb:{seq}:{line_digest(raw)}"
        return Record(role, content, key, _opt_meta(obj), float(created), sid, seq, alt)


def _opt_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise LineError(f"{name} is not a string")
    return value


def _opt_time(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LineError(f"{name} is not a number")
    return float(value)


def _opt_meta(obj: dict[str, Any]) -> dict[str, Any] | None:
    value = obj.get("meta")
    if value is not None and not isinstance(value, dict):
        raise LineError("meta is not an object")
    return value


def _with_structure(meta: dict[str, Any], b: Builder) -> str:
    """Put ``b``'s blocks in ``meta`` and return the text rendered from them."""
    if b.blocks:
        meta[BLOCKS] = b.blocks
    return b.content


_CLAUDE_MESSAGE_TYPES = ("user", "assistant")
# Fields of a Claude Code entry worth keeping with the message (the rest is session bookkeeping
# such as the version repeated on every line, or `toolUseResult`, a second copy of a result).
_CLAUDE_KEEP = ("uuid", "parentUuid", "isSidechain", "isMeta", "cwd", "gitBranch", "agentId")


class ClaudeCodeFormat(Format):
    name = "claude-code"

    def sniff(self, obj: dict[str, Any]) -> bool:
        if not isinstance(obj.get("type"), str) or "role" in obj:
            return False
        return any(k in obj for k in ("sessionId", "leafUuid", "parentUuid", "snapshot"))

    def parse(self, obj: dict[str, Any], line: int, raw: bytes) -> Parsed | None:
        kind = obj.get("type")
        if kind == "summary":
            text, leaf = obj.get("summary"), obj.get("leafUuid")
            if isinstance(text, str) and text.strip():
                leaf = leaf if isinstance(leaf, str) else None
                return Title(text.strip()[: validate.MAX_TITLE], leaf)
            return None
        if kind not in _CLAUDE_MESSAGE_TYPES:
            return None  # file-history-snapshot, system, progress, … are not messages
        message = obj.get("message")
        if not isinstance(message, dict):
            raise LineError(f"{kind} entry without a message object")
        role = message.get("role", kind)
        if not isinstance(role, str) or not role:
            raise LineError("missing role")
        meta: dict[str, Any] = {k: obj[k] for k in _CLAUDE_KEEP if obj.get(k) is not None}
        body = message.get("content")
        if isinstance(body, str):
            content = body
        elif body is None:
            content = ""
        elif isinstance(body, list):
            b = Builder()
            parts.render(body, b)
            content = _with_structure(meta, b)
            if b.blocks and all(x["type"] == "tool_result" for x in b.blocks):
                role = "tool"  # a user entry that only carries tool results
        else:
            raise LineError("message.content is not a string or a list of blocks")
        # One API response is written as one entry per content block, each repeating its
        # usage (output_tokens growing): response_id lets stats count a response once.
        for src, dst in (("id", "response_id"), ("model", "model")):
            if isinstance(message.get(src), str):
                meta[dst] = message[src]
        tokens = usage.normalize(message.get("usage"))
        if tokens:
            meta["usage"] = tokens
        uuid = obj.get("uuid")
        key = f"claude:{uuid}" if isinstance(uuid, str) and uuid else None
        if key is None:
            key = f"claude:{line}:{line_digest(raw)}"
        sid = obj.get("sessionId")
        if isinstance(sid, str) and obj.get("isSidechain") and isinstance(obj.get("agentId"), str):
            # Subagent transcripts repeat the parent's sessionId; keep them apart from it.
            sid = f"{sid}:agent-{obj['agentId']}"
        return Record(
            role,
            content,
            key,
            meta or None,
            parse_time(obj.get("timestamp")),
            sid if isinstance(sid, str) else None,
            derived_key=True,
        )


_TIME_FIELDS = ("created_at", "timestamp", "ts", "time")
# OpenAI Responses items without a role (besides any `*_call` / `*_call_output`).
_ITEM_KINDS = frozenset({"function_call", "function_call_output", "reasoning"})


def _responses_item(kind: str, obj: dict[str, Any], meta: dict[str, Any], b: Builder) -> str:
    """An OpenAI Responses item without a role (a tool call, its output, reasoning): its blocks
    go to ``b``, the fields they hold leave ``meta``; returns the role it stands for."""
    if kind in ("function_call", "custom_tool_call"):
        args = meta.pop("arguments", meta.pop("input", None))
        text = args if isinstance(args, str) else blocks.input_json(args)
        name, call_id = obj.get("name"), obj.get("call_id")
        b.tool_call(
            call_id if isinstance(call_id, str) else None,
            name if isinstance(name, str) else "?",
            text,
        )
        return "assistant"
    if kind.endswith("_call_output"):
        text, images = parts.result_text(meta.pop("output", None))
        call_id = obj.get("call_id")
        b.tool_result(call_id if isinstance(call_id, str) else None, text, images=images)
        return "tool"
    if kind == "reasoning":
        summary = meta.pop("summary", None)
        for part in summary if isinstance(summary, list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                b.thinking(part["text"])
        return "assistant"
    b.other(kind, {k: v for k, v in obj.items() if k != "type"})  # web_search_call, …
    for k in list(meta):
        if k != "type":
            del meta[k]
    return "assistant"


class PlainFormat(Format):
    """``{"role", "content", …}`` lines: OpenAI chat messages (with ``tool_calls``, ``tool``
    results, content-part lists, ``usage``) and OpenAI Responses items (``function_call``,
    ``function_call_output``, ``reasoning``, messages with ``input_text``/``output_text``)."""

    name = "plain"

    def sniff(self, obj: dict[str, Any]) -> bool:
        return "role" in obj or _responses_kind(obj) is not None

    def parse(self, obj: dict[str, Any], line: int, raw: bytes) -> Parsed | None:
        if len(obj) == 2:  # role and text content only: parse_general's result, made directly
            role, content = obj.get("role"), obj.get("content")
            if isinstance(role, str) and role and isinstance(content, str):
                key = f"jsonl:{line}:{line_digest(raw)}"
                return record_of((role, content, key, None, None, None, None, None, True))
        return self.parse_general(obj, line, raw)

    def parse_general(self, obj: dict[str, Any], line: int, raw: bytes) -> Parsed | None:
        """Any plain line (tests/unit/test_formats.py holds it equal to ``parse``'s shortcut)."""
        meta: dict[str, Any] = {k: v for k, v in obj.items() if k not in ("role", "content")}
        b = Builder()
        kind = _responses_kind(obj)
        if "role" not in obj and kind is not None:
            role: Any = _responses_item(kind, obj, meta, b)
        else:
            role = obj.get("role")
            if not isinstance(role, str) or not role:
                raise LineError("missing role")
            if "content" not in obj:
                raise LineError("missing content")
            content = obj["content"]
            if isinstance(content, list):
                parts.render(content, b)
            elif isinstance(content, str):
                if role == "tool" and isinstance(obj.get("tool_call_id"), str):
                    b.tool_result(obj["tool_call_id"], content)
                elif isinstance(meta.get("tool_calls"), list) and content:
                    b.text(content)
            elif content is not None:  # None: OpenAI assistant messages that only call tools
                raise LineError("content is not a string, null or a list of parts")
            calls = meta.get("tool_calls")
            if isinstance(calls, list) and calls:
                parts.openai_tool_calls(calls, b)
                del meta["tool_calls"]  # now in the blocks (the arguments in the text)
            if not b.blocks:
                b.text(content if isinstance(content, str) else "")
        if len(b.blocks) == 1 and b.blocks[0]["type"] == "text":
            text = b.content  # a plain text message needs no blocks
        else:
            text = _with_structure(meta, b)
        tokens = usage.normalize(meta.get("usage"))
        if tokens:
            meta["usage"] = tokens
        created = None
        for name in _TIME_FIELDS:
            if name in meta:
                created = parse_time(meta[name])
                if created is not None:
                    del meta[name]
                    break
        sid = meta.pop("session_id", None)
        if sid is not None and not isinstance(sid, str):
            meta["session_id"] = sid
            sid = None
        return Record(
            role,
            text,
            f"jsonl:{line}:{line_digest(raw)}",
            meta or None,
            created,
            sid,
            derived_key=True,
        )


def _responses_kind(obj: dict[str, Any]) -> str | None:
    """The ``type`` of an OpenAI Responses item that has no role of its own, else None."""
    kind = obj.get("type")
    if not isinstance(kind, str) or "role" in obj:
        return None
    if kind in _ITEM_KINDS or kind.endswith(("_call", "_call_output")):
        return kind
    return None


_FORMATS: list[Format] = [SessiondbFormat(), ClaudeCodeFormat(), PlainFormat()]


def register_format(fmt: Format, *, before: str | None = "plain") -> None:
    """Add a format. It is tried before ``before`` (default: before the catch-all ``plain``)."""
    names = [f.name for f in _FORMATS]
    if fmt.name in names:
        raise ValueError(f"a format named {fmt.name!r} is already registered")
    index = names.index(before) if before in names else len(_FORMATS)
    _FORMATS.insert(index, fmt)


def formats() -> tuple[Format, ...]:
    """The registered formats, in the order they are tried."""
    return tuple(_FORMATS)


class LineParser:
    """Parses the lines of one file, recognising its format from the first classifiable line."""

    def __init__(self, file: str, *, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.file = file
        self.max_bytes = max_bytes
        self.format: Format | None = None

    def parse(self, raw: RawLine) -> Parsed | BadLine | None:
        """A record, a header, a bad line, or None for blank lines and skipped entries."""
        if raw.data is None:
            return BadLine(self.file, raw.number, f"line longer than {self.max_bytes} bytes")
        data = raw.data.rstrip(b"\r\n")
        if not data.strip():
            return None
        try:
            # Decode explicitly: json.loads(bytes) would guess UTF-16/32 for some binary garbage.
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return BadLine(self.file, raw.number, "not UTF-8 text (binary data?)")
        if raw.number == 1 and text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark written by some Windows editors
        try:
            obj = _DECODER.decode(text)
        except RecursionError:
            return BadLine(self.file, raw.number, "invalid JSON: nested too deeply")
        except ValueError as exc:
            return BadLine(self.file, raw.number, f"invalid JSON: {exc}")
        if not isinstance(obj, dict):
            return BadLine(self.file, raw.number, "not a JSON object")
        if "\\ud" in text or "\\uD" in text:
            # A lone surrogate escape decodes to a str that cannot be stored as UTF-8 text.
            try:
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                return BadLine(self.file, raw.number, "lone UTF-16 surrogate in a string")
        fmt = self.format
        if fmt is None:
            fmt = next((f for f in _FORMATS if f.sniff(obj)), None)
            if fmt is None:
                return BadLine(self.file, raw.number, "missing role (not a recognised format)")
            self.format = fmt
        try:
            parsed = fmt.parse(obj, raw.number, data)
            return None if parsed is None else _check(parsed, len(data))
        except (LineError, InvalidInput) as exc:
            return BadLine(self.file, raw.number, str(exc))


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as infinity
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


# One decoder for every line: json.loads with options builds a new decoder on each call.
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def _check(parsed: Parsed, line_bytes: int) -> Parsed:
    """The store's own rules, applied per line: a line the store would refuse is a bad line of
    its file, never an error that aborts the whole import (and ``strict`` finds it first). Meta
    is always valid (a JSON object whose numbers are finite, ``_finite``); only its size counts,
    measured when the line is big enough for the message to reach the limit (what a format
    renders from a line is at most about twice the line). Returns the record as the store would
    hold it (its content cleaned): the importer appends it without validating it again
    (transcript._item)."""
    if isinstance(parsed, Title):
        validate.optional_text(parsed.text, "title", validate.MAX_TITLE)
        return parsed
    if isinstance(parsed, Header):
        validate.session_id(parsed.session_id)
        if parsed.source is not None:
            validate.source(parsed.source)
        validate.optional_text(parsed.title, "title", validate.MAX_TITLE)
        validate.optional_text(parsed.end_reason, "end_reason", validate.MAX_REASON)
        for name in ("created_at", "updated_at", "ended_at"):
            validate.optional_timestamp(getattr(parsed, name), name)
        return parsed
    if parsed.session_id is not None:
        validate.session_id(parsed.session_id)
    validate.role(parsed.role)
    content = validate.content(parsed.content)
    if line_bytes * 12 > validate.MAX_MESSAGE_BYTES:
        validate.message_size(content, validate.meta(parsed.meta))
    validate.key(parsed.key)
    validate.key(parsed.alt_key)
    created = parsed.created_at
    if created is not None:
        created = validate.timestamp(created, "created_at")
    if content is parsed.content and created is parsed.created_at:
        return parsed
    return dataclasses.replace(parsed, content=content, created_at=created)


__all__ = [
    "MAX_LINE_BYTES",
    "ClaudeCodeFormat",
    "Format",
    "Header",
    "LineError",
    "LineParser",
    "Parsed",
    "PlainFormat",
    "RawLine",
    "Record",
    "SessiondbFormat",
    "Title",
    "formats",
    "line_digest",
    "parse_time",
    "record_of",
    "register_format",
]
