"""Checks and normalisation of every value that enters the store, backend-neutral.

Each failure is an ``InvalidInput`` whose message names the field, so a caller sees *which*
argument was wrong rather than a driver error from deep inside an INSERT.

Lone surrogates (U+D800..U+DFFF on their own, which Python strings can hold but UTF-8 cannot
encode) are replaced by U+FFFD in content, titles and meta strings: SQLite and PostgreSQL store
UTF-8, so the alternatives were a crash or silent mangling by the driver. Every other string
round-trips exactly. Identifiers (session ids, roles, keys) containing them are rejected instead,
since silently changing an identifier would merge two distinct ones.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..errors import InvalidInput

MAX_SESSION_ID = 256
MAX_ROLE = 64
MAX_KEY = 512
MAX_SOURCE = 128
MAX_TITLE = 4096
MAX_REASON = 1024
MAX_LEASE_NAME = 1024
# Timestamps given by callers (append's created_at, search's since/until): from 1970 to the year
# 9999. A value outside is a unit mistake (milliseconds passed as seconds) or garbage.
MIN_TIME = 0.0
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
# One size limit for a message everywhere (docs/transcripts.md, "One size limit"): a message is
# at most MAX_MESSAGE_BYTES as one line of sessiondb's export — its content JSON-escaped plus its
# meta, key, role and ids. append refuses a larger one, and an import's line cap is the same
# number, so every stored message exports to a line any sessiondb imports.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# What a line holds besides content and meta: field names, session id (256 characters, up to 4
# bytes each and JSON-escaped), role, key, seq and created_at, with room to spare.
_LINE_OVERHEAD = 8192

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls, DEL and C1 controls: invisible in terminals and file names, never in an id.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def clean_text(value: str) -> str:
    """Replace lone surrogates by U+FFFD; return any other string unchanged."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


def _identifier(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidInput(f"{field} must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters; the limit is {limit}")
    if value.isascii() and value.isprintable():  # no control character, no surrogate
        return value
    if _CONTROL.search(value):
        raise InvalidInput(f"{field} must not contain NUL or control characters: {value!r}")
    if _SURROGATE.search(value):
        raise InvalidInput(f"{field} must be valid Unicode (it holds a lone surrogate): {value!r}")
    return value


@functools.lru_cache(maxsize=4096)
def _valid_session_id(value: str) -> str:
    return _identifier(value, "session_id", MAX_SESSION_ID)


@functools.lru_cache(maxsize=256)
def _valid_role(value: str) -> str:
    return _identifier(value, "role", MAX_ROLE)


# Ids and roles repeat on every call of an agent loop: their checks are cached (only successes
# are: a failing check raises, which lru_cache does not remember).
def session_id(value: object) -> str:
    if type(value) is str:
        return _valid_session_id(value)
    return _identifier(value, "session_id", MAX_SESSION_ID)


def role(value: object) -> str:
    if type(value) is str:
        return _valid_role(value)
    return _identifier(value, "role", MAX_ROLE)


def source(value: object) -> str:
    return _identifier(value, "source", MAX_SOURCE)


def lease_name(value: object) -> str:
    return _identifier(value, "lease name", MAX_LEASE_NAME)


def key(value: object) -> str | None:
    if value is None:
        return None
    return _identifier(value, "key", MAX_KEY)


def optional_text(value: object, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string or None, not {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInput(f"{field} is {len(value)} characters; the limit is {limit}")
    return clean_text(value)


def content(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(
            f"content must be a string, not {type(value).__name__} "
            "(serialise structured content, e.g. with json.dumps, and keep extras in meta)"
        )
    return clean_text(value)


def message_size(content: str, meta: str | None) -> None:
    """Refuse a message larger than :data:`MAX_MESSAGE_BYTES` as an export line.

    JSON escaping writes a character in at most 6 bytes and UTF-8 in at most 4, so messages
    under a sixth of the limit (nearly all) are never measured."""
    meta_len = 0 if meta is None else len(meta)
    if len(content) * 6 + meta_len * 4 + _LINE_OVERHEAD <= MAX_MESSAGE_BYTES:
        return
    size = len(json.dumps(content, ensure_ascii=False).encode("utf-8"))
    if meta is not None:
        size += len(meta.encode("utf-8"))
    if size + _LINE_OVERHEAD > MAX_MESSAGE_BYTES:
        raise InvalidInput(
            f"message is {size + _LINE_OVERHEAD} bytes as one export line (content JSON-escaped,"
            f" meta, ids); the limit is {MAX_MESSAGE_BYTES} (16 MiB) — keep big payloads in"
            " files and store a reference"
        )


def _clean_json(value: Any, path: str) -> Any:
    """Copy a JSON-like value, cleaning strings, rejecting what JSON cannot hold."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{path} holds {value!r}, which JSON cannot represent")
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{path} has a non-string key {k!r}; JSON keys are strings")
            out[clean_text(k)] = _clean_json(v, f"{path}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_clean_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise InvalidInput(f"{path} holds a {type(value).__name__}, which is not JSON-serialisable")


def meta(value: object, field: str = "meta") -> str | None:
    """Validate ``meta`` (a dict of JSON values, or None) and return its canonical JSON text."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"{field} must be a dict (a JSON object) or None, not {type(value).__name__}"
        )
    try:
        cleaned = _clean_json(value, field)
    except RecursionError:
        raise InvalidInput(f"{field} is nested too deeply") from None
    return json.dumps(cleaned, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def load_meta(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def non_negative_int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{field} must be a non-negative integer, not {value!r}")
    return value


def flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{field} must be True or False, not {value!r}")
    return value


def optional_limit(value: object, field: str = "limit") -> int | None:
    if value is None:
        return None
    return non_negative_int(value, field)


def timestamp(value: object, field: str) -> float:
    """UTC epoch seconds from a number or a ``datetime`` (naive ones are local time, as Python's
    ``datetime.timestamp()`` reads them), finite and between 1970 and 9999."""
    if isinstance(value, datetime):
        value = value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(
            f"{field} must be epoch seconds or a datetime, not {type(value).__name__}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or not MIN_TIME <= seconds <= MAX_TIME:
        raise InvalidInput(
            f"{field} is {value!r}: not a time between 1970 and 9999 in epoch seconds"
        )
    return seconds


def optional_timestamp(value: object, field: str) -> float | None:
    return None if value is None else timestamp(value, field)


def ttl(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"ttl must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"ttl must be a positive number of seconds, got {value!r}")
    return seconds
