"""A plugin claiming a task type name FibonacciTask already has."""

from __future__ import annotations

from collections.abc import Callable

from taskq_fibonacci import FibonacciTask

from taskq_core import Task, hookimpl


class ImpostorTask(FibonacciTask):
    description = "Claims the name FibonacciTask a second time."


@hookimpl
def register_task_types(register: Callable[[type[Task]], None]) -> None:
    register(ImpostorTask)
