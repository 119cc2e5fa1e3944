"""Deleting the stored bytes of deleted tasks' artifacts: the sweeper's chore, so retention and
every other way of deleting tasks stays one SQL statement and the store catches up behind it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from taskq_core.artifacts import ArtifactStore, task_prefix
from taskq_core.worker.sql.artifacts import ArtifactDeletions

log = logging.getLogger("taskq.sweeper")

BATCH = 200  # tasks whose artifacts are deleted per sweep


class ArtifactCollector:
    """Deletes, from the store, the prefixes of tasks queued in `artifact_deletions`."""

    def __init__(self, deletions: ArtifactDeletions, store_url: Callable[[], str]) -> None:
        """`store_url()`: the store's URL, asked only once there is something to delete (the
        default store's folder costs a worker's start-up a second settings read and an import)."""
        self.deletions = deletions
        self.store_url = store_url
        self._store: ArtifactStore | None = None

    async def collect(self) -> int:
        """One batch; how many tasks' artifacts were deleted. A store that fails leaves the
        queue as it is, for the next sweep."""
        queued = await self.deletions.queued(BATCH)
        if not queued:
            return 0
        try:
            await asyncio.to_thread(self._delete, [task_id for _, task_id in queued])
        except Exception as exc:
            log.warning("deleting the artifacts of %d deleted task(s) failed: %r", len(queued), exc)
            return 0
        await self.deletions.done([queue_id for queue_id, _ in queued])
        return len(queued)

    def _delete(self, task_ids: list[int]) -> None:
        if self._store is None:
            self._store = ArtifactStore(self.store_url())
        for task_id in set(task_ids):
            self._store.delete_prefix(task_prefix(task_id))
