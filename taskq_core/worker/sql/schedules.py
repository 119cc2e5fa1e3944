"""The scheduler's statements: due schedules, firing a tick, storing plugins' schedules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from taskq_core.records import Dispatch
from taskq_core.worker.sql.connection import Connection

_DUE: LiteralString = """
    SELECT name, cron, timezone, task_type, catch_up, next_run_at, now()
    FROM schedules
    WHERE queue = %(queue)s AND NOT paused AND next_run_at <= now()
    ORDER BY next_run_at
    LIMIT %(limit)s
"""

# One statement, so one transaction: the schedule moves from `tick` to `next` (compare-and-set:
# of all the workers firing the same tick, exactly one finds next_run_at still equal to it), the
# task is inserted, and (schedule, tick) recorded under its primary key, all or nothing. A
# worker killed at any point leaves either the tick fired or the schedule untouched.
_FIRE: LiteralString = """
    WITH advanced AS (
        UPDATE schedules SET next_run_at = %(next)s
        WHERE queue = %(queue)s AND name = %(name)s AND next_run_at = %(tick)s AND NOT paused
        RETURNING task_type, input_data, priority
    ), created AS (
        INSERT INTO tasks (queue, task_type, input_data, priority, max_attempts, timeout_seconds,
                           run_at, enqueued_at)
        SELECT %(queue)s, task_type, input_data, coalesce(priority, %(priority)s),
               %(max_attempts)s, %(timeout)s, now(), now()
        FROM advanced
        WHERE %(task_tick)s::timestamptz IS NOT NULL
        RETURNING id, priority
    ), ticked AS (
        INSERT INTO schedule_ticks (queue, schedule, tick_at, task_id)
        SELECT %(queue)s, %(name)s, %(task_tick)s, id FROM created
    )
    SELECT (SELECT count(*) FROM advanced), id, priority FROM (SELECT 1) AS one
    LEFT JOIN created ON true
"""

# Plugins' schedules are stored as declared at each worker start; a changed cron or time zone
# restarts the schedule from now. A schedule of the same name created through the API is not
# touched (no row returned).
_DECLARE: LiteralString = """
    INSERT INTO schedules (queue, name, cron, timezone, task_type, input_data, priority,
                           catch_up, source, next_run_at)
    VALUES (%(queue)s, %(name)s, %(cron)s, %(timezone)s, %(task_type)s, %(input)s::jsonb,
            %(priority)s, %(catch_up)s, %(source)s, %(next)s)
    ON CONFLICT (queue, name) DO UPDATE SET
        task_type = EXCLUDED.task_type,
        input_data = EXCLUDED.input_data,
        priority = EXCLUDED.priority,
        catch_up = EXCLUDED.catch_up,
        cron = EXCLUDED.cron,
        timezone = EXCLUDED.timezone,
        next_run_at = CASE
            WHEN (schedules.cron, schedules.timezone) = (EXCLUDED.cron, EXCLUDED.timezone)
            THEN schedules.next_run_at ELSE EXCLUDED.next_run_at END,
        updated_at = now()
    WHERE schedules.source = EXCLUDED.source
    RETURNING name
"""


@dataclass(frozen=True)
class DueSchedule:
    name: str
    cron: str
    timezone: str
    task_type: str
    catch_up: str
    next_run_at: datetime
    now: datetime


class ScheduleStatements:
    """The scheduler's statements for one queue, on a connection it shares with the sweeper."""

    def __init__(self, conn: Connection, queue: str) -> None:
        self._conn = conn
        self.queue = queue

    async def clock(self) -> datetime:
        """The database's now: the clock every tick is compared with."""
        ((now,),) = await self._conn.fetch("SELECT now()", {})
        assert isinstance(now, datetime)
        return now

    async def due(self, limit: int = 100) -> list[DueSchedule]:
        rows = await self._conn.fetch(_DUE, {"queue": self.queue, "limit": limit})
        return [DueSchedule(*row) for row in rows]

    async def fire(
        self,
        name: str,
        tick: datetime,
        next_run_at: datetime,
        task_tick: datetime | None,
        defaults: dict[str, Any],
    ) -> tuple[bool, Dispatch | None]:
        """Move `name` from `tick` to `next_run_at`, creating the task for `task_tick` (if any)
        in the same statement; (this call moved it, the task to push)."""
        params = {
            "queue": self.queue,
            "name": name,
            "tick": tick,
            "next": next_run_at,
            "task_tick": task_tick,
            "priority": defaults["priority"],
            "max_attempts": defaults["max_attempts"],
            "timeout": defaults["timeout_seconds"],
        }
        ((moved, task_id, priority),) = await self._conn.fetch(_FIRE, params)
        dispatch = Dispatch(task_id, priority) if task_id is not None else None
        return bool(moved), dispatch

    async def declare(
        self,
        *,
        name: str,
        cron: str,
        timezone: str,
        task_type: str,
        input_data: dict[str, Any],
        priority: int | None,
        catch_up: str,
        source: str,
        next_run_at: datetime,
    ) -> bool:
        """Store a plugin's schedule; False when an API-created schedule holds the name."""
        params = {
            "queue": self.queue,
            "name": name,
            "cron": cron,
            "timezone": timezone,
            "task_type": task_type,
            "input": json.dumps(input_data, separators=(",", ":")),
            "priority": priority,
            "catch_up": catch_up,
            "source": source,
            "next": next_run_at,
        }
        return bool(await self._conn.fetch(_DECLARE, params))
