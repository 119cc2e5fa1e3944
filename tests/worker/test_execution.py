"""Running a task in this process: what the worker does for async task types, and a runner for
sync ones (their errors, a failing constructor)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from taskq_core import PermanentError, Task, TaskContext
from taskq_core.plugins import PluginInfo, TaskType
from taskq_core.worker.execution import Instances, Job


def job(task_type: str, input_data: dict[str, Any] | None = None, task_id: int = 1) -> Job:
    return Job(task_id, task_type, input_data or {}, 1, 3, 3, "test-worker")


class Nothing(BaseModel):
    pass


class SlowAsyncTask(Task):
    name = "SlowAsyncTask"
    Input = Nothing
    Output = Nothing

    async def run(self, data: Nothing, ctx: TaskContext) -> Nothing:
        await asyncio.sleep(30)
        return Nothing()


class FailingAsyncTask(Task):
    name = "FailingAsyncTask"
    Input = Nothing
    Output = Nothing

    async def run(self, data: Nothing, ctx: TaskContext) -> Nothing:
        raise PermanentError(f"task {ctx.task_id} attempt {ctx.attempt} cannot work")


class NoClientTask(Task):
    name = "NoClientTask"
    Input = Nothing
    Output = Nothing
    made = 0

    def __init__(self) -> None:
        NoClientTask.made += 1
        raise RuntimeError("no API key configured")

    def run(self, data: Nothing, ctx: TaskContext) -> Nothing:
        return Nothing()


def task_type(cls: type[Task]) -> TaskType:
    return TaskType(cls, PluginInfo("tests", None), cls.Input)


def test_run_async_reports_errors_and_lets_cancellation_through() -> None:
    instances = Instances()

    async def main() -> None:
        failing = await instances.run_async(task_type(FailingAsyncTask), job("FailingAsyncTask"))
        assert failing.error is not None
        assert failing.error["message"] == "task 1 attempt 1 cannot work"
        assert failing.error["permanent"] is True
        slow = asyncio.create_task(instances.run_async(task_type(SlowAsyncTask), job("Slow")))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow

    asyncio.run(main())


def test_a_failing_constructor_is_the_tasks_error_and_is_tried_again() -> None:
    instances = Instances()
    no_client = task_type(NoClientTask)
    for attempt in (1, 2):
        outcome = instances.run_sync(no_client, job("NoClientTask"))
        assert outcome.error is not None
        assert (outcome.error["type"], outcome.error["message"]) == (
            "RuntimeError",
            "no API key configured",
        )
        assert NoClientTask.made == attempt
