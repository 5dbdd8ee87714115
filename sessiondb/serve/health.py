"""The doctor's report, computed in a background thread: the health page shows the latest one at
once and never waits for the checks (the write-lock check alone watches for 0.5 s,
docs/doctor.md)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ..doctor import diagnose, report_to_dict
from ..models import HealthReport

#: A report older than this is computed again when the page asks.
FRESH_SECONDS = 10.0


class HealthWorker:
    def __init__(self, check: Callable[[], HealthReport]) -> None:
        self._check = check
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._error: str | None = None
        self._at: float | None = None
        self._running = False

    @classmethod
    def for_store(cls, path: str | None, fallback: Callable[[], HealthReport]) -> HealthWorker:
        """The file doctor for a file store (it names lock holders), else the store's check."""
        if path is not None:
            return cls(lambda: diagnose(path))
        return cls(fallback)

    def refresh(self) -> None:
        """Start a computation unless one is running."""
        with self._lock:
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="sessiondb-serve-doctor", daemon=True).start()

    def _run(self) -> None:
        try:
            report: dict[str, Any] | None = report_to_dict(self._check())
            error = None
        except Exception as e:  # the page shows what went wrong instead of a report
            report, error = None, f"{type(e).__name__}: {e}"
        with self._lock:
            self._report, self._error, self._at = report, error, time.time()
            self._running = False

    def snapshot(self) -> dict[str, Any]:
        """The latest report (None before the first), when it was computed, and whether a
        newer one is being computed; asks for a newer one when it is stale."""
        with self._lock:
            stale = self._at is None or time.time() - self._at > FRESH_SECONDS
            out = {
                "report": self._report,
                "error": self._error,
                "computed_at": self._at,
            }
        if stale:
            self.refresh()
        with self._lock:
            out["pending"] = self._running
        return out


__all__ = ["HealthWorker"]
