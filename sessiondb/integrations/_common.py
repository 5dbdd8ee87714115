"""What the framework adapters share: one way to get an async store from what a user passes."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Union, cast

if TYPE_CHECKING:
    from ..core.async_contract import AsyncStore
    from ..core.contract import Store

StoreLike = Union["AsyncStore", "Store", str, "os.PathLike[str]"]
"""An async store, a sync store (wrapped), or a store's path or URL (opened)."""


def async_store(store: StoreLike) -> AsyncStore:
    """The async store behind ``store``. A path or URL is opened here (synchronously: framework
    constructors are sync); the caller owns what it passed and closes it."""
    from .. import aio
    from .. import open as open_sync

    if isinstance(store, (str, os.PathLike)):
        return aio.wrap(open_sync(os.fspath(store)))
    # Both contracts are runtime-checkable protocols with the same verb names: an async store's
    # verbs are coroutine functions.
    if inspect.iscoroutinefunction(store.append):
        return cast("AsyncStore", store)
    return aio.wrap(cast("Store", store))


__all__ = ["StoreLike", "async_store"]
