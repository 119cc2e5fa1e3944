"""The storage API: every read and write of taskq's tables goes through `Storage`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.storage.claims import Claims
from taskq_core.storage.records import ClaimedTask, Dispatch, Finish, NewTask
from taskq_core.storage.sweeps import SweepQueries
from taskq_core.storage.tasks import TaskQueries

__all__ = ["ClaimedTask", "Claims", "Dispatch", "Finish", "NewTask", "Storage"]


class Storage(TaskQueries, SweepQueries):
    """Task rows, attempts, workers and sweeper leases in PostgreSQL, the source of truth."""

    def __init__(self, engine: AsyncEngine, queue: str = "default") -> None:
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.queue = queue

    async def clock(self, minus_seconds: float = 0.0) -> datetime:
        """The database's now (less `minus_seconds`): the one clock every deadline is read on."""
        async with self.engine.connect() as conn:
            now: datetime = (
                await conn.execute(
                    text("SELECT now() - make_interval(secs => :s)"), {"s": minus_seconds}
                )
            ).scalar_one()
        return now

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
