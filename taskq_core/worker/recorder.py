"""Group commit of attempt outcomes: whatever finished while one write was in flight goes into
the next statement together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from taskq_core import logs
from taskq_core.records import ClaimedTask, Finish
from taskq_core.worker import outcomes
from taskq_core.worker.sql import Claims
from taskq_core.worker.sql.connection import refused, transient

log = logging.getLogger("taskq.worker")

MAX_GROUP = 500  # outcomes per statement
# Under load, writes start at most every `linger()` seconds (the tuner's), so outcomes that finish
# one by one (tasks of a few milliseconds) still share statements; an outcome after a quiet spell
# goes at once.
LINGER = 0.002
BACKOFF_START, BACKOFF_MAX = 0.2, 5.0  # seconds, while PostgreSQL is unreachable

Pending = tuple[ClaimedTask, Finish, "asyncio.Future[bool]"]
Announce = Callable[[Sequence[tuple[ClaimedTask, Finish]]], None]


class Recorder:
    """Writes outcomes for one worker. A caller resumes only once its outcome is committed, so
    grouping weakens nothing: it only shares one round trip and one WAL flush between tasks."""

    def __init__(
        self,
        claims: Claims,
        worker_id: str,
        outage_errors: tuple[type[BaseException], ...],
        announce: Announce | None = None,
        linger: Callable[[], float] = lambda: LINGER,
    ) -> None:
        """`announce`: told (it must not block) each group's recorded outcomes; `linger()`: the
        least time between two writes, in seconds."""
        self.claims = claims
        self.linger = linger
        self.announce = announce
        self._outage = logs.Outage(log, "PostgreSQL (recording outcomes)", BACKOFF_MAX)
        self.worker_id = worker_id
        self.outage_errors = outage_errors
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()

    async def record(self, task: ClaimedTask, finish: Finish) -> bool:
        """Write `finish` for `task`; False when the task was no longer this worker's."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((task, finish, future))
        return await future

    async def run(self) -> None:
        """Write groups until cancelled; an outage only delays them: outcomes are never dropped."""
        loop = asyncio.get_running_loop()
        last_write = float("-inf")
        while True:
            group = [await self._queue.get()]
            since, linger = loop.time() - last_write, self.linger()
            if since < linger:
                await asyncio.sleep(linger - since)
            last_write = loop.time()
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            recorded = await self.write([(task, finish) for task, finish, _ in group])
            for task, _, future in group:
                if not future.done():
                    future.set_result(task.id in recorded)
            if self.announce is not None and recorded:
                self.announce([(t, f) for t, f, _ in group if t.id in recorded])

    async def write(self, items: list[tuple[ClaimedTask, Finish]]) -> set[int]:
        """Write `items` now, through outages; the ids recorded (the others were no longer this
        worker's). A refused outcome is written as the task's failure."""
        try:
            return await self._write_through_outages(items)
        except Exception as exc:
            if not refused(exc):
                raise
            # One outcome PostgreSQL will never take must not stop the others, nor the worker:
            # each is written alone, and a refused one is recorded as the task's failure.
            log.warning("PostgreSQL refused a group of %d outcome(s): %s", len(items), exc)
            recorded: set[int] = set()
            for item in items:
                recorded |= await self._write_alone(*item)
            return recorded

    async def _write_alone(self, task: ClaimedTask, finish: Finish) -> set[int]:
        try:
            return await self._write_through_outages([(task, finish)])
        except Exception as exc:
            if not refused(exc):
                raise
            log.error("task %d: PostgreSQL refused its outcome (%s); failing it", task.id, exc)
            failure = outcomes.refused(finish, exc)
        try:
            return await self._write_through_outages([(task, failure)])
        except Exception as again:
            if not refused(again):
                raise
            # Not recorded: the worker lets the task go, its lease lapses, the sweeper takes it.
            log.error("task %d: PostgreSQL refused even its failure (%s)", task.id, again)
            return set()

    async def _write_through_outages(self, items: list[tuple[ClaimedTask, Finish]]) -> set[int]:
        backoff = BACKOFF_START
        while True:
            try:
                recorded = await self.claims.finish(self.worker_id, items)
            except Exception as exc:
                # Some refusals (a value too big) are OperationalErrors: they are not outages.
                outage = isinstance(exc, self.outage_errors) and not refused(exc)
                if not (outage or transient(exc)):
                    raise
                self._outage.failed(exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self._outage.recovered()
            return recorded
