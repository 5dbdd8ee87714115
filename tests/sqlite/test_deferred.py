"""The deferred search index (sqlite/deferred.py, sqlite/tail.py, docs/adr/0016): appends
leave their index rows to a bounded backlog, search finds backlog messages exactly as the index
would, the backlog stays within its bound, every other kind of writer keeps the index exact,
and kill -9 in the middle of a catch-up neither loses nor doubles an index row."""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import tempfile
import time
from pathlib import Path

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sessiondb
from sessiondb.sqlite import deferred, selfindex
from tests import _workers_deferred as wd
from tests.helpers import engine_of
from tests.sqlite.test_selfindex import check_index, message_rows, word_rows

SPAWN = mp.get_context("spawn")


def backlog_rows(store: sessiondb.Store) -> int:
    with engine_of(store).read() as conn:
        done = deferred.backlog(conn)
        return int(conn.execute("SELECT count(*) FROM messages WHERE id > ?", (done,)).get)


def catch_up(store: sessiondb.Store) -> None:
    with engine_of(store).write() as conn:
        deferred.finish(conn)


def hits(store: sessiondb.Store, query: str, mode: str = "plain") -> list[tuple[int, float]]:
    return [
        (h.message.seq, round(h.score, 9))
        for h in store.search(query, session_id=None, limit=1000, mode=mode)
    ]


# -- search over the backlog matches exactly what the index matches --------------------------

# Letters with and without diacritics, cases, digits, CJK and kana, Hangul, punctuation that
# splits words or makes literals (foo.bar, C++), a combining mark, spaces.
_ALPHABET = "abcAB xyz éÉüßĲ 0129 東京都大阪タワーのは 한국 .-_:/+#'\"\u0301*()"
_TEXT = st.text(alphabet=_ALPHABET, min_size=0, max_size=40)


def _queries(texts: list[str], rng: random.Random) -> list[str]:
    words = [w for t in texts for w in t.split() if w.strip()]
    out = rng.sample(words, min(len(words), 8))
    out += [w[: max(1, len(w) // 2)] for w in out[:3]]  # prefixes: words that are not there
    if len(words) >= 2:
        out.append(" ".join(rng.sample(words, 2)))
    out += ["東京", "東", "é", "e", "abc", "foo.bar", "C++", "한국", "タワー"]
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(indexed=st.lists(_TEXT, max_size=8), backlog=st.lists(_TEXT, min_size=1, max_size=12))
def test_the_backlog_matches_exactly_what_the_index_matches(
    indexed: list[str], backlog: list[str]
) -> None:
    # Some messages indexed, the rest in the backlog (below its bound): every query finds the
    # same messages before the backlog is indexed (searched through tail.py) and after.
    assert len(backlog) < deferred.ROWS_BOUND
    rng = random.Random(len(indexed) * 100 + len(backlog))
    with tempfile.TemporaryDirectory() as folder, sessiondb.open(Path(folder) / "p.db") as store:
        for text in indexed:
            store.append("s", "user", text)
        catch_up(store)
        for text in backlog:
            store.append("s", "user", text)
        assert backlog_rows(store) == len(backlog)
        queries = _queries(indexed + backlog, rng)
        before = {q: hits(store, q) for q in queries}
        fts_before = {q: hits(store, q, "fts") for q in ("abc", "東京", "ab OR xyz", "a*")}
        catch_up(store)
        assert backlog_rows(store) == 0
        # The matches. Scores are those of one index where sessiondb_rank ranks (plain word
        # queries: test_search_index.py::test_rank_equals_fts5_bm25_when_frequencies_are_exact);
        # FTS5's bm25() (trigram-only plans, mode="fts") ranks each part with its own figures.
        for q in queries:
            assert sorted(s for s, _ in before[q]) == sorted(s for s, _ in hits(store, q)), q
        for q, found in fts_before.items():
            assert sorted(s for s, _ in found) == sorted(s for s, _ in hits(store, q, "fts"))
        check_index(store)


def test_a_message_is_found_the_moment_its_append_returns(tmp_path: Path) -> None:
    with sessiondb.open(tmp_path / "s.db") as store:
        for i in range(3 * deferred.ROWS_BOUND):
            store.append("s", "user", f"note n{i} 東京{i}")
            assert [h.message.seq for h in store.search(f"n{i}")] == [i + 1]
            assert backlog_rows(store) < deferred.ROWS_BOUND
        assert len(store.search("東京", limit=1000)) == 3 * deferred.ROWS_BOUND
        check_index(store)


def test_the_backlog_stays_within_its_bounds(tmp_path: Path) -> None:
    with sessiondb.open(tmp_path / "s.db") as store:
        peak = 0
        for i in range(200):
            store.append("s", "user", f"short {i}")
            peak = max(peak, backlog_rows(store))
        assert peak == deferred.ROWS_BOUND - 1  # reached, never passed
        catch_up(store)
        assert deferred.BYTES_BOUND // 4 >= deferred.LARGE
        big = "x" * (deferred.BYTES_BOUND // 4)
        counts = []
        for _ in range(8):
            store.append("s", "user", big)
            counts.append(backlog_rows(store))
        assert max(counts) <= 4 and 0 in counts  # the characters' bound, before the rows'
        check_index(store)


def test_a_readonly_store_searches_the_backlog(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sessiondb.open(path) as store:
        store.append("s", "user", "pending words")
        assert backlog_rows(store) == 1
        with sessiondb.open(path, readonly=True) as reader:
            assert [h.message.seq for h in reader.search("pending")] == [1]


# -- deletes, edits and the other writers --------------------------------------------------


def test_deletes_and_edits_of_backlog_rows_keep_the_index_exact(tmp_path: Path) -> None:
    with sessiondb.open(tmp_path / "s.db") as store:
        store.append_many("a", [{"role": "user", "content": f"old {i}"} for i in range(70)])
        assert backlog_rows(store) == 0  # 70 rows: over the bound, indexed by their writer
        for i in range(5):
            store.append("b", "user", f"fresh {i} 東京")
        store.pop_message("b")  # the newest: in the backlog
        with engine_of(store).write() as conn:  # edits: one indexed row, one backlog row
            conn.execute("UPDATE messages SET content = 'edited 大阪' WHERE id IN (3, 72)")
        assert sorted(h.message.seq for h in store.search("大阪")) == [2, 3]
        assert sorted(h.message.seq for h in store.search("fresh")) == [1, 3, 4]
        store.delete_session("b")
        assert store.search("fresh") == []
        check_index(store)
        assert word_rows(store) == message_rows(store) == 70


def test_writers_that_do_not_know_the_cursor_keep_the_index_exact(tmp_path: Path) -> None:
    # A raw-SQL writer (claim 0) indexes the backlog with its row; sessiondb of migration 7
    # (claim 1, indexes its own batch after inserting it) finds the backlog below its rows
    # indexed by the trigger; an id reused below the cursor is indexed at once.
    path = tmp_path / "s.db"
    with sessiondb.open(path) as store:
        for i in range(5):
            store.append("s", "user", f"ours {i}")
        assert backlog_rows(store) == 5
        conn = apsw.Connection(str(path))
        conn.execute(
            "INSERT INTO messages(sid, seq, role, content, created_at)"
            " SELECT id, 6, 'user', 'theirs 東京', 1 FROM sessions"
        )
        conn.execute("UPDATE sessions SET message_count = 6")
        assert backlog_rows(store) == 0
        for i in range(3):
            store.append("s", "user", f"ours again {i}")
        # migration 7's batch writer, as its code did it
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"UPDATE sessions SET message_count = 12, {selfindex.CLAIM} = 1")
        top = conn.execute("SELECT max(id) FROM messages").get
        conn.executemany(
            "INSERT INTO messages(sid, seq, role, content, created_at) VALUES (1, ?, 'user', ?, 1)",
            [(10 + j, f"seven {j} 東京") for j in range(3)],
        )
        selfindex.index_rows(conn, top + 1, top + 3, 0)
        selfindex.release_all(conn, [1])
        conn.execute("COMMIT")
        assert backlog_rows(store) == 0
        store.append("s", "user", "ours last")
        # an id reused at or below the cursor (the newest rows deleted): indexed at once
        with engine_of(store).write() as c:
            c.execute("DELETE FROM messages WHERE id >= 12")
            c.execute("UPDATE sessions SET message_count = 11")
            deferred.finish(c)
        store.append("s", "user", "reused id")
        conn.close()
        assert sorted(h.message.seq for h in store.search("東京")) == [6, 10, 11]
        assert sorted(h.message.seq for h in store.search("ours", limit=50)) == [
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            9,
        ]
        assert [h.message.seq for h in store.search("reused")] == [12]
        check_index(store)
        assert word_rows(store) == message_rows(store) == 12


# -- kill -9 in the middle of a catch-up ---------------------------------------------------


def _log(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.mark.crash
def test_kill_9_during_catch_up_never_loses_or_doubles_an_index_row(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    sessiondb.open(path).close()
    writers = 3
    logs = [tmp_path / f"w{i}.log" for i in range(writers)]
    rng = random.Random(20261205)

    def start(i: int) -> mp.process.BaseProcess:
        acked = [int(x) for x in _log(logs[i]) if x != "c"]
        p = SPAWN.Process(
            target=wd.slow_catch_up_appender,
            args=(str(path), i, str(logs[i]), (acked[-1] + 1) if acked else 0, 0.2),
        )
        p.start()
        return p

    procs = [start(i) for i in range(writers)]
    kills = in_catch_up = 0
    end = time.monotonic() + float(os.environ.get("SESSIONDB_CRASH_SECONDS", "12"))
    # Past the time box, go on (up to 60 s more) until 3 kills have hit a catch-up.
    while time.monotonic() < end or (in_catch_up < 3 and time.monotonic() < end + 60):
        victim = rng.randrange(writers)
        # Kill a writer that is appending (a spawned one takes a while to start): once it has
        # logged more since its start, at a random moment.
        seen, wait_until = len(_log(logs[victim])), time.monotonic() + 30
        while len(_log(logs[victim])) < seen + 20 and time.monotonic() < wait_until:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(procs[victim].pid, signal.SIGKILL)  # type: ignore[arg-type]
        procs[victim].join()
        kills += 1
        in_catch_up += _log(logs[victim])[-1:] == ["c"]  # killed after its catch-up began
        procs[victim] = start(victim)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
        p.join()

    assert in_catch_up >= 3, f"only {in_catch_up} of {kills} kills hit a catch-up"
    with sessiondb.open(path) as store:
        acked = {(i, int(x)) for i in range(writers) for x in _log(logs[i]) if x != "c"}
        assert len(acked) > 3 * deferred.ROWS_BOUND, "the writers barely wrote"
        for i, n in sorted(acked)[:: max(1, len(acked) // 150)]:  # found before any catch-up
            assert len(store.search(f"token{i}x{n}")) == 1, (i, n)
        check_index(store)  # index = content after the backlog's catch-up: nothing doubled
        stored = [m for i in range(writers) for m in store.messages(f"w{i}", limit=100_000)]
        assert len({m.key for m in stored}) == len(stored) == message_rows(store)
        assert word_rows(store) == len(stored)
        assert {(i, n) for i, n in acked} <= {
            (int(m.key.split("-")[0][1:]), int(m.key.split("-")[1])) for m in stored if m.key
        }
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA integrity_check").get == "ok"
    conn.close()
    print(f"kills={kills} in catch-up={in_catch_up} acknowledged={len(acked)}")
