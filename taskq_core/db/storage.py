"""The API's and the command line's storage: task rows, their history and the worker list, read
and written through SQLAlchemy. (The worker's own statements are in `taskq_core.worker.sql`.)"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.db.artifacts import ArtifactQueries
from taskq_core.db.operations import OperationQueries
from taskq_core.db.schedules import ScheduleQueries
from taskq_core.db.tasks import TaskQueries
from taskq_core.db.workers import WorkerQueries

__all__ = ["Storage"]


class Storage(TaskQueries, WorkerQueries, OperationQueries, ScheduleQueries, ArtifactQueries):
    """Task rows, attempts and workers in PostgreSQL, the source of truth."""

    def __init__(self, engine: AsyncEngine, queue: str = "default") -> None:
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.queue = queue

    async def now(self) -> datetime:
        """PostgreSQL's clock: the one the workers fire schedules and run tasks on."""
        async with self.engine.connect() as conn:
            value: datetime = (await conn.execute(text("SELECT now()"))).scalar_one()
        return value

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
