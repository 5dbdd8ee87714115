"""Bad input is refused with InvalidInput naming the field; good input round-trips exactly."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiondb
from sessiondb import InvalidInput
from sessiondb.core import validate

BAD_IDS = ["", "a\x00b", "tab\there", "new\nline", "x" * 257, "\x7f", "\x85", "\ud800", 42, None]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_session_ids(store: sessiondb.Store, bad: object) -> None:
    with pytest.raises(InvalidInput, match="session_id"):
        store.append(bad, "user", "x")  # type: ignore[arg-type]
    if bad is not None:
        with pytest.raises(InvalidInput, match="session_id"):
            store.create_session(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="session_id"):
        store.get_session(bad)  # type: ignore[arg-type]
    assert store.count() == 0


def test_session_id_limits_accepted(store: sessiondb.Store) -> None:
    for sid in ("x" * 256, "../../etc/passwd", "会话-🙂", "a b", "C:\\x"):
        assert store.append(sid, "user", "ok").session_id == sid
    # A session id is never a file name: nothing appeared beside the database (file backends).
    if store.path is not None:
        beside = store.path.parent.iterdir()
        assert sorted(p.name for p in beside if "sessions.db" not in p.name) == []


@pytest.mark.parametrize("bad", ["", "r" * 65, "a\x00", 5, None])
def test_bad_roles(store: sessiondb.Store, bad: object) -> None:
    with pytest.raises(InvalidInput, match="role"):
        store.append("s", bad, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 5, b"bytes", ["list"], {"a": 1}])
def test_content_must_be_text(store: sessiondb.Store, bad: object) -> None:
    with pytest.raises(InvalidInput, match="content"):
        store.append("s", "user", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [[1, 2], "text", {"x": object()}, {"x": float("nan")}, {1: "int key"}, {"s": {1, 2}}]
)
def test_meta_must_be_json_object(store: sessiondb.Store, bad: object) -> None:
    with pytest.raises(InvalidInput, match="meta"):
        store.append("s", "user", "x", meta=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="meta"):
        store.create_session("s", meta=bad)  # type: ignore[arg-type]


def test_bad_key(store: sessiondb.Store) -> None:
    for bad in ("", "k\x00", 7):
        with pytest.raises(InvalidInput, match="key"):
            store.append("s", "user", "x", key=bad)  # type: ignore[arg-type]


def test_one_size_limit_the_export_line(store: sessiondb.Store, tmp_path: Path) -> None:
    """A message is at most 16 MiB as one export line (docs/transcripts.md, "One size limit"):
    append takes exactly that much, refuses one byte more, and what it took exports to a line
    that imports back byte-exact."""
    limit = validate.MAX_MESSAGE_BYTES
    # As a line, "a" * n is n + 2 bytes (the quotes) plus the fixed room for the other fields.
    widest = "a" * (limit - validate._LINE_OVERHEAD - 2)
    store.append("big", "user", widest)
    with pytest.raises(InvalidInput, match="16 MiB"):
        store.append("big", "user", widest + "a")
    with pytest.raises(InvalidInput, match="16 MiB"):  # meta counts too
        store.append("big", "user", widest[:-10], meta={"k": "0123456789"})
    rng = random.Random(7)
    alphabet = "aé中🙂\n\t\"'\\" + "".join(chr(c) for c in range(0x20, 0x7F))
    chunk = "".join(rng.choice(alphabet) for _ in range(4096))
    mixed = (chunk * (3 * 1024 * 1024 // len(chunk) + 1))[: 3 * 1024 * 1024]  # ~4.5 MiB escaped
    store.append("big", "user", mixed)
    f = tmp_path / "big.jsonl"
    store.export_jsonl("big", f)
    report = store.import_jsonl(f, session_id="copy")
    assert (report.imported, report.bad_lines) == (2, ())
    assert [m.content for m in store.messages("copy")] == [widest, mixed]


def test_lone_surrogates_become_replacement_character(store: sessiondb.Store) -> None:
    m = store.append("s", "user", "a\ud800b\udfffc", meta={"note": "x\udc00"})
    assert m.content == "a\ufffdb\ufffdc"
    stored = store.messages("s")[0]
    assert stored.content == "a\ufffdb\ufffdc" and stored.meta == {"note": "x\ufffd"}
    # The documented rule applies to retries too: the same key and content is not a conflict.
    assert store.append("s", "user", "a\ud800b\udfffc", key="k").seq == 2
    assert store.append("s", "user", "a\ud800b\udfffc", key="k").seq == 2


text = st.text(st.characters(codec="utf-8"), max_size=2000)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
    max_leaves=20,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=text, meta=st.none() | st.dictionaries(text, json_values, max_size=5))
def test_content_and_meta_round_trip(
    store: sessiondb.Store, content: str, meta: dict[str, object] | None
) -> None:
    m = store.append("rt", "user", content, meta=meta)
    back = store.messages("rt", after=m.seq - 1, limit=1)[0]
    assert back.content == content
    assert back.meta == meta
    assert back == m
