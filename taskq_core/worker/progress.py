"""The worker's progress board: the latest progress of each task it runs, stored for all of them in
one statement every `FLUSH_INTERVAL` and announced to the API's followers.

However often tasks report, the database sees at most one write per task per interval, and none
for a task whose progress did not change. A write is best effort: an outage delays progress (the
newest value waits for the next flush), it never stops a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from taskq_core.progress import FLUSH_INTERVAL
from taskq_core.worker.sql.progress import ProgressWrites

log = logging.getLogger("taskq.worker")

BACKOFF_MAX = 5.0  # seconds between flushes while PostgreSQL is unreachable

Announce = Callable[[Sequence[int]], Awaitable[None]]


class ProgressBoard:
    """Latest progress per task of one worker; `run` flushes it until cancelled."""

    def __init__(
        self,
        writes: ProgressWrites,
        worker_id: str,
        outage_errors: tuple[type[BaseException], ...],
        announce: Announce | None = None,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.writes = writes
        self.worker_id = worker_id
        self.outage_errors = outage_errors
        self.announce = announce
        self.interval = interval
        # task id -> its attempt and the worker id holding it (this one's or a runner's)
        self._attempts: dict[int, tuple[int, str]] = {}
        # task id -> its last report and when (time.time()): stamped only when written
        self._latest: dict[int, tuple[dict[str, Any], float]] = {}
        self._dirty: set[int] = set()  # ids whose last report is not written yet
        self._wake = asyncio.Event()
        self._pause = interval

    def begin(self, task_id: int, attempt: int, holder: str | None = None) -> None:
        """An attempt starts; `holder`: the worker id its claim is under, if not this one's."""
        self._attempts[task_id] = (attempt, holder or self.worker_id)

    def end(self, task_id: int) -> dict[str, Any] | None:
        """The attempt stopped running: its last report, which the caller stores with the
        attempt's outcome (a flush in flight may be fenced out by that outcome, so the last
        report always goes with it)."""
        self._attempts.pop(task_id, None)
        self._dirty.discard(task_id)
        latest = self._latest.pop(task_id, None)
        return None if latest is None else stamped(*latest)

    def report(self, task_id: int, value: dict[str, Any]) -> None:
        """Keep `value` as the task's latest progress (cheap: a dict assignment)."""
        if task_id not in self._attempts:
            return  # a late line from a job that has ended: dropped
        self._latest[task_id] = (value, time.time())
        if task_id not in self._dirty:
            self._dirty.add(task_id)
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            written = await self.flush()
            # While PostgreSQL is away, try less and less often (and log less).
            self._pause = self.interval if written else min(self._pause * 2, BACKOFF_MAX)
            await asyncio.sleep(self._pause)

    async def flush(self) -> bool:
        """Write every changed progress in one statement, then announce it; False if the
        database could not be reached (the values wait for the next flush)."""
        if not self._dirty:
            return True
        dirty, self._dirty = self._dirty, set()
        items = [
            (task_id, *self._attempts[task_id], stamped(*self._latest[task_id]))
            for task_id in dirty
            if task_id in self._attempts
        ]
        try:
            written = await self.writes.write(items)
        except self.outage_errors as exc:
            log.warning("storing the progress of %d task(s) failed (%s)", len(items), exc)
            self._dirty.update(task_id for task_id, _, _, _ in items if task_id in self._attempts)
            self._wake.set()
            return False
        if written and self.announce is not None:
            try:
                await self.announce(written)
            except self.outage_errors as exc:
                log.debug("announcing progress failed (%s)", exc)
        return True


def stamped(value: dict[str, Any], at: float) -> dict[str, Any]:
    """A progress value as stored: with when it was reported (`at`, time.time())."""
    value = dict(value)
    value["at"] = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return value
