"""Progress reporting: stages call ``ctx.progress``; the CLI shows it with rich."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
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
        self.unit = "rows"
        self.started = self.created = time.monotonic()

    def start(self, total: int, unit: str = "rows") -> None:
        """Count ``total`` units from zero (a stage that works in phases starts each one;
        the requests and tokens counted so far go with the phase before)."""
        with self._lock:
            self.total = total
            self.unit = unit
            self.done = 0
            self.requests_total = self.requests_done = self.reserved = 0
            self.tokens = self.cached = 0
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
            self.requests_done = max(self.requests_done, self.requests_total)
            self._refresh()

    def stop(self) -> None:
        pass

    def describe(self, name: str, ended: bool = False) -> str:
        """The progress as one complete line of words, for a log file: ``filter: 45/90
        rows, 30/68 requests, 47% done, 175 tokens/s, 0 errors, 0:00:12 elapsed, about
        0:00:14 left``; ``ended``: ``filter done: ..., took 0:00:24``."""
        with self._lock:
            now = time.monotonic()
            rows_total = self.total - self.requests_total
            rows_done = self.done - self.requests_done
            parts = []
            if self.unit != "requests" or rows_total > 0:
                # a source reads on without a total: the count alone
                known = f"/{rows_total:,}" if rows_total >= max(rows_done, 1) else ""
                parts.append(f"{rows_done:,}{known} {self.unit}")
            if self.requests_total or self.unit == "requests":
                cached = f" ({self.cached:,} from the cache)" if self.cached else ""
                parts.append(f"{self.requests_done:,}/{self.requests_total:,} requests{cached}")
            if not ended and self.total >= max(self.done, 1):
                parts.append(f"{100 * self.done // self.total}% done")
            if self.tokens:
                parts.append(f"{self.tokens_per_s():,.0f} tokens/s")
            parts.append(f"{self.errors:,} error{'' if self.errors == 1 else 's'}")
            elapsed = _clock(now - self.created)
            if ended:
                parts.append(f"took {elapsed}")
            else:
                parts.append(f"{elapsed} elapsed")
                if 0 < self.done < self.total and 20 * self.done >= self.total:  # 5%+
                    left = (now - self.started) / self.done * (self.total - self.done)
                    parts.append(f"about {_clock(left)} left")
            return f"{name}{' done' if ended else ''}: " + ", ".join(parts)


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class NullProgress(StageProgress):
    """No display (library use, tests)."""


class LineProgress(StageProgress):
    """Progress as plain lines of words, for a log file or a pipe (where a bar would only be
    drawn once, at the end, cut to 80 columns): one when the stage starts, one every
    ``interval`` seconds while it runs, one when it ends (:meth:`StageProgress.describe`)."""

    def __init__(self, name: str, emit: Callable[[str], None], interval: float = 30.0):
        super().__init__()
        self.name = name
        self.interval = interval
        self._emit = emit
        self._last = time.monotonic()
        self._ended = False
        emit(f"{name}: started")

    def _refresh(self) -> None:
        now = time.monotonic()
        if not self._ended and now - self._last >= self.interval and (self.total or self.done):
            self._last = now
            self._emit(self.describe(self.name))

    def finish(self) -> None:
        with self._lock:
            self._ended = True
            super().finish()
            self._emit(self.describe(self.name, ended=True))

    def stop(self) -> None:
        with self._lock:
            if not self._ended:  # failed or interrupted: where it got to
                self._ended = True
                self._emit(self.describe(self.name) + " (stopped)")


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
