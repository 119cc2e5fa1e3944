"""Group commit of attempt outcomes: whatever finished while one write was in flight goes into
the next statement together. An outcome PostgreSQL refuses (not an outage) never holds up the
others: the group is written again one outcome at a time, and the refused one is recorded as a
failure saying why."""

from __future__ import annotations

import asyncio
import logging

from taskq_core.records import AttemptOutcome, ClaimedTask, Finish, TaskStatus
from taskq_core.worker.sql import Claims

log = logging.getLogger("taskq.worker")

MAX_GROUP = 500  # outcomes per statement
# Under load, writes start at most every LINGER seconds, so outcomes that finish one by one (tasks
# of a few milliseconds) still share statements; an outcome after a quiet spell goes at once.
LINGER = 0.002
BACKOFF_START, BACKOFF_MAX = 0.2, 5.0  # seconds, while PostgreSQL is unreachable

UNRECORDABLE = "UnrecordableOutcomeError"

Pending = tuple[ClaimedTask, Finish, "asyncio.Future[bool]"]
Item = tuple[ClaimedTask, Finish]


class Recorder:
    """Writes outcomes for one worker. A caller resumes only once its outcome is committed, so
    grouping weakens nothing: it only shares one round trip and one WAL flush between tasks."""

    def __init__(
        self, claims: Claims, worker_id: str, outage_errors: tuple[type[BaseException], ...]
    ) -> None:
        self.claims = claims
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
            since = loop.time() - last_write
            if since < LINGER:
                await asyncio.sleep(LINGER - since)
            last_write = loop.time()
            while len(group) < MAX_GROUP and not self._queue.empty():
                group.append(self._queue.get_nowait())
            recorded = await self._write(group)
            for task, _, future in group:
                if not future.done():
                    future.set_result(task.id in recorded)

    async def _write(self, group: list[Pending]) -> set[int]:
        return await self._write_items([(task, finish) for task, finish, _ in group])

    async def _write_items(self, items: list[Item]) -> set[int]:
        backoff = BACKOFF_START
        while True:
            try:
                return await self.claims.finish(self.worker_id, items)
            except self.outage_errors as exc:
                log.warning(
                    "recording %d outcome(s) failed (%s); retrying in %.1fs",
                    len(items),
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            except Exception as exc:
                return await self._refused(items, exc)

    async def _refused(self, items: list[Item], exc: Exception) -> set[int]:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if len(items) > 1:
            log.warning(
                "PostgreSQL refused a group of %d outcomes (%s); writing them one by one",
                len(items),
                first_line,
            )
            recorded: set[int] = set()
            for item in items:
                recorded |= await self._write_items([item])
            return recorded
        task, finish = items[0]
        if finish.error is not None and finish.error.get("type") == UNRECORDABLE:
            raise exc  # even the plain failure is refused: nothing sensible is left to write
        log.error("task %d: PostgreSQL refused its outcome (%s); it fails", task.id, first_line)
        failed = Finish(
            TaskStatus.FAILED,
            AttemptOutcome.FAILED,
            error={
                "type": UNRECORDABLE,
                "message": f"PostgreSQL refused to store the outcome: {first_line}",
                "traceback": "",
            },
        )
        return await self._write_items([(task, failed)])
