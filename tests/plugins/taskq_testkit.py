"""Task types the suite installs (as the `taskq-testkit` distribution) to exercise workers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import redis
from pydantic import BaseModel, ConfigDict

from taskq_core import Task, TaskContext, hookimpl

RUNS_KEY = "test:runs"  # every execution appends "task_id:attempt:worker_id" here


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SleepInput(BaseModel):
    seconds: float = 0.0


class SleepOutput(BaseModel):
    slept: float


def _record(ctx: TaskContext) -> None:
    client = redis.Redis.from_url(os.environ["TASKQ_REDIS_URL"])
    client.rpush(RUNS_KEY, f"{ctx.task_id}:{ctx.attempt}:{ctx.worker_id}")
    client.close()


class AsyncSleepTask(Task):
    name = "AsyncSleepTask"
    description = "Sleep in the event loop, then record the run."
    Input = SleepInput
    Output = SleepOutput
    priority = 2

    async def run(self, data: SleepInput, ctx: TaskContext) -> SleepOutput:
        await asyncio.sleep(data.seconds)
        await asyncio.to_thread(_record, ctx)
        return SleepOutput(slept=data.seconds)


class BlockingSleepTask(Task):
    name = "BlockingSleepTask"
    description = "Block its thread with time.sleep, then record the run."
    Input = SleepInput
    Output = SleepOutput

    def run(self, data: SleepInput, ctx: TaskContext) -> SleepOutput:
        time.sleep(data.seconds)
        _record(ctx)
        return SleepOutput(slept=data.seconds)


class FailInput(BaseModel):
    message: str = "boom"


class FailTask(Task):
    name = "FailTask"
    description = "Always raises ValueError."
    Input = FailInput
    Output = Empty

    def run(self, data: FailInput, ctx: TaskContext) -> Empty:
        raise ValueError(data.message)


class BadOutputTask(Task):
    name = "BadOutputTask"
    description = "Returns something its Output model rejects."
    Input = Empty
    Output = SleepOutput

    def run(self, data: Empty, ctx: TaskContext) -> dict[str, object]:
        return {"slept": "not a number"}


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    for task_type in (AsyncSleepTask, BlockingSleepTask, FailTask, BadOutputTask):
        register(task_type)
