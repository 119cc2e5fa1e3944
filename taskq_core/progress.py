"""Task progress: the value `ctx.progress` reports, checked and shaped the same everywhere, and the
throttle that keeps a task calling it a million times from costing a million messages."""

from __future__ import annotations

import math
import time
from typing import Any

MAX_MESSAGE = 500  # characters of a progress message kept; the rest is cut
# The least time between two progress messages from one task to its worker (runner processes
# send them through their pipe); the worker stores them at most every FLUSH_INTERVAL, for all its
# tasks in one statement.
SEND_INTERVAL = 0.1  # seconds
FLUSH_INTERVAL = 0.25  # seconds


def progress_value(done: float, total: float | None, message: str | None) -> dict[str, Any]:
    """The JSON stored as a task's `progress`; TypeError or ValueError for a bad report."""
    if isinstance(done, bool) or not isinstance(done, int | float) or not math.isfinite(done):
        raise TypeError(f"progress: done must be a finite number, not {done!r}")
    if done < 0:
        raise ValueError(f"progress: done must be 0 or more, not {done!r}")
    if total is not None and (
        isinstance(total, bool) or not isinstance(total, int | float) or not math.isfinite(total)
    ):
        raise TypeError(f"progress: total must be a finite number or None, not {total!r}")
    if total is not None and total < 0:
        raise ValueError(f"progress: total must be 0 or more, not {total!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress: message must be a string or None, not {type(message)}")
    value: dict[str, Any] = {"done": done, "total": total, "message": None}
    if message is not None:
        # NUL cannot be stored in jsonb; lone surrogates cannot be encoded.
        clean = message[:MAX_MESSAGE].replace("\x00", "")
        value["message"] = clean.encode("utf-8", "replace").decode()
    return value


class Throttle:
    """Keeps the latest report and says when it is time to pass one on."""

    __slots__ = ("interval", "last_sent", "pending")

    def __init__(self, interval: float = SEND_INTERVAL) -> None:
        self.interval = interval
        self.last_sent = float("-inf")
        self.pending: dict[str, Any] | None = None

    def offer(self, value: dict[str, Any]) -> dict[str, Any] | None:
        """Take `value`; returns it if it should go now, else keeps it pending (None)."""
        now = time.monotonic()
        if now - self.last_sent >= self.interval:
            self.last_sent = now
            self.pending = None
            return value
        self.pending = value
        return None

    def due_in(self) -> float:
        """Seconds until a pending value may go."""
        return max(0.0, self.last_sent + self.interval - time.monotonic())

    def take(self) -> dict[str, Any] | None:
        """The pending value, if any, now sent."""
        value, self.pending = self.pending, None
        if value is not None:
            self.last_sent = time.monotonic()
        return value
