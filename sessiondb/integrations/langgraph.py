"""A LangGraph checkpointer (``BaseCheckpointSaver``, sync and async) on a sessiondb store.

::

    from langgraph.graph import StateGraph
    from sessiondb.integrations.langgraph import SessionDBSaver

    graph = builder.compile(checkpointer=SessionDBSaver("state.db"))

A thread's namespace is one session (``lg:<len>:<thread id>/<namespace>``; one thread is one
range of ids), holding its checkpoints (role ``checkpoint``, key ``c:<checkpoint id>``) and the
channel values they reference (role ``blob``, key ``b:<channel>:<version>``: a value stored once
per version, as LangGraph's own savers do) and the pending writes (role ``write``, key
``w:<checkpoint id>:<task>:<index>``), which follow their checkpoint: ``get_tuple`` of the
newest checkpoint reads the session's tail, ``list`` reads the session once. A checkpoint and
its new channel values are one ``append_many`` — all or nothing — and the same transaction
records the thread's newest checkpoint in the session's meta (``session_meta``), so
``get_tuple`` finds it by key. A re-sent write or checkpoint is idempotent by its key;
``copy_thread`` is ``fork_session`` per namespace; ``prune`` and ``delete_for_runs`` rewrite a
namespace's session without the checkpoints they remove, in one transaction
(``append_many(replace=True)``; docs/adr/0009-framework-primitives.md).

Values are serialized by the saver's ``serde`` and kept base64-encoded in meta.

The logic is written once, as generators that yield store calls: :class:`SessionDBSaver` runs them
on the sync store for the sync methods and awaits them on the async store for the ``a…`` ones.
"""

from __future__ import annotations

import binascii
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from typing import Any

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)

from ..errors import KeyConflict, StaleSession
from ._common import StoreLike, async_store

SOURCE = "langgraph"
#: Times a prune or run deletion re-reads a namespace that a writer changed under it.
_REWRITE_ATTEMPTS = 5

Call = tuple[str, tuple[Any, ...], dict[str, Any]]
Plan = Generator[Call, Any, Any]


def _thread(thread_id: str) -> str:
    return f"lg:{len(thread_id)}:{thread_id}/"


def _sid(thread_id: str, ns: str) -> str:
    return _thread(thread_id) + ns


def _call(name: str, *args: Any, **kwargs: Any) -> Call:
    return (name, args, kwargs)


class SessionDBSaver(BaseCheckpointSaver):  # type: ignore[misc]
    """A LangGraph checkpointer kept in a sessiondb store (``store``: an async store, a sync
    store, or a path/URL opened here)."""

    def __init__(self, store: StoreLike, *, serde: Any = None) -> None:
        super().__init__(serde=serde)
        self._astore = async_store(store)
        self._store: Any = getattr(self._astore, "wrapped", None)

    # -- the two drivers ----------------------------------------------------------------------

    def _run(self, plan: Plan) -> Any:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                name, args, kwargs = plan.throw(error) if error else plan.send(result)
            except StopIteration as done:
                return done.value
            error = None
            try:
                result = getattr(self._store, name)(*args, **kwargs)
            except (KeyConflict, StaleSession) as e:
                error = e

    async def _arun(self, plan: Plan) -> Any:
        result: Any = None
        error: BaseException | None = None
        while True:
            try:
                name, args, kwargs = plan.throw(error) if error else plan.send(result)
            except StopIteration as done:
                return done.value
            error = None
            try:
                result = await getattr(self._astore, name)(*args, **kwargs)
            except (KeyConflict, StaleSession) as e:
                error = e

    # -- serialization ------------------------------------------------------------------------

    def _dump(self, value: Any) -> list[str]:
        kind, data = self.serde.dumps_typed(value)
        return [kind, binascii.b2a_base64(data, newline=False).decode("ascii")]

    def _load(self, stored: Sequence[str]) -> Any:
        # binascii takes the ASCII text as it is: base64.b64decode first copies it to bytes
        # in Python, a third of a history load (benchmarks/adapters.py, docs/benchmarks.md).
        return self.serde.loads_typed((stored[0], binascii.a2b_base64(stored[1])))

    # -- plans ----------------------------------------------------------------------------------

    def _put(
        self,
        config: Any,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Plan:
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        sid = _sid(thread_id, ns)
        c = dict(checkpoint)
        values = c.pop("channel_values", {})
        rows = [
            {
                "role": "blob",
                "content": "",
                "key": f"b:{channel}:{version}",
                "meta": {"value": self._dump(values[channel]) if channel in values else None},
            }
            for channel, version in new_versions.items()
        ]
        rows.append(
            {
                "role": "checkpoint",
                "content": "",
                "key": f"c:{checkpoint['id']}",
                "meta": {
                    "id": checkpoint["id"],
                    "parent": conf.get("checkpoint_id"),
                    "checkpoint": self._dump(c),
                    "metadata": self._dump(get_checkpoint_metadata(config, metadata)),
                },
            }
        )
        session = yield _call("get_session", sid)
        latest = (session.meta or {}).get("latest") if session is not None else None
        patch = (
            {"latest": checkpoint["id"]} if latest is None or checkpoint["id"] > latest else None
        )
        yield from self._append(sid, rows, patch)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def _append(self, sid: str, rows: list[dict[str, Any]], patch: Any = None) -> Plan:
        try:
            yield _call("append_many", sid, rows, session_meta=patch)
        except KeyConflict:
            # A key re-sent with other content (a write LangGraph skips, a value already
            # stored): the first one stored stays, as in LangGraph's own savers.
            fresh = []
            for row in rows:
                if "key" not in row or (yield _call("message", sid, row["key"])) is None:
                    fresh.append(row)
            yield _call("append_many", sid, fresh, session_meta=patch)

    def _put_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Plan:
        conf = config["configurable"]
        sid = _sid(conf["thread_id"], conf.get("checkpoint_ns", ""))
        checkpoint_id = conf["checkpoint_id"]
        rows = []
        for idx, (channel, value) in enumerate(writes):
            slot = WRITES_IDX_MAP.get(channel, idx)
            row: dict[str, Any] = {
                "role": "write",
                "content": "",
                "meta": {
                    "checkpoint_id": checkpoint_id,
                    "task_id": task_id,
                    "slot": slot,
                    "channel": channel,
                    "value": self._dump(value),
                    "task_path": task_path,
                },
            }
            if slot >= 0:  # a special write (slot < 0) replaces the last one: unkeyed, last wins
                row["key"] = f"w:{checkpoint_id}:{task_id}:{slot}"
            rows.append(row)
        yield from self._append(sid, rows)

    def _tuple(
        self,
        thread_id: str,
        ns: str,
        stored: Any,
        blobs: dict[str, Any] | None = None,
        writes: list[Any] | None = None,
    ) -> Plan:
        from langgraph.checkpoint.base import writes_sort_key

        sid = _sid(thread_id, ns)
        meta = stored.meta
        checkpoint = self._load(meta["checkpoint"])
        values = {}
        for channel, version in checkpoint["channel_versions"].items():
            key = f"b:{channel}:{version}"
            # list() read the whole session already; get_tuple looks each value up by key.
            blob = blobs.get(key) if blobs is not None else (yield _call("message", sid, key))
            if blob is not None and blob.meta.get("value") is not None:
                values[channel] = self._load(blob.meta["value"])
        if writes is None:
            # A checkpoint's writes come after it in its session: for the newest checkpoint
            # (what a run resumes from), the session's tail.
            later = yield _call("messages", sid, after=stored.seq)
            writes = [
                m for m in later if m.role == "write" and m.meta["checkpoint_id"] == meta["id"]
            ]
        latest: dict[tuple[str, int], Any] = {}
        for m in writes:
            latest[(m.meta["task_id"], m.meta["slot"])] = m.meta
        ordered = sorted(
            latest.values(), key=lambda w: writes_sort_key(w["task_path"], w["task_id"], w["slot"])
        )
        conf = {"thread_id": thread_id, "checkpoint_ns": ns}
        return CheckpointTuple(
            config={"configurable": {**conf, "checkpoint_id": meta["id"]}},
            checkpoint={**checkpoint, "channel_values": values},
            metadata=self._load(meta["metadata"]),
            pending_writes=[(w["task_id"], w["channel"], self._load(w["value"])) for w in ordered],
            parent_config=(
                {"configurable": {**conf, "checkpoint_id": meta["parent"]}}
                if meta.get("parent")
                else None
            ),
        )

    def _get_tuple(self, config: Any) -> Plan:
        conf = config["configurable"]
        thread_id, ns = conf["thread_id"], conf.get("checkpoint_ns", "")
        sid = _sid(thread_id, ns)
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            session = yield _call("get_session", sid)
            checkpoint_id = (session.meta or {}).get("latest") if session is not None else None
            if not checkpoint_id:
                return None
        stored = yield _call("message", sid, f"c:{checkpoint_id}")
        if stored is None:
            return None
        return (yield from self._tuple(thread_id, ns, stored))

    def _ids(self, prefix: str) -> Plan:
        """Session ids starting with ``prefix`` (one range of the id order; the prefix itself,
        a thread's default namespace, included)."""
        out: list[str] = []
        after = prefix[:-1]
        while True:
            page = yield _call("session_ids", after=after, limit=500)
            for sid in page:
                if sid.startswith(prefix):
                    out.append(sid)
                elif sid > prefix:
                    return out
            if len(page) < 500:
                return out
            after = page[-1]

    def _list(self, config: Any, filter: Any, before: Any, limit: int | None) -> Plan:
        conf = (config or {}).get("configurable", {})
        prefix = _thread(conf["thread_id"]) if conf.get("thread_id") is not None else "lg:"
        want_ns = conf.get("checkpoint_ns")
        want_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        out: list[CheckpointTuple] = []
        for sid in (yield from self._ids(prefix)):
            length, rest = sid[3:].split(":", 1)  # lg:<len>:<thread id>/<namespace>
            thread_id, ns = rest[: int(length)], rest[int(length) + 1 :]
            if want_ns is not None and ns != want_ns:
                continue
            rows = yield _call("messages", sid)
            found = [m for m in rows if m.role == "checkpoint"]
            blobs = {m.key: m for m in rows if m.role == "blob"}
            writes: dict[str, list[Any]] = {}
            for m in rows:
                if m.role == "write":
                    writes.setdefault(m.meta["checkpoint_id"], []).append(m)
            for m in sorted(found, key=lambda m: m.meta["id"], reverse=True):
                cid = m.meta["id"]
                if (want_id and cid != want_id) or (before_id and cid >= before_id):
                    continue
                if filter:
                    metadata = self._load(m.meta["metadata"])
                    if not all(metadata.get(k) == v for k, v in filter.items()):
                        continue
                if limit is not None and len(out) >= limit:
                    return out
                out.append((yield from self._tuple(thread_id, ns, m, blobs, writes.get(cid, []))))
        return out

    def _delete_thread(self, thread_id: str) -> Plan:
        for sid in (yield from self._ids(_thread(thread_id))):
            yield _call("delete_session", sid)

    def _keep(self, sid: str, gone: Callable[[list[Any]], set[str]]) -> Plan:
        """Remove from session ``sid`` the checkpoints whose ids ``gone(checkpoints)`` names,
        with their pending writes and the values no checkpoint left references: the messages
        kept are the session's again, in one transaction (``append_many(replace=True)``, on
        the condition that no writer appended meanwhile, else read again and retry). A
        namespace left without checkpoints is deleted."""
        for _ in range(_REWRITE_ATTEMPTS):
            rows = yield _call("messages", sid)
            checkpoints = [m for m in rows if m.role == "checkpoint"]
            dropped = gone(checkpoints)
            if not dropped:
                return
            kept = [m for m in checkpoints if m.meta["id"] not in dropped]
            if not kept:
                yield _call("delete_session", sid)
                return
            values = {
                f"b:{channel}:{version}"
                for m in kept
                for channel, version in self._load(m.meta["checkpoint"])["channel_versions"].items()
            }
            items = [
                {
                    "role": m.role,
                    "content": m.content,
                    "meta": m.meta,
                    "created_at": m.created_at,
                    **({} if m.key is None else {"key": m.key}),
                }
                for m in rows
                if (m.role == "checkpoint" and m.meta["id"] not in dropped)
                or (m.role == "write" and m.meta["checkpoint_id"] not in dropped)
                or (m.role == "blob" and m.key in values)
            ]
            latest = max(m.meta["id"] for m in kept)
            try:
                yield _call(
                    "append_many",
                    sid,
                    items,
                    expect_last=rows[-1].seq,
                    replace=True,
                    session_meta={"latest": latest},
                )
                return
            except StaleSession:
                continue  # a checkpoint or write arrived meanwhile: judge again
        raise StaleSession(sid, rows[-1].seq, -1)

    def _delete_for_runs(self, run_ids: Sequence[str]) -> Plan:
        wanted = set(run_ids)
        if not wanted:
            return

        def of_those_runs(checkpoints: list[Any]) -> set[str]:
            return {
                m.meta["id"]
                for m in checkpoints
                if self._load(m.meta["metadata"]).get("run_id") in wanted
            }

        for sid in (yield from self._ids("lg:")):
            yield from self._keep(sid, of_those_runs)

    def _prune(self, thread_ids: Sequence[str], strategy: str) -> Plan:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")

        def all_but_the_latest(checkpoints: list[Any]) -> set[str]:
            ids = {m.meta["id"] for m in checkpoints}
            return ids - {max(ids)} if ids else set()

        for thread_id in thread_ids:
            for sid in (yield from self._ids(_thread(thread_id))):
                if strategy == "delete":
                    yield _call("delete_session", sid)
                else:
                    yield from self._keep(sid, all_but_the_latest)

    def _copy_thread(self, source: str, target: str) -> Plan:
        src, dst = _thread(source), _thread(target)
        for sid in (yield from self._ids(src)):
            yield _call("fork_session", sid, dst + sid[len(src) :])

    # -- BaseCheckpointSaver --------------------------------------------------------------------

    def get_tuple(self, config: Any) -> CheckpointTuple | None:
        return self._run(self._get_tuple(config))

    def list(
        self,
        config: Any,
        *,
        filter: dict[str, Any] | None = None,
        before: Any = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._run(self._list(config, filter, before, limit))

    def put(
        self,
        config: Any,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        return self._run(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._run(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._delete_thread(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._copy_thread(source_thread_id, target_thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Raises :class:`~sessiondb.StaleSession` when writers changed a namespace under it
        ``_REWRITE_ATTEMPTS`` times in a row (every wait bounded): nothing was removed from
        that namespace; call again."""
        self._run(self._delete_for_runs(run_ids))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Raises :class:`~sessiondb.StaleSession` like :meth:`delete_for_runs`."""
        self._run(self._prune(thread_ids, strategy))

    async def aget_tuple(self, config: Any) -> CheckpointTuple | None:
        return await self._arun(self._get_tuple(config))

    async def alist(
        self,
        config: Any,
        *,
        filter: dict[str, Any] | None = None,
        before: Any = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._arun(self._list(config, filter, before, limit)):
            yield item

    async def aput(
        self,
        config: Any,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        return await self._arun(self._put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self._arun(self._put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(self._delete_thread(thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(self._copy_thread(source_thread_id, target_thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(self._delete_for_runs(run_ids))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(self._prune(thread_ids, strategy))


__all__ = ["SOURCE", "SessionDBSaver"]
