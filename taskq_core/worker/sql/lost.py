"""The statements that find pending tasks whose id is in no Redis list (lost dispatches)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from taskq_core.worker.sql.connection import Connection

# Which of the ids at the popping ends of the lists are pending and dispatched, and when: the
# sweeper takes the oldest of them as the point the workers have popped up to.
_QUEUED_HEADS: LiteralString = """
    SELECT id, priority, enqueued_at FROM tasks
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending' AND enqueued_at IS NOT NULL
        AND queue = %(queue)s
"""

# Pending tasks dispatched before the popping point (so FIFO says they were popped already) and
# longer ago than the grace period (so their push is not still on its way), oldest id first. The
# two halves are ranges of ix_tasks_dispatched (queue, priority, enqueued_at, id) that end at the
# popping point: tasks dispatched earlier, and tasks dispatched in the same instant (one batch
# shares its enqueued_at) with a lower id. One row comparison would leave the whole batch of the
# popping point to read, as btree stops a scan only on a row comparison's first column. So a
# healthy queue reads a few index entries, however many tasks wait behind the popping point or
# for their run_at. The ids are not bounded from above any more (they were while the scan ran on
# ix_tasks_pending): a bound offers the planner a scan of every lower id, the delayed tasks
# among them, which a generic plan was seen to take.
_BEHIND: LiteralString = """
    SELECT id FROM (
        SELECT id FROM tasks
        WHERE status = 'pending' AND queue = %(queue)s AND priority = %(priority)s
            AND enqueued_at < %(front_at)s
            AND enqueued_at < now() - make_interval(secs => %(grace)s)
        UNION ALL
        SELECT id FROM tasks
        WHERE status = 'pending' AND queue = %(queue)s AND priority = %(priority)s
            AND enqueued_at = %(front_at)s AND id < %(front_id)s
            AND enqueued_at < now() - make_interval(secs => %(grace)s)
    ) AS behind
    ORDER BY id
    LIMIT %(limit)s
"""

# The list is empty: every pending task dispatched longer ago than the grace period is lost.
_DISPATCHED: LiteralString = """
    SELECT id FROM tasks
    WHERE status = 'pending' AND queue = %(queue)s AND priority = %(priority)s
        AND enqueued_at < now() - make_interval(secs => %(grace)s)
    ORDER BY id
    LIMIT %(limit)s
"""


@dataclass(frozen=True)
class Front:
    """The oldest pending dispatch at a list's popping end."""

    enqueued_at: datetime
    id: int


class LostQueries:
    """Runs on the sweeper's connection (the sweeper is the only caller)."""

    def __init__(self, conn: Connection, queue: str) -> None:
        self._conn = conn
        self.queue = queue

    async def fronts(self, heads: Mapping[int, Sequence[int]]) -> dict[int, Front]:
        """Per priority, the popping point read from the ids at each list's popping end."""
        ids = sorted({i for priority_ids in heads.values() for i in priority_ids})
        if not ids:
            return {}
        rows = await self._conn.fetch(_QUEUED_HEADS, {"ids": ids, "queue": self.queue})
        fronts: dict[int, Front] = {}
        for id_, priority, enqueued_at in rows:
            if id_ not in heads.get(priority, ()):
                continue  # a stale id from another priority's list; it says nothing here
            seen = fronts.get(priority)
            if seen is None or (enqueued_at, id_) < (seen.enqueued_at, seen.id):
                fronts[priority] = Front(enqueued_at, id_)
        return fronts

    async def behind(
        self, priority: int, front: Front | None, grace: float, limit: int
    ) -> list[int]:
        """Pending ids at `priority` dispatched before `front` (any, when the list is empty) and
        more than `grace` seconds ago, oldest id first."""
        params: dict[str, Any] = {
            "queue": self.queue,
            "priority": priority,
            "grace": grace,
            "limit": limit,
        }
        if front is None:
            return [id_ for (id_,) in await self._conn.fetch(_DISPATCHED, params)]
        params.update(front_at=front.enqueued_at, front_id=front.id)
        return [id_ for (id_,) in await self._conn.fetch(_BEHIND, params)]
