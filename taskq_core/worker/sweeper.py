"""The sweeper: repairs every gap between PostgreSQL and Redis; one worker runs it at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from taskq_core import logs
from taskq_core.broker import Broker, count_field
from taskq_core.records import TaskStatus
from taskq_core.worker.lost import LostDispatches
from taskq_core.worker.sql import CONNECTION_ERRORS, Sweeps
from taskq_core.worker.sql.lost import LostQueries

log = logging.getLogger("taskq.sweeper")

BACKOFF_MAX = 5.0  # seconds between sweeps while PostgreSQL or Redis is unreachable
DUE_POLL = 0.25  # seconds between looks for due delayed or retrying tasks (leader only)
BATCH = 1000  # rows per repair statement
REPAIR_LIMIT = 10_000  # ids re-pushed per priority per sweep, so a repair never floods Redis
WORKER_RETENTION = 24 * 3600.0  # seconds a silent worker stays listed in the table
OUTAGE_ERRORS = (RedisError, OSError, *CONNECTION_ERRORS)
# The counter an attempt's end adds to, by the task's new status (see `taskq_core.broker`).
STATUS_EVENTS = {
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.PENDING: "retried",
}


class Sweeper:
    """Runs inside every worker; only the holder of the queue's sweeper lease does the work."""

    def __init__(
        self,
        sweeps: Sweeps,
        broker: Broker,
        holder: str,
        *,
        interval: float,
        chores: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        """`chores`: further work for the leader after each repair (retention, then deleting
        the stored artifacts of deleted tasks)."""
        self.sweeps = sweeps
        self.broker = broker
        self.holder = holder
        self.interval = interval
        self.chores = chores
        self.leader = False
        # Kept from sweep to sweep: it confirms losses over two of them.
        self._lost = LostDispatches(
            LostQueries(sweeps.connection, sweeps.queue),
            broker,
            grace=max(2.0, interval),
            limit=REPAIR_LIMIT,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        last_lead = last_repair = float("-inf")
        pause = min(DUE_POLL, self.interval)
        backoff = pause
        outage = logs.Outage(log, "PostgreSQL or Redis (sweeper)", BACKOFF_MAX)
        while not stopping.is_set():
            now = time.monotonic()
            try:
                if now - last_lead >= self.interval:
                    was_leader = self.leader
                    # Three intervals of validity: a leader that dies is replaced within that.
                    self.leader = await self.sweeps.lead(self.holder, 3 * self.interval)
                    last_lead = now
                    if self.leader != was_leader:
                        log.info("sweeper %s", "active here" if self.leader else "inactive here")
                if self.leader:
                    await self.dispatch_due()
                    if now - last_repair >= self.interval:
                        await self.repair()
                        last_repair = now
            except OUTAGE_ERRORS as exc:
                # Leadership is only ever decided by the lease row: an outage does not end it,
                # the next renewal (or its failure to renew) does.
                outage.failed(exc, backoff)
                wait, backoff = backoff, min(backoff * 2, BACKOFF_MAX)
            else:
                outage.recovered()
                wait = backoff = pause
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), wait)

    async def dispatch_due(self) -> int:
        """Push delayed and retrying tasks whose time has come."""
        total = 0
        while True:
            due = await self.sweeps.dispatch_due(BATCH)
            await self.broker.push_many((d.id, d.priority) for d in due)
            total += len(due)
            if len(due) < BATCH:
                return total

    async def repair(self) -> None:
        await self.recover_expired()
        await self.redispatch_lost()
        await self.sweeps.prune_workers(WORKER_RETENTION)
        for chore in self.chores:
            await chore()

    async def recover_expired(self) -> int:
        """Tasks whose worker stopped renewing its lease: back to pending (pushed), or failed."""
        total = 0
        while True:
            moved = await self.sweeps.recover_expired(BATCH)
            await self.broker.push_many(
                (m["id"], m["priority"]) for m in moved if m["status"] == TaskStatus.PENDING
            )
            counts: dict[str, int] = {}
            for m in moved:
                event = STATUS_EVENTS[m["status"]]
                field = count_field(event, m["task_type"], m["priority"])
                counts[field] = counts.get(field, 0) + 1
            await self.broker.announce([(m["id"], m["status"]) for m in moved], counts)
            for m in moved:
                log.warning("task %d lost its worker; now %s", m["id"], m["status"])
            total += len(moved)
            if len(moved) < BATCH:
                return total

    async def redispatch_lost(self) -> int:
        """Push again pending tasks that are in no Redis list (see worker/lost.py). Ids pushed in
        the last grace period are left alone (their push may still be on its way); a duplicate
        push is harmless, since the claim is conditional, so erring on that side is safe."""
        return await self._lost.redispatch()
