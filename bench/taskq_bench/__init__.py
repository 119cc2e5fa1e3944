"""The bench's taskq task types (NoopTask, Fib20Task, StampTask), a plugin only it installs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench import work
from taskq_core import Task, TaskContext, hookimpl


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FibOutput(BaseModel):
    result: int


class StampInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    t0: float  # time.time() just before the enqueue call


class NoopTask(Task):
    name = "NoopTask"
    description = "Do nothing: the queue's own cost per task."
    Input = Empty
    Output = Empty

    def run(self, data: Empty, ctx: TaskContext) -> dict[str, Any]:
        work.noop()
        return {}


class Fib20Task(Task):
    name = "Fib20Task"
    description = "fib(20) by the naive recursion: a CPU-bound task."
    Input = Empty
    Output = FibOutput

    def run(self, data: Empty, ctx: TaskContext) -> dict[str, Any]:
        return {"result": work.fib20()}


class StampTask(Task):
    name = "StampTask"
    description = "Record when the task started, for the enqueue-to-start latency."
    Input = StampInput
    Output = Empty

    def run(self, data: StampInput, ctx: TaskContext) -> dict[str, Any]:
        work.stamp(data.t0)
        return {}


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    for task_type in (NoopTask, Fib20Task, StampTask):
        register(task_type)
