"""Retention's statement: delete the oldest finished tasks of one status, a small batch at once."""

from __future__ import annotations

from typing import LiteralString

from taskq_core.worker.sql.connection import Connection

# Through ix_tasks_finished (status, finished_at): each batch reads only the rows it deletes, and
# SKIP LOCKED steps around any row another statement holds, so no batch waits or holds locks for
# long. Attempt rows and schedule ticks go with their task (ON DELETE CASCADE, both indexed by
# task id), and the task's idempotency key with its row.
_PURGE: LiteralString = """
    WITH doomed AS (
        SELECT id FROM tasks
        WHERE status = %(status)s AND finished_at < now() - make_interval(secs => %(age)s)
            AND queue = %(queue)s
        ORDER BY finished_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM tasks t USING doomed WHERE t.id = doomed.id
    RETURNING t.id
"""


class Retention:
    """Deletes finished tasks older than their status's retention, on the sweeper's connection."""

    def __init__(self, conn: Connection, queue: str) -> None:
        self._conn = conn
        self.queue = queue

    async def purge_batch(self, status: str, older_than: float, limit: int) -> int:
        """Delete up to `limit` `status` tasks finished more than `older_than` seconds ago."""
        params = {"status": status, "age": older_than, "queue": self.queue, "limit": limit}
        return len(await self._conn.fetch(_PURGE, params))
