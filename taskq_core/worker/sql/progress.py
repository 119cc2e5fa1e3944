"""The worker's progress writes: the latest progress of many tasks in one statement."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, LiteralString

from taskq_core.worker.sql.connection import Connection

# Fenced by status, worker and attempt: only the attempt still running here is written. The
# last report of an attempt that ends goes with its outcome (claims._FINISH) instead, so a flush
# that lands after the outcome cannot put an older value back.
_PROGRESS: LiteralString = """
    UPDATE tasks t SET progress = p.value
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(workers)s::text[], %(values)s::jsonb[])
        AS p(id, attempt, worker, value)
    WHERE t.id = p.id AND t.status = 'running' AND t.worker_id = p.worker
        AND t.attempts = p.attempt
    RETURNING t.id
"""


class ProgressWrites:
    """Progress statements on a connection of their own, so they never wait behind claims or
    outcomes (nor those behind them)."""

    def __init__(self, conninfo: str, *, prepare: bool = True) -> None:
        self._conn = Connection(conninfo, prepare=prepare)

    async def close(self) -> None:
        await self._conn.close()

    async def write(self, items: Sequence[tuple[int, int, str, dict[str, Any]]]) -> list[int]:
        """Store (task id, attempt, holder's worker id, value) items; the ids written."""
        if not items:
            return []
        params = {
            "ids": [task_id for task_id, _, _, _ in items],
            "attempts": [attempt for _, attempt, _, _ in items],
            "workers": [worker for _, _, worker, _ in items],
            "values": [json.dumps(value, separators=(",", ":")) for _, _, _, value in items],
        }
        return [row[0] for row in await self._conn.fetch(_PROGRESS, params)]
