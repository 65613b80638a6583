"""Which failures of an OpenAI-compatible server are worth retrying, and how long to wait.

Retried: rate limits (429), request timeouts (408), conflicts/locks (409), server errors (5xx),
client-side timeouts and connection errors. Never retried: every other 4xx (400 bad request,
401/403 auth, 404 unknown model or path, 422 unprocessable): sending them again cannot help.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping

RETRY_STATUS = frozenset({408, 409, 429})
#: Longest wait a Retry-After header may impose (bounds a run against a broken header).
MAX_RETRY_AFTER = 600.0


def is_retryable_status(status: int) -> bool:
    """True for statuses that may succeed when sent again (429, 408, 409, 5xx)."""
    return status in RETRY_STATUS or 500 <= status <= 599


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date);
    None when absent or unparseable. Never negative, at most :data:`MAX_RETRY_AFTER`."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return min(max(float(raw_ms) / 1000.0, 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff_delay(attempt: int, retry_after: float | None, initial: float, maximum: float,
                  rng: random.Random | None = None) -> float:
    """Wait before retry number ``attempt`` (0-based): the server's Retry-After when given,
    else exponential backoff ``initial * 2**attempt`` capped at ``maximum``, with jitter
    (50–100 %) so many clients do not retry in lockstep."""
    if retry_after is not None:
        return retry_after
    base = min(initial * (2.0 ** attempt), maximum)
    return base * (0.5 + 0.5 * (rng or random).random())


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced: error messages may echo what
    was sent."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "***")
    return text
