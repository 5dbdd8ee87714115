"""Leases: one session at a time on a workspace (or any named resource).

```python
from sessiondb import lease
l = lease.workspace(path, session_id, ttl=300)   # file lease in the private runtime folder
l.acquire() -> bool; l.holder; l.refresh(); l.release()
with l: ...                                       # raises LeaseHeld naming the holder
store.lease(name, owner, ttl=300)                 # the same, kept in the store's database
```

A lease is stale — and taken over by the next acquire — when it is past its TTL, or when its
holder is provably dead on this host (pid gone, or reused by a process with another start time).
See docs/leases.md.
"""

from __future__ import annotations

from ..core.lease import Holder, Lease, LeaseBackend, LeaseWarning, Slot
from .files import FileBackend, list_leases, workspace, workspace_key

Backend = LeaseBackend  # the name this package has always exported

__all__ = [
    "Backend",
    "FileBackend",
    "Holder",
    "Lease",
    "LeaseWarning",
    "Slot",
    "list_leases",
    "workspace",
    "workspace_key",
]
