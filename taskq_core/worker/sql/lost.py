"""The statements that find pending tasks whose id is in no Redis list (lost dispatches)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import LiteralString

from taskq_core.worker.sql.connection import Connection

# Which of the ids at the popping ends of the lists are pending and dispatched, and when: the
# sweeper takes the oldest of them as the point the workers have popped up to.
_QUEUED_HEADS: LiteralString = """
    SELECT id, priority, enqueued_at FROM tasks
    WHERE id = ANY(%(ids)s::bigint[]) AND status = 'pending' AND enqueued_at IS NOT NULL
        AND queue = %(queue)s
"""

# Pending tasks dispatched before the popping point (so FIFO says they were popped already) and
# longer ago than the grace period (so their push is not still on its way). `below` bounds the
# range scanned on ix_tasks_pending (queue, priority, id): a healthy queue holds few pending ids
# lower than the next one to pop (retries and delayed tasks), however deep its backlog.
_BEHIND: LiteralString = """
    SELECT id FROM tasks
    WHERE status = 'pending' AND queue = %(queue)s AND priority = %(priority)s
        AND id < %(below)s
        AND enqueued_at < now() - make_interval(secs => %(grace)s)
        AND (%(front_at)s::timestamptz IS NULL
            OR (enqueued_at, id) < (%(front_at)s::timestamptz, %(front_id)s::bigint))
    ORDER BY id
    LIMIT %(limit)s
"""

NO_BOUND = 2**63 - 1


@dataclass(frozen=True)
class Front:
    """The oldest pending dispatch at a list's popping end, and the highest id seen there."""

    enqueued_at: datetime
    id: int
    highest_id: int


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
            if seen is None:
                fronts[priority] = Front(enqueued_at, id_, id_)
                continue
            oldest = min((seen.enqueued_at, seen.id), (enqueued_at, id_))
            fronts[priority] = Front(oldest[0], oldest[1], max(seen.highest_id, id_))
        return fronts

    async def behind(
        self, priority: int, front: Front | None, grace: float, limit: int
    ) -> list[int]:
        """Pending ids at `priority` dispatched before `front` (any, when the list is empty) and
        more than `grace` seconds ago, oldest id first."""
        params = {
            "queue": self.queue,
            "priority": priority,
            "below": NO_BOUND if front is None else front.highest_id,
            "grace": grace,
            "front_at": None if front is None else front.enqueued_at,
            "front_id": None if front is None else front.id,
            "limit": limit,
        }
        return [id_ for (id_,) in await self._conn.fetch(_BEHIND, params)]
