"""The worker's adaptive concurrency: how many async tasks its event loop holds in flight, chosen
as it runs. (Sync tasks run in the runner processes, one at a time each: a runner sizes its own
claims to the tasks' measured time, runner.py.)

Every WINDOW seconds the tuner looks at what the window showed and `decide` sets the next limit:

- memory tight (MemAvailable under MEMORY_LOW of MemTotal): halve;
- the event loop late (a WINDOW sleep overran by LAG_HIGH) while this process kept a core busy
  (BUSY_HIGH of the window in CPU time): take a quarter off, since more tasks in flight would
  only make every one of them wait for the loop. A loop that is late while the process used
  little CPU was waiting for a core the machine gave to others: fewer tasks in flight would only
  mean smaller batches, more CPU per task, so that holds nothing back;
- else, if tasks completed while the queue was deep, grow, by up to GROWTH times. Async tasks
  never queue in the worker (a slot is taken only when a task starts), so only the loop and
  memory limit the growth.

The tuner also sets `linger`, how long the worker lets work gather before a claim or an outcome
write while the queue is deep: long enough that one statement serves about BATCH_TARGET tasks at
the window's completion rate, within LINGER_MIN-LINGER_MAX. PostgreSQL's cost is mostly per
statement, so tasks of a millisecond, finishing a few at a time, would otherwise pay a claim and a
commit each; a shallow queue never waits longer than LINGER_MIN.

Short tasks from a deep queue therefore quadruple the limit every window up to the ceiling
(bigger pops, claims and group commits), which they reach 0.2 s after the start. The bounds: at
least FLOOR, at most `--concurrency` when given, else CEILING.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("taskq.worker.tuner")

WINDOW = 0.1  # seconds between decisions
START = 16  # the first limit when no --concurrency is given
FLOOR, CEILING = 2, 256  # bounds when no --concurrency is given
LAG_HIGH = 0.2  # seconds an event loop tick may be late before the limit shrinks
BUSY_HIGH = 0.9  # of the window in this process's CPU time: its event loop has no room left
MEMORY_LOW = 0.1  # of MemTotal: below this MemAvailable, the limit halves
MEMINFO = Path("/proc/meminfo")
# The most a window may multiply the limit by: doubling took 0.4 s to reach the ceiling, which
# cost 0.13 s of a 10,000 no-op task drain (a tenth of it).
GROWTH = 4
# Tasks per claim and per outcome write worth waiting for while the queue is deep. 16 left fib(20)
# drains at a dozen tasks per statement, and the worker's event loop at 190-200 µs per task
# (against 100 for no-op tasks, which batch by themselves); 64 halved the statements, took a
# fifth off the loop's CPU per task and 7-11% onto the drain. The price: while the queue is deep
# an outcome may wait up to LINGER_MAX to be written.
BATCH_TARGET = 64
LINGER_MIN, LINGER_MAX = 0.002, 0.05  # seconds


@dataclass(frozen=True)
class Observation:
    """What one window showed."""

    limit: int  # the limit in force during the window
    seconds: float  # the window's length
    completed: int  # tasks that finished executing in it
    deep: bool  # the latest pop got every id it asked for: more are queued
    lag: float  # how late the window's timer fired, in seconds
    busy: float  # this process's CPU time over the window's length (1.0: a core all along)
    memory_available: float | None  # MemAvailable / MemTotal; None where unknown


@dataclass(frozen=True)
class Bounds:
    floor: int
    ceiling: int

    def clamp(self, limit: int) -> int:
        return max(self.floor, min(self.ceiling, limit))


def decide(seen: Observation, bounds: Bounds) -> int:
    """The next limit, from one window's observation (a pure function: see the module's rules)."""
    limit = seen.limit
    if seen.memory_available is not None and seen.memory_available < MEMORY_LOW:
        return bounds.clamp(limit // 2)
    if seen.lag > LAG_HIGH and seen.busy > BUSY_HIGH:
        return bounds.clamp(limit - max(1, limit // 4))
    if seen.completed == 0 or seen.seconds <= 0 or not seen.deep:
        return bounds.clamp(limit)  # nothing finished, or nothing more waits: nothing learnt
    return bounds.clamp(GROWTH * limit)


def linger(seen: Observation) -> float:
    """How long to let claims and outcome writes gather in the next window (see the module)."""
    if not seen.deep or seen.completed == 0 or seen.seconds <= 0:
        return LINGER_MIN
    rate = seen.completed / seen.seconds
    return max(LINGER_MIN, min(LINGER_MAX, BATCH_TARGET / rate))


def memory_available(meminfo: str) -> float | None:
    """MemAvailable / MemTotal from the text of /proc/meminfo; None if either is missing."""
    values: dict[str, int] = {}
    for line in meminfo.splitlines():
        name, _, rest = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            values[name] = int(rest.split()[0])
    total, available = values.get("MemTotal"), values.get("MemAvailable")
    if not total or available is None:
        return None
    return available / total


def read_memory_available() -> float | None:
    try:
        return memory_available(MEMINFO.read_text())
    except OSError:
        return None  # not Linux: memory does not limit the growth


class Tuner:
    """Counts what the worker does and moves `limit` every WINDOW (see `run`)."""

    def __init__(self, bounds: Bounds, start: int) -> None:
        self.bounds = bounds
        self.limit = bounds.clamp(start)
        self.deep = False
        self.linger = LINGER_MIN  # seconds: see the module
        self._completed = 0

    @classmethod
    def for_worker(cls, concurrency: int | None) -> Tuner:
        """`concurrency`: the most tasks in flight (None: CEILING, starting from START)."""
        ceiling = concurrency if concurrency is not None else CEILING
        return cls(Bounds(min(FLOOR, ceiling), ceiling), START if concurrency is None else ceiling)

    def popped(self, asked: int, got: int) -> None:
        self.deep = got >= asked

    def executed(self) -> None:
        """A task finished executing."""
        self._completed += 1

    def observe(self, seconds: float, lag: float, busy: float = 0.0) -> Observation:
        """The window that just ended (and start the next)."""
        seen = Observation(
            limit=self.limit,
            seconds=seconds,
            completed=self._completed,
            deep=self.deep,
            lag=lag,
            busy=busy,
            memory_available=read_memory_available(),
        )
        self._completed = 0
        return seen

    def step(self, seen: Observation) -> int:
        self.linger = linger(seen)
        new = decide(seen, self.bounds)
        if new != self.limit:
            log.debug(
                "concurrency %d -> %d (%d done, deep %s, lag %.1f ms, busy %.0f%%)",
                self.limit,
                new,
                seen.completed,
                seen.deep,
                seen.lag * 1000,
                seen.busy * 100,
            )
        self.limit = new
        return new

    async def run(self) -> None:
        """Decide every WINDOW until cancelled."""
        began, cpu = time.monotonic(), time.process_time()
        while True:
            await asyncio.sleep(WINDOW)
            now, cpu_now = time.monotonic(), time.process_time()
            seconds, used = now - began, cpu_now - cpu
            began, cpu = now, cpu_now
            lag = max(0.0, seconds - WINDOW)
            self.step(self.observe(seconds, lag, busy=used / seconds))
