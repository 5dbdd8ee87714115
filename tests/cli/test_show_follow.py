"""``sessiondb show SESSION --follow``: new messages appended by another process are printed as
they come (over ``wait_for_messages``); Ctrl-C ends it cleanly."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import sessiondb


def _line(pipe: subprocess.Popen[bytes], seconds: float = 60.0) -> dict[str, object]:
    assert pipe.stdout is not None
    ready, _, _ = select.select([pipe.stdout], [], [], seconds)
    assert ready, "no line printed"
    return dict(json.loads(pipe.stdout.readline()))


def test_show_follow_prints_what_another_process_appends(db_path: Path) -> None:
    with sessiondb.open(db_path) as store:
        store.append("s", "user", "first")
    pipe = subprocess.Popen(
        [sys.executable, "-m", "sessiondb.cli", "--db", str(db_path), "show", "s", "-f", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert _line(pipe)["content"] == "first"
        with sessiondb.open(db_path) as store:  # this test's process: another one
            store.append("s", "assistant", "second \x1b[31m")
            store.pop_message("s")  # removed: its seq comes again
            store.append("s", "assistant", "third")
        got = [_line(pipe)]
        if got[0]["content"] != "third":  # the follower may or may not have seen "second"
            got.append(_line(pipe))
        assert [(m["seq"], m["content"]) for m in got][-1] == (2, "third")
        pipe.send_signal(signal.SIGINT)
        assert pipe.wait(60) == 0
    finally:
        if pipe.poll() is None:
            pipe.kill()
            pipe.wait()
