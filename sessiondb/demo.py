"""`make demo`: several agent processes write one store at once, then the store is verified.

Four real processes play an agent's CLI, its chat gateway and two editor windows. Each writes
conversation turns to its own sessions and to one session they all share, with an idempotency
key per turn, while a live display shows their progress. Afterwards the demo checks what a user
cares about: every turn written is stored exactly once, no errors, every session's seqs gapless.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ACTORS = ("cli", "gateway", "editor-1", "editor-2")
SHARED_SESSION = "shared-standup"
_WORDS = (
    "retry",
    "policy",
    "backoff",
    "deploy",
    "branch",
    "merge",
    "conflict",
    "test",
    "fixture",
    "schema",
    "index",
    "query",
    "latency",
    "token",
    "budget",
    "tool",
    "call",
    "context",
    "window",
    "gateway",
    "webhook",
    "lease",
    "workspace",
    "transcript",
    "search",
    "checkpoint",
    "rollback",
    "commit",
    "review",
    "refactor",
    "cache",
    "timeout",
    "queue",
    "worker",
    "session",
    "agent",
)


def _turn(rng: random.Random, actor: str, i: int) -> str:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(30, 250)))
    return f"[{actor} turn {i}] {words}"


def _writer(
    path: str, actor: str, turns: int, seed: int, done: Synchronized[int], errors: Synchronized[int]
) -> None:
    import sessiondb

    rng = random.Random(seed)
    store = sessiondb.open(path)
    own = [f"{actor}-{n}" for n in range(3)]
    for sid in own:
        store.ensure_session(sid, source=actor, title=f"{actor} conversation {sid[-1]}")
    store.ensure_session(SHARED_SESSION, source="team", title="everyone writes here")
    for i in range(turns):
        session = SHARED_SESSION if i % 4 == 0 else own[i % 3]
        role = "user" if i % 2 == 0 else "assistant"
        try:
            store.append(session, role, _turn(rng, actor, i), key=f"{actor}:{i}")
        except sessiondb.Error:
            with errors.get_lock():
                errors.value += 1
        with done.get_lock():
            done.value += 1
    store.close()


@dataclass
class DemoResult:
    path: Path
    written: int
    stored: int
    duplicates: int
    errors: int
    gapless: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.errors == 0
            and self.duplicates == 0
            and self.stored == self.written
            and self.gapless
        )


#: The demo's own file names: it never touches a file it did not make. A store named like the
#: default one (sessions.db) in the folder given is someone's data and stays as it is
#: (tests/cli/test_cli.py::test_demo_removes_only_what_it_made).
DEMO_DB = "demo.db"
MARKER = ".sessiondb-demo"


def fresh_store(folder: Path) -> Path:
    """The demo store's path in ``folder``, its files from an earlier demo run removed.

    Only files an earlier demo made go: the marker file the demo writes next to its store says
    they are its own. A ``demo.db`` without the marker is refused, never removed.
    """
    from .errors import InvalidInput
    from .host.paths import ensure_private_dir

    folder = folder.absolute()
    path = folder / DEMO_DB
    marker = folder / MARKER
    leftovers = [Path(f"{path}{s}") for s in ("", "-wal", "-shm", "-journal", ".lock")]
    if any(p.exists() for p in leftovers):
        if not marker.is_file() or marker.is_symlink():
            raise InvalidInput(
                f"{path} exists and was not made by the demo: the demo removes only its own "
                "files — give another folder with --dir"
            )
        for p in leftovers:
            p.unlink(missing_ok=True)
    ensure_private_dir(folder)
    marker.write_text("files of `sessiondb demo`, removed by its next run\n")
    return path


def run_writers(path: Path, turns: int, console: Console) -> tuple[int, float]:
    """Start the actor processes, show their progress live; return (errors, seconds)."""
    ctx = mp.get_context("spawn")
    counters = {a: ctx.Value("i", 0) for a in ACTORS}
    errors = ctx.Value("i", 0)
    procs = [
        ctx.Process(
            target=_writer,
            args=(str(path), actor, turns, n, counters[actor], errors),
            name=f"demo-{actor}",
        )
        for n, actor in enumerate(ACTORS)
    ]
    start = time.monotonic()
    with Progress(
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {a: progress.add_task(a, total=turns) for a in ACTORS}
        for p in procs:
            p.start()
        while any(p.is_alive() for p in procs):
            for a in ACTORS:
                progress.update(tasks[a], completed=counters[a].value)
            time.sleep(0.05)
        for a in ACTORS:
            progress.update(tasks[a], completed=counters[a].value)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            with errors.get_lock():
                errors.value += 1
    return int(errors.value), time.monotonic() - start


def verify(path: Path, turns: int, errors: int, seconds: float) -> DemoResult:
    import sessiondb

    with sessiondb.open(path) as store:
        sessions = store.list_sessions(limit=1000)
        keys: Counter[str] = Counter()
        gapless = True
        for s in sessions:
            msgs = store.messages(s.session_id)
            gapless &= [m.seq for m in msgs] == list(range(1, len(msgs) + 1))
            gapless &= len(msgs) == s.message_count
            keys.update(m.key for m in msgs if m.key)
        stored = store.count()
    written = turns * len(ACTORS)
    return DemoResult(
        path=path,
        written=written,
        stored=stored,
        duplicates=sum(n - 1 for n in keys.values() if n > 1),
        errors=errors,
        gapless=gapless,
        seconds=seconds,
    )


def summary_table(r: DemoResult) -> Table:
    table = Table(title="Verification", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()

    def mark(good: bool) -> str:
        return "[green]✓[/]" if good else "[red]✗[/]"

    rate = r.written / r.seconds if r.seconds else 0.0
    rows: list[tuple[str, Any]] = [
        ("messages written", f"{r.written:,}  ({rate:,.0f}/s across {len(ACTORS)} processes)"),
        ("messages stored", f"{r.stored:,}  {mark(r.stored == r.written)}"),
        ("duplicates", f"{r.duplicates}  {mark(r.duplicates == 0)}"),
        ("errors", f"{r.errors}  {mark(r.errors == 0)}"),
        ("seqs gapless in every session", mark(r.gapless)),
    ]
    for k, val in rows:
        table.add_row(k, str(val))
    return table
