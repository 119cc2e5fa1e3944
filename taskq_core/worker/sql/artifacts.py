"""The sweeper's artifact statements: the queue of deleted tasks whose stored bytes must go."""

from __future__ import annotations

from typing import LiteralString

from taskq_core.worker.sql.connection import Connection

# Filled by a trigger (migration 0005) whenever a task's artifact rows are deleted, which a
# task's deletion does by cascade, whoever deletes it (retention, purge, clear, by hand).
_QUEUED: LiteralString = """
    SELECT id, task_id FROM artifact_deletions ORDER BY id LIMIT %(limit)s
"""
_DONE: LiteralString = """
    DELETE FROM artifact_deletions WHERE id = ANY(%(ids)s::bigint[])
"""


class ArtifactDeletions:
    def __init__(self, conninfo: str, *, prepare: bool = True) -> None:
        self._conn = Connection(conninfo, prepare=prepare)

    async def close(self) -> None:
        await self._conn.close()

    async def queued(self, limit: int) -> list[tuple[int, int]]:
        """(queue id, task id) of the oldest deletions to carry out."""
        rows = await self._conn.fetch(_QUEUED, {"limit": limit})
        return [(row[0], row[1]) for row in rows]

    async def done(self, ids: list[int]) -> None:
        await self._conn.fetch(_DONE, {"ids": ids})
