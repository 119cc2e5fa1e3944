"""Taking work: pop ids from Redis and claim them in PostgreSQL, through outages of either.

The worker's event loop and each runner fetch the same way. Redis (popping) and
PostgreSQL (claiming) fail apart: a pop that works says nothing of the database, so each has its
own outage, logged once and declared over only by its own success. Ids popped and not claimed
go back to where they were popped from; after a failed claim nothing more is popped until the
database answers (a worker given a wrong database must not keep taking ids others could run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable
from typing import TypeVar

from taskq_core import broker as broker_module
from taskq_core import logs
from taskq_core.broker import Broker
from taskq_core.db import urls
from taskq_core.redaction import redact_url
from taskq_core.worker.holding import BACKOFF_MAX, BACKOFF_START, OUTAGE_ERRORS
from taskq_core.worker.sql import Claims

log = logging.getLogger("taskq.worker")

UNKNOWN_IDS_EVERY = 60.0  # seconds between warnings about popped ids without a row

T = TypeVar("T")


class Fetcher:
    """Pops and claims for one process, on connections of its own (the process shares them:
    `claims` for its other statements on tasks it holds, `broker` for its other Redis
    commands); `stopping` cuts its back-offs short."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        queue: str,
        prepare: bool,
        stopping: asyncio.Event,
    ) -> None:
        self.claims = Claims(urls.conninfo(database_url), queue, prepare=prepare)
        self.broker = Broker(broker_module.connect(redis_url), queue)
        # On a connection of its own: its pops block.
        self.popper = Broker(broker_module.connect(redis_url, blocking=True), queue)
        self.database_url = database_url
        self.stopping = stopping
        self.pop_outage = logs.Outage(
            log, f"Redis at {redact_url(redis_url)} (taking task ids)", BACKOFF_MAX
        )
        self.claim_outage = logs.Outage(
            log, f"PostgreSQL at {redact_url(database_url)} (claiming tasks)", BACKOFF_MAX
        )
        self._backoff = BACKOFF_START
        # A claim failed without an answer: it may have committed all the same.
        self.unsure = False
        self._unknown_ids = 0  # popped ids without a row, not yet logged
        self._unknown_said_at = float("-inf")

    async def close(self) -> None:
        await self.claims.close()
        await self.popper.redis.aclose()
        await self.broker.redis.aclose()

    async def pop(self, count: int, wait: float) -> tuple[int, list[int]] | None:
        """Up to `count` ids from the highest non-empty priority, waiting up to `wait` seconds
        for one: (their priority, the ids). None after an outage's back-off."""
        if self.claim_outage.since is not None:
            # The last ids popped could not be claimed: take none until the database answers.
            try:
                await self.claims.ping()
            except OUTAGE_ERRORS as exc:
                self.claim_outage.failed(exc, self._backoff)
                await self._back_off()
                return None
            self.claim_outage.recovered()
        try:
            popped = await self.popper.pop_many(count, wait)
        except OUTAGE_ERRORS as exc:
            self.pop_outage.failed(exc, self._backoff)
            await self._back_off()
            return None
        self.pop_outage.recovered()
        return popped

    async def claim(
        self, priority: int, ids: list[int], claim: Callable[[list[int]], Awaitable[T]]
    ) -> T | None:
        """`claim(ids)`; if it fails, the ids go back to Redis: None after an outage's back-off
        (another error is raised)."""
        # Between the pop and the claim the ids exist only here: a crash now loses the push,
        # and the sweeper's lost-dispatch repair pushes them again.
        try:
            claimed = await claim(ids)
        except OUTAGE_ERRORS as exc:
            self.unsure = True
            self.claim_outage.failed(exc, self._backoff)
            await self.push_back(priority, ids)
            await self._back_off()
            return None
        except BaseException:
            await self.push_back(priority, ids)  # not an outage: a database without taskq?
            raise
        self.claim_outage.recovered()
        self._backoff = BACKOFF_START
        return claimed

    async def give_back_unknown(self, worker_id: str, known: Container[int]) -> None:
        """After a claim whose answer was lost: give back what is held under `worker_id` and not
        in `known` (those tasks would wait for their leases to lapse and lose an attempt, or, a
        runner's, be held for good). An outage error while PostgreSQL does not answer."""
        if not self.unsure:
            return
        held = await self.claims.held_by(worker_id)
        self.unsure = False
        unknown = [task.id for task in held if task.id not in known]
        if unknown:
            given = await give_back(self.claims, self.broker, worker_id, unknown)
            log.warning("gave back %d task(s) claimed by a statement whose answer was lost", given)

    async def push_back(self, priority: int, ids: list[int]) -> None:
        """Return popped ids that could not be claimed to where they were popped from, so they
        run next, elsewhere or here once the database answers."""
        try:
            await self.broker.push_oldest_first(ids, priority)
        except OUTAGE_ERRORS as exc:
            # Pending in PostgreSQL but in no list: the sweeper's lost-dispatch repair pushes
            # them again.
            log.warning(
                "%d popped task id(s) could not be claimed nor pushed back (%s); "
                "the sweeper pushes them again",
                len(ids),
                type(exc).__name__,
            )
            return
        log.warning(
            "%d popped task id(s) could not be claimed: pushed back to Redis (priority %d)",
            len(ids),
            priority,
        )

    async def check_known(self, ids: list[int], accounted: Iterable[int]) -> None:
        """Say so, at most once a minute, when popped ids (those not `accounted` for by the
        claim) have no row here: tasks deleted while their id waited (rare: a finished task's
        id is long popped when retention deletes it), or this process is given another database
        than the API's. They are not pushed back (a deleted task's id would go round for ever);
        the sweeper of a worker on the right database finds those tasks missing from Redis and
        pushes them again."""
        seen = set(accounted)
        rest = [i for i in ids if i not in seen]
        if not rest:
            return
        log.debug("%d of %d popped ids were not pending or not due", len(rest), len(ids))
        try:
            unknown = await self.claims.unknown(rest)
        except OUTAGE_ERRORS:
            return  # only a diagnosis: the claim itself went through
        if not unknown:
            return
        self._unknown_ids += unknown
        now = time.monotonic()
        if now - self._unknown_said_at < UNKNOWN_IDS_EVERY:
            return
        log.warning(
            "%d popped task id(s) have no row in PostgreSQL at %s: deleted since, or this is "
            "not the database they were enqueued in; left to the sweeper of a worker that has "
            "them",
            self._unknown_ids,
            redact_url(self.database_url),
        )
        self._unknown_ids, self._unknown_said_at = 0, now

    async def database_failed(self, exc: BaseException) -> None:
        """A statement of the caller's own met a PostgreSQL outage: say so as a claim would
        (once per outage), and wait the back-off; the next pop probes the database first."""
        self.claim_outage.failed(exc, self._backoff)
        await self._back_off()

    async def _back_off(self) -> None:
        """Wait the current back-off (less if asked to stop); the next one is longer."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)


async def through_outages(call: Callable[[], Awaitable[T]], what: str) -> T:
    """`call()` again, backing off, until PostgreSQL answers it; `what` it does, for the log."""
    backoff = BACKOFF_START
    while True:
        try:
            return await call()
        except OUTAGE_ERRORS as exc:
            log.warning("%s waits for PostgreSQL (%s)", what, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


async def give_back(claims: Claims, broker: Broker, worker_id: str, ids: list[int]) -> int:
    """Undo `worker_id`'s claims of `ids`, which never started (no attempt is recorded), and push
    them again at the popping end of their lists, first one first, as they were popped. Waits
    out a database outage: the claims must not stay held (their leases renewed) for ever. How
    many were given back (the others were no longer `worker_id`'s)."""
    undone = await through_outages(
        lambda: claims.unclaim(ids, worker_id), f"giving back {len(ids)} claimed task(s)"
    )
    by_priority: dict[int, list[int]] = {}
    for task_id in ids:  # in the order given: the one to run first, first
        if task_id in undone:
            by_priority.setdefault(undone[task_id], []).append(task_id)
    with contextlib.suppress(*OUTAGE_ERRORS):  # else the sweeper pushes them
        for priority, back in by_priority.items():
            await broker.push_oldest_first(back, priority)
    return len(undone)
