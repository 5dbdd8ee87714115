"""The store indexes its batches itself, set-based (sqlite/selfindex.py, docs/adr/0010): the
index stays exact after every kind of write, writers that do not index (raw SQL, an older
sessiondb) still get searchable rows through the triggers, schema 6 files migrate, and kill -9
during batches leaves every acknowledged batch stored once and indexed."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

import sessiondb
from sessiondb.sqlite import fts, schema, selfindex
from tests import _workers_crash as w
from tests.helpers import downgrade_to_v6, engine_of

SPAWN = mp.get_context("spawn")


def check_index(store: sessiondb.Store) -> None:
    """Both indexes equal to their content (FTS5 integrity-check with rank=1), no claim left."""
    with engine_of(store).write() as conn:
        for table in (fts.WORD_TABLE, fts.TRIGRAM_TABLE):
            conn.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")
        claimed = conn.execute(f"SELECT count(*) FROM sessions WHERE {selfindex.CLAIM}").get
        assert claimed == 0, "a claim was committed"


def found(store: sessiondb.Store, query: str) -> list[tuple[str, int]]:
    hits = store.search(query, limit=1000)
    return sorted((h.message.session_id, h.message.seq) for h in hits)


def word_rows(store: sessiondb.Store) -> int:
    with engine_of(store).read() as conn:  # _docsize: one row per indexed message
        return int(conn.execute(f"SELECT count(*) FROM {fts.WORD_TABLE}_docsize").get)


def message_rows(store: sessiondb.Store) -> int:
    with engine_of(store).read() as conn:
        return int(conn.execute("SELECT count(*) FROM messages").get)


def test_every_kind_of_write_keeps_the_index_exact(tmp_path: Path) -> None:
    store = sessiondb.open(tmp_path / "s.db")
    steps: list[str] = []

    def step(name: str) -> None:
        steps.append(name)
        check_index(store)
        assert word_rows(store) == message_rows(store), name

    store.append("a", "user", "single alpha")
    step("append")
    store.append_many("a", [{"role": "user", "content": f"batch alpha n{i}"} for i in range(60)])
    step("append_many")
    mixed = [{"role": "user", "content": f"mixed 東京都 n{i}" if i % 2 else f"mixed n{i}"}
             for i in range(9)]  # fmt: skip
    store.append_many("b", mixed)
    step("append_many with CJK")
    assert found(store, "東京都") == [("b", s) for s in range(2, 10, 2)]
    keyed = [{"role": "user", "content": f"keyed {k}", "key": k} for k in ("k1", "k2")]
    store.append_many("c", keyed)
    store.append_many("c", [*keyed, {"role": "user", "content": "keyed k3 東京", "key": "k3"}])
    step("append_many, partly stored already")
    assert found(store, "keyed") == [("c", 1), ("c", 2), ("c", 3)]
    store.fork_session("b", "b2", at=5)
    step("fork")
    assert len(found(store, "東京都")) == 6
    assert store.pop_message("b") is not None
    step("pop")
    store.append_many("b", [{"role": "user", "content": f"again 東京都 {i}"} for i in range(3)])
    step("append_many onto a popped seq")
    assert store.clear_session("a") == 61
    step("clear")
    store.delete_session("c")  # and its messages purged
    step("delete")
    assert found(store, "alpha") == [] and found(store, "keyed") == []
    export = tmp_path / "b.jsonl"
    store.export_jsonl("b", export)
    report = store.import_jsonl(export, session_id="b3")
    assert report.imported == store.count("b")
    step("import_jsonl")
    assert len(found(store, "again")) == 6
    with engine_of(store).write() as conn:  # an edit of the content (raw SQL; no verb edits)
        conn.execute(
            "UPDATE messages SET content = 'edited 京都大学'"
            " WHERE id = (SELECT max(id) FROM messages)"
        )
    step("update")
    assert len(found(store, "京都大学")) == 1
    store.close()


def _raw_insert(path: Path, session: str, texts: list[str]) -> None:
    """What a writer that does not know the claim does (a raw-SQL script, the sqlite3 shell,
    sessiondb before migration 7): rows and seqs only, in one transaction; one statement per
    row and one INSERT … SELECT, the two ways such a writer adds rows."""
    conn = apsw.Connection(str(path))
    conn.execute("BEGIN IMMEDIATE")
    ref, count = conn.execute(
        "SELECT id, message_count FROM sessions WHERE session_id = ?", (session,)
    ).fetchone()
    half = len(texts) // 2
    for i, text in enumerate(texts[:half]):
        conn.execute(
            "INSERT INTO messages(sid, seq, role, content, created_at) VALUES (?, ?, 'user', ?, 1)",
            (ref, count + 1 + i, text),
        )
    conn.execute(
        "INSERT INTO messages(sid, seq, role, content, created_at)"
        " SELECT ?, ? + key, 'user', value, 1 FROM json_each(?)",
        (ref, count + 1 + half, json.dumps(texts[half:])),
    )
    conn.execute("UPDATE sessions SET message_count = ? WHERE id = ?", (count + len(texts), ref))
    conn.execute("COMMIT")
    conn.close()


def test_writers_that_do_not_index_get_searchable_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sessiondb.open(path) as store:
        store.append_many("s", [{"role": "user", "content": f"ours {i}"} for i in range(5)])
        _raw_insert(path, "s", [f"theirs {i}" for i in range(4)] + ["theirs 大阪城", "theirs x"])
        store.append_many("s", [{"role": "user", "content": f"ours again {i}"} for i in range(5)])
        check_index(store)
        assert [m.seq for m in store.messages("s")] == list(range(1, 17))
        assert found(store, "theirs") == [("s", s) for s in range(6, 12)]
        assert found(store, "大阪城") == [("s", 10)]
        assert len(found(store, "ours")) == 10


def test_a_schema_6_file_migrates_and_keeps_its_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sessiondb.open(path) as store:
        store.append_many("s", [{"role": "user", "content": f"before {i} 東京"} for i in range(30)])
    conn = apsw.Connection(str(path))
    downgrade_to_v6(conn)
    conn.close()
    _raw_insert(path, "s", [f"written by schema 6 {i}" for i in range(10)])  # its triggers
    with sessiondb.open(path) as store:
        assert store.info()["schema_version"] == schema.LATEST == 8
        check_index(store)
        store.append_many("s", [{"role": "user", "content": f"after {i} 東京"} for i in range(30)])
        check_index(store)
        assert len(found(store, "東京")) == 60
        assert len(found(store, "schema")) == 10
        assert word_rows(store) == message_rows(store) == 70


def test_only_large_batches_do_merge_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = selfindex.merge_step

    def spy(conn: apsw.Connection, rows: int) -> None:
        calls.append(rows)
        real(conn, rows)

    monkeypatch.setattr(selfindex, "merge_step", spy)
    with sessiondb.open(tmp_path / "s.db") as store:
        rows = selfindex.MERGE_ROWS
        store.append_many("s", [{"role": "user", "content": f"row {i}"} for i in range(rows)])
        assert calls == [rows]
        store.append_many("s", [{"role": "user", "content": "small"}] * (rows - 1))
        store.append("s", "user", "one")
        assert calls == [rows], "a small batch or an append paid for merge work"
        check_index(store)


def test_merge_steps_after_large_batches_leave_few_segments(tmp_path: Path) -> None:
    # Without merge steps each committed batch leaves a segment for the appends that follow to
    # merge; with them, no level holds more than `usermerge` segments after the import.
    with sessiondb.open(tmp_path / "s.db") as store:
        for b in range(40):
            store.append_many(
                f"s{b % 3}", [{"role": "user", "content": f"w{b}x{i} text"} for i in range(100)]
            )
        with engine_of(store).read() as conn:
            segments = conn.execute(f"SELECT count(DISTINCT segid) FROM {fts.WORD_TABLE}_idx").get
        assert segments < 40, segments
        check_index(store)


def _acknowledged(log: Path) -> list[int]:
    if not log.exists():
        return []
    return [int(x) for x in log.read_text().split("\n")[:-1] if x]


@pytest.mark.crash
def test_kill_9_during_batches_keeps_every_acknowledged_batch_once_and_indexed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.db"
    sessiondb.open(path).close()
    writers, batch = 4, 60  # batches of MERGE_ROWS or more: they do merge steps too
    assert batch >= selfindex.MERGE_ROWS
    logs = [tmp_path / f"w{i}.log" for i in range(writers)]
    rng = random.Random(20261204)

    def start(i: int) -> mp.process.BaseProcess:
        done = _acknowledged(logs[i])
        # Restart at the batch after the last acknowledged one: the one killed before its
        # acknowledgement may be stored, and is sent again (keys make that idempotent).
        p = SPAWN.Process(
            target=w.batch_writer,
            args=(str(path), i, str(logs[i]), (done[-1] + 1) if done else 0, batch),
        )
        p.start()
        return p

    procs = [start(i) for i in range(writers)]
    kills = 0
    end = time.monotonic() + float(os.environ.get("SESSIONDB_CRASH_SECONDS", "12"))
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.05, 0.4))
        victim = rng.randrange(writers)
        os.kill(procs[victim].pid, signal.SIGKILL)  # type: ignore[arg-type]
        procs[victim].join()
        kills += 1
        procs[victim] = start(victim)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        p.join()

    with sessiondb.open(path) as store:
        check_index(store)
        stored = [m for s in range(2) for m in store.messages(f"batch-{s}")]
        keys = [m.key for m in stored]
        assert len(keys) == len(set(keys)), "a message is stored twice"
        assert len(stored) % batch == 0, "a batch is stored in part"
        acked = [(i, b) for i in range(writers) for b in _acknowledged(logs[i])]
        assert len(acked) > writers * 3, "the writers barely wrote: the test proves nothing"
        have = set(keys)
        for i, b in acked:
            assert f"b{i}-{b}-0" in have and f"b{i}-{b}-{batch - 1}" in have, (i, b)
            # each acknowledged batch is found through the index, by a word only it holds
            assert len(found(store, f"token{i}x{b}x7")) == 1, (i, b)
        assert word_rows(store) == message_rows(store) == len(stored)
        cjk = {(i, b) for i, b in acked if b % 3 == 0}
        for i in range(writers):
            want = len([1 for j, b in cjk if j == i])
            assert len(found(store, f"東京タワー{i}")) >= want
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA integrity_check").get == "ok"
    conn.close()
    print(f"kills={kills} acknowledged batches={len(acked)} stored={len(stored)}")


@pytest.mark.stress
def test_processes_that_index_and_processes_that_do_not_share_one_session(tmp_path: Path) -> None:
    # The claim is set and cleared inside one write transaction: a raw-SQL writer in another
    # process, interleaving its transactions with ours on the same session, never sees it set,
    # so its triggers index its rows, and ours are indexed once by the store.
    path = tmp_path / "mixed.db"
    with sessiondb.open(path) as store:
        store.append("shared", "user", "first")
    rounds = 40
    procs = [
        SPAWN.Process(target=w.raw_sql_writer, args=(str(path), "shared", rounds)),
        SPAWN.Process(target=w.raw_sql_writer, args=(str(path), "shared", rounds)),
        SPAWN.Process(target=w.claim_batch_writer, args=(str(path), "shared", rounds)),
        SPAWN.Process(target=w.claim_batch_writer, args=(str(path), "shared", rounds)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    with sessiondb.open(path) as store:
        check_index(store)
        total = 1 + 2 * rounds * 3 + 2 * rounds * 60
        assert [m.seq for m in store.messages("shared")] == list(range(1, total + 1))
        assert word_rows(store) == message_rows(store) == total
        assert len(store.search("rawtoken", limit=1000)) == 2 * rounds * 3 and len(
            store.search("ourtoken", limit=10_000)
        ) == min(2 * rounds * 60, 10_000)
        assert len(found(store, "rawtoken r7x1")) == 2  # one row per raw writer
        assert len(found(store, "京都7")) == 6


def _usage_items(n: int) -> list[dict[str, object]]:
    # Responses written as several messages (output_tokens growing), some without usage, over
    # two days and two models: what the rollup's rules are about (ADR 0007).
    return [
        {
            "role": "assistant",
            "content": f"part {i}",
            "created_at": 86400.0 * (1 + i // 17) + i,
            "meta": {
                "model": f"m{i % 2}",
                "response_id": f"r{i // 3}",
                "usage": {"input_tokens": 5, "output_tokens": 10 * (i % 3 + 1)},
            }
            if i % 5
            else None,
        }
        for i in range(n)
    ]


def test_batches_feed_the_usage_rollup_as_single_appends_do(tmp_path: Path) -> None:
    items = _usage_items(70)
    with sessiondb.open(tmp_path / "one.db") as one, sessiondb.open(tmp_path / "many.db") as many:
        for item in items:
            one.append_many("s", [item])  # a batch of one: the trigger path
        for lo in range(0, len(items), 25):  # claimed batches, a response cut across two
            many.append_many("s", items[lo : lo + 25])
        assert many.stats(since=0) == one.stats(since=0)
        assert many.stats(since=0).messages == 70
        many.pop_message("s")
        one.pop_message("s")
        assert many.stats(since=0) == one.stats(since=0)
        check_index(many)


def test_batches_after_the_largest_rowid_are_indexed_by_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches are indexed by the rowid range their statement filled (sqlite/insert.py): rowids
    # are max(rowid) + 1 — except once the table has held the largest rowid, when SQLite picks
    # random free ones; then each batch is indexed by its session and seqs instead.
    ranged: list[int] = []
    real = selfindex.index_rows

    def spy(conn: apsw.Connection, first: int, last: int, *rest: Any) -> int:
        ranged.append(last - first + 1)
        return real(conn, first, last, *rest)

    monkeypatch.setattr(selfindex, "index_rows", spy)
    path = tmp_path / "s.db"
    with sessiondb.open(path) as store:
        store.append_many("s", [{"role": "user", "content": f"low {i}"} for i in range(3)])
        assert ranged == [3]
        conn = apsw.Connection(str(path))  # a raw-SQL writer: the triggers index its row
        conn.execute(
            "INSERT INTO messages(id, sid, seq, role, content, created_at)"
            " SELECT 9223372036854775807, id, 4, 'user', 'top row', 1 FROM sessions"
        )
        conn.execute("UPDATE sessions SET message_count = 4")
        conn.close()
        store.append_many("s", [{"role": "user", "content": f"high {i} 東京"} for i in range(5)])
        assert ranged == [3], "random rowids indexed as a range"
        check_index(store)
        assert found(store, "high") == [("s", s) for s in range(5, 10)]
        assert found(store, "東京") == [("s", s) for s in range(5, 10)]
        assert word_rows(store) == message_rows(store) == 9


def test_a_large_batch_keeps_the_statement_cache(db_path: Path) -> None:
    """apsw put an ``executemany``'s statement back into its 100-slot statement cache once per
    row: a batch of 150 rows pushed every other statement out and the next transaction prepared
    them all again (sqlite/insert.py, BULK_ROWS). The second batch prepares nothing."""
    with sessiondb.open(db_path) as store:
        batch = [{"role": "user", "content": f"word{i} common"} for i in range(150)]
        store.append_many("s", batch)
        with engine_of(store).write() as conn:  # the connection this thread writes with
            pass
        before = conn.cache_stats()["misses"]
        store.append_many("s", batch)
        assert conn.cache_stats()["misses"] == before
        assert store.count("s") == 300
        check_index(store)
