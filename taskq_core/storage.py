"""The storage API: every read and write of task rows goes through `Storage`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.models import TaskStatus, tasks

SUMMARY_COLUMNS = (
    tasks.c.id,
    tasks.c.task_type,
    tasks.c.status,
    tasks.c.priority,
    tasks.c.created_at,
)
DETAIL_COLUMNS = (
    *SUMMARY_COLUMNS,
    tasks.c.input_data,
    tasks.c.result,
    tasks.c.error,
    tasks.c.attempts,
    tasks.c.max_attempts,
    tasks.c.timeout_seconds,
    tasks.c.run_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.worker_id,
)


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated request to create a task."""

    task_type: str
    input_data: dict[str, Any]
    priority: int
    max_attempts: int
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task a worker now holds: the fields it needs to run and to fence its outcome."""

    id: int
    task_type: str
    input_data: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    timeout_seconds: float | None


class Storage:
    """Task rows in PostgreSQL, the source of truth."""

    def __init__(self, engine: AsyncEngine, queue: str = "default") -> None:
        self.engine = engine
        self.queue = queue

    async def create(self, new: Sequence[NewTask]) -> list[dict[str, Any]]:
        """Insert tasks as `pending` in one statement; returns their summaries in order."""
        values = [
            {
                "queue": self.queue,
                "task_type": t.task_type,
                "input_data": t.input_data,
                "priority": t.priority,
                "max_attempts": t.max_attempts,
                "timeout_seconds": t.timeout_seconds,
            }
            for t in new
        ]
        async with self.engine.begin() as conn:
            result = await conn.execute(
                insert(tasks).returning(*SUMMARY_COLUMNS, sort_by_parameter_order=True), values
            )
            return [dict(row._mapping) for row in result]

    async def discard_pending(self, ids: Sequence[int]) -> None:
        """Delete tasks that were never dispatched (the broker push failed after the insert)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                delete(tasks).where(tasks.c.id.in_(ids), tasks.c.status == TaskStatus.PENDING)
            )

    async def get(self, task_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*DETAIL_COLUMNS).where(tasks.c.id == task_id))).first()
        return None if row is None else dict(row._mapping)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        task_type: str | None = None,
        priority: int | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Tasks newest first, filtered; page with `before_id` (the previous page's last id)."""
        query = select(*DETAIL_COLUMNS).order_by(tasks.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if task_type is not None:
            query = query.where(tasks.c.task_type == task_type)
        if priority is not None:
            query = query.where(tasks.c.priority == priority)
        if before_id is not None:
            query = query.where(tasks.c.id < before_id)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def claim(self, task_id: int, worker_id: str) -> ClaimedTask | None:
        """Take a pending task for `worker_id`; None when it is gone or someone else has it.

        The conditional UPDATE is what makes a duplicated id in Redis harmless: of all the workers
        popping the same id, exactly one sees `status = 'pending'` and wins.
        """
        statement = (
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.status == TaskStatus.PENDING)
            .values(
                status=TaskStatus.RUNNING,
                attempts=tasks.c.attempts + 1,
                started_at=func.now(),
                worker_id=worker_id,
            )
            .returning(
                tasks.c.id,
                tasks.c.task_type,
                tasks.c.input_data,
                tasks.c.priority,
                tasks.c.attempts,
                tasks.c.max_attempts,
                tasks.c.timeout_seconds,
            )
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            return None
        return ClaimedTask(
            id=row.id,
            task_type=row.task_type,
            input_data=row.input_data,
            priority=row.priority,
            attempt=row.attempts,
            max_attempts=row.max_attempts,
            timeout_seconds=row.timeout_seconds,
        )

    async def finish(
        self,
        task: ClaimedTask,
        worker_id: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Record the outcome; fenced, so only the holder of the current attempt can write it."""
        status = TaskStatus.FAILED if error is not None else TaskStatus.COMPLETED
        statement = (
            update(tasks)
            .where(
                tasks.c.id == task.id,
                tasks.c.status == TaskStatus.RUNNING,
                tasks.c.worker_id == worker_id,
                tasks.c.attempts == task.attempt,
            )
            .values(
                status=status,
                result=result,
                error=error,
                finished_at=func.now(),
                lease_expires_at=None,
            )
        )
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def recent(self, count: int) -> list[dict[str, Any]]:
        """The last `count` tasks, newest first."""
        return await self.list_tasks(limit=count)

    async def delete_oldest(self, count: int) -> int:
        """Delete the first `count` tasks by id; returns how many went."""
        oldest = select(tasks.c.id).order_by(tasks.c.id).limit(count).scalar_subquery()
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(tasks).where(tasks.c.id.in_(oldest)))
            return result.rowcount

    async def count_by_status(self, since_id: int = 0) -> dict[str, int]:
        """How many tasks with id above `since_id` are in each status."""
        query = (
            select(tasks.c.status, func.count())
            .where(tasks.c.id > since_id)
            .group_by(tasks.c.status)
        )
        async with self.engine.connect() as conn:
            counts: dict[str, int] = {status.value: 0 for status in TaskStatus}
            counts.update({row[0]: row[1] for row in await conn.execute(query)})
        return counts

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
