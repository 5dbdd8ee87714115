"""A bulk import's search index is built after loading (sqlite/deferred.py, docs/adr/0015):
the store ends exactly as a plain import leaves it, other writers stay correct meanwhile, and
kill -9 at any moment loses nothing acknowledged and leaves no row unindexed once the store is
opened again."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

import sessiondb
from sessiondb.sqlite import deferred
from sessiondb.sqlite.doctor import checks as doctor
from sessiondb.sqlite.doctor import repair
from tests import _workers_transcripts as w
from tests.helpers import engine_of
from tests.sqlite.test_selfindex import check_index, found, message_rows, word_rows

SPAWN = mp.get_context("spawn")
WORDS = ["alpha", "beta", "gamma", "delta", "store", "token", "commit", "東京都", "서울", "kafka"]


def transcript(path: Path, n: int, *, seed: int = 3, sessions: int = 1) -> Path:
    """``n`` lines of plain chat, some CJK, some with usage, over ``sessions`` sessions."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            line: dict[str, object] = {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + f" n{i}",
            }
            if sessions > 1:
                line["session_id"] = f"s{i * sessions // n}"
            if i % 7 == 3:
                line["usage"] = {"prompt_tokens": i, "completion_tokens": 2}
                line["model"] = "m1"
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


def window(store: sessiondb.Store) -> tuple[int, int] | None:
    with engine_of(store).read() as conn:
        row = conn.execute("SELECT done_id, end_id FROM search_backfill").fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


QUERIES = ["alpha", "東京都", "서울", "store commit", '"beta gamma"', "kafka OR token", "n1234"]


def snapshot(store: sessiondb.Store) -> dict[str, object]:
    return {
        "messages": [
            (m.session_id, m.seq, m.role, m.content, m.key, m.meta)
            for s in sorted(store.list_sessions(limit=1000), key=lambda s: s.session_id)
            for m in store.messages(s.session_id)
        ],
        "search": {q: found(store, q) for q in QUERIES},
        "stats": store.stats(),
    }


def test_a_bulk_import_leaves_the_store_as_a_plain_import_does(tmp_path: Path) -> None:
    src = transcript(tmp_path / "t.jsonl", 7000, sessions=3)
    with sessiondb.open(tmp_path / "plain.db") as plain:
        plain_report = plain.import_jsonl(src)
        expected = snapshot(plain)
    with sessiondb.open(tmp_path / "bulk.db") as bulk:
        report = bulk.import_jsonl(src, bulk=True)
        assert (report.imported, report.duplicates) == (plain_report.imported, 0) == (7000, 0)
        assert window(bulk) is None, "the import returned before its index was built"
        check_index(bulk)
        assert word_rows(bulk) == message_rows(bulk) == 7000
        assert snapshot(bulk) == expected
        again = bulk.import_jsonl(src, bulk=True)
        assert (again.imported, again.duplicates) == (0, 7000)
        check_index(bulk)


def test_the_loaded_rows_wait_in_the_window_until_the_index_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = transcript(tmp_path / "t.jsonl", 5000)
    built: list[int] = []
    monkeypatch.setattr(deferred, "CHUNK", 1500)
    with sessiondb.open(tmp_path / "s.db") as store:
        real = deferred.finish
        monkeypatch.setattr(deferred, "finish", lambda engine, progress=None: 0)
        store.import_jsonl(src, bulk=True)
        assert window(store) == (0, 5000)
        assert found(store, "n1234") == [], "a deferred row was indexed while loading"
        assert word_rows(store) == 0
        monkeypatch.setattr(deferred, "finish", real)
        assert store.backend.finish_index(lambda done, total: built.append(done)) == 5000
        assert built == [1500, 3000, 4500, 5000]
        assert window(store) is None
        assert len(found(store, "n1234")) == 1
        check_index(store)


def test_the_doctor_names_messages_waiting_for_the_index_and_repair_indexes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = transcript(tmp_path / "t.jsonl", 3000)
    db = tmp_path / "s.db"
    with sessiondb.open(db) as store:
        monkeypatch.setattr(deferred, "finish", lambda engine, progress=None: 0)
        store.import_jsonl(src, bulk=True)  # as if killed before its index was built
    monkeypatch.undo()
    fts_check = next(c for c in doctor.diagnose(db).checks if c.name == "fts")
    assert fts_check.status == "warn" and "3000 message(s) wait to be indexed" in fts_check.detail
    assert _pending(db)
    result = repair.repair(db)
    assert any("backfill" in a for a in result.actions)
    assert not _pending(db)
    assert next(c for c in doctor.diagnose(db).checks if c.name == "fts").status == "ok"
    with sessiondb.open(db) as store:
        check_index(store)
        assert len(found(store, "n2999")) == 1


def test_writes_between_deferred_batches_are_indexed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window is one range: another writer's rows after it (indexed by that writer) end it,
    # and the next bulk batch is indexed at once instead of joining it (fts.defer).
    with sessiondb.open(tmp_path / "s.db") as store:
        monkeypatch.setattr(deferred, "finish", lambda engine, progress=None: 0)
        for part in range(3):
            src = transcript(tmp_path / f"t{part}.jsonl", 3000, seed=part)
            store.import_jsonl(src, session_id=f"bulk{part}", bulk=True)
            store.append("live", "user", f"liveword{part} indexed by its append")
            store.append_many(
                "live", [{"role": "user", "content": f"many{part} {i}"} for i in range(5)]
            )
            assert found(store, f"liveword{part}") == [("live", 6 * part + 1)]
        assert window(store) == (0, 3000), "only the first import's rows were deferrable"
        # Deleting deferred rows before they are indexed must not touch the index.
        store.delete_session("bulk0")
        monkeypatch.undo()
        assert store.backend.finish_index() == 3000
        check_index(store)
        assert word_rows(store) == message_rows(store) == 6000 + 18
        assert len(found(store, "n2999")) == 2


def test_a_bulk_import_beside_a_live_writer(tmp_path: Path) -> None:
    # Another process appends while the import loads: its every message is searchable the
    # moment its append returns, and both end exact and indexed once.
    src = transcript(tmp_path / "t.jsonl", 40_000, sessions=4)
    db = str(tmp_path / "s.db")
    sessiondb.open(db).close()
    start, stop, result = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    live = SPAWN.Process(target=w.live_appender, args=(db, start, stop, result))
    live.start()
    start.set()
    imported = w.bulk_import(db, str(src))
    stop.set()
    appended, missing = result.get(timeout=300)
    live.join(60)
    assert missing == 0, "a live append was not searchable when it returned"
    assert imported == 40_000
    with sessiondb.open(db) as store:
        assert window(store) is None
        check_index(store)
        assert word_rows(store) == message_rows(store) == 40_000 + appended
        assert store.count("live") == appended


def test_two_bulk_imports_at_once_share_the_window(tmp_path: Path) -> None:
    # Each extends the window the other opened when their batches are adjacent; either may
    # index the other's rows; both return with every message of both searchable, once.
    db = str(tmp_path / "s.db")
    sessiondb.open(db).close()
    files = [transcript(tmp_path / f"t{i}.jsonl", 20_000, seed=i, sessions=2) for i in (1, 2)]
    for i, f in enumerate(files):  # distinct session ids per file
        f.write_text(f.read_text().replace('"session_id": "s', f'"session_id": "f{i}-s'))
    with SPAWN.Pool(2) as pool:
        counts = pool.starmap(w.bulk_import, [(db, str(f)) for f in files])
    assert counts == [20_000, 20_000]
    with sessiondb.open(db) as store:
        assert window(store) is None
        check_index(store)
        assert word_rows(store) == message_rows(store) == 40_000
        assert len(found(store, "n19999")) == 2


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (a bulk import's forked reader, core/reader.py)."""
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _gone(pids: set[int]) -> None:
    """Wait until every process of ``pids`` has ended (a zombie has)."""
    deadline = time.monotonic() + 20
    for pid in pids:
        while True:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in ("Z", "X"):
                break
            assert time.monotonic() < deadline, f"the reader {pid} outlived its import"
            time.sleep(0.01)


def _pending(db: Path) -> bool:
    """Whether the file holds rows waiting for the index (read without opening a store, whose
    open would index them)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT 1 FROM search_backfill").fetchone() is not None
    finally:
        conn.close()


@pytest.mark.crash
def test_kill_9_during_a_bulk_import_loses_nothing_and_the_next_open_indexes_the_rest(
    tmp_path: Path,
) -> None:
    src = transcript(tmp_path / "t.jsonl", 30_000, sessions=3)
    rng = random.Random(11)
    code = (
        "import sys; from tests._workers_transcripts import bulk_import; bulk_import(*sys.argv[1:])"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    began = time.monotonic()
    w.bulk_import(str(tmp_path / "timing.db"), str(src))
    whole = time.monotonic() - began  # the kills are spread over one import's time
    killed: list[tuple[int, bool]] = []
    for round_ in range(6):
        db, ready = tmp_path / f"s{round_}.db", tmp_path / f"ready{round_}"
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(db), str(src), str(ready)], env=env
        )
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the import never started"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, whole))
        readers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _gone(readers)
        pending = _pending(db)
        with sessiondb.open(db) as store:  # the open indexes what the window holds
            assert window(store) is None
            check_index(store)
            stored = store.count()
            assert word_rows(store) == message_rows(store) == stored
            killed.append((stored, pending))
            store.import_jsonl(src, bulk=True)  # the rest, nothing twice
            assert store.count() == 30_000, "a line was lost or stored twice"
            check_index(store)
            assert len(found(store, "n29999")) == 1
    print(f"(messages stored, index pending) when killed: {killed}")
    assert any(pending for _, pending in killed), "no kill landed while rows waited for the index"
