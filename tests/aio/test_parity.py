"""The async contract keeps step with the sync one: same verbs, same arguments, awaitable.

``Store`` (core/contract.py) and ``AsyncStore`` (core/async_contract.py) are compared verb by
verb, and the implementation (sessiondb.aio) with ``AsyncStore``: a verb added to the Store and
not to the async store fails here (mypy --strict then checks the implementation's types).
"""

from __future__ import annotations

import inspect
from typing import Any

import sessiondb
from sessiondb import Message
from sessiondb.aio import AsyncSessionStore, AsyncStoreLease
from sessiondb.core.async_contract import AsyncLease, AsyncStore
from sessiondb.core.contract import Store
from sessiondb.core.lease import Lease
from tests._aio_bridge import store_verbs

#: Sync verbs whose async form has another name.
RENAMED = {"__enter__": "__aenter__", "__exit__": "__aexit__"}
#: Return annotations that differ on purpose: the async forms of the store and the lease.
RETURNS = {"__enter__": ("Store", "AsyncStore"), "lease": ("Lease", "AsyncLease")}
#: Verbs of the async store that make no handle to await: the lease handle is made at once.
NOT_AWAITED = {"lease"}


def differences(sync: dict[str, Any], asynchronous: dict[str, Any]) -> list[str]:
    """What keeps ``asynchronous`` (verbs by name) from being the async form of ``sync``."""
    problems: list[str] = []
    expected = {RENAMED.get(name, name) for name in sync}
    problems += [f"{n}: in the sync contract only" for n in sorted(expected - set(asynchronous))]
    problems += [f"{n}: in the async contract only" for n in sorted(set(asynchronous) - expected)]
    for name, sync_verb in sync.items():
        async_verb = asynchronous.get(RENAMED.get(name, name))
        if async_verb is None:
            continue
        if isinstance(sync_verb, property) or isinstance(async_verb, property):
            if not (isinstance(sync_verb, property) and isinstance(async_verb, property)):
                problems.append(f"{name}: a property in one contract only")
            elif _returns(sync_verb.fget) != _returns(async_verb.fget):
                problems.append(f"{name}: the property's type differs")
            continue
        s, a = inspect.signature(sync_verb), inspect.signature(async_verb)
        if list(s.parameters.values()) != list(a.parameters.values()):
            problems.append(f"{name}: arguments differ: {s} vs {a}")
        want = RETURNS.get(name, (s.return_annotation, s.return_annotation))
        if (s.return_annotation, a.return_annotation) != want:
            problems.append(f"{name}: returns {a.return_annotation}, not {want[1]}")
        if inspect.iscoroutinefunction(async_verb) == (name in NOT_AWAITED):
            problems.append(f"{name}: {'is' if name in NOT_AWAITED else 'is not'} awaited")
    return problems


def _returns(fn: Any) -> Any:
    return inspect.signature(fn).return_annotation


def test_the_async_contract_has_every_verb_of_the_store_contract() -> None:
    assert differences(store_verbs(Store), store_verbs(AsyncStore)) == []


def test_a_verb_added_to_the_store_alone_is_caught() -> None:
    """The check can fail: a new verb, a changed argument and a sync verb are each reported."""

    def archive(self: Any, *, older_than: float, dry_run: bool = False) -> int: ...

    def append(self: Any, session_id: str, role: str, content: str, *, key: str) -> Message: ...

    grown = {**store_verbs(Store), "archive": archive}
    assert differences(grown, store_verbs(AsyncStore)) == ["archive: in the sync contract only"]
    changed = {**store_verbs(Store), "append": append}
    [problem] = differences(changed, store_verbs(AsyncStore))
    assert problem.startswith("append: arguments differ")
    blocking = {**store_verbs(AsyncStore), "count": Store.count}
    assert differences(store_verbs(Store), blocking) == ["count: is not awaited"]


def test_the_async_store_keeps_the_async_contract() -> None:
    implemented = store_verbs(AsyncSessionStore)
    extras = {"wrapped", "aclose"}  # the sync store underneath; close's anyio name
    assert set(implemented) - set(store_verbs(AsyncStore)) == extras
    asked = {**store_verbs(AsyncStore)}
    got = {name: implemented[name] for name in asked if name in implemented}
    # Same names, arguments and awaitability; the classes return their own types.
    for name, verb in asked.items():
        assert name in got, name
        if isinstance(verb, property):
            assert isinstance(got[name], property), name
            continue
        assert inspect.signature(verb).parameters == inspect.signature(got[name]).parameters, name
        assert inspect.iscoroutinefunction(verb) == inspect.iscoroutinefunction(got[name]), name
    assert AsyncSessionStore.aclose is AsyncSessionStore.close


def test_the_async_lease_has_every_call_of_the_lease() -> None:
    """Each public name of the sync Lease is on the async handle; its calls and the properties
    that read the store are awaited there."""
    attributes = {"session_id", "ttl", "last_takeover"}  # set in Lease.__init__
    sync_names = {n for n in vars(Lease) if not n.startswith("_")} | attributes
    async_names = set(store_verbs(AsyncLease)) - {"__aenter__", "__aexit__"}
    assert sync_names == async_names
    reads = {"holder", "record", "held"}
    for name in async_names:
        verb = store_verbs(AsyncStoreLease)[name]
        calls = inspect.isfunction(vars(Lease).get(name))
        assert inspect.iscoroutinefunction(verb) == (calls or name in reads), name
    assert set(store_verbs(AsyncStoreLease)) == set(store_verbs(AsyncLease))


def test_the_async_contract_is_exported_lazily() -> None:
    assert sessiondb.AsyncStore is AsyncStore
    assert sessiondb.aio.AsyncStore is AsyncStore
