"""Schedules and paused task types as the API and the command line read and change them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from taskq_core.errors import ScheduleExistsError, ScheduleNotFoundError

COLUMNS = (
    "name, cron, timezone, task_type, input_data, priority, catch_up, paused, source, "
    "next_run_at, created_at, updated_at"
)
_LIST = text(f"SELECT {COLUMNS} FROM schedules WHERE queue = :queue ORDER BY name")
_GET = text(f"SELECT {COLUMNS} FROM schedules WHERE queue = :queue AND name = :name")
_CREATE = text(
    f"""
    INSERT INTO schedules (queue, name, cron, timezone, task_type, input_data, priority,
                           catch_up, paused, next_run_at)
    VALUES (:queue, :name, :cron, :timezone, :task_type, CAST(:input_data AS jsonb), :priority,
            :catch_up, :paused, :next_run_at)
    RETURNING {COLUMNS}
    """
)
_DELETE = text("DELETE FROM schedules WHERE queue = :queue AND name = :name RETURNING name")
_PAUSED = text("SELECT task_type, paused_at FROM paused_task_types WHERE queue = :queue")
_PAUSE = text(
    """
    INSERT INTO paused_task_types (queue, task_type) VALUES (:queue, :task_type)
    ON CONFLICT DO NOTHING
    """
)
_RESUME = text("DELETE FROM paused_task_types WHERE queue = :queue AND task_type = :task_type")
UPDATABLE = ("cron", "timezone", "task_type", "input_data", "priority", "catch_up", "paused")


class ScheduleQueries:
    engine: AsyncEngine
    queue: str

    async def list_schedules(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(_LIST, {"queue": self.queue})]

    async def get_schedule(self, name: str) -> dict[str, Any]:
        """The schedule `name`; raises ScheduleNotFoundError."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_GET, {"queue": self.queue, "name": name})).first()
        if row is None:
            raise ScheduleNotFoundError(f"schedule {name!r} not found")
        return dict(row._mapping)

    async def create_schedule(self, values: dict[str, Any]) -> dict[str, Any]:
        """Store a checked schedule; raises ScheduleExistsError if the name is taken."""
        params = {
            **values,
            "queue": self.queue,
            "input_data": json.dumps(values["input_data"], separators=(",", ":")),
        }
        try:
            async with self.engine.begin() as conn:
                row = (await conn.execute(_CREATE, params)).one()
        except IntegrityError as exc:
            if "pk_schedules" not in str(exc):
                raise
            raise ScheduleExistsError(f"schedule {values['name']!r} already exists") from None
        return dict(row._mapping)

    async def update_schedule(
        self, name: str, changes: dict[str, Any], next_run_at: datetime | None
    ) -> dict[str, Any]:
        """Apply checked `changes` (UPDATABLE columns); `next_run_at` restarts the schedule."""
        sets = [f"{column} = :{column}" for column in changes if column in UPDATABLE]
        params: dict[str, Any] = {**changes, "queue": self.queue, "name": name}
        if "input_data" in changes:
            sets[sets.index("input_data = :input_data")] = "input_data = CAST(:input_data AS jsonb)"
            params["input_data"] = json.dumps(changes["input_data"], separators=(",", ":"))
        if next_run_at is not None:
            sets.append("next_run_at = :next_run_at")
            params["next_run_at"] = next_run_at
        sets.append("updated_at = now()")
        statement = text(
            f"UPDATE schedules SET {', '.join(sets)} WHERE queue = :queue AND name = :name "
            f"RETURNING {COLUMNS}"
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement, params)).first()
        if row is None:
            raise ScheduleNotFoundError(f"schedule {name!r} not found")
        return dict(row._mapping)

    async def delete_schedule(self, name: str) -> None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(_DELETE, {"queue": self.queue, "name": name})).first()
        if row is None:
            raise ScheduleNotFoundError(f"schedule {name!r} not found")

    async def paused_task_types(self) -> dict[str, datetime]:
        """{task type: paused since} for this queue."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(_PAUSED, {"queue": self.queue})
            return {row[0]: row[1] for row in rows}

    async def set_paused(self, task_type: str, paused: bool) -> None:
        """Pause (or resume) `task_type`; doing it twice is the same as once."""
        async with self.engine.begin() as conn:
            await conn.execute(
                _PAUSE if paused else _RESUME, {"queue": self.queue, "task_type": task_type}
            )
