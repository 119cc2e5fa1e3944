"""The few PostgreSQL numbers `/metrics` shows, each an index lookup whatever the table's size."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Per priority, the first due pending task by id through the partial index ix_tasks_pending
# (queue, priority DESC, id) WHERE status = 'pending': five short index scans, never a count.
_OLDEST_PENDING = text(
    """
    SELECT extract(epoch FROM now() - min(first.run_at))
    FROM (VALUES (1), (2), (3), (4), (5)) AS p(priority)
    CROSS JOIN LATERAL (
        SELECT run_at FROM tasks
        WHERE status = 'pending' AND queue = :queue AND priority = p.priority
            AND run_at <= now()
        ORDER BY id
        LIMIT 1
    ) AS first
    """
)

_WORKERS_ALIVE = text(
    """
    SELECT count(*) FROM workers
    WHERE stopped_at IS NULL AND queue = :queue
        AND last_beat_at > now() - make_interval(secs => :stale)
    """
)


async def queue_numbers(engine: AsyncEngine, queue: str, stale_after: float) -> tuple[float, int]:
    """(seconds the oldest due pending task has waited since it was due, or 0; workers that beat
    within `stale_after` seconds)."""
    async with engine.connect() as conn:
        age = (await conn.execute(_OLDEST_PENDING, {"queue": queue})).scalar()
        alive = (
            await conn.execute(_WORKERS_ALIVE, {"queue": queue, "stale": stale_after})
        ).scalar()
    return float(age or 0.0), int(alive or 0)
