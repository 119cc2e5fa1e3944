"""The API's view of the worker registry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_LIST = text(
    """
    SELECT id, queue, hostname, pid, concurrency, started_at, last_beat_at, running
    FROM workers
    WHERE stopped_at IS NULL AND last_beat_at > now() - make_interval(secs => :stale)
    ORDER BY started_at DESC
    """
)


class WorkerQueries:
    engine: AsyncEngine

    async def list_workers(self, stale_after: float) -> list[dict[str, Any]]:
        """Workers that beat within `stale_after` seconds, newest first."""
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(_LIST, {"stale": stale_after})]
