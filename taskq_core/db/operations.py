"""Operators' statements on many tasks at once: retention purges, clearing, bulk retry and cancel.

Every one works in batches of BATCH rows, each its own short transaction found through an index,
so none holds locks on many rows or for long while workers claim and finish tasks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.records import TaskStatus

BATCH = 500  # rows per statement
FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)
CANCELLABLE = (TaskStatus.PENDING, TaskStatus.RUNNING)

Batch = Callable[[list[tuple[int, int]]], Awaitable[None]]

_PURGE = text(
    """
    WITH doomed AS (
        SELECT id FROM tasks
        WHERE status = :status AND finished_at < now() - make_interval(secs => :age)
            AND queue = :queue
        ORDER BY finished_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM tasks t USING doomed WHERE t.id = doomed.id
    """
)

_CLEAR = text(
    """
    WITH doomed AS (
        SELECT id FROM tasks
        WHERE queue = :queue AND id > :after AND status = ANY(CAST(:statuses AS text[]))
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM tasks t USING doomed WHERE t.id = doomed.id
    RETURNING t.id
    """
)

_UNFINISHED_BEFORE = text(
    """
    SELECT count(*) FROM tasks
    WHERE queue = :queue AND status IN ('pending', 'running') AND id <= :upto
    """
)


@dataclass(frozen=True)
class TaskFilter:
    """The listing's filters, shared by bulk retry and cancel."""

    status: str | None = None
    task_type: str | None = None
    priority: int | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None

    def where(self, statuses: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        """SQL conditions (ANDed) and their parameters, restricted to `statuses`."""
        wanted = [s for s in statuses if self.status is None or s == self.status]
        clauses = ["queue = :queue", "status = ANY(CAST(:statuses AS text[]))"]
        params: dict[str, Any] = {"statuses": wanted}
        for column, op, value in (
            ("task_type", "=", self.task_type),
            ("priority", "=", self.priority),
            ("created_at", "<", self.created_before),
            ("created_at", ">", self.created_after),
        ):
            if value is not None:
                name = f"p{len(params)}"
                clauses.append(f"{column} {op} :{name}")
                params[name] = value
        return " AND ".join(clauses), params


class OperationQueries:
    engine: AsyncEngine
    queue: str

    async def purge(self, older_than: float, statuses: tuple[str, ...] = FINISHED) -> int:
        """Delete finished tasks of `statuses` older than `older_than` seconds; how many."""
        total = 0
        for status in statuses:
            params = {"status": status, "age": older_than, "queue": self.queue, "limit": BATCH}
            while True:
                async with self.engine.begin() as conn:
                    count = (await conn.execute(_PURGE, params)).rowcount
                total += count
                if count < BATCH:
                    break
        return total

    async def clear(self, count: int, *, include_unfinished: bool) -> tuple[int, int]:
        """Delete the oldest `count` finished tasks (any task with `include_unfinished`);
        (deleted, pending or running tasks kept among the oldest)."""
        statuses = [s.value for s in (TaskStatus if include_unfinished else FINISHED)]
        deleted, after = 0, 0
        while deleted < count:
            params = {
                "queue": self.queue,
                "after": after,
                "statuses": statuses,
                "limit": min(BATCH, count - deleted),
            }
            async with self.engine.begin() as conn:
                ids = [row[0] for row in await conn.execute(_CLEAR, params)]
            if not ids:
                break
            deleted += len(ids)
            after = max(ids)
        kept = 0
        if not include_unfinished and after:
            async with self.engine.connect() as conn:
                kept = (
                    await conn.execute(_UNFINISHED_BEFORE, {"queue": self.queue, "upto": after})
                ).scalar_one()
        return deleted, kept

    async def retry_many(self, where: TaskFilter, each: Batch) -> int:
        """Put failed and cancelled tasks matching `where` back to pending, each with as many
        attempts again as it had; `each` gets every committed batch's (id, priority) pairs, to
        push them. Returns how many."""
        conditions, params = where.where(RETRYABLE)
        statement = text(
            f"""
            WITH chosen AS (
                SELECT id FROM tasks WHERE {conditions}
                ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
            )
            UPDATE tasks t SET
                status = 'pending', max_attempts = t.attempts + t.max_attempts,
                result = NULL, error = NULL, finished_at = NULL, cancel_requested_at = NULL,
                worker_id = NULL, run_at = now(), enqueued_at = now()
            FROM chosen WHERE t.id = chosen.id
            RETURNING t.id, t.priority
            """
        )
        return await self._batches(statement, params, each)

    async def cancel_many(self, where: TaskFilter, each: Batch) -> int:
        """Cancel pending tasks matching `where` and flag running ones for their workers to stop;
        `each` gets every committed batch's (id, 1 if running) pairs. Returns how many."""
        conditions, params = where.where(CANCELLABLE)
        statement = text(
            f"""
            WITH chosen AS (
                SELECT id FROM tasks WHERE {conditions} AND cancel_requested_at IS NULL
                ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED
            )
            UPDATE tasks t SET
                status = CASE WHEN t.status = 'pending' THEN 'cancelled' ELSE t.status END,
                finished_at = CASE WHEN t.status = 'pending' THEN now() END,
                cancel_requested_at = now()
            FROM chosen WHERE t.id = chosen.id
            RETURNING t.id, CASE WHEN t.status = 'running' THEN 1 ELSE 0 END
            """
        )
        return await self._batches(statement, params, each)

    async def _batches(self, statement: Any, params: dict[str, Any], each: Batch) -> int:
        """Run `statement` batch after batch until it changes fewer rows than a batch."""
        total = 0
        params = {**params, "queue": self.queue, "limit": BATCH}
        while True:
            async with self.engine.begin() as conn:
                rows = [(row[0], row[1]) for row in await conn.execute(statement, params)]
            if rows:
                await each(rows)
            total += len(rows)
            if len(rows) < BATCH:
                return total
