"""The chaos run's task types (installed into the run's workers as the `taskq-chaos` plugin).

Each run writes a line to the runs file (TASKQ_TEST_RUNS_FILE) when it starts and another when
it ends, with wall-clock times, so the checker can tell which injected fault overlapped which
run. The file survives every fault the run injects (Redis flushed, PostgreSQL crashed); one
short write in append mode never interleaves with another process's.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis
from pydantic import BaseModel, ConfigDict

from taskq_core import Retry, Task, TaskContext, hookimpl

RUNS_FILE_ENV = "TASKQ_TEST_RUNS_FILE"
REDIS_KEY = "chaos:runs"  # the tasks' own Redis call (a dependency that faults can break)


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sleep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.0


class Flaky(BaseModel):
    model_config = ConfigDict(extra="forbid")
    succeed_on_attempt: int = 2
    after: float = 0.0  # with `retry`: the retry it asks for; else it raises ValueError


def _write(line: dict[str, object]) -> None:
    with open(os.environ[RUNS_FILE_ENV], "a") as runs:
        runs.write(json.dumps(line) + "\n")


@contextmanager
def _noted(ctx: TaskContext) -> Iterator[None]:
    """A start line now, an end line when the run returns or raises (even cancelled); a
    process killed mid-run writes none."""
    run = {"task": ctx.task_id, "attempt": ctx.attempt, "worker": ctx.worker_id}
    run["run"] = uuid.uuid4().hex[:12]
    _write({**run, "start": time.time()})
    try:
        yield
    finally:
        _write({**run, "end": time.time()})


def _call_redis(ctx: TaskContext) -> None:
    client = redis.Redis.from_url(
        os.environ["TASKQ_REDIS_URL"], socket_connect_timeout=5, socket_timeout=5
    )
    try:
        client.rpush(REDIS_KEY, f"{ctx.task_id}:{ctx.attempt}")
    finally:
        client.close()


class ChaosSleep(Task):
    name = "ChaosSleep"
    description = "Sleep in the event loop, then call Redis."
    Input = Sleep
    Output = Empty
    priority = 2

    async def run(self, data: Sleep, ctx: TaskContext) -> Empty:
        with _noted(ctx):
            await asyncio.sleep(data.seconds)
            await asyncio.to_thread(_call_redis, ctx)
        return Empty()


class ChaosBlock(Task):
    name = "ChaosBlock"
    description = "Sleep blocking its runner process, then call Redis."
    Input = Sleep
    Output = Empty

    def run(self, data: Sleep, ctx: TaskContext) -> Empty:
        with _noted(ctx):
            time.sleep(data.seconds)
            _call_redis(ctx)
        return Empty()


class ChaosFail(Task):
    name = "ChaosFail"
    description = "Always raises ValueError, in a runner process."
    Input = Empty
    Output = Empty
    retry_backoff_base = 0.05

    def run(self, data: Empty, ctx: TaskContext) -> Empty:
        with _noted(ctx):
            raise ValueError("chaos")


class ChaosRetry(Task):
    name = "ChaosRetry"
    description = "Asks for a retry until `succeed_on_attempt`, in a runner process."
    Input = Flaky
    Output = Empty

    def run(self, data: Flaky, ctx: TaskContext) -> Empty:
        with _noted(ctx):
            if ctx.attempt < data.succeed_on_attempt:
                raise Retry(after=data.after, reason="chaos")
        return Empty()


class ChaosFlaky(Task):
    """Bulk retry's subject: it fails until `succeed_on_attempt`."""

    name = "ChaosFlaky"
    description = "Raises ValueError until `succeed_on_attempt`."
    Input = Flaky
    Output = Empty

    async def run(self, data: Flaky, ctx: TaskContext) -> Empty:
        with _noted(ctx):
            if ctx.attempt < data.succeed_on_attempt:
                raise ValueError(f"attempt {ctx.attempt} fails")
        return Empty()


class ChaosLong(ChaosSleep):
    """Bulk cancel's subject: long enough that only a cancel ends it in the run."""

    name = "ChaosLong"
    description = "Sleep in the event loop, then call Redis (cancelled in bulk)."


class ChaosPausable(ChaosSleep):
    """The type the run pauses and resumes."""

    name = "ChaosPausable"
    description = "Sleep in the event loop, then call Redis (paused now and then)."


class ChaosTick(ChaosSleep):
    """What the run's schedule fires."""

    name = "ChaosTick"
    description = "Sleep in the event loop, then call Redis (one per schedule tick)."


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    for task_type in (
        ChaosSleep,
        ChaosBlock,
        ChaosFail,
        ChaosRetry,
        ChaosFlaky,
        ChaosLong,
        ChaosPausable,
        ChaosTick,
    ):
        register(task_type)
