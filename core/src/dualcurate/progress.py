"""Progress reporting: stages call ``ctx.progress``; the CLI shows it with rich."""

from __future__ import annotations

import threading
import time
from typing import Any


class StageProgress:
    """Counts units done (rows or requests), tokens and errors; subclasses display them.
    Thread-safe: the shards in flight of a streaming stage report from their own threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.total = 0
        self.done = 0
        self.tokens = 0
        self.errors = 0
        self.cached = 0
        self.reserved = 0
        # requests on their own (done/total above count rows and requests together)
        self.requests_total = 0
        self.requests_done = 0
        self.started = time.monotonic()

    def start(self, total: int, unit: str = "rows") -> None:
        with self._lock:
            self.total = total
            self.unit = unit
            self.done = 0
            self.started = time.monotonic()
            self._refresh()

    def add_total(self, n: int) -> None:
        with self._lock:
            self.total += n
            self._refresh()

    def reserve(self, n: int) -> None:
        """Announce ``n`` requests before they are built (so done/total and the ETA cover them
        from the start); :meth:`expect` draws on the reservation, :meth:`release` returns
        what will not be sent."""
        with self._lock:
            self.reserved += n
            self.requests_total += n
            self.add_total(n)

    def expect(self, n: int) -> None:
        """``n`` requests are about to be generated (``generate_cached`` calls this): they
        come out of the reservation first; only those beyond it grow the total."""
        with self._lock:
            taken = min(n, self.reserved)
            self.reserved -= taken
            self.requests_total += n - taken
            self.add_total(n - taken)

    def release(self, n: int) -> None:
        """``n`` reserved requests will not be sent."""
        with self._lock:
            taken = min(n, self.reserved)
            self.reserved -= taken
            self.requests_total -= taken
            self.add_total(-taken)

    def advance(self, n: int = 1, tokens: int = 0, errors: int = 0, cached: bool = False) -> None:
        with self._lock:
            self.done += n
            self.tokens += tokens
            self.errors += errors
            if cached:
                self.cached += n
            self._refresh()

    def advance_requests(self, n: int = 1, tokens: int = 0, errors: int = 0,
                         cached: bool = False) -> None:
        """``n`` requests answered (``generate_cached`` calls this): counted in done/total as
        :meth:`advance` does, and in the requests column of the bar."""
        with self._lock:
            self.requests_done += n
            self.advance(n, tokens=tokens, errors=errors, cached=cached)

    def tokens_per_s(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return self.tokens / elapsed

    def _refresh(self) -> None:
        pass

    def finish(self) -> None:
        """The stage is done: everything counted so far is complete."""
        with self._lock:
            self.total = max(self.total, self.done)
            self.done = self.total
            self._refresh()

    def stop(self) -> None:
        pass


class NullProgress(StageProgress):
    """No display (library use, tests)."""


class RichProgress(StageProgress):
    """One rich progress bar per stage: done/total, tokens/s, errors, ETA."""

    def __init__(self, progress: Any, description: str):
        super().__init__()
        self._progress = progress
        self._task = progress.add_task(description, total=None, tps="", errors=0, requests="")

    def _refresh(self) -> None:
        tps = self.tokens_per_s()
        requests = (f"{self.requests_done:,}/{self.requests_total:,} req"
                    if self.requests_total else "")
        self._progress.update(self._task, total=self.total or None, completed=self.done,
                              tps=f"{tps:,.0f} tok/s" if self.tokens else "",
                              errors=self.errors, requests=requests)

    def finish(self) -> None:
        with self._lock:
            super().finish()
            # a known total, even 0, so the bar shows complete and its clock stops
            self._progress.update(self._task, total=self.total, completed=self.done)

    def stop(self) -> None:
        self._refresh()
