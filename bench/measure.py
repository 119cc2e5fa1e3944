"""Timing and statistics: bounded waits, paced loops, rates, medians with spread, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

POLL_INTERVAL = 0.02  # seconds between completion checks; a 10,000-task drain lasts >= 1 s


class PhaseTimeout(Exception):
    """A bounded wait ran out: the cell reads "timeout" and the run goes on."""

    def __init__(self, what: str, seconds: float, done: int | None = None) -> None:
        super().__init__(f"{what}: no end after {seconds:.0f}s")
        self.seconds = seconds
        self.done = done


@dataclass(frozen=True)
class Drain:
    """How long a system took from starting its workers to its own record of the last task."""

    count: int
    seconds: float
    first_done_seconds: float  # worker start-up and the first completion

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def steady_rate(self) -> float:
        """The rate once the first task was done: start-up left out."""
        return self.count / max(self.seconds - self.first_done_seconds, 1e-9)


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def wait_for_count(
    count: Callable[[], int], target: int, timeout: float, what: str, since: float | None = None
) -> Drain:
    """Poll `count` until it reaches `target`; the clock starts at `since` (default: now)."""
    start = time.perf_counter() if since is None else since
    first: float | None = None
    done = 0
    while True:
        done = count()
        now = time.perf_counter()
        if done > 0 and first is None:
            first = now - start
        if done >= target:
            return Drain(target, now - start, first if first is not None else now - start)
        if now - start > timeout:
            raise PhaseTimeout(what, timeout, done)
        time.sleep(POLL_INTERVAL)


def paced(
    rate: float, seconds: float, action: Callable[[], object], deadline: float
) -> tuple[int, float]:
    """Call `action` at a steady `rate` per second for `seconds`; return (calls, elapsed)."""
    calls = max(1, round(rate * seconds))
    start = time.perf_counter()
    for i in range(calls):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif time.perf_counter() > deadline:
            raise PhaseTimeout("paced enqueue", deadline - start, i)
        action()
    return calls, time.perf_counter() - start


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the nearest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Spread:
    """The median of several runs and their range."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))
