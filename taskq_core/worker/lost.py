"""Finding lost dispatches: pending tasks whose id is in no Redis list, whatever the backlog.

An id goes missing when the API dies between its commit and its push, a worker dies between
its pop and its claim, or Redis loses data. The lists are FIFO per priority and a task's
`enqueued_at` is when its id was last pushed, so the ids at a list's popping end say how far the
workers have popped: a pending task dispatched before that point (and longer ago than a push can
take) is in no list, unless it was pushed out of order, which a look at the list's popping end
settles. A healthy queue costs one LRANGE of a few ids per priority and one indexed query per
priority that finds nothing.

A worker's pop takes ids out of Redis a few milliseconds before its claim takes their rows out
of `pending`, so a sweep that reads between the two finds them "lost" (a deep drain showed 33
ids so, on a healthy queue). An id is therefore pushed again only when two sweeps in a row find
it lost: a lost id stays lost, an id in a worker's hands is claimed long before the next sweep.
The repair of a real loss takes one sweep interval more; it is pushed ahead of the ids behind it.
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
    """The sweeper leader's check, run every sweep interval; it keeps what the last sweep found."""

    def __init__(self, queries: LostQueries, broker: Broker, *, grace: float, limit: int) -> None:
        self.queries = queries
        self.broker = broker
        self.grace = grace
        self.limit = limit
        self._suspects: dict[int, set[int]] = {}  # per priority: found lost by the last sweep

    async def redispatch(self) -> int:
        """Push again the ids this sweep and the last one both found lost; how many."""
        heads = await self.broker.heads(HEAD_IDS)
        fronts = await self.queries.fronts(heads)
        suspects, self._suspects = self._suspects, {}
        total = 0
        for priority in PRIORITIES:
            front = fronts.get(priority)
            if front is None and heads.get(priority):
                # Only stale ids at the popping end: the workers pop them in a moment, and the
                # next sweep reads the popping point behind them (and confirms what this one
                # could not look at).
                if priority in suspects:
                    self._suspects[priority] = suspects[priority]
                continue
            # Twice the limit: the suspects to confirm next time, beside those pushed now, so a
            # long repair (Redis flushed) still pushes `limit` ids every sweep after the first.
            behind = await self.queries.behind(priority, front, self.grace, 2 * self.limit)
            if not behind:
                continue
            queued = (
                await self.broker.queued_near_head(priority, CONFIRM_WINDOW)
                if heads.get(priority)
                else set()
            )
            seen = suspects.get(priority, set())
            candidates = [i for i in behind if i not in queued]
            missing = [i for i in candidates if i in seen][: self.limit]
            pushed = set(missing)
            self._suspects[priority] = {i for i in candidates if i not in pushed}
            if missing:
                await self.broker.push_oldest_first(missing, priority)
                log.warning(
                    "re-pushed %d task id(s) missing from Redis at priority %d",
                    len(missing),
                    priority,
                )
                total += len(missing)
        return total
