"""When to try a delivery again: Retry-After (seconds or HTTP-date) or exponential back-off."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after(value: str | None, cap: float, now: datetime | None = None) -> float | None:
    """The delay a Retry-After header asks for, within [0, cap]; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), cap)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, origin unknown"
        when = when.replace(tzinfo=UTC)
    delay = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delay, 0.0), cap)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential back-off with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return random.uniform(0, min(cap, base * 2 ** max(attempt - 1, 0)))
