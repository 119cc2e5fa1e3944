"""Finding lost dispatches: pending tasks whose id is in no Redis list, whatever the backlog.

An id goes missing when the API dies between its commit and its push, a worker dies between
its pop and its claim, or Redis loses data. The lists are FIFO per priority and a task's
`enqueued_at` is when its id was last pushed, so the ids at a list's popping end say how far the
workers have popped: a pending task dispatched before that point (and longer ago than a push can
take) is in no list, unless it was pushed out of order, which a look at the list's popping end
settles. A healthy queue costs one LRANGE of a few ids per priority and one indexed query per
priority that finds nothing; a lost id is pushed again at the first sweep after its turn came,
ahead of the ids behind it.
"""

from __future__ import annotations

import logging

from taskq_core.broker import PRIORITIES, Broker
from taskq_core.worker.sql.lost import LostQueries

log = logging.getLogger("taskq.sweeper")

HEAD_IDS = 64  # ids read at each list's popping end to find how far the workers have popped
# Candidates are looked for among this many ids at the popping end before being pushed again:
# an id dispatched before the popping point can only sit there (pushed out of order); if it
# sits deeper, the push below is a duplicate, which the conditional claim makes harmless.
CONFIRM_WINDOW = 10_000


class LostDispatches:
    """One sweep's check; run by the sweeper leader every sweep interval."""

    def __init__(self, queries: LostQueries, broker: Broker, *, grace: float, limit: int) -> None:
        self.queries = queries
        self.broker = broker
        self.grace = grace
        self.limit = limit

    async def redispatch(self) -> int:
        heads = await self.broker.heads(HEAD_IDS)
        fronts = await self.queries.fronts(heads)
        total = 0
        for priority in PRIORITIES:
            front = fronts.get(priority)
            if front is None and heads.get(priority):
                # Only stale ids at the popping end: the workers pop them in a moment, and the
                # next sweep reads the popping point behind them.
                continue
            behind = await self.queries.behind(priority, front, self.grace, self.limit)
            if not behind:
                continue
            queued = (
                await self.broker.queued_near_head(priority, CONFIRM_WINDOW)
                if heads.get(priority)
                else set()
            )
            missing = [i for i in behind if i not in queued]
            if missing:
                await self.broker.push_oldest_first(missing, priority)
                log.warning(
                    "re-pushed %d task id(s) missing from Redis at priority %d",
                    len(missing),
                    priority,
                )
                total += len(missing)
        return total
