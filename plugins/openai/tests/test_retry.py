"""The retry policy as pure functions."""

from __future__ import annotations

import email.utils
import random

from hypothesis import given
from hypothesis import strategies as st

from dualcurate_openai.retry import (
    MAX_RETRY_AFTER,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    redact,
)


def test_retryable_statuses():
    assert all(is_retryable_status(s) for s in (408, 409, 429, 500, 502, 503, 504, 599))
    assert not any(is_retryable_status(s) for s in (200, 400, 401, 403, 404, 422))


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_retry_after_seconds_are_honoured_and_bounded(seconds):
    got = parse_retry_after({"Retry-After": repr(seconds)})
    assert got == min(seconds, MAX_RETRY_AFTER)


def test_retry_after_ms_wins_and_dates_parse():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=1_000_000.0) == 30.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5))
def test_parse_retry_after_never_raises(headers):
    got = parse_retry_after(headers)
    assert got is None or 0.0 <= got <= MAX_RETRY_AFTER


@given(st.integers(min_value=0, max_value=30), st.floats(min_value=0.01, max_value=5),
       st.floats(min_value=0.01, max_value=100))
def test_backoff_is_capped_exponential_with_jitter(attempt, initial, maximum):
    delay = backoff_delay(attempt, None, initial, maximum, random.Random(attempt))
    base = min(initial * 2.0 ** attempt, maximum)
    assert 0.5 * base <= delay <= base


def test_backoff_uses_retry_after_when_given():
    assert backoff_delay(5, 3.0, 1.0, 60.0) == 3.0


KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=4, max_size=30)


@given(KEYS, st.text(max_size=50), st.text(max_size=50))
def test_redact_removes_the_secret(secret, before, after):
    text = redact(before + secret + after, secret)
    assert secret not in text
    assert "***" in text
