"""Transcript import, written once over the public Store API.

Nothing here touches a database directly: every backend (SQLite, PostgreSQL) gets the same
behaviour by handing its store to these functions. Records read from a file were validated line
by line (formats._check), so their items go to the append transaction (core/writes.py) without
``append_many``'s second validation (``_Importer._append``).

* **Import** streams a JSONL file line by line (at most one capped line in memory) and appends in
  batches of :data:`BATCH` messages, each one short write transaction, so a live agent's append
  never waits behind a whole file. Every message carries a key derived from its source line
  (see :mod:`sessiondb.core.formats`), so importing a file twice, or a file that has grown, adds
  only what is new. ``strict=True`` validates the whole file before writing anything.
* **Export** (:mod:`sessiondb.core.export`) writes sessiondb's own JSONL format page by page;
  importing it into an empty store and exporting again gives the same bytes.
* **Reconcile** (:mod:`sessiondb.core.reconcile`) backfills what an older JSONL transcript holds
  and the store lacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    Error,
    InvalidInput,
    KeyConflict,
    SessionExists,
    StaleSession,
)
from ..models import BadLine, ImportReport, Message
from . import append as ap
from . import reader, validate, writes
from .formats import (
    MAX_LINE_BYTES,
    Header,
    Parsed,
    Record,
    Title,
    line_digest,
)
from .reader import open_file, read_lines

if TYPE_CHECKING:
    from .contract import Store

#: Messages per ``append_many`` call (one write transaction each) during an import. Small enough
#: that a live writer's append waits at most a few milliseconds behind one batch (rule 5 of
#: docs/design.md):
#: with the search index maintained in the same transaction a 500-message batch held the write
#: lock 30 ms at the median and 113 ms at p99, and live writers' p99 rose to 84 ms; with 100 it
#: stayed at 42 ms (benchmarks/mixed.py, docs/benchmarks.md). With the index written set-based
#: (ADR 0010) 250 cost 0.82x the CPU per message but live writers' p99 rose 1.46x (median of 5
#: rounds, benchmarks/results/import_ab_batch250.json; docs/benchmarks.md, "Import path").
BATCH = 100
#: Messages per write transaction of a bulk import (``bulk=True``), whose search index is built
#: after loading (docs/adr/0015-bulk-import.md): nobody else is expected to write meanwhile, so
#: the transaction may be long; measured in docs/benchmarks.md, "Bulk import".
BULK_BATCH = 2000
#: Attempts of an import batch placed by position while another writer appends to its session.
_IMPORT_TRIES = 5

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, bytes_total)`` after each batch."""


# -- reading ----------------------------------------------------------------------------------


def validate_jsonl(
    path: str | os.PathLike[str], *, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[list[BadLine], int]:
    """Every bad line of a file, and the byte offset validated up to (the size read)."""
    bad: list[BadLine] = []
    end = 0
    for _, offset, parsed in read_lines(path, max_bytes=max_line_bytes):
        end = offset
        if isinstance(parsed, BadLine):
            bad.append(parsed)
    return bad, end


# -- import -----------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def file_session_id(path: str | os.PathLike[str], first: Record) -> str:
    """Session id for a file whose lines name none: its stem plus a hash of its first message.

    The hash keeps two different ``chat.jsonl`` files in two folders apart, and it depends on
    content only, so the same file moved, copied or grown maps to the same session.
    """
    stem = _UNSAFE.sub("_", Path(os.fspath(path)).stem)[:200] or "transcript"
    seed = f"{first.key}\x00{first.role}\x00{first.content}".encode("utf-8", "replace")
    return f"{stem}-{line_digest(seed)[:8]}"


def _item(rec: Record, key: str | None) -> ap.Item:
    """The item of a record ``LineParser`` validated (formats._check applies the store's rules
    to every line), so the importer's items skip ``append_many``'s validation: each rule runs
    once per line. ``validate.meta`` makes the canonical meta text, as ``Item.of`` would."""
    return ap.Item(rec.role, rec.content, key, validate.meta(rec.meta), rec.created_at)


class _Importer:
    """Groups records into per-session batches and appends them; restores what headers and
    titles say about sessions."""

    def __init__(
        self, store: Store, path: str, session_id: str | None, source: str, bulk: bool = False
    ) -> None:
        from .store import SessionStore  # store.py imports this module lazily, too

        self.store = store
        self.bulk = bulk
        self.batch = BULK_BATCH if bulk else BATCH
        #: the write path of a SessionStore, to hand it items validated already (_append)
        self.backend = store.backend if isinstance(store, SessionStore) else None
        self.group = store.group if isinstance(store, SessionStore) else None
        self.path = path
        self.session_id = session_id
        self.source = source
        self.headers: dict[str, Header] = {}
        self.header: Header | None = None
        self.file_sid: str | None = None
        self.ensured: set[str] = set()
        #: sessions this import created: the only ones whose times a header may set
        self.created: set[str] = set()
        self.pending: list[tuple[int, Record]] = []
        self.pending_sid: str | None = None
        self.imported = 0
        self.duplicates = 0
        self.bad: list[BadLine] = []
        self.titles: dict[str, str] = {}  # leaf uuid -> summary
        self.last_title: str | None = None
        self.session_titles: dict[str, str] = {}
        #: session -> the session it was resumed from: a Claude Code transcript resumed with
        #: ``--resume`` carries the earlier session's records (their own ``sessionId``) before
        #: its own; the lineage is recorded in the later session's meta (``resumed_from``, the
        #: claude_agent_sdk adapter's key) instead of two unrelated sessions
        self.resumed: dict[str, str] = {}
        self._record_sid: str | None = None  # the sessionId the previous record named
        self._record_uuids: set[str] = set()  # the uuids of that session's records so far

    def header_line(self, header: Header) -> None:
        self.flush()
        self._finish_header()
        self.header = header
        self.headers[header.session_id] = header
        if self.session_id is None:
            self._ensure(header.session_id, header.created_at)  # a session without messages too

    def title_line(self, title: Title) -> None:
        self.last_title = title.text
        if title.leaf is not None:
            self.titles[title.leaf] = title.text

    def target(self, rec: Record) -> str:
        if self.session_id is not None:
            return self.session_id
        if rec.session_id is not None:
            return rec.session_id
        if self.header is not None:
            return self.header.session_id
        if self.file_sid is None:
            self.file_sid = file_session_id(self.path, rec)
        return self.file_sid

    def add(self, line: int, rec: Record) -> None:
        sid = self.target(rec)
        self._lineage(rec, sid)
        if sid != self.pending_sid:
            try:
                validate.session_id(sid)
            except InvalidInput as e:
                self.bad.append(BadLine(self.path, line, str(e)))
                return
            self.flush()
            self.pending_sid = sid
        if self.titles and rec.key is not None and rec.key.startswith("claude:"):
            summary = self.titles.get(rec.key[7:])
            if summary is not None:
                self.session_titles[sid] = summary
        self.pending.append((line, rec))
        if len(self.pending) >= self.batch:
            self.flush()

    def _lineage(self, rec: Record, sid: str) -> None:
        """Note ``sid`` as resumed from the session the records before it named, when the
        records of one transcript change their own ``sessionId`` and the first record of the
        new one answers (``parentUuid``) a record of the earlier one. Never with
        ``session_id=`` given, never in a sessiondb export (its headers carry each session's
        meta: a backup restores exactly, tests/cli/test_stats_cli.py), nor for a subagent's
        records, kept apart by formats.py."""
        if self.session_id is not None or rec.session_id is None or self.headers:
            return
        meta = rec.meta or {}
        before, self._record_sid = self._record_sid, rec.session_id
        if before != rec.session_id:
            answered = meta.get("parentUuid") in self._record_uuids
            self._record_uuids = set()
            if (
                answered
                and before is not None
                and before != sid
                and ":agent-" not in sid
                and ":agent-" not in before
                and sid not in self.resumed
            ):
                self.resumed[sid] = before
        uuid = meta.get("uuid")
        if isinstance(uuid, str):
            self._record_uuids.add(uuid)  # one session's records at a time: bounded by it

    def _ensure(self, sid: str, created_at: float | None) -> None:
        if sid in self.ensured:
            return
        header = self.headers.get(sid)
        if header is None and sid == self.session_id:
            header = self.header
        source = (header.source if header else None) or self.source
        if self.store.get_session(sid) is None:
            try:
                if header is not None:
                    self.store.create_session(
                        sid,
                        source=source,
                        title=header.title,
                        meta=header.meta,
                        created_at=header.created_at or created_at,
                    )
                else:
                    self.store.create_session(sid, source=source, created_at=created_at)
                self.created.add(sid)
            except SessionExists:
                pass  # created meanwhile by another process: it is not ours to change
        self.ensured.add(sid)

    def _finish_header(self) -> None:
        """Give the session of the header just finished the times its header states."""
        h = self.header
        if h is None or self.session_id is not None or h.session_id not in self.created:
            return
        changes: dict[str, Any] = {}
        if h.updated_at is not None:
            changes["updated_at"] = h.updated_at
        if h.ended_at is not None:
            changes["ended_at"] = h.ended_at
            changes["end_reason"] = h.end_reason
        if changes:
            self.store.update_session(h.session_id, **changes)

    def finish(self) -> None:
        self.flush()
        self._finish_header()
        titles = dict(self.session_titles)
        ours = self.ensured - set(self.headers)
        if not titles and self.last_title is not None and len(ours) == 1:
            titles[next(iter(ours))] = self.last_title  # Claude Code: the file's own summary
        for sid, text in titles.items():  # a title never replaces one a session has
            found = self.store.get_session(sid)
            if found is not None and found.title is None:
                self.store.update_session(sid, title=text)
        for sid, parent in self.resumed.items():  # nor does a lineage
            found = self.store.get_session(sid)
            if found is not None and "resumed_from" not in (found.meta or {}):
                self.store.update_session(sid, meta_patch={"resumed_from": parent})

    def _append(self, sid: str, items: list[ap.Item], expect_last: int | None) -> list[Message]:
        """``append_many(sid, items, expect_last=...)`` for items ``LineParser`` validated (and
        the session id, ``add``): straight to the append transaction, each rule run once."""
        if self.backend is not None and self.bulk:  # its own transaction, index deferred
            return writes.append(self.backend, sid, items, expect_last, None, deferred=True)
        if self.backend is not None:  # as append_many does with a request it validated
            request = writes.Request(sid, items, expect_last, None)
            return writes.commit(self.backend, self.group, request)
        # Another implementation of the Store contract (a wrapper): through its public verb.
        dicts = [
            {"role": i.role, "content": i.content, "key": i.key, "meta": validate.load_meta(i.meta)}
            | ({} if i.created_at is None else {"created_at": i.created_at})
            for i in items
        ]
        return self.store.append_many(sid, dicts, expect_last=expect_last)

    def flush(self) -> None:
        if not self.pending or self.pending_sid is None:
            return
        sid, pending = self.pending_sid, self.pending
        self.pending = []
        self._ensure(sid, pending[0][1].created_at)
        for _ in range(_IMPORT_TRIES):
            before = self.store.count(sid)
            lines, records, items, positional, duplicates = self._plan(sid, pending, before)
            if not items:
                self.duplicates += duplicates
                return
            try:
                # Keyless lines placed by position are right only if nobody appended since
                # `before` was read: two imports of one export at once stored each line twice
                # (tests/contract/test_transcript.py::test_two_imports_of_one_export_at_once).
                result = self._append(sid, items, before if positional else None)
            except StaleSession:
                continue  # the session moved: plan again from what it holds now
            except KeyConflict:
                result, kept = self._one_by_one(sid, lines, records, items)
                duplicates += kept
            new = sum(1 for m in result if m.seq > before)
            self.imported += new
            self.duplicates += duplicates + len(result) - new
            return
        # Still moving after every try: give each keyless line its line-derived key, which makes
        # the batch idempotent whatever else is appended meanwhile.
        alt = [(line, dataclasses.replace(r, key=r.key or r.alt_key)) for line, r in pending]
        self.pending, self.pending_sid = alt, sid
        self.flush()

    def _plan(
        self, sid: str, pending: list[tuple[int, Record]], before: int
    ) -> tuple[list[int], list[Record], list[ap.Item], bool, int]:
        """The lines to append given the session's last seq: (lines, their records, items,
        whether any item is placed by its position, duplicates skipped)."""
        # sessiondb export lines without a key are identified by their position (seq): a line
        # whose seq already holds the same message is a duplicate; one that lands exactly at its
        # seq is stored keyless (so export -> import -> export is byte-exact); any other gets a
        # key derived from its line so that importing it again stays idempotent.
        seqs = [r.seq for _, r in pending if r.key is None and r.seq is not None]
        stored: dict[int, Message] = {}
        lo = min(seqs, default=before + 1)
        if lo <= before:
            hi = min(max(seqs), before)
            stored = {m.seq: m for m in self.store.messages(sid, after=lo - 1, limit=hi - lo + 1)}
        lines: list[int] = []
        records: list[Record] = []
        items: list[ap.Item] = []
        positional, duplicates = False, 0
        next_seq = before + 1
        for line, rec in pending:
            key = rec.key
            if key is None and rec.seq is not None:
                have = stored.get(rec.seq)
                if have is not None and (have.role, have.content, have.meta) == (
                    rec.role,
                    rec.content,
                    rec.meta,
                ):
                    duplicates += 1
                    continue
                if rec.seq != next_seq:
                    key = rec.alt_key
                else:
                    positional = True
            lines.append(line)
            records.append(rec)
            items.append(_item(rec, key))
            next_seq += 1
        return lines, records, items, positional, duplicates

    def _one_by_one(
        self, sid: str, lines: list[int], records: list[Record], items: list[ap.Item]
    ) -> tuple[list[Message], int]:
        """A batch hit a key stored with other content: isolate the conflicting lines. Returns
        the messages appended or found, and how many lines were already stored differently.

        A key derived from its line (``Record.derived_key``) stored with other content was
        stored from that same line by an earlier sessiondb that read the line differently (an
        older version kept less structure): it is already stored, and stays as it is.
        """
        out: list[Message] = []
        kept = 0
        for line, rec, item in zip(lines, records, items, strict=True):
            try:
                out.extend(self._append(sid, [item], None))
            except KeyConflict as e:
                if rec.derived_key:
                    kept += 1
                else:
                    self.bad.append(BadLine(self.path, line, str(e)))
        return out, kept


def import_jsonl(
    store: Store,
    path: str | os.PathLike[str],
    *,
    session_id: str | None = None,
    source: str = "import",
    strict: bool = False,
    progress: Progress | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    bulk: bool = False,
    index_progress: Progress | None = None,
) -> ImportReport:
    """Import one JSONL transcript; idempotent (importing twice adds nothing).

    Messages go to ``session_id`` when given, else to the session each line names (Claude Code's
    ``sessionId``, a sessiondb export's ``session_id``), else to a session named after the file
    (:func:`file_session_id`). Bad lines are skipped and reported; with ``strict=True`` any bad
    line raises ``InvalidInput`` before anything is written.

    ``bulk=True``: a large import into a store nobody else is writing. Batches of
    :data:`BULK_BATCH` messages, whose search index the store may build after loading, set-based
    (``Backend.write_deferred`` / ``finish_index``; ``index_progress(done, total)`` in message
    ids while it does); every message is searchable when this returns, as in a plain import.
    Others may still write meanwhile: their messages are indexed as always, and a batch the
    store cannot defer is indexed at once (docs/adr/0015-bulk-import.md).
    """
    name = os.fspath(path)
    if session_id is not None:
        validate.session_id(session_id)
    validate.source(source)
    stop_at: int | None = None
    if strict:
        bad, stop_at = validate_jsonl(path, max_line_bytes=max_line_bytes)
        if bad:
            shown = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise InvalidInput(
                f"{name}: {len(bad)} bad line(s), nothing was imported — {shown}{more}. "
                "Fix them, or import without --strict to skip them"
            )
    with open_file(path) as f:
        total = os.fstat(f.fileno()).st_size
    importer = _Importer(store, name, session_id, source, bulk)
    backend = importer.backend if bulk else None  # whose index may wait for finish_index
    try:
        _load(importer, path, max_line_bytes, stop_at, total, progress)
    except Exception:
        if backend is not None:  # what was loaded is committed: searchable before the error
            with contextlib.suppress(Error):
                backend.finish_index(index_progress)
        raise
    if backend is not None:
        backend.finish_index(index_progress)
    return ImportReport(importer.imported, importer.duplicates, tuple(importer.bad))


def _load(
    importer: _Importer,
    path: str | os.PathLike[str],
    max_line_bytes: int,
    stop_at: int | None,
    total: int,
    progress: Progress | None,
) -> None:
    # Parsed in a child process while this one stores (core/reader.py): a bulk import, and a
    # plain import of a file large enough to repay the fork (reader.FORK_BYTES).
    size = total if stop_at is None else min(total, stop_at)
    if importer.bulk or size >= reader.FORK_BYTES:
        lines = reader.parsed_lines(os.fspath(path), max_bytes=max_line_bytes, stop_at=stop_at)
    else:
        lines = read_lines(path, max_bytes=max_line_bytes, stop_at=stop_at)
    with contextlib.closing(lines):  # an error while storing ends the reader at once
        _store(importer, lines, total, progress)


def _store(
    importer: _Importer,
    lines: Generator[tuple[int, int, Parsed | BadLine], None, None],
    total: int,
    progress: Progress | None,
) -> None:
    done = 0
    for line, end, parsed in lines:
        done = end
        if isinstance(parsed, BadLine):
            importer.bad.append(parsed)
        elif isinstance(parsed, Header):
            importer.header_line(parsed)
        elif isinstance(parsed, Title):
            importer.title_line(parsed)
        else:
            before = importer.imported + importer.duplicates
            importer.add(line, parsed)
            if progress is not None and importer.imported + importer.duplicates != before:
                progress(done, total)
    importer.finish()
    if progress is not None:
        progress(done, total)


__all__ = [
    "BATCH",
    "BULK_BATCH",
    "Progress",
    "file_session_id",
    "import_jsonl",
    "validate_jsonl",
]
