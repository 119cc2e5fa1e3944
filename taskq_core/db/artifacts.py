"""Artifact rows as clients see them: a task's list, and one artifact to stream back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.db.models import task_artifacts, tasks

LISTED_COLUMNS = (
    task_artifacts.c.name,
    task_artifacts.c.size,
    task_artifacts.c.sha256,
    task_artifacts.c.content_type,
    task_artifacts.c.created_at,
)


class ArtifactQueries:
    engine: AsyncEngine

    async def artifacts_of(self, task_id: int) -> list[dict[str, Any]]:
        """The artifacts a task published, by name."""
        query = (
            select(*LISTED_COLUMNS)
            .where(task_artifacts.c.task_id == task_id)
            .order_by(task_artifacts.c.name)
        )
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def artifact(self, task_id: int, name: str) -> dict[str, Any] | None:
        """The task's submitter and, if it published one of that name, the artifact with its
        storage key (else those fields are None); None when there is no such task."""
        query = (
            select(tasks.c.submitted_by, *LISTED_COLUMNS, task_artifacts.c.key)
            .select_from(tasks)
            .outerjoin(
                task_artifacts,
                (task_artifacts.c.task_id == tasks.c.id) & (task_artifacts.c.name == name),
            )
            .where(tasks.c.id == task_id)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else dict(row._mapping)
