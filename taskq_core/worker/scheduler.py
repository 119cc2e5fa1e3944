"""The scheduler: every worker turns due schedule ticks into tasks; PostgreSQL makes each tick
exactly one task, however many workers fire it at once and whichever of them dies doing so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from psycopg.errors import UniqueViolation

from taskq_core import logs, schedules
from taskq_core.broker import Broker
from taskq_core.errors import TaskqError
from taskq_core.plugins import Registry
from taskq_core.task import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY
from taskq_core.worker.sql.schedules import DueSchedule, ScheduleStatements

log = logging.getLogger("taskq.scheduler")

POLL = 0.5  # seconds between looks for due schedules; a tick becomes a task this late at most


class Scheduler:
    """Runs in every worker: no single beat process whose death stops the schedules."""

    def __init__(
        self, statements: ScheduleStatements, broker: Broker, registry: Registry, *, errors: Any
    ) -> None:
        self.statements = statements
        self.broker = broker
        self.registry = registry
        self.errors = errors  # exceptions meaning an outage: logged, retried next poll

    async def declare_plugin_schedules(self) -> None:
        """Store the schedules the installed plugins declare (checked first; bad ones logged)."""
        now = await self.statements.clock()
        for d in self.registry.schedules:
            values = {
                "cron": d.cron,
                "timezone": d.timezone,
                "task_type": d.task_type,
                "input_data": d.input_data,
                "priority": d.priority,
                "catch_up": d.catch_up,
            }
            try:
                checked = schedules.validate(self.registry, values)
            except TaskqError as exc:
                log.error("plugin %s: schedule %r not stored: %s", d.plugin, d.name, exc)
                continue
            stored = await self.statements.declare(
                name=d.name,
                cron=d.cron,
                timezone=d.timezone,
                task_type=checked["task_type"],
                input_data=checked["input_data"],
                priority=d.priority,
                catch_up=d.catch_up,
                source=f"plugin:{d.plugin}",
                next_run_at=schedules.next_tick(d.cron, d.timezone, now),
            )
            if not stored:
                log.error(
                    "plugin %s: schedule %r not stored: a schedule of that name was created "
                    "through the API",
                    d.plugin,
                    d.name,
                )

    async def run(self, stopping: asyncio.Event) -> None:
        declared = False
        outage = logs.Outage(log, "PostgreSQL or Redis (scheduler)", POLL)
        while not stopping.is_set():
            try:
                if not declared:  # until it succeeds: the database may be down at start
                    await self.declare_plugin_schedules()
                    declared = True
                await self.fire_due()
                outage.recovered()
            except self.errors as exc:
                outage.failed(exc, POLL)
            except psycopg.Error:
                # A statement refused (a hand-edited row, say) must not stop the worker's tasks.
                log.exception("scheduling failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), POLL)

    async def fire_due(self) -> int:
        """Turn every due tick into a task; returns how many tasks this worker created."""
        created = 0
        for due in await self.statements.due():
            created += await self._fire(due)
        return created

    async def _fire(self, due: DueSchedule) -> int:
        """Fire `due`'s ticks until it is no longer due (or another worker moved it)."""
        created = 0
        tick, now = due.next_run_at, due.now
        while tick <= now:
            try:
                step = schedules.plan(due.cron, due.timezone, tick, now, due.catch_up)
            except schedules.ScheduleError as exc:
                log.error("schedule %r cannot run: %s", due.name, exc)
                return created
            try:
                moved, dispatch = await self.statements.fire(
                    due.name, tick, step.next_run_at, step.task_tick, self._defaults(due.task_type)
                )
            except UniqueViolation:
                # The tick already has its task (next_run_at was set back by hand): move on
                # without a second one.
                moved, dispatch = await self.statements.fire(
                    due.name, tick, step.next_run_at, None, self._defaults(due.task_type)
                )
            if not moved:
                return created  # another worker fired it, or it was paused, changed or deleted
            if dispatch is not None:
                created += 1
                log.info("schedule %r: tick %s is task %d", due.name, tick, dispatch.id)
                # If this push is lost the sweeper's lost-dispatch repair pushes the task.
                with contextlib.suppress(*self.errors):
                    await self.broker.push(dispatch.id, dispatch.priority)
            elif step.task_tick is None:
                log.warning("schedule %r: skipped missed ticks from %s", due.name, tick)
            tick = step.next_run_at
        return created

    def _defaults(self, task_type: str) -> dict[str, Any]:
        kind = self.registry.types.get(task_type)
        if kind is None:
            # Not installed here: the task is created anyway and fails on a worker that lacks it
            # just as a submitted one would, rather than the tick vanishing.
            return {
                "priority": DEFAULT_PRIORITY,
                "max_attempts": DEFAULT_MAX_ATTEMPTS,
                "timeout_seconds": None,
            }
        return kind.defaults()
