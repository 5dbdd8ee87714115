"""Which of each framework's own tests run against its adapter, and which do not and why."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Suite:
    name: str  # requirements-<name>.txt, .venv-int-<name>
    dist: str  # the distribution whose sdist holds the tests
    plugin: str  # the pytest plugin that puts the adapter in place
    files: list[str]
    excluded: dict[str, str] = field(default_factory=dict)  # test id -> why it does not apply


_OAI = "tests/memory/test_session.py::"
_SQLITE_INTERNALS = "reaches into SQLiteSession's private internals ({})"

_YIELDS = (
    "counts event-loop yields ({}): assumes each store call completes within a few "
    "zero-length sleeps, true of an in-memory dict, not of a store doing I/O in a thread"
)

SUITES = {
    "claude-agent-sdk": Suite(
        name="claude-agent-sdk",
        dist="claude-agent-sdk",
        plugin="integrations.fixtures.claude_agent_sdk",
        files=[
            "tests/test_session_store_conformance.py",
            "tests/test_session_helpers_store.py",
            "tests/test_session_import.py",
            "tests/test_session_resume.py",
            "tests/test_session_summary.py",
            "tests/test_transcript_mirror.py",
        ],
        excluded={
            **{
                f"{test}[{backend}]": _YIELDS.format(n)
                for test, n in [
                    (
                        "tests/test_session_helpers_store.py::TestListSessionsFromStore::"
                        "test_load_concurrency_is_bounded",
                        "5",
                    ),
                    (
                        "tests/test_session_summary.py::TestListSessionsFromStoreFastPath::"
                        "test_gap_fill_bounded_concurrency",
                        "5",
                    ),
                    (
                        "tests/test_session_resume.py::TestTimeoutsAndErrors::"
                        "test_cancelled_after_mkdtemp_cleans_temp_dir",
                        "50",
                    ),
                ]
                for backend in ("asyncio", "trio")
            },
            "tests/test_transcript_mirror.py::TestReceiveLoopFramePeeling::"
            "test_eager_flush_mode_appends_per_frame_before_result": _YIELDS.format("10"),
            **{
                "tests/test_transcript_mirror.py::TestBuildMirrorBatcherFlushMode::"
                f"test_eager_mode_flushes_per_frame[{backend}]": "spins the event loop on "
                "sleep(0) for at most 1 s while the store's worker thread commits: the spinning "
                "loop holds the GIL and the worker gets it back once per 5 ms switch interval, "
                "each SQLite call a hand-off (one append under such a spin took 100-165 ms "
                "against 2 ms without; 1 s in this test); failed 11 of 12 runs alone at c5f2cb0"
                for backend in ("asyncio", "trio")
            },
            **{
                f"tests/test_session_resume.py::TestHappyPath::{test}[{backend}]": "sets the "
                "reference's private mtimes (store._mtimes) to order sessions"
                for test in (
                    "test_continue_picks_most_recent",
                    "test_continue_skips_sidechain_sessions",
                    "test_continue_tie_break_is_deterministic",
                )
                for backend in ("asyncio", "trio")
            },
            **{
                "tests/test_session_summary.py::TestListSessionsFromStoreFastPath::"
                f"test_fast_path_limit_offset[{backend}]": "orders five sessions appended "
                "back to back by mtime; the reference makes its mtimes strictly increasing "
                "with an in-process counter, sessiondb reports the storage write time in ms, "
                "which two appends within one ms share (flaky, not wrong)"
                for backend in ("asyncio", "trio")
            },
        },
    ),
    "openai-agents": Suite(
        name="openai-agents",
        dist="openai-agents",
        plugin="integrations.fixtures.openai_agents",
        files=["tests/memory/test_session.py", "tests/memory/test_session_limit.py"],
        excluded={
            **{
                _OAI + name: _SQLITE_INTERNALS.format(what)
                for name, what in [
                    ("test_sqlite_session_close_closes_worker_thread_connections", "_connections"),
                    (
                        "test_sqlite_session_reaps_connections_from_exited_worker_threads",
                        "_connections",
                    ),
                    (
                        "test_sqlite_session_closes_retired_connections_before_the_next_allocation",
                        "sqlite3.connect patched, _connections",
                    ),
                    (
                        "test_sqlite_session_keeps_connections_of_live_worker_threads",
                        "_connections",
                    ),
                    (
                        "test_sqlite_session_file_lock_is_shared_across_instances",
                        "_lock, _file_lock_counts",
                    ),
                    (
                        "test_sqlite_session_rollback_failure_evicts_connection",
                        "sqlite3.Connection subclass injected",
                    ),
                    (
                        "test_sqlite_session_close_retries_quarantined_connection",
                        "sqlite3.Connection subclass injected",
                    ),
                ]
            },
            **{
                _OAI + name: "writes rows into the reference's own tables (agent_messages) with "
                "raw sqlite3 to corrupt them; sessiondb's schema differs and a stored item is "
                "validated JSON"
                for name in [
                    "test_sqlite_session_pop_item_skips_corrupt_most_recent",
                    "test_sqlite_session_pop_item_returns_none_after_dropping_only_corrupt_rows",
                    "test_sqlite_session_get_items_limit_skips_corrupt_newest_rows",
                    "test_sqlite_session_get_items_session_settings_limit_skips_corrupt_rows",
                ]
            },
            **{
                _OAI + name: "probes or drops the reference's own tables (agent_sessions, "
                "agent_messages) with raw sqlite3; the rollback it checks is "
                "tests/contract/test_store.py's all-or-nothing append in sessiondb"
                for name in [
                    "test_sqlite_session_failed_add_items_releases_write_lock",
                    "test_sqlite_session_failed_clear_session_rolls_back",
                    "test_sqlite_session_failed_pop_item_releases_write_lock",
                ]
            },
            **{
                _OAI + f"test_sqlite_session_post_commit_cancellation_propagates_after_known_"
                f"outcome[{op}]": "injects a pausing sqlite3 connection through "
                "_connections_lock/_get_connection; sessiondb's cancel-after-commit rule is "
                "tested in tests/aio/test_cancel.py"
                for op in ("add", "pop", "clear")
            },
            _OAI + "test_sqlite_session_closed_rejects_empty_add_items": "matches the "
            "reference's error text 'SQLiteSession is closed'",
        },
    ),
}
